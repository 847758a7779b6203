"""The integer split: units handed out cheapest first, and the float guard that gives back
units priced at the water level when float error prices more of them than the budget."""

from __future__ import annotations

import pytest

from allotment.planner import waterfill
from allotment.planner.waterfill import split


def test_units_go_to_the_lowest_next_price_then_the_first_key() -> None:
    """Weights 2 and 1, 10 GPUs: lambda 10/3, so 6.67 and 3.33 exact. The 7th GPU of
    ``a`` costs 3.5 and the 4th of ``b`` 4: ``a`` gets the spare one."""
    got, _ = split(["a", "b"], [2.0, 1.0], [0, 0], [100, 100], 10)
    assert got == [7, 3]
    got, _ = split(["b", "a"], [1.0, 1.0], [0, 0], [100, 100], 9)
    assert got == [4, 5]  # equal prices: the lower key ("a") first


def test_too_many_units_at_the_level_are_given_back_dearest_and_last_key_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A water level a little too high (as float error could make it) prices 10 units for
    a budget of 9: the one given back is the unit that would have been handed out last,
    so the split is the one of the exact level."""
    monkeypatch.setattr(waterfill, "water_level", lambda *a: 5.0)  # exact: 4.5
    got, lam = split(["b", "a"], [1.0, 1.0], [0, 0], [100, 100], 9)
    assert (got, lam) == ([4, 5], 5.0)
    got, _ = split(["a", "b", "c"], [1.0, 1.0, 2.0], [0, 0, 0], [100, 100, 100], 18)
    assert got == [5, 4, 9]  # 5+5+10 priced at <= 5; c's 10th (5.0) and b's 5th go back
