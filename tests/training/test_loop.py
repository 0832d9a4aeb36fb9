"""The training loop on the tiny dataset: checkpoints, reports, resume, seeds, atomic saves."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from astra.config import ConfigError, config_from_dict, load_config
from astra.data.dataset import DataRoots
from astra.model import build_model
from astra.training import checkpoint
from astra.training.loop import _weight_average, fit


class Interrupt(Exception):
    pass


def test_fit_writes_checkpoints_config_and_reports_each_epoch(
    tiny_dataset, tiny_config, tmp_path: Path
) -> None:
    reports: list[tuple[dict[str, float], Path | None]] = []
    result = fit(
        tiny_config("model.use_audio=false"),
        DataRoots.single(tiny_dataset.root),
        tmp_path,
        reporter=lambda metrics, folder: reports.append((metrics, folder)),
        progress=False,
    )
    assert [metrics["epoch"] for metrics, _ in reports] == [1, 2, 3]
    assert all(folder == tmp_path / "checkpoints" for _, folder in reports)
    assert {"train_loss", "valid_tight_a_map", "best_valid_tight_a_map", "learning_rate"} <= set(
        reports[0][0]
    )
    assert result.epochs_run == 3
    assert result.best_valid_tight_a_map == max(metrics["valid_tight_a_map"] for metrics, _ in reports)
    for name in ("last.pt", "best.pt"):
        assert (tmp_path / "checkpoints" / name).is_file()
    assert (tmp_path / "config.yaml").is_file()
    assert any((tmp_path / "tensorboard").iterdir())
    saved = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    assert saved["training"]["epoch"] == 2
    assert load_config([tmp_path / "config.yaml"]) == tiny_config("model.use_audio=false")


def test_without_a_held_out_split_every_epoch_trains_unvalidated_and_best_pt_is_the_last(
    tiny_dataset, tiny_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Protocol P2: train on train+valid+test for a set number of epochs, no validation, no early stop."""
    from astra.training import loop

    def no_validation(*args, **kwargs):
        raise AssertionError("validated without a held-out split")

    monkeypatch.setattr(loop, "validate", no_validation)
    config = tiny_config(
        "model.use_audio=false", "data.train_split=train+valid+test", "data.valid_split=''",
        "train.epochs=2", "train.patience_epochs=1",
    )  # fmt: skip
    reports: list[dict[str, float]] = []
    result = fit(
        config, DataRoots.single(tiny_dataset.root), tmp_path, reporter=lambda m, _: reports.append(m)
    )
    assert [m["epoch"] for m in reports] == [1, 2] and result.epochs_run == 2  # patience 1: no early stop
    assert all(m["validated"] == 0.0 for m in reports)
    best = checkpoint.load(tmp_path / "checkpoints" / "best.pt")
    last = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    assert best["training"]["epoch"] == 1 and last["training"]["best_epoch"] == 1
    kept = checkpoint.inference_weights(last)  # the weight average where the run keeps one
    for key, value in best["model"].items():
        torch.testing.assert_close(value, kept[key], rtol=0, atol=0)
    identity = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    assert list(identity["splits"]) == ["train+valid+test"]


