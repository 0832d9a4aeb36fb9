"""Locality bias: token times, the decoder's bias, the encoder's penalty, per-head slopes and masks."""

from __future__ import annotations

import pytest
import torch

from astra.model.locality import (
    head_slopes,
    locality_bias,
    per_batch_mask,
    token_distance_penalty,
    token_times,
)


def test_token_times_are_time_major_then_audio() -> None:
    times = token_times(3, 2, 2, 0.96)  # 3 seconds x 2 visual embeddings, then 2 audio patches
    assert times.dtype == torch.float64
    assert times.tolist() == pytest.approx([0.5, 0.5, 1.5, 1.5, 2.5, 2.5, 0.48, 1.44])


def test_locality_bias_times_and_slope() -> None:
    # 2 outputs per second over a 3-s clip, 2 visual embeddings, 2 audio patches of 0.96 s.
    bias = locality_bias(6, 2, 3, 2, 2, 0.96, slope=2.0)
    assert bias.shape == (6, 3 * 2 + 2)
    # Output 0 sits at 0.25 s; visual tokens of second 0 at 0.5 s, of second 2 at 2.5 s.
    assert bias[0, 0].item() == pytest.approx(-0.5) and bias[0, 1].item() == pytest.approx(-0.5)
    assert bias[0, 4].item() == pytest.approx(-4.5)
    # Audio patch 1 at 1.44 s; output 5 at 2.75 s.
    assert bias[5, 7].item() == pytest.approx(-2.0 * (2.75 - 1.44))
    # Each output's nearest visual second carries the largest bias.
    assert torch.equal(bias[:, :6:2].argmax(dim=1), torch.tensor([0, 0, 1, 1, 2, 2]))


def test_a_per_head_mask_reaches_the_head_it_is_meant_for() -> None:
    # nn.MultiheadAttention reads a [B * heads, L, S] mask batch-major; per_batch_mask must lay it
    # out so. Head 0 may attend only to its own token, head 1 everywhere: compare with attention
    # computed by hand, head by head, with a batch of 2 so that a head-major layout would fail.
    torch.manual_seed(0)
    heads, length, width = 2, 5, 8
    attention = torch.nn.MultiheadAttention(width, heads, batch_first=True).eval()
    x = torch.randn(2, length, width)
    local = torch.full((length, length), float("-inf")).fill_diagonal_(0.0)
    bias = torch.stack([local, torch.zeros(length, length)])
    with torch.no_grad():
        out, _ = attention(x, x, x, attn_mask=per_batch_mask(bias, 2), need_weights=False)
        q, k, v = (
            x @ w.T + b
            for w, b in zip(attention.in_proj_weight.chunk(3), attention.in_proj_bias.chunk(3), strict=True)
        )
        size = width // heads
        parts = []
        for head in range(heads):
            cut = slice(head * size, (head + 1) * size)
            logits = q[..., cut] @ k[..., cut].transpose(1, 2) / size**0.5 + bias[head]
            parts.append(logits.softmax(-1) @ v[..., cut])
        expected = attention.out_proj(torch.cat(parts, dim=-1))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert per_batch_mask(local, 3) is local  # a shared 2-D mask passes as it is


def test_the_encoder_penalty_is_symmetric_and_per_head_where_asked() -> None:
    times = token_times(4, 3, 2, 0.96)
    shared = token_distance_penalty(times, 0.5)
    assert shared.dtype == torch.float32 and shared.shape == (14, 14)
    assert torch.equal(shared, shared.T) and (shared.diagonal() == 0).all()
    assert shared[0, 3].item() == pytest.approx(-0.5)  # one second apart
    per_head = token_distance_penalty(times, head_slopes(0.5, 0.25, 2))
    assert per_head.shape == (2, 14, 14)
    torch.testing.assert_close(per_head[0], shared)
    torch.testing.assert_close(per_head[1], token_distance_penalty(times, 0.125))
