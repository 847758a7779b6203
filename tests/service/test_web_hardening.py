"""The dashboard and API send security headers; every state-changing form post (login
included) must come from the service's own origin, and login carries a pre-session CSRF
field; failed authentication is rate-limited per client address with a 429."""

from __future__ import annotations

import re

import pytest

from allotment.service.security import AuthLimiter
from allotment.storage.db import Database
from tests.service.conftest import World, make_world
from tests.service.dashboard_login import ORIGIN, browser, csrf_on, ui_get, ui_login

PAGES = ["/ui", "/ui/teams", "/ui/jobs", "/ui/plans", "/ui/reservations", "/ui/disputes",
         "/ui/audit", "/ui/reports"]


def test_security_headers_on_pages_and_api(world: World) -> None:
    """CSP (scripts from the service only, no framing), nosniff and a referrer policy on
    every dashboard page, the login page, error pages and API answers."""
    c = ui_login(world, "member_own")
    answers = [c.get(p) for p in [*PAGES, "/ui/jobs/999", "/ui/static/app.js"]]
    answers += [browser(world).get("/ui/login"), world.call("member_own", "GET", "/v1/jobs"),
                world.call("anon", "GET", "/v1/jobs"), world.client.get("/health"),
                world.call("member_own", "GET", "/v1/jobs/999")]
    for r in answers:
        h = r.headers
        assert h.get("x-content-type-options") == "nosniff", r.url
        assert h.get("referrer-policy") in ("same-origin", "no-referrer"), r.url
        assert "frame-ancestors 'none'" in h.get("content-security-policy", ""), r.url
        assert h.get("x-frame-options") == "DENY", r.url
    for r in answers[:len(PAGES) + 1]:
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp.split(
            "script-src")[1].split(";")[0], csp
        assert "default-src 'none'" in csp or "default-src 'self'" in csp


def test_pages_have_no_inline_script(world: World) -> None:
    """Nothing the CSP would block: no inline <script> and no on* handler attributes."""
    c = ui_login(world, "admin")
    for p in [*PAGES, "/ui/login"]:
        html = ui_get(c, p)
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), p
        assert not re.search(r"\son[a-z]+\s*=", html), p


def _login(c: object, token: str, csrf: str | None, headers: dict[str, str]) -> object:
    data = {"token": token, "next": "/ui"}
    if csrf is not None:
        data["csrf"] = csrf
    return c.post("/ui/login", data=data, headers=headers)  # type: ignore[attr-defined]


def test_login_csrf_and_origin(world: World) -> None:
    """Login with a valid token is refused from a foreign Origin, without Origin and
    Referer, and without the form's pre-session CSRF field; no session is made."""
    tok = world.tokens["member_own"]
    for headers, with_csrf in (({"Origin": "https://evil.example"}, True),
                               ({"Origin": "null"}, True),
                               ({}, True),
                               ({"Referer": "https://evil.example/x"}, True),
                               ({"Origin": ORIGIN}, False)):
        c = browser(world)
        csrf = csrf_on(c, "/ui/login") if with_csrf else None
        r = _login(c, tok, csrf, headers)
        assert r.status_code == 403, (headers, with_csrf, r.status_code)  # type: ignore
        assert "allotment_session" not in c.cookies, headers
    c = browser(world)
    r = _login(c, tok, "0" * 32, {"Origin": ORIGIN})
    assert r.status_code == 403  # type: ignore[attr-defined]
    c = browser(world)
    r = _login(c, tok, csrf_on(c, "/ui/login"), {"Referer": ORIGIN + "/ui/login"})
    assert r.status_code == 303 and "allotment_session" in c.cookies  # type: ignore


def test_form_posts_check_origin(world: World) -> None:
    """A submit with a valid session and CSRF field is refused from a foreign Origin or with
    neither Origin nor Referer, and accepted from the service's own origin."""
    c = ui_login(world, "member_own")
    form = {"csrf": csrf_on(c, "/ui/jobs"), "team": "llama", "gpu_type": "a100", "gpus": "1",
            "command": "sleep 1"}
    for headers in ({"Origin": "https://evil.example"}, {},
                    {"Referer": "https://evil.example/ui/jobs"},
                    {"Origin": "http://testserver.evil.example"}):
        r = c.post("/ui/jobs", data=form, headers=headers)
        assert r.status_code == 403, headers
    assert world.call("admin", "GET", "/v1/jobs").json()["total"] == 0
    r = c.post("/ui/jobs", data=form, headers={"Referer": ORIGIN + "/ui/jobs"})
    assert r.status_code == 303
    r = c.post("/ui/jobs", data=form, headers={"Origin": ORIGIN})
    assert r.status_code == 303
    assert world.call("admin", "GET", "/v1/jobs").json()["total"] == 2
    r = c.post("/ui/logout", data={"csrf": form["csrf"]}, headers={"Origin": "https://x.example"})
    assert r.status_code == 403
    assert c.get("/ui/jobs").status_code == 200


