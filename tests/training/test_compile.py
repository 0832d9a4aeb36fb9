"""``train.compile``: torch.compile of the training forward computes the eager step, and a backend
that cannot run is named before anything compiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from astra.classes import NUM_CLASSES
from astra.config import ConfigError
from astra.model import build_model
from astra.training import loop as training_loop
from astra.training.loop import Placement, TrainingSession, compiled, train_step

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


def _steps(config, steps: int = 3) -> tuple[list[float], dict[str, torch.Tensor]]:
    """``steps`` training steps of the tiny model on fixed random batches: losses and final weights."""
    torch.manual_seed(0)
    model = build_model(config.model, config.clips, load_pretrained=False).train()
    if model.visual_whitening is not None:
        dims = config.model.visual_dims
        model.visual_whitening.fit([np.zeros(d) for d in dims], [np.eye(d) for d in dims])
    session = TrainingSession.around(model, config, CPU, steps_per_epoch=10)
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


@pytest.mark.slow
def test_a_compiled_step_is_the_eager_step(tiny_config) -> None:
    # Inductor on the CPU fuses the step's element-wise work: the same step to float rounding. The
    # random parts of a step are off: a compiled graph draws its random numbers its own way.
    settings = ("model.use_audio=false", "augment.mixup=none", "model.transformer_dropout=0",
                "model.pffn_dropout=0", "model.head_dropout=0", "model.temporal_dropout_p=0",
                "model.temporal_switch_p=0", "model.feature_noise_std=0")  # fmt: skip
    eager_losses, eager = _steps(tiny_config(*settings))
    torch._dynamo.reset()
    compiled_losses, weights = _steps(tiny_config(*settings, "train.compile=default"))
    np.testing.assert_allclose(compiled_losses, eager_losses, rtol=1e-4)
    for name, tensor in eager.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-3, atol=1e-4, msg=name)
