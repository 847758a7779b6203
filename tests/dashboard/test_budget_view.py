"""The budget and credit view of the dashboard's Teams page in a real headless Chromium
(as ``test_e2e``), against a live service whose loop runs on the fake backend with credit
for lending on. llama is past its 1 GPU-hour budget (2 GPU-hours used this period) and
borrows vision's idle guarantee, which earns vision credit. The page shows budget,
remaining ("over budget: idle GPUs only") and credit; a waiting llama job says why in
``allot why``'s words. Screenshot: ``budget-teams.png``."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from allotment.backends.fake import FakeBackend
from allotment.domain.cluster import GpuType
from allotment.scheduler.config import SchedulerConfig
from allotment.service.app import create_app
from allotment.service.loop import LoopConfig, SchedulerLoop
from allotment.storage import budgets
from allotment.storage.models import UsageRow
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
    tmp, db, tokens, now = seed_site("allotment-ui-budget-", ORG, (
        ("ann", "member", "llama"), ("vic", "member", "vision")))
    with db.session() as s:
        budgets.set_period(s, "default", {("llama", GpuType("a100")): 1.0,
                                          ("vision", GpuType("a100")): 500.0}, "test")
        s.add(UsageRow(team="llama", gpu_type="a100", hour=int(now // 3600 * 3600) - 3600,
                       used_gpu_s=2 * 3600.0, borrowed_gpu_s=0.0, lent_gpu_s=0.0,
                       idle_gpu_s=0.0, guaranteed_gpu_s=0.0, preemptions=0))
    loop = SchedulerLoop(db, FakeBackend(), LoopConfig(
        tick_s=0.3, accounting_flush_s=0.5,
        scheduler=SchedulerConfig(grace_s=10, min_runtime_s=0, credit_half_life_s=3600.0)))
    app = create_app(db, loop, {"runs_dir": str(tmp / "runs")})
    with LiveServer(app) as server:
        yield {"url": server.url, "tokens": tokens, "db": db, "client": _api(server.url)}
    db.dispose()
    shutil.rmtree(tmp, ignore_errors=True)


def test_teams_page_shows_budget_remaining_and_credit(site: dict[str, Any],
                                                      browser: Any) -> None:
    """llama over budget runs on idle GPUs (vision's), vision earns credit; the Teams page
    and a waiting job's reason show it."""
    api, tok = site["client"], site["tokens"]
    first = api(tok["ann"], "POST", "/v1/jobs", json={
        "team": "llama", "gpu_type": "a100", "gpus": 16, "command": "sleep 600"}).json()
    d = browser
    login(d, site, "ann")
    wait(d, lambda: api(tok["ann"], "GET", f"/v1/jobs/{first['id']}").json()["state"]
         == "running")
    second = api(tok["ann"], "POST", "/v1/jobs", json={
        "team": "llama", "gpu_type": "a100", "gpus": 8, "command": "sleep 60"}).json()
    why = wait(d, lambda: (r := api(tok["ann"], "GET", f"/v1/jobs/{second['id']}").json()
                           ["reason"]) and "budget" in r and r)
    assert "team llama is 2" in why and "of its 1 GPU-hour budget for the period; its jobs " \
        "run on idle GPUs only" in why, why
    time.sleep(3)  # vision's guarantee has been lent for a while: credit
    d.get(site["url"] + "/ui/teams")

    def row(team: str) -> Any:
        return d.find_element("xpath", f"//table[contains(@class,'teams')]//tr[th[starts-with("
                                       f"normalize-space(), '{team}')]]")

    wait(d, lambda: float(row("vision").find_element("css selector", "td.credit").text) > 0
         or d.refresh())
    text = check_page(d, "budget-teams")
    assert "Budget GPU-h" in text and "Remaining" in text and "Credit GPU-h" in text
    llama = row("llama")
    assert llama.find_element("css selector", "td.budget").text == "1.0"
    assert "over budget: idle GPUs only" in llama.find_element(
        "css selector", "td.remaining").text
    vision = row("vision")
    assert vision.find_element("css selector", "td.budget").text == "500.0"
    assert float(vision.find_element("css selector", "td.credit").text) > 0
    d.get(site["url"] + f"/ui/jobs/{second['id']}")
    text = check_page(d, "budget-why")
    assert "its jobs run on idle GPUs only" in text
