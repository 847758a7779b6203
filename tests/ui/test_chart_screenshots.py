"""The charts in a real headless Chromium: the teams page (each team's GPUs in use against
its guarantee) and the cluster page (utilisation and idle-while-waiting over 24 h and
7 days) drawn from a week of history, screenshotted into ``$ALLOTMENT_SCREENSHOTS``
(default ``out/screenshots``). Each chart is shown at a readable size with its axis
labels, unit and legend."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from allotment.service.app import create_app
from allotment.storage.models import ClusterUsageRow, UsageRow
from tests.dashboard.test_e2e import SHOTS, _browser_paths, browser, login, seed_site  # noqa: F401
from tests.service.conftest import LiveServer

ORG = [{"name": "research", "children": [
    {"name": "llama", "guaranteed": {"a100": 8}}, {"name": "vision", "guaranteed": {"a100": 8}}]}]


@pytest.fixture(scope="module")
def site() -> Iterator[dict[str, Any]]:
    _browser_paths()
    tmp, db, tokens, now = seed_site("allotment-charts-", ORG)
    hour = int(now // 3600 * 3600)
    with db.session() as s:
        for h in range(24 * 7):  # a week: llama's day-night cycle, vision steady
            t = hour - h * 3600
            llama = 6 + 5 * math.sin(h / 24 * 2 * math.pi)
            vision = 4 + (h % 5)
            for team, used in (("llama", llama), ("vision", vision)):
                s.add(UsageRow(team=team, gpu_type="a100", hour=t, used_gpu_s=used * 3600,
                               borrowed_gpu_s=max(0, used - 8) * 3600, lent_gpu_s=0.0,
                               idle_gpu_s=0.0, guaranteed_gpu_s=8 * 3600, preemptions=0))
            s.add(ClusterUsageRow(gpu_type="a100", hour=t, up_gpu_s=16 * 3600,
                                  used_gpu_s=min(16, llama + vision) * 3600,
                                  idle_waiting_gpu_s=(2 * 3600 if h % 7 == 0 else 0.0)))
    app = create_app(db, None, {"runs_dir": str(tmp / "runs"),
                                "reports_dir": str(tmp / "reports")})
    with LiveServer(app) as server:
        yield {"url": server.url, "tokens": tokens}
    db.dispose()
    shutil.rmtree(tmp, ignore_errors=True)


def _charts(d: Any) -> list[Any]:
    return list(d.find_elements("css selector", "svg.chart"))


@pytest.mark.parametrize(("path", "shot", "count"), [
    ("/ui/teams", "charts-teams-24h.png", 2), ("/ui/teams?window=7d", "charts-teams-7d.png", 2),
    ("/ui", "charts-cluster.png", 2)])
def test_charts_are_drawn_readably(site: dict[str, Any], browser: Any,  # noqa: F811
                                   path: str, shot: str, count: int) -> None:
    """Each chart at least 400 x 120 px on screen, with visible tick labels, a unit and a
    legend entry per line; the page is screenshotted."""
    login(browser, site, "admin")
    browser.get(site["url"] + path)
    charts = _charts(browser)
    assert len(charts) == count
    for ch in charts:
        browser.execute_script("arguments[0].scrollIntoView()", ch)
        size = ch.size
        assert size["width"] >= 400 and size["height"] >= 120, size
        texts = [t.text for t in ch.find_elements("css selector", "text") if t.is_displayed()]
        assert "UTC" in texts and any(t.endswith("GPUs") or t.endswith("GPUs up")
                                      for t in texts), texts
        legends = ch.find_elements("css selector", "text.legend")
        lines = ch.find_elements("css selector", "polyline.line")
        assert len(legends) == len(lines) == 2
        assert sum(t.replace(".", "").isdigit() for t in texts) >= 4  # tick labels
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    target = SHOTS / shot
    charts[0].screenshot(str(target))
    assert target.stat().st_size > 5000
    browser.save_screenshot(str(SHOTS / shot.replace(".png", "-page.png")))
