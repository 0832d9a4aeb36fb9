"""Temporal dropout and temporal switch: training only, one mask per batch, a permutation."""

from __future__ import annotations

import pytest
import torch

from astra.model.temporal_augment import TemporalAugment, adjacent_swap_permutation


def _sequential_swaps(picked: torch.Tensor) -> torch.Tensor:
    """Reference: swap each picked pair (i, i+1) in turn, from left to right."""
    order = list(range(picked.numel() + 1))
    for i, swap in enumerate(picked.tolist()):
        if swap:
            order[i], order[i + 1] = order[i + 1], order[i]
    return torch.tensor(order)


@pytest.mark.parametrize(("num_steps", "p"), [(2, 0.5), (9, 0.3), (50, 0.3), (50, 0.8), (500, 0.5)])
def test_swap_permutation_matches_sequential_swaps(num_steps: int, p: float) -> None:
    for seed in range(5):
        torch.manual_seed(seed)
        picked = torch.rand(num_steps - 1) < p
        torch.manual_seed(seed)
        permutation = adjacent_swap_permutation(num_steps, p)
        assert torch.equal(permutation, _sequential_swaps(picked))
        assert torch.equal(permutation.sort().values, torch.arange(num_steps))


def test_swap_extremes() -> None:
    assert torch.equal(adjacent_swap_permutation(6, 0.0), torch.arange(6))
    # Every pair swapped in turn: the first step travels to the end.
    assert adjacent_swap_permutation(6, 1.0).tolist() == [1, 2, 3, 4, 5, 0]


def test_identity_in_eval_mode() -> None:
    augment = TemporalAugment(step_dim=4, dropout_p=0.9, switch_p=0.9).eval()
    x = torch.randn(3, 20, 4)
    assert augment(x) is x


def test_one_mask_for_the_whole_batch() -> None:
    torch.manual_seed(0)
    augment = TemporalAugment(step_dim=4, dropout_p=0.5, switch_p=0.3).train()
    base = torch.randn(1, 40, 4)
    offsets = torch.arange(3, dtype=torch.float32)[:, None, None] + 10.0  # clip b = base + 10 + b
    out = augment(base + offsets)
    assert not torch.equal(out, base + offsets)
    replaced = (out == augment.replacement).all(dim=2)  # [B, S]
    assert torch.equal(replaced, replaced[:1].expand_as(replaced)), "dropped steps differ across clips"
    assert 0 < replaced[0].sum() < 40
    kept = ~replaced[0]
    # Kept steps: the same source step in every clip (one permutation), so the offsets survive.
    differences = out[1:, kept] - out[:1, kept]
    torch.testing.assert_close(differences, (offsets[1:] - offsets[:1]).expand_as(differences))


def test_dropout_rate_and_gradient() -> None:
    torch.manual_seed(0)
    augment = TemporalAugment(step_dim=8, dropout_p=0.5, switch_p=0.0).train()
    x = torch.randn(2, 5000, 8)
    out = augment(x)
    replaced = (out == augment.replacement).all(dim=2)[0]
    assert 0.45 < replaced.float().mean().item() < 0.55
    out.sum().backward()
    assert augment.replacement is not None and augment.replacement.grad is not None
    assert augment.replacement.grad.abs().sum() > 0


def test_switch_only_permutes_steps() -> None:
    torch.manual_seed(0)
    augment = TemporalAugment(step_dim=3, dropout_p=0.0, switch_p=0.3).train()
    assert augment.replacement is None  # no unused parameter when nothing is dropped
    x = torch.arange(50, dtype=torch.float32)[None, :, None].expand(2, 50, 3)
    out = augment(x)
    steps = out[0, :, 0]
    assert torch.equal(steps.sort().values, torch.arange(50, dtype=torch.float32))
    assert not torch.equal(steps, torch.arange(50, dtype=torch.float32))
    assert torch.equal(out[0], out[1])  # one permutation for the batch


def test_probabilities_are_checked() -> None:
    with pytest.raises(ValueError, match="temporal_dropout_p"):
        TemporalAugment(step_dim=3, dropout_p=1.5, switch_p=0.0)
    with pytest.raises(ValueError, match="temporal_switch_p"):
        TemporalAugment(step_dim=3, dropout_p=0.0, switch_p=-0.1)
