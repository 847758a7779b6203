"""Logging in to the dashboard as a browser does: GET the login form (its pre-session CSRF
field and cookie), then POST it from the service's own origin."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.service.conftest import World

ORIGIN = "http://testserver"  # the TestClient's own origin
CSRF_RE = re.compile(r'name="csrf" value="([^"]*)"')


def browser(world: World, address: str = "testclient") -> TestClient:
    """A fresh cookie jar on the world's app that does not follow redirects."""
    return TestClient(world.client.app, follow_redirects=False, client=(address, 50000))


def csrf_on(c: TestClient, path: str) -> str:
    m = CSRF_RE.search(c.get(path).text)
    return m.group(1) if m else ""


def ui_login(world: World, who: str, address: str = "testclient") -> TestClient:
    c = browser(world, address)
    csrf = csrf_on(c, "/ui/login")
    r = c.post("/ui/login", data={"token": world.tokens[who], "next": "/ui", "csrf": csrf},
               headers={"Origin": ORIGIN})
    assert r.status_code == 303, r.text
    return c


def ui_get(c: TestClient, path: str) -> str:
    r = c.get(path)
    assert r.status_code == 200, (path, r.status_code, r.text[:500])
    return r.text
