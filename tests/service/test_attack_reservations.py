"""Launch reservations under attack: what a user or an insider sent to a live ``allot up``
that it got wrong, each a test first (``governance.reservations`` has the rules)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from allotment.storage.models import AuditRow, ReservationRow
from tests.service.conftest import T0, World


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


GOOD = {"team": "llama", "gpus": 2, "start": iso(T0 + 86400), "hours": 4, "reason": "x"}


def count(w: World, model: Any) -> int:
    with w.db.session() as s:
        return int(s.execute(select(func.count()).select_from(model)).scalar_one())


@pytest.mark.parametrize(("case", "fields", "field"), [
    # the end (start + hours) is past what a date can say: was a 500 (ValueError in iso)
    ("ends in year 10000", {"start": "9999-12-31T23:00:00Z", "hours": 48}, "start"),
    ("ends in year 10000 (an offset)", {"start": "9999-12-31T23:59:59-14:00"}, "start"),
    ("named, ends in year 10000", {"start": "9999-12-31T23:59:59Z", "name": "far"}, "start"),
    # before year 1 in UTC: was a 500 (the "in the past" message could not print it)
    ("year 1 with an offset", {"start": "0001-01-01T00:00:00+01:00"}, "start"),
    # the window is empty (start + hours == start in floating point): was stored
    ("hours 1e-300", {"hours": 1e-300}, "hours"),
    ("hours 5e-324", {"hours": 5e-324}, "hours"),
    # path segments: "/v1/reservations/.." is normalised away by every client, so such a
    # reservation could not be read, approved or cancelled by the CLI or the dashboard
    ("name ..", {"name": ".."}, "name"),
    ("name .", {"name": "."}, "name"),
])
def test_bad_times_and_names_are_a_422_naming_the_field(world: World, case: str,
                                                        fields: dict[str, Any],
                                                        field: str) -> None:
    before = count(world, ReservationRow), count(world, AuditRow)
    r = world.call("lead_own", "POST", "/v1/reservations", json={**GOOD, **fields})
    assert (r.status_code, r.json().get("field")) == (422, field), (case, r.text)
    assert (count(world, ReservationRow), count(world, AuditRow)) == before


def test_a_dot_name_cannot_be_made_through_the_dashboard(world: World) -> None:
    from tests.service.dashboard_login import ORIGIN, csrf_on, ui_login

    lead = ui_login(world, "lead_own")
    data = {**{k: str(v) for k, v in GOOD.items()}, "gpu_type": "a100", "name": "..",
            "csrf": csrf_on(lead, "/ui/reservations")}
    r = lead.post("/ui/reservations", data=data, headers={"Origin": ORIGIN})
    assert r.status_code == 422 and 'id="e-name"' in r.text, r.text[-500:]
    data["start"] = "9999-12-31T23:59:59Z"
    data["name"] = "far"
    r = lead.post("/ui/reservations", data=data, headers={"Origin": ORIGIN})
    assert r.status_code == 422 and 'id="e-start"' in r.text
    assert count(world, ReservationRow) == 0
