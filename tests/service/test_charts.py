"""The dashboard's charts: server-side SVG with a value axis and its unit, a time axis, a
legend, lines scaled into the plot; the teams page draws each team's GPUs in use against
its guarantee, the cluster page utilisation and idle-while-waiting over 24 h and 7 days,
from what the loop integrated."""

from __future__ import annotations

import re

from allotment.backends.fake import FakeBackend
from allotment.service.ui.charts import (
    BOTTOM,
    HEIGHT,
    LEFT,
    TOP,
    WIDTH,
    Series,
    line_chart,
    nice_max,
)
from tests.service.conftest import T0, World
from tests.service.dashboard_login import ui_get, ui_login
from tests.service.test_loop import loop_for


def test_nice_scale() -> None:
    """The value axis ends at the next 1, 2 or 5 x 10^k; nothing above 0 gives 0..1."""
    assert [nice_max(v) for v in (0, 0.3, 1, 3, 8, 16, 99, 101)] == \
        [1, 0.5, 1, 5, 10, 20, 100, 200]


def test_a_chart_has_axes_units_legend_and_lines_inside_the_plot() -> None:
    """Ticks 0..10 on the value axis with the unit, six UTC time labels an hour apart
    (HH:MM for a day), one polyline per series (the guarantee dashed), a legend entry
    each, every point inside the plot area, and labels escaped."""
    svg = str(line_chart([Series("in <use>", [0, 2, 8, 3, 1, 0], "inuse"),
                          Series("guarantee", [4.0] * 6, "guarantee", dashed=True)],
                         T0 // 3600 * 3600, 3600, "a100 GPUs", "team llama"))
    ticks = re.findall(r'class="tick" x="[\d.]+" y="[\d.]+" text-anchor="end">([\d.]+)<', svg)
    assert ticks == ["0", "2", "4", "6", "8", "10"]
    times = re.findall(r">(\d\d:\d\d)</text>", svg)
    assert len(times) == 6 and times[0] != times[1]
    assert "a100 GPUs" in svg and ">UTC<" in svg
    assert "in &lt;use&gt;" in svg and "<use>" not in svg
    lines = re.findall(r'<polyline class="line (\w+)" points="([^"]+)"( stroke-dasharray)?', svg)
    assert [(k, bool(d)) for k, _, d in lines] == [("inuse", False), ("guarantee", True)]
    for _, pts, _ in lines:
        for p in pts.split():
            x, y = map(float, p.split(","))
            assert LEFT <= x <= WIDTH and TOP <= y <= HEIGHT - BOTTOM
    # 8 of a 0..10 axis sits at 80% of the plot's height
    ys = [float(p.split(",")[1]) for p in lines[0][1].split()]
    plot_h = HEIGHT - TOP - BOTTOM
    assert abs((TOP + plot_h - ys[2]) / plot_h - 0.8) < 0.01
    assert re.search(r'<svg class="chart"[^>]*role="img" aria-label="team llama"', svg)


def test_teams_and_cluster_pages_draw_the_charts(world: World) -> None:
    """After the loop ran a while (llama borrowing, vision waiting), the teams page has a
    chart per team with its guarantee, and the cluster page two charts (24 h, 7 days) of
    utilisation and idle-while-waiting, with the hour's utilisation in them."""
    fb = FakeBackend()
    loop = loop_for(world, fb, accounting_flush_s=0)
    world.submit("member_own", gpus=12)
    for _ in range(4):
        loop.tick()
        world.clock.advance(300)
    loop.flush()
    c = ui_login(world, "admin")
    page = ui_get(c, "/ui/teams")
    charts = re.findall(r'<svg class="chart".*?</svg>', page, re.S)
    assert len(charts) == page.count("<figure id=\"chart-") >= 2
    llama = next(ch for ch in charts if "team llama" in ch)
    assert "guarantee now (8)" in llama and "a100 GPUs" in llama
    assert "svg class=\"spark\"" not in page
    page = ui_get(c, "/ui")
    charts = re.findall(r'<svg class="chart".*?</svg>', page, re.S)
    assert len(charts) == 2 and "last 24 h" in page and "last 7 days" in page
    assert all("% of GPUs up" in ch and "idle while jobs wait" in ch for ch in charts)
    # 12 of 16 GPUs in use this hour: 75 % utilisation, drawn above the axis
    with world.db.session() as s:
        from allotment.service.ui.views import cluster_history

        h = cluster_history(s, world.clock(), 24)
    assert abs(h.utilisation_pct[-1] - 75.0) < 1e-6 and h.idle_waiting_pct[-1] == 0.0
