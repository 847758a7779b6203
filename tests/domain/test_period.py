"""The quota period: ``YYYY-MM`` in, bounds in Unix time out, mistakes named by field."""

from __future__ import annotations

import calendar

import pytest

from allotment.domain.period import PATTERN, Period
from allotment.errors import InputError


@pytest.mark.parametrize("text", ["2026-12", "1970-01", "2099-12"])
def test_parse_round_trips(text: str) -> None:
    """A period written YYYY-MM within 1970-2099 parses and prints back the same."""
    assert str(Period.parse(text)) == text


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "1969-12", "2100-01", "2026-1",
                                  "26-12", "2026-12\n", " 2026-12", "2026/12", ""])
def test_a_bad_period_names_its_field(text: str) -> None:
    """A bad period is an InputError naming the field given, quoting the value."""
    with pytest.raises(InputError) as got:
        Period.parse(text, "requests[0].period")
    assert got.value.field == "requests[0].period"
    assert str(got.value) == f"requests[0].period: {text!r}: use YYYY-MM"
    assert not Period.is_valid(text)


def test_previous_and_next_cross_the_year() -> None:
    assert Period.parse("2026-01").previous() == Period(2025, 12)
    assert Period.parse("2025-12").next() == Period(2026, 1)
    assert Period.parse("2026-06").previous().next() == Period(2026, 6)


def test_bounds_hold_exactly_the_month() -> None:
    """start is the month's first second (UTC), end the next month's; of() agrees."""
    p = Period.parse("2024-02")  # a leap February
    assert p.start == calendar.timegm((2024, 2, 1, 0, 0, 0))
    assert p.end - p.start == 29 * 86400
    assert Period.of(p.start) == p and Period.of(p.end - 1) == p
    assert Period.of(p.end) == Period(2024, 3)
    assert Period.parse("2026-12").end == calendar.timegm((2027, 1, 1, 0, 0, 0))


def test_periods_order_by_time() -> None:
    assert Period(2025, 12) < Period(2026, 1) < Period(2026, 2)
    assert max([Period(2026, 1), Period(2025, 12)]) == Period(2026, 1)


def test_the_api_pattern_is_the_type_s() -> None:
    """The schemas validate ``period`` fields with the same pattern the type parses."""
    from allotment.service import schemas

    assert schemas.PERIOD == PATTERN
