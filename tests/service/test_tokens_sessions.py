"""Tokens can be revoked and users disabled (API and CLI), and both take effect at once on
the API and the dashboard; dashboard sessions are their own random ids, stored hashed with
an expiry, and logout ends them on the server."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from tests.service.conftest import World
from tests.service.dashboard_login import ORIGIN, browser, csrf_on, ui_login


def _uid(w: World, name: str) -> int:
    users = w.call("admin", "GET", "/v1/users", params={"limit": 500}).json()["items"]
    return int(next(u["id"] for u in users if u["name"] == name))


def _me(w: World, token: str) -> int:
    return w.client.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code


def _replay(w: World, sid: str, path: str) -> int:
    """The status of ``path`` for a client presenting session ``sid`` (a fresh jar each
    time: a refused session's answer also drops the cookie)."""
    c = browser(w)
    c.cookies.set("allotment_session", sid)
    return c.get(path).status_code


def _allot(w: World, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "allot"), *args, "--db", w.db.url,
                           "--data-dir", str(w.db.audit.data_dir)],
                          capture_output=True, text=True, timeout=120)


def test_admin_lists_issues_and_revokes_tokens(world: World) -> None:
    """The token list has ids and creation times (never the token or its hash); a new
    token works at once; a revoked one is 401 at once, the other token still works."""
    uid = _uid(world, "member_own")
    listed = world.call("admin", "GET", f"/v1/users/{uid}/tokens")
    assert listed.status_code == 200
    [first] = listed.json()
    assert set(first) >= {"id", "created_at", "revoked_at"} and first["revoked_at"] is None
    assert world.tokens["member_own"] not in listed.text
    assert hashlib.sha256(world.tokens["member_own"].encode()).hexdigest() not in listed.text
    r = world.call("admin", "POST", f"/v1/users/{uid}/tokens")
    assert r.status_code == 201
    new = r.json()["token"]
    assert _me(world, new) == 200
    assert world.call("admin", "DELETE", f"/v1/tokens/{first['id']}").status_code == 204
    assert _me(world, world.tokens["member_own"]) == 401
    assert _me(world, new) == 200
    again = {t["id"]: t for t in world.call("admin", "GET", f"/v1/users/{uid}/tokens").json()}
    assert again[first["id"]]["revoked_at"] is not None
    audit = world.call("admin", "GET", "/v1/audit", params={"action": "token.revoked"}).json()
    assert audit["total"] == 1


def test_revoked_token_ends_its_dashboard_session(world: World) -> None:
    """A session opened with a token dies with the token: the dashboard sends the old
    cookie to the login page, and the API answers 401 to it."""
    c = ui_login(world, "member_own")
    sid = c.cookies["allotment_session"]
    assert c.get("/ui/jobs").status_code == 200
    uid = _uid(world, "member_own")
    [tok] = world.call("admin", "GET", f"/v1/users/{uid}/tokens").json()
    assert world.call("admin", "DELETE", f"/v1/tokens/{tok['id']}").status_code == 204
    assert _replay(world, sid, "/v1/me") == 401
    r = c.get("/ui/jobs")
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
    assert "allotment_session" not in c.cookies  # dropped, so it is not sent again


def test_disabled_user_is_refused_everywhere_at_once(world: World) -> None:
    """Disabling a user refuses its token and its open session at once; enabling lets the
    (unrevoked) token in again; the session stays ended."""
    c = ui_login(world, "member_own")
    sid = c.cookies["allotment_session"]
    uid = _uid(world, "member_own")
    r = world.call("admin", "POST", f"/v1/users/{uid}/disable")
    assert r.status_code == 200 and r.json()["disabled_at"] is not None
    assert _me(world, world.tokens["member_own"]) == 401
    assert world.call("member_own", "POST", "/v1/jobs", json={
        "team": "llama", "gpu_type": "a100", "gpus": 1, "command": "x"}).status_code == 401
    assert _replay(world, sid, "/v1/me") == 401
    assert _replay(world, sid, "/ui/jobs") == 303
    fresh = browser(world)
    r = fresh.post("/ui/login", data={"token": world.tokens["member_own"],
                                      "csrf": csrf_on(fresh, "/ui/login")},
                   headers={"Origin": ORIGIN})
    assert r.status_code == 401 and "allotment_session" not in r.cookies
    r = world.call("admin", "POST", f"/v1/users/{uid}/enable")
    assert r.status_code == 200 and r.json()["disabled_at"] is None
    assert _me(world, world.tokens["member_own"]) == 200
    assert _replay(world, sid, "/ui/jobs") == 303


