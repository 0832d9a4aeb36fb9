"""From model outputs to detections: window aggregation, then Soft-NMS (numpy only).

The model code converts its tensors to numpy arrays before calling in here, so
that evaluation, ensembling and search can use this package without torch.
"""

from astra.postprocess.aggregation import AggregationError, aggregate_windows
from astra.postprocess.decode import decode_game, dense_detections, detect, detections_to_dense
from astra.postprocess.nms import Detections, NMSError, detections_to_spots, hard_nms, soft_nms

__all__ = [
    "AggregationError",
    "Detections",
    "NMSError",
    "aggregate_windows",
    "decode_game",
    "dense_detections",
    "detect",
    "detections_to_dense",
    "detections_to_spots",
    "hard_nms",
    "soft_nms",
]
