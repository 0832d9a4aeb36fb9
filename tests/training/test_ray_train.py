"""The Ray Train wrapper: workers run the same loop, report each epoch and resume by name."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from astra.data.dataset import DataRoots


def test_one_worker_trains_reports_and_keeps_one_checkpoint_in_ray_storage(
    tiny_dataset, tiny_config, tmp_path: Path
) -> None:
    """Two epochs, two reports with a checkpoint each: Ray's storage keeps the last one only."""
    ray = pytest.importorskip("ray")
    from astra.training.ray_train import train_with_ray

    config = tiny_config("model.use_audio=false", "train.epochs=2")
    ray.init(address="local", num_cpus=1, include_dashboard=False, configure_logging=False)
    try:
        result = train_with_ray(
            config, DataRoots.single(tiny_dataset.root), tmp_path, num_workers=1, name="one"
        )
    finally:
        ray.shutdown()
    assert result.error is None
    assert result.metrics["epoch"] == 2
    assert math.isfinite(result.metrics["best_valid_tight_a_map"])
    assert 0.0 <= result.metrics["best_valid_tight_a_map"] <= 1.0
    assert result.checkpoint is not None
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    kept = [path for path in (tmp_path / "ray" / "one").glob("checkpoint_*") if path.is_dir()]
    assert len(kept) == 1, kept  # epoch 2's; epoch 1's was deleted
    assert [p.name for p in kept[0].iterdir()] == ["last.pt"]
    from astra.training import checkpoint

    assert checkpoint.load(kept[0] / "last.pt")["training"]["epoch"] == 1  # 0-based: epoch 2


@pytest.mark.slow  # a Ray cluster start and two worker processes: minutes on 2 cores
def test_two_workers_train_report_epochs_and_resume_by_name(
    tiny_dataset, tiny_config, tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray")
    from astra.training.ray_train import train_with_ray

    config = tiny_config("model.use_audio=false", "train.epochs=1")
    ray.init(address="local", num_cpus=2)
    try:
        first = train_with_ray(
            config, DataRoots.single(tiny_dataset.root), tmp_path, num_workers=2, name="run"
        )
        assert first.metrics["epoch"] == 1
        assert first.checkpoint is not None
        assert (tmp_path / "checkpoints" / "last.pt").is_file()
        longer = tiny_config("model.use_audio=false", "train.epochs=2")
        second = train_with_ray(
            longer, DataRoots.single(tiny_dataset.root), tmp_path, num_workers=2, name="run"
        )
        assert second.metrics["epoch"] == 2  # resumed after epoch 1, not restarted
    finally:
        ray.shutdown()
