"""FastDropout: the same dropout as nn.Dropout, from a cheaper mask."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from astra.config import ClipConfig, ModelConfig
from astra.model import build_model
from astra.model.dropout import FastDropout, use_fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.4])
def test_keeps_one_minus_p_and_rescales(p: float) -> None:
    torch.manual_seed(0)
    dropout = FastDropout(p).train()
    x = torch.ones(200_000, requires_grad=True)
    y = dropout(x)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(1 - p, abs=0.005)
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    y.sum().backward()
    # The gradient goes through the kept elements only, with the same scale.
    assert x.grad is not None
    torch.testing.assert_close(x.grad, y.detach())


def test_identity_in_eval_mode_and_at_zero() -> None:
    x = torch.randn(4, 5)
    assert FastDropout(0.5).eval()(x) is x
    assert FastDropout(0.0).train()(x) is x


def test_same_seed_same_mask() -> None:
    x = torch.randn(64, 32)
    torch.manual_seed(3)
    first = FastDropout(0.3)(x)
    torch.manual_seed(3)
    torch.testing.assert_close(FastDropout(0.3)(x), first)


def test_every_dropout_of_the_model_is_replaced() -> None:
    config = ModelConfig(
        visual_dims=(6, 5),
        d_model=16,
        num_heads=2,
        audio_conv_channels=(2, 2, 4, 4, 4, 4),
        audio_hidden_dims=(8,),
    )
    model = build_model(config, ClipConfig(clip_seconds=8))
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(type(m) is FastDropout for m in dropouts)
    # The Transformer layers' own dropouts included, with their p.
    layer = model.decoder.layers[0]
    assert type(layer.dropout1) is FastDropout and layer.dropout1.p == config.transformer_dropout
    assert model.classification_head.layers[0].p == config.head_dropout


def test_replaces_nested_modules() -> None:
    module = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(0.2), nn.ReLU()))
    use_fast_dropout(module)
    assert type(module[1][0]) is FastDropout and module[1][0].p == 0.2


def test_puts_torch_dropout_back() -> None:
    module = use_fast_dropout(nn.Sequential(nn.Dropout(0.3)))
    use_fast_dropout(module, nn.Dropout)
    assert type(module[0]) is nn.Dropout and module[0].p == 0.3
