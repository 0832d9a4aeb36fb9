"""Hierarchical encoder: segment layout, locality, and agreement with a per-segment reference."""

from __future__ import annotations

import pytest
import torch

from astra.model.encoder import HierarchicalEncoder, TokenEncodings, encoder_segments

D_MODEL = 8
EMBEDDINGS = 3  # visual tokens per second


def _encoder(segments: tuple[int, ...], seconds: int, audio_tokens: int) -> HierarchicalEncoder:
    torch.manual_seed(0)
    encoder = HierarchicalEncoder(D_MODEL, 2, 16, 0.1, segments, seconds * EMBEDDINGS, audio_tokens)
    return encoder.eval()


def _reference(encoder: HierarchicalEncoder, tokens: torch.Tensor) -> torch.Tensor:
    """The authors' layout written as a loop: segment k = visual part k + audio part k."""
    n_v, n_a = encoder.num_visual_tokens, encoder.num_audio_tokens
    for layer, s in zip(encoder.layers, encoder.segments_per_layer, strict=True):
        visual, audio = tokens[:, :n_v], tokens[:, n_v:]
        bounds_v = [k * (n_v // s) for k in range(s)] + [n_v]
        bounds_a = [k * (n_a // s) for k in range(s)] + [n_a]
        out_v, out_a = [], []
        for k in range(s):
            v = visual[:, bounds_v[k] : bounds_v[k + 1]]
            a = audio[:, bounds_a[k] : bounds_a[k + 1]]
            out = layer(torch.cat([v, a], dim=1))
            out_v.append(out[:, : v.shape[1]])
            out_a.append(out[:, v.shape[1] :])
        tokens = torch.cat(out_v + out_a, dim=1)
    return tokens


def test_segments_per_layer() -> None:
    assert encoder_segments("hierarchical", 3) == (4, 2, 1)
    assert encoder_segments("hierarchical", 1) == (1,)
    assert encoder_segments("vanilla", 3) == (1, 1, 1)
    with pytest.raises(ValueError, match="unknown encoder"):
        encoder_segments("pyramid", 3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "audio_tokens"),
    [(8, 8), (10, 10), (50 // 5, 0), (7, 5)],  # equal segments; remainders; visual only; few audio tokens
)
def test_matches_per_segment_reference(seconds: int, audio_tokens: int) -> None:
    encoder = _encoder((4, 2, 1), seconds, audio_tokens)
    tokens = torch.randn(3, seconds * EMBEDDINGS + audio_tokens, D_MODEL)
    with torch.no_grad():
        torch.testing.assert_close(encoder(tokens), _reference(encoder, tokens), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("seconds", "audio_tokens"), [(8, 8), (10, 10)])
def test_last_second_only_reaches_the_last_segment(seconds: int, audio_tokens: int) -> None:
    # One layer with 4 segments: the last second (its visual tokens and the last audio
    # token) lies in the last segment, and nothing outside that segment may see it.
    encoder = _encoder((4,), seconds, audio_tokens)
    n_v = seconds * EMBEDDINGS
    tokens = torch.randn(2, n_v + audio_tokens, D_MODEL)
    changed = tokens.clone()
    changed[:, n_v - EMBEDDINGS : n_v] += 1.0
    changed[:, -1] += 1.0
    with torch.no_grad():
        before, after = encoder(tokens), encoder(changed)
    differs = (before - after).abs().amax(dim=(0, 2)) > 1e-6  # [N]
    last_v = 3 * (n_v // 4)
    last_a = n_v + 3 * (audio_tokens // 4)
    in_last_segment = torch.zeros_like(differs)
    in_last_segment[last_v:n_v] = True
    in_last_segment[last_a:] = True
    assert differs[in_last_segment].all()
    assert not differs[~in_last_segment].any()


def test_audio_and_visual_of_one_span_share_a_segment() -> None:
    encoder = _encoder((4,), 8, 8)
    n_v = 8 * EMBEDDINGS
    tokens = torch.randn(1, n_v + 8, D_MODEL)
    changed = tokens.clone()
    changed[:, n_v] += 1.0  # the first audio token
    with torch.no_grad():
        differs = (encoder(tokens) - encoder(changed)).abs().amax(dim=(0, 2)) > 1e-6
    assert differs[: n_v // 4].all()  # the visual tokens of the first quarter see it
    assert not differs[n_v // 4 : n_v].any()


def test_vanilla_encoder_is_global() -> None:
    encoder = _encoder((1,), 8, 8)
    tokens = torch.randn(1, 8 * EMBEDDINGS + 8, D_MODEL)
    changed = tokens.clone()
    changed[:, -1] += 1.0
    with torch.no_grad():
        differs = (encoder(tokens) - encoder(changed)).abs().amax(dim=(0, 2)) > 1e-6
    assert differs.all()


def test_too_many_segments_for_the_tokens() -> None:
    with pytest.raises(ValueError, match="cannot fill"):
        HierarchicalEncoder(D_MODEL, 2, 16, 0.1, (4,), 3, 2)


def test_token_layout_is_time_major_visual_then_audio() -> None:
    encodings = TokenEncodings(
        clip_seconds=4, num_visual_embeddings=EMBEDDINGS, num_audio_tokens=2, d_model=D_MODEL
    )
    with torch.no_grad():
        for parameter in encodings.parameters():
            parameter.zero_()
    visual = (
        torch.arange(4 * EMBEDDINGS, dtype=torch.float32)
        .reshape(1, 4, EMBEDDINGS, 1)
        .expand(-1, -1, -1, D_MODEL)
    )
    audio = torch.full((1, 2, D_MODEL), -1.0)
    tokens = encodings(visual, audio)
    assert tokens.shape == (1, 4 * EMBEDDINGS + 2, D_MODEL)
    # Token t * E + j is second t, embedding j; audio tokens follow.
    assert tokens[0, : 4 * EMBEDDINGS, 0].tolist() == list(range(4 * EMBEDDINGS))
    assert (tokens[0, 4 * EMBEDDINGS :] == -1).all()
