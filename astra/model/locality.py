"""Locality bias: fixed distance penalties added to attention logits (``model.*_locality_bias``).

A token or a query sits at a time in the clip (seconds); the bias between two of them is
``-slope * |t_a - t_b|``, so that attention starts near its own moment. With
``model.locality_bias_head_ratio`` other than 1 each head ``h`` gets the slope
``slope * ratio**h`` (as ALiBi), and a bias gains a leading heads dimension. The paper
has no such bias (off in the paper preset); the small preset uses both (docs/model.md).

``locality_bias`` is the decoder's cross-attention bias (queries to tokens); the encoder
builds its self-attention masks from ``token_distance_penalty`` and its segments.
``per_batch_mask`` lays either out as ``nn.MultiheadAttention`` reads a mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def locality_bias(
    num_outputs: int,
    outputs_per_second: int,
    clip_seconds: int,
    num_visual_embeddings: int,
    num_audio_tokens: int,
    audio_patch_seconds: float,
    slope: float | Sequence[float],
) -> torch.Tensor:
    """``[L_out, T * E_v + L_a]`` float32: ``-slope * |t_query - t_token|``, times in seconds.

    Output position ``j`` sits at ``(j + 0.5) / outputs_per_second``; tokens where
    ``token_times`` puts them. With one slope per head (``head_slopes``), the bias is
    ``[heads, L_out, T * E_v + L_a]``. Computed in float64, then rounded once.
    """
    query_times = (torch.arange(num_outputs, dtype=torch.float64) + 0.5) / outputs_per_second
    times = token_times(clip_seconds, num_visual_embeddings, num_audio_tokens, audio_patch_seconds)
    return distance_penalty((query_times[:, None] - times[None, :]).abs(), slope).float()


def token_distance_penalty(times: torch.Tensor, slopes: float | Sequence[float]) -> torch.Tensor:
    """``[N]`` token times (s) -> ``[N, N]`` float32 ``-slope * |t_i - t_j|`` (``[heads, N, N]``
    with one slope per head): the encoder's self-attention penalty before its segments are cut.

    The distances are rounded to float32 before the slope multiplies them.
    """
    distance = (times[:, None] - times[None, :]).abs().float()
    return distance_penalty(distance, slopes)


def token_times(
    clip_seconds: int, num_visual_embeddings: int, num_audio_tokens: int, audio_patch_seconds: float
) -> torch.Tensor:
    """``[T * E_v + L_a]`` float64: the time in the clip (s) of every token, in token order.

    Visual token ``(t, e)`` sits at ``t + 0.5`` (tokens are time-major, as ``TokenEncodings`` lays
    them out); audio patch ``k`` at ``(k + 0.5) * audio_patch_seconds``.
    """
    visual_times = (
        torch.arange(clip_seconds, dtype=torch.float64).repeat_interleave(num_visual_embeddings) + 0.5
    )
    audio_times = (torch.arange(num_audio_tokens, dtype=torch.float64) + 0.5) * audio_patch_seconds
    return torch.cat([visual_times, audio_times])


def head_slopes(slope: float, ratio: float, num_heads: int) -> float | tuple[float, ...]:
    """``slope`` for every head when ``ratio`` is 1, else ``slope * ratio**h`` for head ``h``."""
    if ratio == 1:
        return slope
    return tuple(slope * ratio**head for head in range(num_heads))


def distance_penalty(distance: torch.Tensor, slopes: float | Sequence[float]) -> torch.Tensor:
    """``-slope * distance``; with one slope per head, ``[heads, *distance.shape]``."""
    if isinstance(slopes, (int, float)):
        return -slopes * distance
    return -torch.as_tensor(slopes, dtype=distance.dtype)[:, None, None] * distance


def per_batch_mask(bias: torch.Tensor, batch: int) -> torch.Tensor:
    """An attention mask for ``nn.MultiheadAttention``: a 2-D bias as it is; a per-head
    ``[heads, L, S]`` bias repeated to ``[batch * heads, L, S]`` (batch-major, as it expects)."""
    if bias.dim() == 2:
        return bias
    return bias.unsqueeze(0).expand(batch, *bias.shape).reshape(batch * bias.shape[0], *bias.shape[1:])
