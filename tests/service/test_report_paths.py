"""The simulator-report plots are served from the reports folder and nothing outside it:
dot-only names, their percent-encodings and symlinks out of the folder are refused."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest

from allotment.storage.db import Database
from tests.service.conftest import LiveServer, World, make_world

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


@pytest.fixture
def reports_world(db: Database, tmp_path: Path) -> tuple[World, Path]:
    data = tmp_path / "site"
    (data / "reports" / "run1").mkdir(parents=True)
    (data / "reports" / "run1" / "plot.png").write_bytes(PNG)
    (data / "secret.png").write_bytes(PNG + b"secret")
    (tmp_path / "outside.png").write_bytes(PNG + b"outside")
    return make_world(db, {"reports_dir": str(data / "reports")}), data


def test_plot_inside_the_folder_is_served(reports_world: tuple[World, Path]) -> None:
    w, _ = reports_world
    r = w.call("member_own", "GET", "/ui/reports/run1/plot.png")
    assert r.status_code == 200 and r.content == PNG


@pytest.mark.parametrize("path", [
    "/ui/reports/%2e%2e/secret.png", "/ui/reports/%2E%2E/secret.png",
    "/ui/reports/%2e/..png", "/ui/reports/run1/%2e%2e", "/ui/reports/.../secret.png",
    "/ui/reports/%2e%2e%2f%2e%2e/outside.png", "/ui/reports/..%2f..%2foutside.png/x.png",
])
def test_dot_names_are_refused(reports_world: tuple[World, Path], path: str) -> None:
    """``..`` (plain or percent-encoded) never reaches a file above the reports folder."""
    w, _ = reports_world
    r = w.call("member_own", "GET", path)
    assert r.status_code == 404, (path, r.status_code)
    assert b"secret" not in r.content and b"outside" not in r.content


def test_symlink_out_of_the_folder_is_refused(reports_world: tuple[World, Path]) -> None:
    """A report folder that is a symlink to the data directory serves nothing from it."""
    w, data = reports_world
    (data / "reports" / "evil").symlink_to(data)
    r = w.call("member_own", "GET", "/ui/reports/evil/secret.png")
    assert r.status_code == 404 and b"secret" not in r.content


def test_the_listing_follows_no_link_either(reports_world: tuple[World, Path]) -> None:
    """The reports page lists no report folder, summary or plot that is a link (the plot
    route serves none): a link to a folder outside shows neither its name nor its text."""
    w, data = reports_world
    outside = data.parent / "elsewhere"
    outside.mkdir()
    (outside / "summary.json").write_text('{"policies": {}, "meta": {"trace": "LEAKED"}}')
    (data / "reports" / "linked").symlink_to(outside)
    (data / "reports" / "run1" / "summary.json").write_text('{"policies": {}, "meta": {}}')
    (data / "reports" / "run1" / "link.png").symlink_to(data / "secret.png")
    r = w.call("member_own", "GET", "/ui/reports")
    assert r.status_code == 200
    assert "run1" in r.text and "linked" not in r.text and "LEAKED" not in r.text
    assert "link.png" not in r.text


def test_raw_dot_dot_on_a_live_server(reports_world: tuple[World, Path]) -> None:
    """Over a real socket (no client-side path normalisation) ``/ui/reports/../x.png`` and
    its encodings are 404."""
    w, _ = reports_world
    with LiveServer(w.client.app) as server:
        for path in ("/ui/reports/../secret.png", "/ui/reports/%2e%2e/secret.png",
                     "/ui/reports/run1/../../secret.png"):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", path, headers={
                "Authorization": f"Bearer {w.tokens['member_own']}"})
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            assert resp.status == 404 and b"secret" not in body, (path, resp.status)
