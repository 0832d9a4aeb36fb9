"""Input tokens and the hierarchical Transformer encoder (paper, 3.2).

How this differs from ``torch.nn.TransformerEncoder``:

- The layers are the standard post-norm ``nn.TransformerEncoderLayer``
  (ReLU, dropout, feed-forward ``4 d``; pre-norm with ``model.norm_first``,
  which small models need), with no final LayerNorm, no
  positional encoding inside (``TokenEncodings`` adds learnable ones before)
  and no padding mask (clips are always full).
- Layer ``i`` (1-based) of ``n_e`` attends only within ``2^(n_e - i)``
  temporal segments: 4, 2, then 1 (global) for the paper's 3 layers. One set
  of weights per layer serves all its segments. The vanilla encoder (the M0
  ablation) is the same module with one segment in every layer.
- A segment holds the visual and the audio tokens of the same time span. As
  the authors do, each modality's ``n`` tokens are split on their own into
  ``s - 1`` segments of ``floor(n / s)`` tokens and one last segment with the
  rest; segment ``k`` of both modalities are joined into one sequence. The
  split counts tokens, not seconds, so a visual segment may start within a
  second (250 visual tokens in 4 segments: 62, 62, 62, 64).
- The equal segments run as one batch ``[B * (s - 1), n_k, d]`` (the last one
  too when it has the same size): no Python loop over clips or segments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from astra.model.locality import head_slopes, per_batch_mask, token_distance_penalty


class TokenEncodings(nn.Module):
    """Learnable temporal and source encodings; lays tokens out time-major, visual then audio.

    Visual token ``(t, j)`` gets temporal encoding ``t`` (one per second) and
    source encoding ``j`` (one per visual embedding); audio token ``k`` gets
    audio temporal encoding ``k`` (one per patch) and the audio source
    encoding. Uniform [0, 1) initialisation, as the authors.
    """

    def __init__(
        self, clip_seconds: int, num_visual_embeddings: int, num_audio_tokens: int, d_model: int
    ) -> None:
        super().__init__()
        self.visual_temporal = nn.Parameter(torch.rand(clip_seconds, d_model))
        self.visual_source = nn.Parameter(torch.rand(num_visual_embeddings, d_model))
        if num_audio_tokens > 0:
            self.audio_temporal = nn.Parameter(torch.rand(num_audio_tokens, d_model))
            self.audio_source = nn.Parameter(torch.rand(d_model))
        else:
            self.audio_temporal = None
            self.audio_source = None

    def forward(self, visual: torch.Tensor, audio: torch.Tensor | None) -> torch.Tensor:
        """visual ``[B, T, E_v, d]``, audio ``[B, L_a, d]`` or None -> tokens ``[B, T * E_v + L_a, d]``."""
        batch, seconds, embeddings, d_model = visual.shape
        visual = visual + self.visual_temporal[:, None, :] + self.visual_source  # [B, T, E_v, d]
        tokens = visual.reshape(batch, seconds * embeddings, d_model)  # time-major: second t, then source j
        if audio is None:
            return tokens
        if self.audio_temporal is None or self.audio_source is None:
            raise ValueError("audio tokens were given to a model built without audio")
        audio = audio + self.audio_temporal + self.audio_source  # [B, L_a, d]
        return torch.cat([tokens, audio], dim=1)


class HierarchicalEncoder(nn.Module):
    """Transformer encoder layers (post-norm unless ``norm_first``); layer ``i`` attends within
    ``segments_per_layer[i]`` segments."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        feedforward_dim: int,
        dropout: float,
        segments_per_layer: Sequence[int],
        num_visual_tokens: int,
        num_audio_tokens: int,
        norm_first: bool = False,
        token_times: torch.Tensor | None = None,
        locality_slope: float = 0.0,
        head_ratio: float = 1.0,
        block_attention: bool = False,
    ) -> None:
        super().__init__()
        for segments in segments_per_layer:
            if segments < 1:
                raise ValueError(f"encoder segments must be >= 1, got {list(segments_per_layer)}")
            if num_visual_tokens // segments + num_audio_tokens // segments == 0:
                raise ValueError(
                    f"{num_visual_tokens} visual and {num_audio_tokens} audio tokens cannot fill "
                    f"{segments} encoder segments: use a longer clip or fewer encoder layers"
                )
        self.segments_per_layer = tuple(segments_per_layer)
        self.num_visual_tokens = num_visual_tokens
        self.num_audio_tokens = num_audio_tokens
        self.biased = locality_slope > 0
        if locality_slope < 0:
            raise ValueError(f"the encoder locality slope must be >= 0, got {locality_slope}")
        if self.biased:
            expected = num_visual_tokens + num_audio_tokens
            if token_times is None or tuple(token_times.shape) != (expected,):
                raise ValueError(f"an encoder locality bias needs the times [{expected}] of the tokens")
            # One [N, N] additive mask per segment count: -slope * |t_i - t_j| within a segment,
            # -inf across segments (the same attention as running the segments apart). Buffers not
            # saved in checkpoints: they follow from the config.
            # With per-head slopes (head_ratio != 1, as ALiBi) the masks are [heads, N, N].
            penalty = token_distance_penalty(token_times, head_slopes(locality_slope, head_ratio, num_heads))
            for segments in sorted(set(segments_per_layer)):
                if block_attention and dropout == 0 and segments > 1:
                    # One bias block per segment, its tokens as _apply_segmented lays them out: the
                    # equal segments' blocks stacked [s - 1, (heads,) n, n], the last one apart.
                    blocks = [
                        penalty[..., order[:, None], order[None, :]]
                        for order in _segment_token_orders(num_visual_tokens, num_audio_tokens, segments)
                    ]
                    self.register_buffer(
                        f"segment_bias_{segments}", torch.stack(blocks[:-1]), persistent=False
                    )
                    self.register_buffer(f"last_segment_bias_{segments}", blocks[-1], persistent=False)
                    continue
                segment = _segment_of_tokens(num_visual_tokens, num_audio_tokens, segments)
                bias = penalty.masked_fill(segment[:, None] != segment[None, :], float("-inf"))
                self.register_buffer(f"self_attention_bias_{segments}", bias, persistent=False)
        # Dropout inside the layers would draw its masks over other shapes in blocks: the same
        # distribution but other values. The switch acts on a dropout-free encoder only.
        self.block_attention = self.biased and block_attention and dropout == 0
        self.num_heads = num_heads
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model,
                num_heads,
                dim_feedforward=feedforward_dim,
                dropout=dropout,
                activation="relu",
                batch_first=True,
                norm_first=norm_first,
            )
            for _ in segments_per_layer
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N_v + N_a, d]`` (visual tokens, then audio tokens) -> ``[B, N_v + N_a, d]``."""
        expected = self.num_visual_tokens + self.num_audio_tokens
        if tokens.shape[1] != expected:
            raise ValueError(f"encoder expects {expected} tokens, got {tokens.shape[1]}")
        if self.biased:
            # PyTorch's inference fast path of TransformerEncoderLayer mishandles a float mask (its
            # output differs from the same layer's training-mode output): keep the plain path.
            fast_path = torch.backends.mha.get_fastpath_enabled()
            torch.backends.mha.set_fastpath_enabled(False)
            try:
                for layer, segments in zip(self.layers, self.segments_per_layer, strict=True):
                    if self.block_attention and segments > 1:
                        tokens = self._apply_segmented(layer, tokens, segments)
                        continue
                    bias = getattr(self, f"self_attention_bias_{segments}").to(tokens.dtype)
                    tokens = layer(tokens, src_mask=per_batch_mask(bias, tokens.shape[0]))
            finally:
                torch.backends.mha.set_fastpath_enabled(fast_path)
            return tokens
        for layer, segments in zip(self.layers, self.segments_per_layer, strict=True):
            tokens = self._apply_segmented(layer, tokens, segments)
        return tokens

    def _apply_segmented(self, layer: nn.Module, tokens: torch.Tensor, segments: int) -> torch.Tensor:
        if segments == 1:
            return layer(tokens)
        batch, _, d_model = tokens.shape
        n_v, n_a = self.num_visual_tokens, self.num_audio_tokens
        seg_v, seg_a = n_v // segments, n_a // segments  # tokens per equal segment
        rest_v, rest_a = n_v - (segments - 1) * seg_v, n_a - (segments - 1) * seg_a  # last segment
        visual, audio = tokens[:, :n_v], tokens[:, n_v:]
        # [B, s-1, seg_v + seg_a, d]: equal segments, visual then audio tokens of each.
        equal = torch.cat(
            [
                visual[:, : (segments - 1) * seg_v].reshape(batch, segments - 1, seg_v, d_model),
                audio[:, : (segments - 1) * seg_a].reshape(batch, segments - 1, seg_a, d_model),
            ],
            dim=2,
        )
        last = torch.cat([visual[:, (segments - 1) * seg_v :], audio[:, (segments - 1) * seg_a :]], dim=1)
        equal_mask = last_mask = stacked_mask = None
        if self.block_attention:
            # The locality bias of each segment's tokens: [B * segments * heads, n, n] masks.
            equal_bias = getattr(self, f"segment_bias_{segments}").to(tokens.dtype)
            last_bias = getattr(self, f"last_segment_bias_{segments}").to(tokens.dtype)
            equal_mask = self._sequence_masks(equal_bias, batch)
            last_mask = per_batch_mask(last_bias, batch)
            if (rest_v, rest_a) == (seg_v, seg_a):
                stacked_mask = self._sequence_masks(torch.cat([equal_bias, last_bias[None]]), batch)
        if (rest_v, rest_a) == (seg_v, seg_a):
            # All segments alike: one batched call over [B * s, seg_v + seg_a, d].
            stacked = torch.cat([equal, last[:, None]], dim=1)
            out = layer(stacked.reshape(batch * segments, seg_v + seg_a, d_model), src_mask=stacked_mask)
            out = out.reshape(batch, segments, seg_v + seg_a, d_model)
            out_visual = out[:, :, :seg_v].reshape(batch, n_v, d_model)
            out_audio = out[:, :, seg_v:].reshape(batch, n_a, d_model)
            return torch.cat([out_visual, out_audio], dim=1)
        out_equal = layer(equal.reshape(batch * (segments - 1), seg_v + seg_a, d_model), src_mask=equal_mask)
        out_equal = out_equal.reshape(batch, segments - 1, seg_v + seg_a, d_model)
        out_last = layer(last, src_mask=last_mask)  # [B, rest_v + rest_a, d]
        return torch.cat(
            [
                out_equal[:, :, :seg_v].reshape(batch, (segments - 1) * seg_v, d_model),
                out_last[:, :rest_v],
                out_equal[:, :, seg_v:].reshape(batch, (segments - 1) * seg_a, d_model),
                out_last[:, rest_v:],
            ],
            dim=1,
        )

    def _sequence_masks(self, bias: torch.Tensor, batch: int) -> torch.Tensor:
        """``[k, n, n]`` (or ``[k, heads, n, n]``) bias blocks of ``k`` segments -> the
        ``[batch * k * heads, n, n]`` mask of the ``batch * k`` segment sequences (batch-major, as
        ``_apply_segmented`` stacks them and ``nn.MultiheadAttention`` reads a 3-D mask)."""
        if bias.dim() == 3:
            bias = bias[:, None].expand(-1, self.num_heads, -1, -1)
        count, heads, rows, columns = bias.shape
        return bias.expand(batch, count, heads, rows, columns).reshape(batch * count * heads, rows, columns)


def _segment_token_orders(num_visual: int, num_audio: int, segments: int) -> list[torch.Tensor]:
    """The token indices of each segment, visual then audio tokens, as ``_apply_segmented`` joins them."""
    # Worked out on the host (no data-dependent op on the tensor: models are also built on "meta").
    counts = [
        (count // segments, count - (segments - 1) * (count // segments)) for count in (num_visual, num_audio)
    ]
    orders = []
    for index in range(segments):
        parts, offset = [], 0
        for count, (equal, last) in zip((num_visual, num_audio), counts, strict=True):
            first = index * equal
            parts.extend(range(offset + first, offset + first + (last if index == segments - 1 else equal)))
            offset += count
        orders.append(torch.tensor(parts, dtype=torch.long))
    return orders


def _segment_of_tokens(num_visual: int, num_audio: int, segments: int) -> torch.Tensor:
    """``[N_v + N_a]`` segment index of every token, as ``_apply_segmented`` cuts them."""

    def cut(count: int) -> torch.Tensor:
        per_segment = count // segments  # 0: every token falls in the last segment, the rest
        index = torch.arange(count) // per_segment if per_segment else torch.full((count,), segments - 1)
        return index.clamp(max=segments - 1)

    return torch.cat([cut(num_visual), cut(num_audio)])


def encoder_segments(kind: Literal["hierarchical", "vanilla"], num_layers: int) -> tuple[int, ...]:
    """Segments per layer: ``2^(n_e - i)`` for layer ``i`` (hierarchical), or 1 everywhere (vanilla)."""
    if kind == "hierarchical":
        return tuple(2 ** (num_layers - i) for i in range(1, num_layers + 1))
    if kind == "vanilla":
        return (1,) * num_layers
    raise ValueError(f"unknown encoder {kind!r}; expected 'hierarchical' or 'vanilla'")
