"""Ray Train at the edge: a TorchTrainer whose workers run :func:`astra.training.loop.fit`.

Each worker gets the process group (DDP) from Ray; rank 0 writes checkpoints and
hands them to ``ray.train.report``, every worker reports once per epoch (Ray
requires the same number of reports from each). A run restarted with the same
``name`` and ``storage_path`` resumes from its last reported checkpoint.
Inside a Ray Tune trial, pass ``callbacks=[TuneReportCallback()]`` so that rank 0's
metrics reach Tune (see ``search``).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from astra.config import ExperimentConfig, config_from_dict
from astra.data.dataset import DataRoots

log = logging.getLogger(__name__)


def connect_ray() -> str | None:
    """Join the Ray cluster this process is meant for, or start one in this process.

    As ``ray.init()`` does: ``RAY_ADDRESS`` if set, else the cluster last started on this
    machine (``ray start``, ``ray up``; what ``ray submit`` runs on), else a new local one.
    A cluster recorded on this machine whose port no longer answers (stopped without ``ray
    stop``: killed, or the machine restarted) is reported and passed over for a local one;
    Ray itself would retry it for many minutes.

    Returns "local" when it started a Ray in this process, "cluster" when it joined one, None
    when Ray was already initialised here (by the caller, who then shuts it down).
    """
    import os
    import socket

    import ray
    from ray._common.utils import get_ray_address_file

    if ray.is_initialized():
        return None
    recorded = Path(get_ray_address_file(None))
    if not os.environ.get("RAY_ADDRESS") and recorded.is_file():
        host, _, port = recorded.read_text().strip().rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except (OSError, ValueError):
            log.warning(
                "the Ray cluster recorded in %s (%s:%s) does not answer; starting a local Ray",
                recorded, host, port,
            )  # fmt: skip
            ray.init(address="local")
            return "local"
    ray.init()
    joined = os.environ.get("RAY_ADDRESS", "local") != "local" or recorded.is_file()
    return "cluster" if joined else "local"


def train_with_ray(
    config: ExperimentConfig,
    roots: DataRoots,
    out_dir: str | Path,
    *,
    num_workers: int = 1,
    use_gpu: bool = False,
    name: str = "astra",
    storage_path: str | None = None,
    max_failures: int = 0,
    callbacks: list[Any] | None = None,
    report_unvalidated: bool = True,
    cpus_per_worker: float = 1.0,
) -> Any:
    """Run ``fit`` on ``num_workers`` Ray Train workers; returns Ray's ``Result``.

    ``report_unvalidated=False`` reports only validated epochs (a search: an epoch without
    validation carries no fresh score for a scheduler to act on).
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={
            "config": config.to_dict(),
            "roots": roots,  # a frozen dataclass of paths: pickled as it is, fields by name
            "out_dir": str(Path(out_dir).resolve()),
            "report_unvalidated": report_unvalidated,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker}
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path or str(Path(out_dir).resolve() / "ray"),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            # Only what resuming needs: Ray keeps every reported checkpoint unless told otherwise
            # (2.7 GB an epoch at the paper's size); best.pt stays in the run folder.
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            callbacks=callbacks,
        ),
    )
    return trainer.fit()


def _train_worker(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from astra.files import link_or_copy
    from astra.training import checkpoint as checkpoint_files
    from astra.training.loop import fit

    # A Ray worker's root logger has no handler: without one, the epoch lines and progress go nowhere.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    config = config_from_dict(loop_config["config"])
    roots: DataRoots = loop_config["roots"]
    rank = ray.train.get_context().get_world_rank()
    out_dir = Path(loop_config["out_dir"])
    if rank != 0:
        # Other ranks keep their (unused) files apart from rank 0's.
        out_dir = out_dir / f"rank{rank}"

    # The run folder's own last.pt is at least as new as the copy Ray holds (it is reported after
    # it is saved); Ray's copy serves a worker that restarts where that folder is not (another node).
    resume_from = None
    staging = tempfile.TemporaryDirectory(prefix="astra-resume-")
    restored = ray.train.get_checkpoint()
    if restored is not None and not (out_dir / "checkpoints" / checkpoint_files.LAST).is_file():
        restored_dir = Path(restored.to_directory(staging.name))
        if (restored_dir / checkpoint_files.LAST).is_file():
            resume_from = restored_dir / checkpoint_files.LAST

    def report(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        if not loop_config.get("report_unvalidated", True) and not metrics.get("validated", 1.0):
            return  # every rank sees the same flag: the ranks still report equally often
        if checkpoint_dir is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="astra-report-") as folder:
            # Only the resumable state travels to Ray's storage; best.pt stays under out_dir.
            link_or_copy(checkpoint_dir / checkpoint_files.LAST, Path(folder, checkpoint_files.LAST))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    try:
        fit(
            config,
            roots,
            out_dir,
            reporter=report,
            resume_from=resume_from,
            device=ray.train.torch.get_device(),
            progress=rank == 0,
        )
    finally:
        staging.cleanup()