def test_last_admin_cannot_be_disabled(world: World) -> None:
    r = world.call("admin", "POST", f"/v1/users/{_uid(world, 'root')}/disable")
    assert r.status_code == 409 and "last" in r.json()["detail"]
    assert _me(world, world.tokens["admin"]) == 200


def test_session_cookie_is_not_the_token_and_is_stored_hashed(world: World) -> None:
    """The cookie holds a random session id (not the API token); the database holds only
    its hash, with an expiry; past the expiry the session is refused."""
    c = ui_login(world, "member_own")
    sid = c.cookies.get("allotment_session")
    assert sid and sid != world.tokens["member_own"]
    assert world.tokens["member_own"] not in str(c.cookies.jar)
    with world.db.session() as s:
        rows = s.execute(text("SELECT session_hash, expires_at FROM ui_sessions")).all()
    assert [r[0] for r in rows] == [hashlib.sha256(sid.encode()).hexdigest()]
    assert rows[0][1] > world.clock()
    assert c.get("/ui/jobs").status_code == 200
    world.clock.advance(rows[0][1] - world.clock() + 1)
    assert _replay(world, sid, "/ui/jobs") == 303
    assert _replay(world, sid, "/v1/me") == 401


def test_logout_ends_the_session_on_the_server(world: World) -> None:
    """After logout the old cookie, replayed from another client, no longer works."""
    c = ui_login(world, "member_own")
    sid = c.cookies.get("allotment_session")
    assert sid
    r = c.post("/ui/logout", data={"csrf": csrf_on(c, "/ui/jobs")}, headers={"Origin": ORIGIN})
    assert r.status_code == 303
    assert _replay(world, sid, "/ui/jobs") == 303
    assert _replay(world, sid, "/v1/me") == 401
    with world.db.session() as s:
        assert s.execute(text("SELECT COUNT(*) FROM ui_sessions")).scalar() == 0


def test_csrf_field_belongs_to_its_session(world: World) -> None:
    """The CSRF field of one session is refused in another."""
    a, b = ui_login(world, "member_own"), ui_login(world, "member_own")
    r = b.post("/ui/jobs", data={"csrf": csrf_on(a, "/ui/jobs"), "team": "llama",
                                 "gpu_type": "a100", "gpus": "1", "command": "x"},
               headers={"Origin": ORIGIN})
    assert r.status_code == 403
    assert world.call("admin", "GET", "/v1/jobs").json()["total"] == 0


def test_cli_revoke_token_and_disable_user(world: World) -> None:
    """`allot admin list-tokens`, `revoke-token`, `disable-user`, `enable-user` act on the
    database directly and the running service refuses at once."""
    listed = _allot(world, "admin", "list-tokens", "member_own")
    assert listed.returncode == 0, listed.stderr
    tid = _uid_token(world, "member_own")
    assert str(tid) in listed.stdout
    r = _allot(world, "admin", "revoke-token", str(tid))
    assert r.returncode == 0, r.stderr
    assert _me(world, world.tokens["member_own"]) == 401
    r = _allot(world, "admin", "disable-user", "member_other")
    assert r.returncode == 0, r.stderr
    assert _me(world, world.tokens["member_other"]) == 401
    r = _allot(world, "admin", "enable-user", "member_other")
    assert r.returncode == 0, r.stderr
    assert _me(world, world.tokens["member_other"]) == 200
    r = _allot(world, "admin", "issue-token", "member_own")
    assert r.returncode == 0, r.stderr
    assert _me(world, r.stdout.strip().splitlines()[-1]) == 200
    r = _allot(world, "admin", "disable-user", "nobody")
    assert r.returncode != 0 and "nobody" in r.stderr and "Traceback" not in r.stderr
    assert _allot(world, "audit", "verify").returncode == 0


def _uid_token(w: World, name: str) -> int:
    [tok] = w.call("admin", "GET", f"/v1/users/{_uid(w, name)}/tokens").json()
    return int(tok["id"])