def test_cookie_api_writes_check_origin(world: World) -> None:
    """The API accepts the session cookie; a state-changing API call made with it must come
    from the service's origin too (a Bearer token needs no Origin)."""
    c = ui_login(world, "member_own")
    job = {"team": "llama", "gpu_type": "a100", "gpus": 1, "command": "x"}
    assert c.post("/v1/jobs", json=job, headers={"Origin": "https://evil.example"}
                  ).status_code == 403
    assert c.post("/v1/jobs", json=job, headers={"Origin": ORIGIN}).status_code == 201
    assert c.get("/v1/jobs").status_code == 200
    assert world.call("member_own", "POST", "/v1/jobs", json=job).status_code == 201


def _wrong(c: object, k: int) -> int:
    return int(c.get("/v1/me", headers={  # type: ignore[attr-defined]
        "Authorization": f"Bearer alt_wrong{k}"}).status_code)


def test_failed_tokens_are_rate_limited(db: Database) -> None:
    """20 wrong tokens are 401; then the address gets 429 with Retry-After, for wrong and
    right tokens alike (a guess is not even checked); requests without a token are not
    counted and stay 401; another address is unaffected; after the window all is well."""
    w = make_world(db)
    c = browser(w, "10.0.0.1")
    assert [_wrong(c, k) for k in range(20)] == [401] * 20
    r = c.get("/v1/me", headers={"Authorization": "Bearer alt_wrong-again"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert "too many failed" in r.json()["detail"]
    good = {"Authorization": f"Bearer {w.tokens['member_own']}"}
    assert c.get("/v1/me", headers=good).status_code == 429
    assert all(c.get("/v1/me").status_code == 401 for _ in range(30))
    other = browser(w, "10.0.0.2")
    assert other.get("/v1/me", headers=good).status_code == 200
    assert _wrong(other, 0) == 401
    w.clock.advance(int(r.headers["retry-after"]))
    assert c.get("/v1/me", headers=good).status_code == 200


def test_wrong_sessions_and_logins_count_too(db: Database) -> None:
    """Forged session cookies and wrong tokens in the login form use up the same budget;
    the login page then says 429."""
    w = make_world(db, {"auth_fail_limit": 3, "auth_fail_window_s": 60})
    c = browser(w, "10.0.0.3")
    c.cookies.set("allotment_session", "als_forged")
    assert c.get("/v1/me").status_code == 401
    c.cookies.clear()
    for _ in range(2):
        r = _login(c, "alt_wrong", csrf_on(c, "/ui/login"), {"Origin": ORIGIN})
        assert r.status_code == 401  # type: ignore[attr-defined]
    r = _login(c, w.tokens["member_own"], csrf_on(c, "/ui/login"), {"Origin": ORIGIN})
    assert r.status_code == 429 and "retry-after" in r.headers  # type: ignore[attr-defined]
    assert "Too many" in r.text  # type: ignore[attr-defined]


@pytest.mark.parametrize("n", [50_000])
def test_limiter_memory_is_bounded(n: int) -> None:
    """Failures from many addresses keep at most ``max_clients`` of them in memory."""
    now = [0.0]
    lim = AuthLimiter(limit=5, window_s=60, clock=lambda: now[0], max_clients=1000)
    for k in range(n):
        lim.failed(f"10.{k // 65536}.{k // 256 % 256}.{k % 256}")
    assert len(lim) <= 1000
    for _ in range(5):
        lim.failed("192.0.2.1")
    assert lim.retry_after("192.0.2.1") is not None
    assert lim.retry_after("192.0.2.2") is None


def test_error_pages_are_no_token_oracle(db: Database) -> None:
    """A dashboard error page raised before the route ran (a bad path) still looks the user
    up through the limit: wrong tokens count there, and once blocked, a valid token's name
    is not shown."""
    w = make_world(db, {"auth_fail_limit": 2})
    c = browser(w, "10.0.0.4")
    good = {"Authorization": f"Bearer {w.tokens['member_own']}"}
    assert "member_own" in c.get("/ui/jobs/not-a-number", headers=good).text
    for _ in range(2):
        r = c.get("/ui/jobs/not-a-number", headers={"Authorization": "Bearer alt_wrong"})
        assert r.status_code == 422
    r = c.get("/ui/jobs/not-a-number", headers=good)
    assert r.status_code == 422 and "member_own" not in r.text
    assert c.get("/v1/me", headers=good).status_code == 429
