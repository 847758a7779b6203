"""Found by an adversarial re-check of issue 11: a careless or hostile client's form
posts. A CSRF field that is not ASCII, or a Referer that is not a URL, is a user mistake
(a 403 like any bad CSRF field or foreign origin), never a 500 that drops the connection."""

from __future__ import annotations

from tests.service.conftest import World
from tests.service.dashboard_login import ORIGIN, browser, csrf_on, ui_login

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_non_ascii_csrf_field_is_a_403(world: World) -> None:
    """``csrf=%C2%B2`` (or bytes that are not UTF-8) on a form post or the login form:
    hmac.compare_digest refuses non-ASCII text, which used to answer 500."""
    c = ui_login(world, "member_own")
    for csrf in ["%C2%B2", "%ED%A0%80", "%FF%FE"]:
        for path in ["/ui/jobs", "/ui/jobs/1/cancel", "/ui/logout"]:
            r = c.post(path, content=f"team=llama&gpu_type=a100&gpus=1&command=x&csrf={csrf}",
                       headers={**FORM, "Origin": ORIGIN})
            assert r.status_code == 403, (path, csrf, r.status_code, r.text[:200])
        b = browser(world)
        csrf_on(b, "/ui/login")
        r = b.post("/ui/login", content=f"token=x&next=/ui&csrf={csrf}",
                   headers={**FORM, "Origin": ORIGIN})
        assert r.status_code == 403, (csrf, r.status_code, r.text[:200])
    with world.db.session() as s:  # nothing was submitted
        from allotment.storage.models import JobRow
        assert s.query(JobRow).count() == 0


def test_referer_that_is_not_a_url_is_a_403(world: World) -> None:
    """``Referer: http://[::1`` (no Origin): urlsplit raises ValueError, which used to
    answer 500 on the login form, every form post and a cookie-authenticated API change."""
    b = browser(world)
    csrf = csrf_on(b, "/ui/login")
    r = b.post("/ui/login", data={"token": world.tokens["member_own"], "csrf": csrf},
               headers={"Referer": "http://[::1"})
    assert r.status_code == 403, (r.status_code, r.text[:200])
    c = ui_login(world, "member_own")
    r = c.post("/v1/jobs", json={"team": "llama", "gpu_type": "a100", "gpus": 1,
                                 "command": "x"}, headers={"Referer": "http://[::1/ui"})
    assert r.status_code == 403, (r.status_code, r.text[:200])
