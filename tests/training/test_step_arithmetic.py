"""The switches that change how the step's arithmetic runs: ``train.compile`` (torch.compile of the
training forward computes the eager step; a backend that cannot run is named before anything
compiles) and ``train.mixed_precision=bf16`` on the CPU (the float32 step to bf16's rounding)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from astra.classes import NUM_CLASSES
from astra.config import ConfigError
from astra.model import build_model
from astra.training import loop as training_loop
from astra.training.loop import Placement, TrainingSession, _autocast_dtype, compiled, train_step

CPU = Placement(rank=0, world_size=1, device=torch.device("cpu"), autocast_dtype=None, batch_per_worker=4)


def test_off_leaves_the_model_as_it_is() -> None:
    model = torch.nn.Linear(2, 2)
    assert compiled(model, "off", torch.device("cpu")) is model


def test_a_missing_cpu_compiler_is_named_before_anything_compiles(monkeypatch) -> None:
    monkeypatch.setattr(training_loop.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match=r"train.compile=default needs a C\+\+ compiler.*train.compile=off"):
        compiled(torch.nn.Linear(2, 2), "default", torch.device("cpu"))


def test_a_compile_mode_that_is_not_one_is_refused(tiny_config) -> None:
    with pytest.raises(ConfigError, match=r"train\.compile"):
        tiny_config("train.compile=fastest")


def _steps(config, steps: int = 3, placement: Placement = CPU) -> tuple[list[float], dict[str, torch.Tensor]]:
    """``steps`` training steps of the tiny model on fixed random batches: losses and final weights."""
    torch.manual_seed(0)
    model = build_model(config.model, config.clips, load_pretrained=False).train()
    if model.visual_whitening is not None:
        dims = config.model.visual_dims
        model.visual_whitening.fit([np.zeros(d) for d in dims], [np.eye(d) for d in dims])
    session = TrainingSession.around(model, config, placement, steps_per_epoch=10)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        features = torch.randn(
            4, config.clips.clip_seconds, sum(config.model.visual_dims), generator=generator
        )
        targets = torch.zeros(4, config.clips.num_outputs, NUM_CLASSES + 1)
        targets[..., 0] = 1
        targets[:, 3:5, 0], targets[:, 3:5, 4] = 0, 1
        displacement = torch.full_like(targets, float("nan"))
        displacement[:, 3:5, 4] = 0.5
        loss, _ = train_step(
            session, config, features, torch.zeros(4, 0), targets, displacement, description="test"
        )
        losses.append(loss)
    return losses, {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


# The random parts of a step off: a compiled graph, or a step in another precision, draws its
# random numbers its own way.
NOTHING_RANDOM = ("model.use_audio=false", "augment.mixup=none", "model.transformer_dropout=0",
                  "model.pffn_dropout=0", "model.head_dropout=0", "model.temporal_dropout_p=0",
                  "model.temporal_switch_p=0", "model.feature_noise_std=0")  # fmt: skip


def test_the_cpu_runs_bf16_only_when_asked() -> None:
    cpu = torch.device("cpu")
    assert _autocast_dtype("bf16", cpu) is torch.bfloat16
    for mode in ("auto", "fp16", "off"):
        assert _autocast_dtype(mode, cpu) is None, mode  # float32: what every CPU run did before


def test_bf16_on_a_cpu_without_bf16_instructions_is_warned_about(tiny_config, monkeypatch, caplog) -> None:
    monkeypatch.setattr(training_loop, "_cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="astra.training.loop"):
        placement = training_loop._placement(tiny_config("train.mixed_precision=bf16"), torch.device("cpu"))
    assert placement.autocast_dtype is torch.bfloat16  # as asked, but said to be slow
    assert "without bf16 instructions" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="astra.training.loop"):
        training_loop._placement(tiny_config("train.mixed_precision=auto"), torch.device("cpu"))
    assert "bf16" not in caplog.text


def test_a_bf16_step_on_the_cpu_is_the_float32_step_to_bf16_rounding(tiny_config) -> None:
    config = tiny_config(*NOTHING_RANDOM)
    float32_losses, float32 = _steps(config)
    bf16 = Placement(rank=0, world_size=1, device=torch.device("cpu"), autocast_dtype=torch.bfloat16,
                     batch_per_worker=4)  # fmt: skip
    bf16_losses, weights = _steps(config, placement=bf16)
    assert bf16_losses != float32_losses  # the products did run in bf16
    # bf16 keeps about 3 significant digits; the losses agree to 1e-4 here.
    np.testing.assert_allclose(bf16_losses, float32_losses, rtol=1e-3)
    for name, tensor in float32.items():
        assert weights[name].dtype == tensor.dtype, name  # the weights stay float32
    # The two runs move the weights the same way: their updates from the same start point alike.
    _, start = _steps(config, steps=0)
    names = [name for name, tensor in start.items() if tensor.is_floating_point()]
    update_float32 = torch.cat([(float32[name] - start[name]).flatten() for name in names])
    update_bf16 = torch.cat([(weights[name] - start[name]).flatten() for name in names])
    similarity = float(torch.nn.functional.cosine_similarity(update_float32, update_bf16, dim=0))
    assert similarity > 0.99, similarity  # 0.998 on this model


@pytest.mark.slow
def test_a_compiled_step_is_the_eager_step(tiny_config) -> None:
    # Inductor on the CPU fuses the step's element-wise work: the same step to float rounding.
    settings = NOTHING_RANDOM
    eager_losses, eager = _steps(tiny_config(*settings))
    torch._dynamo.reset()
    compiled_losses, weights = _steps(tiny_config(*settings, "train.compile=default"))
    np.testing.assert_allclose(compiled_losses, eager_losses, rtol=1e-4)
    for name, tensor in eager.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-3, atol=1e-4, msg=name)
