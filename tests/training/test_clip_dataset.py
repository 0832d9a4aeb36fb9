"""Epoch plans and clip items: the same plan for a seed and epoch on every worker, whole batches per rank."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from astra.classes import NUM_CLASSES
from astra.data.dataset import DataRoots, Half, load_split
from astra.training.clip_dataset import ClipDataset, epoch_plan, shard


@pytest.fixture
def halves(tiny_dataset) -> list[Half]:
    """The six halves of the tiny dataset, with audio."""
    return load_split(
        DataRoots.single(tiny_dataset.root),
        "train+valid+test",
        with_audio=True,
        require_labels=True,
        progress=False,
    )


def _rows(plan: np.ndarray) -> set[tuple[int, int]]:
    return {(int(h), int(s)) for h, s in plan}


def test_the_plan_depends_only_on_seed_and_epoch(halves, tiny_config) -> None:
    clips = tiny_config().clips
    first = epoch_plan(halves, clips, seed=7, epoch=3)
    np.testing.assert_array_equal(first, epoch_plan(halves, clips, seed=7, epoch=3))
    assert first.dtype == np.int64 and first.shape[1] == 2
    assert not np.array_equal(first, epoch_plan(halves, clips, seed=7, epoch=4))
    assert not np.array_equal(first, epoch_plan(halves, clips, seed=8, epoch=3))


def test_every_half_gives_non_overlapping_clips_inside_it(halves, tiny_config) -> None:
    clips = tiny_config().clips
    plan = epoch_plan(halves, clips, seed=0, epoch=0)
    assert len(_rows(plan)) == len(plan)  # no clip twice
    assert set(plan[:, 0].tolist()) == set(range(len(halves)))
    for index, half in enumerate(halves):
        starts = np.sort(plan[plan[:, 0] == index, 1])
        assert (starts % clips.train_stride_seconds == 0).all()
        assert (starts < half.num_seconds).all()
        assert (np.diff(starts) >= clips.clip_seconds).all()  # one phase: clips only touch


def test_max_clips_keeps_that_many_of_the_same_epoch(halves, tiny_config) -> None:
    clips = tiny_config().clips
    full = epoch_plan(halves, clips, seed=1, epoch=2)
    capped = epoch_plan(halves, clips, seed=1, epoch=2, max_clips=5)
    assert len(capped) == 5
    assert _rows(capped) <= _rows(full)
    uncapped = epoch_plan(halves, clips, seed=1, epoch=2, max_clips=len(full) + 10)
    np.testing.assert_array_equal(uncapped, full)


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_shards_are_disjoint_equal_and_whole_batches(
    halves, tiny_config, world_size: int, batch_size: int
) -> None:
    plan = epoch_plan(halves, tiny_config().clips, seed=0, epoch=0)
    shards = [shard(plan, rank, world_size, batch_size) for rank in range(world_size)]
    lengths = {len(part) for part in shards}
    assert len(lengths) == 1  # DDP hangs when one rank runs more steps than another
    (per_worker,) = lengths
    assert per_worker % batch_size == 0 and per_worker > 0
    seen = [_rows(part) for part in shards]
    assert sum(len(rows) for rows in seen) == world_size * per_worker
    assert set().union(*seen) <= _rows(plan)
    # At most one batch per worker (plus the remainder of the division) is left out.
    assert len(plan) - world_size * per_worker < world_size * (batch_size + 1)


def test_items_have_the_model_shapes_and_types(halves, tiny_config, tiny_dataset) -> None:
    clips = tiny_config().clips
    plan = epoch_plan(halves, clips, seed=0, epoch=0)
    dataset = ClipDataset(halves, plan, clips, with_audio=True)
    assert len(dataset) == len(plan)
    features, audio, classification, displacement = dataset[0]
    num_outputs = clips.clip_seconds * clips.outputs_per_second
    assert features.shape == (clips.clip_seconds, tiny_dataset.feature_dim)
    assert audio.shape == (clips.mel_bins, clips.clip_seconds * 100)
    assert classification.shape == displacement.shape == (num_outputs, NUM_CLASSES + 1)
    for array in (features, audio, classification, displacement):
        assert array.dtype == np.float32
    half_index, start = plan[0]
    half = halves[int(half_index)]
    on_disk = tiny_dataset.features(half.game, half.half)
    end = min(int(start) + clips.clip_seconds, half.num_seconds)
    np.testing.assert_array_equal(features[: end - int(start)], on_disk[int(start) : end])


def test_items_without_audio_carry_an_empty_array_and_still_batch(halves, tiny_config) -> None:
    clips = tiny_config().clips
    plan = epoch_plan(halves, clips, seed=0, epoch=0)
    dataset = ClipDataset(halves, plan, clips, with_audio=False)
    _, audio, _, _ = dataset[0]
    assert audio.shape == (0,) and audio.dtype == np.float32
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, shuffle=False)
    features, audio, classification, _ = next(iter(loader))
    assert features.shape[0] == audio.shape[0] == classification.shape[0] == 3
    assert audio.shape == (3, 0)
