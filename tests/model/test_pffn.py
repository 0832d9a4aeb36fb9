"""The per-embedding PFFN with temporal context (model.pffn_context_seconds)."""

from __future__ import annotations

import dataclasses

import torch

from astra.config import ClipConfig, ModelConfig
from astra.model import build_model
from astra.model.pffn import PointwiseFeedForward


def test_context_reaches_exactly_k_seconds_on_each_side() -> None:
    torch.manual_seed(0)
    pffn = PointwiseFeedForward(6, 8, 0.0, hidden_relu=False, output_relu=False, context=2)
    x = torch.randn(1, 12, 6)
    base = pffn(x)
    for moved in range(12):
        bumped = x.clone()
        bumped[0, moved] += 1.0
        changed = (pffn(bumped) - base).abs().amax(dim=-1)[0] > 1e-6
        assert changed.nonzero().flatten().tolist() == [t for t in range(12) if abs(t - moved) <= 2]


def test_context_pads_the_clip_ends_with_zeros() -> None:
    torch.manual_seed(0)
    pffn = PointwiseFeedForward(6, 8, 0.0, context=1)
    x = torch.randn(2, 5, 6)
    padded = torch.cat([torch.zeros(2, 1, 6), x, torch.zeros(2, 1, 6)], dim=1)
    # The same weights on the padded sequence, every window spelled out.
    windows = torch.stack([padded[:, t : t + 3].flatten(1) for t in range(5)], dim=1)
    torch.testing.assert_close(pffn(x), pffn.layers(windows))


def test_context_widens_only_the_first_linear_and_is_off_in_the_paper_preset() -> None:
    assert ModelConfig().pffn_context_seconds == 0
    config = ModelConfig(visual_dims=(6, 5), d_model=16, num_heads=2, use_audio=False)
    plain = build_model(config, ClipConfig(clip_seconds=8))
    wide = build_model(dataclasses.replace(config, pffn_context_seconds=2), ClipConfig(clip_seconds=8))
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert count(wide) - count(plain) == 4 * (6 * 6 + 5 * 5)  # 4 more neighbours per first Linear
    outputs = wide(torch.randn(2, 8, 11))
    assert outputs["class_scores"].shape == (2, 16, 18)
