"""The VGGish-style audio backbone and its pretrained weights.

``VGGishBackbone``: 3x3 convolutions and 2x2 max-pools on ``[1, 96, 128]`` log-mel patches
(smaller where ``model.audio_input_pool`` averages them first), then fully-connected layers to
the model width. Its layer layout and parameter names are those of the common PyTorch port of
AudioSet VGGish (``features.*``, ``embeddings.*``), so that ``load_vggish_weights`` maps the
pretrained convolutions and the middle fully-connected layer by name and shape; the first and
last fully-connected layers change shape (128 mel bands instead of 64, and ``d`` outputs instead
of 128) and start fresh. What reaches it (decibels, patches, pool, band norm, noise) is
``astra.model.audio_frontend``; the mel power itself comes from ``astra.data.audio_features``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from astra.config import VGGISH_POOL_AFTER
from astra.data.audio_features import AudioError

log = logging.getLogger(__name__)

__all__ = ["AudioError", "VGGishBackbone", "VGGishLoadReport", "load_vggish_weights"]


class VGGishBackbone(nn.Module):
    """VGGish-style CNN: ``[N, 1, patch_frames, mel_bins]`` log-mel patches -> ``[N, d]``.

    Convolutions (3x3, padding 1, ReLU) in four blocks of 1, 1, 2 and 2
    layers, each block closed by a 2x2 max-pool, as VGGish; then
    Linear(flatten, h_1), ReLU, ..., Linear(h_k, d), ReLU. ``conv_channels``
    and ``hidden_dims`` let a small preset shrink it; the flatten size follows
    from them (512 * 6 * 8 = 24576 for the paper preset). Without convolutions
    (``conv_channels`` empty) the patch itself is flattened into the fully-connected
    layers: a band-level front end for small models, which pairs with a pooled patch
    (``model.audio_input_pool``) and per-clip band normalisation (``model.audio_clip_norm``).
    """

    def __init__(
        self,
        mel_bins: int,
        patch_frames: int,
        conv_channels: Sequence[int],
        hidden_dims: Sequence[int],
        output_dim: int,
    ) -> None:
        super().__init__()
        if conv_channels and len(conv_channels) != len(VGGISH_POOL_AFTER):
            raise ValueError(
                f"audio_conv_channels must list {len(VGGISH_POOL_AFTER)} convolutions "
                f"(VGGish blocks of 1, 1, 2, 2) or none, got {list(conv_channels)}"
            )
        layers: list[nn.Module] = []
        in_channels, height, width = 1, patch_frames, mel_bins
        pools = VGGISH_POOL_AFTER if conv_channels else ()
        for out_channels, pool in zip(conv_channels, pools, strict=True):
            layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                height, width = height // 2, width // 2
            in_channels = out_channels
        if height < 1 or width < 1:
            raise ValueError(
                f"audio patches of {patch_frames} frames x {mel_bins} mel bins are too small "
                "for four 2x2 max-pools (16 x 16 at least)"
            )
        # Channels-last: side by side on CPU (oneDNN) the paper's convolutions run at most about 1.2x
        # faster, forward and backward, than in the default layout (BENCHMARKS.md), and not faster
        # under heavy load; PyTorch recommends the layout for convolutions on GPU tensor cores.
        self.features = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        self.flatten_dim = in_channels * height * width
        dims = [self.flatten_dim, *hidden_dims, output_dim]
        fully_connected: list[nn.Module] = []
        for fan_in, fan_out in itertools.pairwise(dims):
            fully_connected += [nn.Linear(fan_in, fan_out), nn.ReLU(inplace=True)]
        self.embeddings = nn.Sequential(*fully_connected)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``[N, 1, patch_frames, mel_bins]`` -> ``[N, d]``."""
        x = self.features(patches.contiguous(memory_format=torch.channels_last))
        # x: [N, C, patch_frames / 16, mel_bins / 16]
        # Channel-major flatten: the first fully-connected layer is never pretrained,
        # so the port's channel-last order need not be kept.
        return self.embeddings(x.flatten(1))


@dataclass(frozen=True)
class VGGishLoadReport:
    """What ``load_vggish_weights`` did, by parameter name of the backbone."""

    loaded: tuple[str, ...]  # taken from the file
    skipped: tuple[str, ...]  # in the file, but no parameter of that name and shape
    fresh: tuple[str, ...]  # parameters of the backbone that keep their initialisation


def load_vggish_weights(model: nn.Module, path: str | Path) -> VGGishLoadReport:
    """Copy AudioSet VGGish weights into the audio backbone, layer by layer, where names and shapes fit.

    ``model`` is an ``AstraModel`` with audio or a ``VGGishBackbone``; ``path``
    is a state dict of the common PyTorch port (``features.{0,3,6,8,11,13}``,
    ``embeddings.{0,2,4}``; for instance ``vggish-10086976.pth``). Nothing is
    downloaded. With the paper preset the six convolutions and the middle
    4096 x 4096 layer load; the first and last layers start fresh.
    """
    path = Path(path)
    backbone = model if isinstance(model, VGGishBackbone) else getattr(model, "audio_backbone", None)
    if not isinstance(backbone, VGGishBackbone):
        raise AudioError(f"{path}: the model has no audio backbone to load VGGish weights into")
    if len(backbone.features) == 0:
        raise AudioError(
            f"{path}: the audio backbone has no convolutions (model.audio_conv_channels: []); "
            "VGGish weights fit only the CNN"
        )
    state = _read_state_dict(path)
    own = backbone.state_dict()
    # A layer loads whole or not at all: the port's first layer has a bias of our shape (4096)
    # but a weight of another, and half a layer would be meaningless.
    layers: dict[str, list[str]] = {}
    for name in state:
        layers.setdefault(name.rpartition(".")[0], []).append(name)
    loaded, skipped = [], []
    for names in layers.values():
        if all(name in own and own[name].shape == state[name].shape for name in names):
            loaded += names
            continue
        for name in names:
            shape = "absent" if name not in own else f"ours {tuple(own[name].shape)}"
            skipped.append(f"{name} {tuple(state[name].shape)} ({shape})")
    if not loaded:
        raise AudioError(
            f"{path}: no tensor fits the audio backbone by name and shape "
            f"(file keys: {', '.join(sorted(state)[:8])}...); expected the VGGish port's "
            "features.* and embeddings.* state dict"
        )
    with torch.no_grad():
        for name in loaded:
            own[name].copy_(state[name])
    loaded_names = set(loaded)
    fresh = tuple(name for name in own if name not in loaded_names)
    report = VGGishLoadReport(loaded=tuple(loaded), skipped=tuple(skipped), fresh=fresh)
    log.info(
        "VGGish weights from %s: loaded %d tensors (%s); skipped %d (%s); fresh: %s",
        path,
        len(report.loaded),
        ", ".join(report.loaded),
        len(report.skipped),
        "; ".join(report.skipped) or "none",
        ", ".join(report.fresh) or "none",
    )
    return report


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    if not path.is_file():
        raise AudioError(f"{path}: VGGish weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a file that is not a checkpoint
        raise AudioError(f"{path}: not a PyTorch state dict ({type(error).__name__}: {error})") from None
    if not isinstance(state, Mapping) or not state:
        raise AudioError(
            f"{path}: expected a non-empty state dict (name -> tensor), got {type(state).__name__}"
        )
    bad = [name for name, value in state.items() if not isinstance(name, str) or not torch.is_tensor(value)]
    if bad:
        raise AudioError(f"{path}: expected a state dict of tensors; {bad[0]!r} is not a named tensor")
    return state