def test_an_interrupted_run_resumes_to_the_same_weights(tiny_dataset, tiny_config, tmp_path: Path) -> None:
    roots = DataRoots.single(tiny_dataset.root)
    config = tiny_config()  # with audio and balanced mixup: every source of randomness
    fit(config, roots, tmp_path / "straight", progress=False)

    def stop_after_epoch_2(metrics: dict[str, float], _: Path | None) -> None:
        if metrics["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(config, roots, tmp_path / "resumed", reporter=stop_after_epoch_2, progress=False)
    seen: list[float] = []
    fit(config, roots, tmp_path / "resumed", reporter=lambda m, _: seen.append(m["epoch"]), progress=False)
    assert seen == [3]
    straight = checkpoint.load(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    resumed = checkpoint.load(tmp_path / "resumed" / "checkpoints" / "last.pt")["model"]
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_an_interrupted_run_resumes_on_a_gpu(tiny_dataset, tiny_config, tmp_path: Path) -> None:
    # Checkpoints hold CPU random-generator states, which a load mapped onto the GPU used to break.
    roots = DataRoots.single(tiny_dataset.root)
    config = tiny_config("train.mixed_precision=bf16")

    def stop_after_epoch_1(metrics: dict[str, float], _: Path | None) -> None:
        if metrics["epoch"] == 1:
            raise Interrupt

    device = torch.device("cuda")
    with pytest.raises(Interrupt):
        fit(config, roots, tmp_path, reporter=stop_after_epoch_1, device=device, progress=False)
    seen: list[float] = []
    fit(config, roots, tmp_path, reporter=lambda m, _: seen.append(m["epoch"]), device=device, progress=False)
    assert seen == [2, 3]


def test_a_run_in_bf16_on_the_cpu_trains_validates_and_resumes(
    tiny_dataset, tiny_config, tmp_path: Path
) -> None:
    # train.mixed_precision=bf16: autocast in bf16 on the CPU too, validation included; the weights,
    # the checkpoints and the validation outputs stay float32.
    roots = DataRoots.single(tiny_dataset.root)
    config = tiny_config("train.mixed_precision=bf16")

    def stop_after_epoch_1(metrics: dict[str, float], _: Path | None) -> None:
        if metrics["epoch"] == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(config, roots, tmp_path, reporter=stop_after_epoch_1, progress=False)
    seen: list[dict[str, float]] = []
    fit(config, roots, tmp_path, reporter=lambda m, _: seen.append(m), progress=False)
    assert [m["epoch"] for m in seen] == [2, 3]
    assert all(np.isfinite(m["train_loss"]) and 0 <= m["valid_tight_a_map"] <= 1 for m in seen)
    saved = checkpoint.load(tmp_path / "checkpoints" / "best.pt")["model"]
    assert {t.dtype for t in saved.values() if t.is_floating_point()} == {torch.float32}


def test_whitening_is_fitted_on_the_training_split_and_kept_on_resume(
    tiny_dataset, tiny_config, tmp_path: Path
) -> None:
    from astra.data.dataset import load_split

    config = tiny_config("model.use_audio=false", "model.feature_whitening=true", "train.epochs=1")
    roots = DataRoots.single(tiny_dataset.root)
    fit(config, roots, tmp_path, progress=False)
    saved = checkpoint.load(tmp_path / "checkpoints" / "last.pt")["model"]
    train = load_split(roots, "train", with_audio=False, require_labels=True, progress=False)
    features = np.concatenate([np.asarray(h.features, dtype=np.float64) for h in train])
    assert bool(saved["visual_whitening.fitted"])
    np.testing.assert_allclose(saved["visual_whitening.mean_0"].numpy(), features[:, :8].mean(0), atol=1e-5)
    # A resumed run takes the statistics from the checkpoint: altered ones stay as saved.
    altered = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    altered["model"]["visual_whitening.mean_0"] += 1.0
    checkpoint.save_atomic(altered, tmp_path / "checkpoints" / "last.pt")
    fit(replace_epochs(config, 2), roots, tmp_path, progress=False)
    resumed = checkpoint.load(tmp_path / "checkpoints" / "last.pt")["model"]
    key = "visual_whitening.mean_0"
    torch.testing.assert_close(resumed[key], altered["model"][key])


def replace_epochs(config, epochs: int):
    return dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))


def test_validation_every_k_epochs_picks_the_best_among_validated_ones(
    tiny_dataset, tiny_config, tmp_path: Path
) -> None:
    config = tiny_config("model.use_audio=false", "train.epochs=5", "train.validate_every_epochs=2")
    reports: list[dict[str, float]] = []
    result = fit(
        config, DataRoots.single(tiny_dataset.root), tmp_path, reporter=lambda m, _: reports.append(m)
    )
    assert [m["epoch"] for m in reports] == [1, 2, 3, 4, 5]
    # Epochs 2 and 4 are validated, and the last one whatever k; the others carry the last score.
    assert [m["validated"] for m in reports] == [0.0, 1.0, 0.0, 1.0, 1.0]
    assert reports[0]["valid_tight_a_map"] == -1.0
    assert reports[2]["valid_tight_a_map"] == reports[1]["valid_tight_a_map"]
    assert result.best_epoch in (2, 4, 5)
    assert result.best_valid_tight_a_map == max(m["valid_tight_a_map"] for m in reports if m["validated"])
    # Validating less often than the patience: the run still validates and keeps a best checkpoint.
    sparse = tiny_config(
        "model.use_audio=false", "train.epochs=5", "train.validate_every_epochs=3", "train.patience_epochs=1"
    )
    seen: list[dict[str, float]] = []
    result = fit(
        sparse, DataRoots.single(tiny_dataset.root), tmp_path / "sparse", reporter=lambda m, _: seen.append(m)
    )
    assert [m["validated"] for m in seen] == [0.0, 0.0, 1.0, 0.0, 1.0]
    assert result.best_epoch in (3, 5) and (tmp_path / "sparse" / "checkpoints" / "best.pt").is_file()
    with pytest.raises(ConfigError, match="validate_every_epochs"):
        fit(tiny_config("train.validate_every_epochs=0"), DataRoots.single(tiny_dataset.root), tmp_path)


