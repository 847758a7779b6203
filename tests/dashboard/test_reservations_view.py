"""The launch reservations page in a real headless Chromium (as ``test_e2e``), against a
live service whose loop runs on the fake backend. A llama lead reaches the page from the
nav, makes a mistake (shown next to its field), then asks for 12 GPUs (beyond llama's
guarantee of 8): pending, with vision's guarantee shrinking by 4. An admin approves it
with the page's button; the lead cancels it. Screenshots: ``reservations-*.png``."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from allotment.backends.fake import FakeBackend
from allotment.scheduler.config import SchedulerConfig
from allotment.service.app import create_app
from allotment.service.loop import LoopConfig, SchedulerLoop
from tests.dashboard.test_e2e import (
    ORG,
    _api,
    _browser_paths,
    browser,
    check_page,
    login,
    seed_site,
    wait,
)
from tests.service.conftest import LiveServer

__all__ = ["browser"]  # the module's browser fixture


@pytest.fixture(scope="module")
def site() -> Iterator[dict[str, Any]]:
    _browser_paths()
    tmp, db, tokens, _ = seed_site("allotment-ui-resv-", ORG, (
        ("lee", "lead", "llama"), ("ann", "member", "llama")))
    loop = SchedulerLoop(db, FakeBackend(), LoopConfig(
        tick_s=0.3, scheduler=SchedulerConfig(grace_s=10, min_runtime_s=0)))
    app = create_app(db, loop, {"runs_dir": str(tmp / "runs")})
    with LiveServer(app) as server:
        yield {"url": server.url, "tokens": tokens, "db": db, "client": _api(server.url)}
    db.dispose()
    shutil.rmtree(tmp, ignore_errors=True)


def _row(d: Any, name: str) -> Any:
    return d.find_element("id", f"resv-{name}")


def test_lead_asks_admin_approves_lead_cancels(site: dict[str, Any], browser: Any) -> None:
    """The request form, its mistakes, the impact of a pending reservation, the admin's
    approve button and the lead's cancel button, each screenshotted."""
    d = browser
    start = datetime.fromtimestamp(time.time() + 2 * 86400, UTC).strftime("%Y-%m-%dT%H:00:00Z")
    login(d, site, "lee")
    d.find_element("link text", "Reservations").click()
    wait(d, lambda: d.current_url.endswith("/ui/reservations"))
    text = check_page(d, "reservations-empty")
    assert "Ask for a reservation" in text and "0 reservation(s)" in text
    for field, value in (("gpus", "12"), ("start", start), ("hours", "0"),
                         ("reason", "flagship launch"), ("name", "flagship")):
        el = d.find_element("id", f"r-{field}")
        el.clear()
        el.send_keys(value)
    d.find_element("css selector", "form[action='/ui/reservations'] button").click()
    err = wait(d, lambda: d.find_element("id", "e-hours"))
    assert "hours" in err.text and "greater than 0" in err.text
    check_page(d, "reservations-mistake", fresh=False)
    d.find_element("id", "r-hours").clear()
    d.find_element("id", "r-hours").send_keys("48")
    d.find_element("css selector", "form[action='/ui/reservations'] button").click()
    wait(d, lambda: "made=flagship" in d.current_url)
    text = check_page(d, "reservations-pending")
    assert "Reservation flagship: pending." in text
    row = _row(d, "flagship")
    assert row.find_element("css selector", "td.status").text == "pending"
    assert "vision's guarantee shrinks by 4 (8 -> 4)" in row.text
    assert not row.find_elements("xpath", ".//button[normalize-space()='Approve']")

    login(d, site, "admin")
    d.get(site["url"] + "/ui/reservations")
    _row(d, "flagship").find_element("xpath", ".//button[normalize-space()='Approve']").click()
    wait(d, lambda: _row(d, "flagship").find_element("css selector", "td.status").text
         == "approved (root)")
    check_page(d, "reservations-approved")
    api = site["client"]
    got = api(site["tokens"]["ann"], "GET", "/v1/reservations/flagship").json()
    assert (got["status"], got["approved_by"], got["gpus"]) == ("approved", "root", 12)

    login(d, site, "lee")
    d.get(site["url"] + "/ui/reservations")
    _row(d, "flagship").find_element("xpath", ".//button[normalize-space()='Cancel']").click()
    wait(d, lambda: _row(d, "flagship").find_element("css selector", "td.status").text
         .startswith("cancelled"))
    check_page(d, "reservations-cancelled")
    login(d, site, "ann")
    d.get(site["url"] + "/ui/reservations")
    text = check_page(d, "reservations-member")
    assert "Ask for a reservation" not in text and "flagship" in text
