"""Hierarchical encoder: segment layout, locality, and agreement with a per-segment reference."""

from __future__ import annotations

import pytest
import torch

from astra.model.encoder import HierarchicalEncoder, TokenEncodings, encoder_segments
from astra.model.locality import head_slopes, locality_bias, token_times

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


def _token_times(seconds: int, audio_tokens: int) -> torch.Tensor:
    return token_times(seconds, EMBEDDINGS, audio_tokens, 0.96)


def _biased_encoder(segments: tuple[int, ...], seconds: int, audio_tokens: int, slope: float):
    torch.manual_seed(0)
    encoder = HierarchicalEncoder(
        D_MODEL, 2, 16, 0.1, segments, seconds * EMBEDDINGS, audio_tokens,
        token_times=_token_times(seconds, audio_tokens), locality_slope=slope,
    )  # fmt: skip
    return encoder.eval()


@pytest.mark.parametrize(("seconds", "audio_tokens"), [(8, 8), (7, 5), (10, 0), (8, 2)])
def test_vanishing_locality_bias_keeps_the_segments(seconds: int, audio_tokens: int) -> None:
    # The biased path runs every layer on all tokens with a -inf mask across segments: at a
    # vanishing slope it must give the per-segment reference, in eval mode (PyTorch's fast path)
    # as in training mode.
    biased = _biased_encoder((4, 2, 1), seconds, audio_tokens, 1e-9)
    plain = _encoder((4, 2, 1), seconds, audio_tokens)
    tokens = torch.randn(2, seconds * EMBEDDINGS + audio_tokens, D_MODEL)
    for layer in [*biased.layers, *plain.layers]:
        layer.dropout.p = layer.dropout1.p = layer.dropout2.p = layer.self_attn.dropout = 0.0
    with torch.no_grad():
        expected = _reference(plain, tokens)
        torch.testing.assert_close(biased(tokens), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(biased.train()(tokens), expected, rtol=1e-5, atol=1e-5)


def test_locality_bias_values_and_segments() -> None:
    encoder = _biased_encoder((2, 1), 4, 0, 0.5)
    whole = encoder.self_attention_bias_1  # [12, 12]: 4 seconds x 3 embeddings
    assert whole.shape == (12, 12)
    assert whole[0, 1].item() == 0.0  # same second
    assert whole[0, 3].item() == pytest.approx(-0.5)  # one second apart
    assert whole[0, 11].item() == pytest.approx(-1.5)
    halves = encoder.self_attention_bias_2  # 2 segments of 6 tokens: no attention across
    assert halves[0, 5].item() == pytest.approx(-0.5) and halves[0, 6].item() == float("-inf")
    assert "self_attention_bias_1" not in encoder.state_dict()  # it follows from the config


def test_steep_locality_bias_keeps_tokens_apart() -> None:
    # At a steep slope a token hears only its own second: perturbing second 0 leaves second 3 alone.
    encoder = _biased_encoder((1,), 4, 0, 100.0)
    tokens = torch.randn(1, 12, D_MODEL)
    moved = tokens.clone()
    moved[:, :EMBEDDINGS] += 5.0
    with torch.no_grad():
        a, b = encoder(tokens), encoder(moved)
    torch.testing.assert_close(a[:, 3 * EMBEDDINGS :], b[:, 3 * EMBEDDINGS :])
    assert not torch.allclose(a[:, :EMBEDDINGS], b[:, :EMBEDDINGS])


def test_locality_bias_needs_token_times() -> None:
    with pytest.raises(ValueError, match="times"):
        HierarchicalEncoder(D_MODEL, 2, 16, 0.1, (1,), 6, 0, locality_slope=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        HierarchicalEncoder(D_MODEL, 2, 16, 0.1, (1,), 6, 0, token_times=torch.zeros(6), locality_slope=-1)


def test_per_head_slopes_follow_the_ratio() -> None:
    assert head_slopes(1.0, 1.0, 4) == 1.0
    assert head_slopes(1.0, 0.25, 3) == (1.0, 0.25, 0.0625)
    torch.manual_seed(0)
    encoder = HierarchicalEncoder(
        D_MODEL, 2, 16, 0.1, (2, 1), 4 * EMBEDDINGS, 0,
        token_times=_token_times(4, 0), locality_slope=0.5, head_ratio=0.25,
    )  # fmt: skip
    whole = encoder.self_attention_bias_1
    assert whole.shape == (2, 12, 12)
    assert whole[0, 0, 3].item() == pytest.approx(-0.5) and whole[1, 0, 3].item() == pytest.approx(-0.125)
    assert encoder.self_attention_bias_2[1, 0, 6].item() == float("-inf")
    decoder_bias = locality_bias(4, 2, 2, EMBEDDINGS, 0, 0.96, (1.0, 0.5))
    assert decoder_bias.shape == (2, 4, 2 * EMBEDDINGS)
    torch.testing.assert_close(decoder_bias[1], locality_bias(4, 2, 2, EMBEDDINGS, 0, 0.96, 0.5))


def test_a_model_with_per_head_slopes_runs_and_its_heads_differ() -> None:
    from astra.config import load_config
    from astra.model import build_model

    overrides = [
        "model.use_audio=false", "model.visual_dims=[6, 4]", "model.d_model=16", "model.num_heads=2",
        "model.encoder_locality_bias=1.0", "model.decoder_locality_bias=1.0", "clips.clip_seconds=10",
        "clips.train_stride_seconds=5",
    ]  # fmt: skip
    features = torch.randn(3, 10, 10)
    outputs = {}
    for ratio in (1.0, 0.25):
        config = load_config([], [*overrides, f"model.locality_bias_head_ratio={ratio}"])
        torch.manual_seed(0)
        model = build_model(config.model, config.clips).eval()
        with torch.no_grad():
            outputs[ratio] = model(features)["class_scores"]
        assert outputs[ratio].shape == (3, config.clips.num_outputs, 18)
    assert not torch.allclose(outputs[1.0], outputs[0.25])
    with pytest.raises(ValueError, match="locality_bias_head_ratio"):
        config = load_config([], [*overrides, "model.locality_bias_head_ratio=0"])
        build_model(config.model, config.clips)


@pytest.mark.parametrize(("seconds", "audio_tokens"), [(8, 8), (7, 5), (10, 0), (8, 2), (50, 52)])
@pytest.mark.parametrize("head_ratio", [1.0, 0.25])
def test_block_attention_is_the_masked_attention(seconds: int, audio_tokens: int, head_ratio: float) -> None:
    # model.encoder_block_attention: each segment's tokens attend as a sequence of their own with
    # their bias block, instead of the whole clip with -inf across segments. The same outputs and
    # the same gradients, to float rounding, in training and in eval mode, with one slope or one per
    # head; (50, 52) has the small preset's clip length and audio tokens (unequal last segments).
    def build(block: bool) -> HierarchicalEncoder:
        torch.manual_seed(0)
        return HierarchicalEncoder(
            D_MODEL, 2, 16, 0.0, (4, 2, 1), seconds * EMBEDDINGS, audio_tokens,
            token_times=_token_times(seconds, audio_tokens), locality_slope=3.0, head_ratio=head_ratio,
            block_attention=block,
        )  # fmt: skip

    masked, blocks = build(False), build(True)
    assert blocks.block_attention and not masked.block_attention
    assert not hasattr(blocks, "self_attention_bias_4") and hasattr(blocks, "segment_bias_4")
    tokens = torch.randn(3, seconds * EMBEDDINGS + audio_tokens, D_MODEL, requires_grad=True)
    expected = masked(tokens)
    expected_grads = torch.autograd.grad(expected.square().sum(), [tokens, *masked.parameters()])
    got = blocks(tokens)
    got_grads = torch.autograd.grad(got.square().sum(), [tokens, *blocks.parameters()])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for got_grad, expected_grad in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(blocks.eval()(tokens), masked.eval()(tokens), rtol=1e-5, atol=1e-5)


def test_block_attention_leaves_an_encoder_with_dropout_as_it_is() -> None:
    # Dropout masks drawn over the segments' shapes would differ from those of the whole clip.
    encoder = HierarchicalEncoder(
        D_MODEL, 2, 16, 0.1, (4, 2, 1), 8 * EMBEDDINGS, 8,
        token_times=_token_times(8, 8), locality_slope=3.0, block_attention=True,
    )  # fmt: skip
    assert not encoder.block_attention and hasattr(encoder, "self_attention_bias_4")