def test_a_finished_run_reports_its_last_metrics_again(tiny_dataset, tiny_config, tmp_path: Path) -> None:
    config = tiny_config("model.use_audio=false", "train.epochs=1")
    roots = DataRoots.single(tiny_dataset.root)
    first: list[dict[str, float]] = []
    fit(config, roots, tmp_path, reporter=lambda m, _: first.append(m), progress=False)
    again: list[dict[str, float]] = []
    fit(config, roots, tmp_path, reporter=lambda m, _: again.append(m), progress=False)
    assert again == first


def test_the_same_seed_gives_the_same_run_and_another_seed_does_not(
    tiny_dataset, tiny_config, tmp_path: Path
) -> None:
    roots = DataRoots.single(tiny_dataset.root)
    losses = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        reports: list[float] = []
        config = tiny_config("model.use_audio=false", "train.epochs=1", f"train.seed={seed}")
        fit(
            config,
            roots,
            tmp_path / name,
            reporter=lambda m, _, r=reports: r.append(m["train_loss"]),
            progress=False,
        )
        losses[name] = reports
    assert losses["a"] == losses["b"]
    assert losses["a"] != losses["c"]


def test_feature_width_that_does_not_match_the_config_is_named(
    tiny_dataset, tiny_config, tmp_path: Path
) -> None:
    with pytest.raises(
        ConfigError, match=r"model.visual_dims \[8, 8\] sum to 16, but .*baidu_soccer_embeddings.npy has 36"
    ):
        fit(
            tiny_config("model.visual_dims=[8, 8]"),
            DataRoots.single(tiny_dataset.root),
            tmp_path,
            progress=False,
        )


