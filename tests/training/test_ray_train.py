"""The Ray Train wrapper: two CPU workers with DDP run the same loop and resume by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from astra.data.dataset import DataRoots

pytestmark = pytest.mark.slow  # a Ray cluster start and two worker processes: minutes on 2 cores


def test_two_workers_train_report_epochs_and_resume_by_name(
    tiny_dataset, tiny_config, tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray")
    from astra.training.ray_train import train_with_ray

    config = tiny_config("model.use_audio=false", "train.epochs=1")
    ray.init(num_cpus=2)
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
