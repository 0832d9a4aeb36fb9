"""The learning-rate schedule: linear warm-up to the base rate, then cosine decay to zero."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch

from astra.training.schedule import warmup_cosine

BASE = 1e-3


def _rates(warmup_steps: int, total_steps: int) -> list[float]:
    """The learning rate of every step ``0 .. total_steps`` (one optimizer step between each)."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=BASE)
    scheduler = warmup_cosine(optimizer, warmup_steps, total_steps)
    rates = []
    for _ in range(total_steps + 1):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_warm_up_rises_linearly_to_the_base_rate() -> None:
    rates = _rates(warmup_steps=10, total_steps=100)
    assert rates[0] == pytest.approx(BASE / 10)  # step 0 already trains, at 1/warmup of the rate
    assert rates[:10] == pytest.approx([BASE * (s + 1) / 10 for s in range(10)])
    assert rates[9] == pytest.approx(BASE)
    assert rates[10] == pytest.approx(BASE)  # the cosine starts at the base rate
    assert max(rates) == pytest.approx(BASE)


def test_after_warm_up_the_rate_decays_monotonically_to_zero() -> None:
    rates = _rates(warmup_steps=10, total_steps=100)
    decay = rates[10:]
    assert all(later <= earlier for earlier, later in pairwise(decay))
    assert decay[-1] == pytest.approx(0.0, abs=1e-12)
    assert rates[-2] < BASE * 1e-3  # the last trained step is already near zero
    # Halfway through the decay, the cosine is at half the base rate.
    assert rates[10 + 45] == pytest.approx(BASE / 2)


def test_without_warm_up_the_first_step_is_at_the_base_rate() -> None:
    rates = _rates(warmup_steps=0, total_steps=50)
    assert rates[0] == pytest.approx(BASE)
    assert all(later <= earlier for earlier, later in pairwise(rates))
    assert rates[-1] == pytest.approx(0.0, abs=1e-12)


def test_steps_past_the_end_stay_at_zero() -> None:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=BASE)
    scheduler = warmup_cosine(optimizer, 2, 20)
    for _ in range(30):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