def test_a_save_that_fails_leaves_the_previous_checkpoint_intact(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    checkpoint.save_atomic({"model": {"w": torch.ones(3)}, "config": {}}, path)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_atomic({"model": {"w": torch.zeros(3)}, "config": {}}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]


def test_checkpoints_load_without_unpickling_arbitrary_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "payload": Interrupt()}, path)
    with pytest.raises(
        checkpoint.CheckpointError, match=r"evil\.pt: not a checkpoint that astra wrote"
    ) as caught:
        checkpoint.load(path)
    assert "weights_only" not in str(caught.value) and "Weights only" not in str(caught.value)
    (tmp_path / "other.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match=r"other\.pt"):
        checkpoint.load(tmp_path / "other.pt")
    with pytest.raises(checkpoint.CheckpointError, match="not found"):
        checkpoint.load(tmp_path / "missing.pt")


def test_weight_average_is_what_best_pt_holds_and_resumes_exactly(
    tiny_dataset, tiny_config, tmp_path: Path
) -> None:
    roots = DataRoots.single(tiny_dataset.root)
    config = tiny_config("model.use_audio=false", "train.ema_decay=0.9")
    # One epoch: its checkpoint is the best one, and best.pt must hold the average, not the raw weights.
    fit(replace_epochs(config, 1), roots, tmp_path / "one", progress=False)
    last = checkpoint.load(tmp_path / "one" / "checkpoints" / "last.pt")
    best = checkpoint.load(tmp_path / "one" / "checkpoints" / "best.pt")
    averaged = checkpoint.inference_weights(last)
    assert averaged.keys() == best["model"].keys()
    head = [k for k in averaged if k.startswith("classification_head")]
    assert head and not all(torch.equal(averaged[k], last["model"][k]) for k in head)
    for key, tensor in averaged.items():
        torch.testing.assert_close(best["model"][key], tensor, rtol=0, atol=0, msg=key)

    # Interrupted after epoch 2 and resumed: the same average as a run straight through.
    fit(config, roots, tmp_path / "straight", progress=False)
    straight = checkpoint.load(tmp_path / "straight" / "checkpoints" / "last.pt")

    def stop_after_epoch_2(metrics: dict[str, float], _: Path | None) -> None:
        if metrics["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(config, roots, tmp_path / "resumed", reporter=stop_after_epoch_2, progress=False)
    fit(config, roots, tmp_path / "resumed", progress=False)
    resumed = checkpoint.load(tmp_path / "resumed" / "checkpoints" / "last.pt")
    for key, tensor in straight["ema"].items():
        torch.testing.assert_close(resumed["ema"][key], tensor, rtol=0, atol=0, msg=key)


def test_weight_average_decay_out_of_range_is_named(tiny_config) -> None:
    with pytest.raises(ConfigError, match=r"train\.ema_decay must be < 1"):
        tiny_config("model.use_audio=false", "train.ema_decay=1.0")  # refused before any data loads


def test_weight_average_follows_the_weights_early_and_then_decays_at_the_set_rate() -> None:
    weight = torch.nn.Linear(1, 1, bias=False)
    average = _weight_average(weight, 0.9)
    values = torch.randn(120, generator=torch.Generator().manual_seed(0)).tolist()
    expected = values[0]
    for update, value in enumerate(values):
        with torch.no_grad():
            weight.weight.fill_(value)
        average.update_parameters(weight)
        # The first update copies; update n averages with min(0.9, (1 + n) / (10 + n)): 2/11 at the
        # second, then rising until it meets 0.9 at n = 80.
        if update:
            decay = min(0.9, (1 + update) / (10 + update))
            expected = decay * expected + (1 - decay) * value
        assert average.module.weight.item() == pytest.approx(expected, rel=1e-5, abs=1e-6), update


@pytest.mark.parametrize("temporal_p", [0.5, 0.0])
def test_the_band_level_audio_front_end_trains_and_its_checkpoint_listens(
    tiny_dataset, tiny_config, tmp_path: Path, temporal_p: float
) -> None:
    # configs/small.yaml's audio: no convolutions, patches pooled 8 x 4, bands standardised per clip;
    # without temporal dropout and switch (as the preset), the log-mel is pooled before mixup.
    config = tiny_config(
        "model.audio_conv_channels=[]",
        "model.audio_hidden_dims=[]",
        "model.audio_input_pool=[8, 4]",
        "model.audio_clip_norm=true",
        f"model.temporal_dropout_p={temporal_p}",
        f"model.temporal_switch_p={temporal_p}",
    )
    fit(config, DataRoots.single(tiny_dataset.root), tmp_path, progress=False)
    # The mixup queue (in last.pt) holds what mixup mixed: 20 patches of 96 frames per 20-s clip,
    # pooled to 32 bands x 240 steps, or the full log-mel while temporal augmentation needs it.
    queued = checkpoint.load(tmp_path / "checkpoints" / "last.pt")["mixup"]["audio"]
    assert queued.shape[2:] == ((32, 240) if temporal_p == 0 else (128, 2000))
    saved = checkpoint.load(tmp_path / "checkpoints" / "best.pt")
    model = build_model(config_from_dict(saved["config"]).model, config.clips, load_pretrained=False)
    model.load_state_dict(saved["model"])
    untrained = build_model(config.model, config.clips, load_pretrained=False)
    name = "audio_backbone.embeddings.0.weight"
    assert model.state_dict()[name].shape == (config.model.d_model, 12 * 32)
    assert not torch.equal(model.state_dict()[name], untrained.state_dict()[name])  # it learnt
    model.eval()
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, config.clips.clip_seconds, sum(config.model.visual_dims), generator=generator)
    audio = torch.rand(2, config.clips.mel_bins, config.clips.clip_seconds * 100, generator=generator)
    louder = audio.clone()
    louder[1, 80:100, 500:700] *= 1000.0  # 30 dB more in 20 bands for 2 s of the second clip
    with torch.no_grad():
        quiet = model(features, model.prepare_audio(audio))["class_scores"]
        loud = model(features, model.prepare_audio(louder))["class_scores"]
    torch.testing.assert_close(loud[0], quiet[0])  # clips never see each other's audio
    assert not torch.allclose(loud[1], quiet[1])  # the prediction depends on the audio
