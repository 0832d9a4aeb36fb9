"""The speed switches of ``train`` (reuse_host_memory, prepare_audio_in_loader,
validation_audio_from_half) compute what the plain path computes: the same training, the same
validation outputs; each fails clearly where it cannot work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from astra.config import SPEED_SWITCHES, ConfigError, load_config
from astra.data.clips import slice_audio_frames
from astra.data.dataset import DataRoots, load_split
from astra.inference import predict_half
from astra.model import build_model
from astra.training import checkpoint, host_memory
from astra.training import loop as training_loop
from astra.training.clip_dataset import ClipDataset, epoch_plan
from astra.training.loop import fit
from astra.training.run_folder import identity_differences, run_identity
from astra.training.validation_audio import WindowAudioInputs, predict_half_pooled

ROOT = Path(__file__).resolve().parents[2]
# Every switch that astra.config names as one (a run resumes, a P1 continues, with it changed) is
# checked here to change no value.
SWITCHES = SPEED_SWITCHES


def _switch(config, name: str) -> bool:
    section, key = name.split(".")
    return getattr(getattr(config, section), key)


# The small preset's audio path (pooled 8 x 4 in prepare, clip norm, one Linear) and its training
# extras (whitening, balanced mixup, the weight average) on the tiny model.
POOLED_AUDIO = [
    "model.audio_conv_channels=[]",
    "model.audio_hidden_dims=[]",
    "model.audio_input_pool=[8, 4]",
    "model.audio_clip_norm=true",
    # The block attention switch acts on a biased encoder without dropout.
    "model.encoder_locality_bias=3.0",
    "model.transformer_dropout=0",
    "model.feature_whitening=true",
    "model.temporal_dropout_p=0",
    "model.temporal_switch_p=0",
    "augment.mixup=balanced",
    "train.ema_decay=0.9",
    "train.epochs=2",
]


def test_the_switches_are_off_by_default_and_on_in_the_small_preset() -> None:
    plain = load_config([])
    small = load_config([ROOT / "configs" / "small.yaml"])
    assert not any(_switch(plain, name) for name in SWITCHES)
    assert all(_switch(small, name) for name in SWITCHES), "configs/small.yaml"


def test_a_run_resumes_with_the_switches_changed(tiny_dataset, tiny_config) -> None:
    roots = DataRoots.single(tiny_dataset.root)
    before = run_identity(tiny_config(), roots)
    after = run_identity(tiny_config(*(f"{name}=true" for name in SWITCHES)), roots)
    assert identity_differences(before, after) == []


# The switches that compute each value as the plain path does; the encoder's block attention sums
# the same terms in another order (float rounding apart, the same attention).
EXACT = tuple(name for name in SWITCHES if name != "model.encoder_block_attention")


@pytest.mark.parametrize("exact", [True, False], ids=["exact switches", "every switch"])
def test_the_switches_train_the_same_weights_and_report_the_same_metrics(
    tiny_dataset, tiny_config, tmp_path: Path, monkeypatch, exact: bool
) -> None:
    # The allocator setting changes no value; it is process-wide, so this process only records the
    # call (test_reuse_freed_memory_in_a_process_of_its_own makes it for real).
    calls: list[bool] = []
    monkeypatch.setattr(training_loop, "reuse_freed_memory", lambda: calls.append(True))
    roots = DataRoots.single(tiny_dataset.root)
    runs = {}
    switched_on = EXACT if exact else SWITCHES
    for name, switches in (("plain", []), ("switched", [f"{s}=true" for s in switched_on])):
        reports: list[dict[str, float]] = []
        config = tiny_config(*POOLED_AUDIO, *switches)
        fit(
            config, roots, tmp_path / name, reporter=lambda m, _, seen=reports: seen.append(m), progress=False
        )
        saved = checkpoint.load(tmp_path / name / "checkpoints" / "last.pt")
        runs[name] = (reports, saved)
    assert calls == [True]
    (plain_reports, plain), (switched_reports, switched) = runs["plain"], runs["switched"]
    for before, after in zip(plain_reports, switched_reports, strict=True):
        for key in ("train_loss", "valid_tight_a_map", "best_valid_tight_a_map"):
            assert after[key] == pytest.approx(before[key], rel=1e-6, abs=1e-7), key
    for part in ("model", "ema"):
        for name, tensor in plain[part].items():
            if name.endswith("in_proj_bias") and not exact:
                # The keys' bias: zero gradient in exact arithmetic (softmax ignores a constant
                # added to every key's logit), so Adam steps it on rounding noise alone.
                third = tensor.shape[0] // 3
                keep = torch.ones_like(tensor, dtype=torch.bool)
                keep[third : 2 * third] = False
                torch.testing.assert_close(switched[part][name][keep], tensor[keep], rtol=1e-4, atol=1e-5)
                continue
            tolerance = {"rtol": 1e-5, "atol": 1e-6} if exact else {"rtol": 1e-4, "atol": 1e-4}
            torch.testing.assert_close(switched[part][name], tensor, **tolerance, msg=name)
    for name in ("features", "audio", "class_targets", "displacement_targets"):
        torch.testing.assert_close(switched["mixup"][name], plain["mixup"][name], equal_nan=True, msg=name)


def test_clips_prepared_in_the_loader_are_the_batch_prepared(tiny_dataset, tiny_config) -> None:
    config = tiny_config(*POOLED_AUDIO)
    halves = load_split(
        DataRoots.single(tiny_dataset.root), "train", with_audio=True, require_labels=True, progress=False
    )
    model = build_model(config.model, config.clips, load_pretrained=False)
    plan = epoch_plan(halves, config.clips, seed=0, epoch=0)
    raw = ClipDataset(halves, plan, config.clips, with_audio=True)
    prepared = ClipDataset(halves, plan, config.clips, with_audio=True, prepare_audio=model.prepare_audio)
    batch = torch.stack([torch.from_numpy(raw[i][1]) for i in range(4)])
    loaded = torch.stack([prepared[i][1] for i in range(4)])
    assert tuple(loaded.shape[1:]) == model.audio_frontend.input_shape
    torch.testing.assert_close(loaded, model.prepare_audio(batch), rtol=0, atol=0)
    for got, want in zip(prepared[0], raw[0], strict=True):  # everything else as it was
        if isinstance(want, np.ndarray) and want.shape == got.shape:
            np.testing.assert_array_equal(got, want)


def test_training_clips_from_the_halves_pools_are_the_clips_prepared(tiny_dataset, tiny_config) -> None:
    config = tiny_config(*POOLED_AUDIO, "train.training_audio_from_half=true")
    halves = load_split(
        DataRoots.single(tiny_dataset.root), "train", with_audio=True, require_labels=True, progress=False
    )
    model = build_model(config.model, config.clips, load_pretrained=False)
    pooled = training_loop.clip_audio_from_halves(model, halves, config)
    assert pooled is not None
    # Clips of every second of each half (both tile phases; the last ones padded past the end).
    plan = np.array(
        [[index, second] for index, half in enumerate(halves) for second in range(half.num_seconds)]
    )
    own = ClipDataset(halves, plan, config.clips, with_audio=True, prepare_audio=model.prepare_audio)
    from_halves = ClipDataset(
        halves, plan, config.clips, with_audio=True, prepare_audio=model.prepare_audio, pooled_audio=pooled
    )
    served = 0
    for row in range(len(plan)):
        served += pooled.clip_input(*plan[row]) is not None
        for got, want in zip(from_halves[row], own[row], strict=True):
            if isinstance(want, torch.Tensor):
                torch.testing.assert_close(got, want, rtol=0, atol=0)
            else:
                np.testing.assert_array_equal(got, want)
    assert served == len(plan)  # the simulator's audio never lies 80 dB under a clip's maximum
    # Off, without audio, or with a front end that does not pool early: no pools.
    for overrides in (
        ["train.training_audio_from_half=false"],
        ["model.use_audio=false"],
        ["model.audio_input_pool=[1, 1]"],
    ):
        other = tiny_config(*POOLED_AUDIO, "train.training_audio_from_half=true", *overrides)
        other_model = build_model(other.model, other.clips, load_pretrained=False)
        assert training_loop.clip_audio_from_halves(other_model, halves, other) is None, overrides


def test_validation_audio_from_the_half_gives_predict_halfs_outputs(tiny_dataset, tiny_config) -> None:
    config = tiny_config(*POOLED_AUDIO)
    halves = load_split(
        DataRoots.single(tiny_dataset.root), "valid", with_audio=True, require_labels=True, progress=False
    )
    torch.manual_seed(0)
    model = build_model(config.model, config.clips, load_pretrained=False)
    dims = config.model.visual_dims
    model.visual_whitening.fit([np.zeros(d) for d in dims], [np.eye(d) for d in dims])
    model.eval()
    device = torch.device("cpu")
    for half in halves:
        expected = predict_half(model, half, config.clips, config.inference, with_audio=True, device=device)
        got = predict_half_pooled(model, half, config.clips, config.inference, device=device)
        np.testing.assert_array_equal(got, expected)


def test_window_inputs_take_their_own_pass_where_the_floor_binds(tiny_config) -> None:
    config = tiny_config(*POOLED_AUDIO)
    frontend = build_model(config.model, config.clips, load_pretrained=False).audio_frontend
    clip_frames = frontend.clip_frames
    rng = np.random.default_rng(0)
    decibels = rng.uniform(-60, 0, size=(128, 3 * clip_frames)).astype(np.float32)
    decibels[:, 2500:2600] = -150.0  # silence: more than 80 dB under the loud parts around it
    decibels[:, -1] = 5.0  # the last frame, repeated past the end, raises the last window's maximum
    # Windows on both tile phases (frame 100 s is 0 or 4 past the 8-frame grid), through the silence,
    # and past the end (padded with the last frame).
    firsts = np.array([0, 100, 800, 2000, 2100, 3 * clip_frames - 800, 3 * clip_frames - 100])
    inputs = WindowAudioInputs(decibels, frontend, firsts, device=torch.device("cpu"))
    assert inputs.floor_binds.any() and not inputs.floor_binds.all()
    windows = slice_audio_frames(decibels, firsts, clip_frames, decibels.shape[1])
    expected = frontend.prepare_decibels(torch.from_numpy(windows))
    torch.testing.assert_close(inputs.windows(0, len(firsts)), expected, rtol=0, atol=0)
    torch.testing.assert_close(inputs.windows(2, 5), expected[2:5], rtol=0, atol=0)


def test_reuse_freed_memory_in_a_process_of_its_own() -> None:
    code = "from astra.training.host_memory import reuse_freed_memory as r; r(); r(); print('ok')"
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "ok"


def test_reuse_freed_memory_names_the_switch_without_glibc(monkeypatch) -> None:
    monkeypatch.setattr(host_memory.ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(host_memory, "_applied", False)
    with pytest.raises(ConfigError, match=r"train.reuse_host_memory needs glibc's mallopt.*=false"):
        host_memory.reuse_freed_memory()
