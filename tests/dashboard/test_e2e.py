"""The dashboard end to end in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium) against a live service on loopback, with the
scheduler loop running on the fake backend.

Scenario: vision borrows all 16 GPUs; a llama member logs in, submits a job in the form,
sees it wait with its reason, then sees it run once the borrowed GPUs are reclaimed. A
vision member cannot see llama's job command. An admin publishes a plan. Every page is
screenshotted into ``$ALLOTMENT_SCREENSHOTS`` (default ``out/screenshots``; CI keeps it),
checked for keyboard reach and text contrast, and never shows a traceback."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from allotment.backends.fake import FakeBackend
from allotment.scheduler.config import SchedulerConfig
from allotment.service.app import create_app
from allotment.service.loop import LoopConfig, SchedulerLoop
from allotment.storage import repo
from allotment.storage.db import Database
from tests.service.conftest import LiveServer

SHOTS = Path(os.environ.get("ALLOTMENT_SCREENSHOTS", "out/screenshots"))
ORG = [{"name": "research", "children": [
    {"name": "llama", "guaranteed": {"a100": 8}}, {"name": "vision", "guaranteed": {"a100": 8}}]},
    {"name": "platform", "children": [{"name": "infra"}]}]


def seed_site(prefix: str, org: list[dict[str, Any]],
              users: tuple[tuple[str, str, str], ...] = ()) -> tuple[Path, Database,
                                                                     dict[str, str], float]:
    """A new site's database in a temporary folder: the admin ``root``, two nodes of 8
    a100, ``org`` and ``users`` (name, role, org node); returns the folder, the database,
    each user's token (the admin's as ``admin``) and the time it was made."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    db = Database(f"sqlite:///{tmp / 'allotment.db'}", data_dir=tmp / "data")
    db.upgrade()
    now = time.time()
    with db.session() as s:
        _, admin = repo.create_user(s, "root", "admin", None, now)
        repo.set_inventory(s, [repo.NodeSpec(f"n{k}", "a100", 8, k, 0) for k in (1, 2)],
                           "test", now)
        repo.set_org(s, {"org": org}, "test", now)
        tokens = {"admin": admin}
        for who, role, node in users:
            _, tokens[who] = repo.create_user(s, who, role, node, now)
    return tmp, db, tokens, now


def _browser_paths() -> tuple[str, str]:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chrome is None or driver is None:
        if os.environ.get("ALLOTMENT_TEST_BROWSER") == "1":
            pytest.fail("the browser suite must run here: chromium or chromedriver is missing")
        pytest.skip("no chromium/chromedriver here: apt-get install chromium chromium-driver "
                    "(.ci/run does)")
    return chrome, driver


@pytest.fixture(scope="module")
def site() -> Iterator[dict[str, Any]]:
    _browser_paths()
    tmp, db, tokens, _ = seed_site("allotment-ui-", ORG, (
        ("ann", "member", "llama"), ("vic", "member", "vision"),
        ("lee", "lead", "llama"), ("val", "lead", "vision")))
    backend = FakeBackend(exit_on_term=False)  # a borrower stops at SIGKILL, after grace
    loop = SchedulerLoop(db, backend, LoopConfig(
        tick_s=0.3, scheduler=SchedulerConfig(grace_s=10, min_runtime_s=0)))
    app = create_app(db, loop, {"runs_dir": str(tmp / "runs"),
                                "reports_dir": str(tmp / "reports")})
    _simulator_report(tmp / "reports" / "philly-sample")
    with LiveServer(app) as server:
        yield {"url": server.url, "tokens": tokens, "db": db, "backend": backend,
               "client": _api(server.url)}
    db.dispose()
    shutil.rmtree(tmp, ignore_errors=True)


def _api(url: str) -> Any:
    import httpx

    def call(who_token: str, method: str, path: str, **kw: Any) -> Any:
        return httpx.request(method, url + path, headers={"Authorization": f"Bearer {who_token}"},
                             timeout=30, **kw)
    return call


def _simulator_report(folder: Path) -> None:
    import json

    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({
        "trace": "sample", "gpus": 16, "jobs": 2, "policies": {
            "fifo": {"utilization": 0.5, "avg_jct_s": 3600, "p99_jct_s": 7200, "preemptions": 0,
                     "min_team_guarantee_satisfaction": 0.7, "jain_fairness": 0.8,
                     "idle_while_waiting_gpu_hours": 3.0},
            "fairshare": {"utilization": 0.8, "avg_jct_s": 1800, "p99_jct_s": 3600,
                          "preemptions": 2, "min_team_guarantee_satisfaction": 0.99,
                          "jain_fairness": 0.97, "idle_while_waiting_gpu_hours": 0.0}}}))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2))
    ax.bar(["fifo", "fairshare"], [0.5, 0.8])
    ax.set_ylabel("utilisation")
    fig.savefig(folder / "utilisation.png")
    plt.close(fig)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chrome, driver = _browser_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--disable-gpu"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(driver), options=opts)
    d.set_page_load_timeout(30)
    yield d
    d.quit()


def login(d: Any, site: dict[str, Any], who: str) -> None:
    d.delete_all_cookies()
    d.get(site["url"] + "/ui/login")
    d.find_element("id", "token").send_keys(site["tokens"][who])
    d.find_element("css selector", "form button[type=submit]").click()
    wait(d, lambda: "/ui/login" not in d.current_url)


def wait(d: Any, cond: Any, timeout: float = 30) -> Any:
    end = time.time() + timeout
    while time.time() < end:
        try:
            got = cond()
        except Exception:  # the page is changing under us
            got = None
        if got:
            return got
        time.sleep(0.2)
    main = d.find_element("tag name", "main").text[:2000]
    raise AssertionError(f"timed out on {d.current_url}:\n{main}")


CONTRAST_JS = (Path(__file__).parent / "contrast.js").read_text()


def check_page(d: Any, name: str, fresh: bool = True) -> str:
    """Screenshot, no traceback, readable contrast, and every link/button/field reachable
    by Tab; returns the visible text of ``main``."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    d.save_screenshot(str(SHOTS / f"{name}.png"))
    text = d.find_element("tag name", "body").text
    assert "Traceback" not in text and "Internal Server Error" not in text
    assert d.execute_script(CONTRAST_JS) == [], f"{name}: low-contrast text"
    # keyboard: Tab from the top reaches the skip link first, then every control in order
    from selenium.webdriver.common.keys import Keys

    if fresh:  # a fresh load (GET again): the first Tab stop is the skip link
        d.get(d.current_url)
        d.find_element("tag name", "body").send_keys(Keys.TAB)
        first = d.switch_to.active_element
        assert first.get_attribute("class") == "skip", f"{name}: first Tab stop is not skip link"
        assert first.is_displayed(), f"{name}: the focused skip link is not visible"
    else:  # the page of a form post: start from the focused skip link
        d.execute_script("document.querySelector('.skip').focus()")
    controls = d.execute_script(
        "return Array.from(document.querySelectorAll('a[href],button,input:not([type=hidden]),"
        "select,textarea,[tabindex]')).filter(e=>e.tabIndex>=0 && e.offsetParent!==null).length")
    seen = 1
    for _ in range(min(controls, 80) - 1):
        d.switch_to.active_element.send_keys(Keys.TAB)
        seen += 1
    assert seen >= min(controls, 80)
    assert d.execute_script("return document.activeElement !== document.body"), \
        f"{name}: focus fell off the page while tabbing"
    # live refresh leaves a region alone while focus is inside it: let go of the focus
    d.execute_script("document.activeElement.blur()")
    return str(d.find_element("tag name", "main").text)


def test_member_sees_wait_reason_then_runs_after_reclaim(site: dict[str, Any],
                                                         browser: Any) -> None:
    api, tok = site["client"], site["tokens"]
    r = api(tok["vic"], "POST", "/v1/jobs", json={
        "team": "vision", "gpu_type": "a100", "gpus": 16, "command": "train --big"})
    assert r.status_code == 201
    borrower = r.json()["id"]
    end = time.time() + 20
    while api(tok["vic"], "GET", f"/v1/jobs/{borrower}").json()["state"] != "running":
        assert time.time() < end
        time.sleep(0.2)
    d = browser
    login(d, site, "ann")
    # the contrast check itself finds light grey text on white
    d.execute_script("var p=document.createElement('p');p.id='probe';p.style.color='#bbb';"
                     "p.textContent='faint';document.querySelector('main').appendChild(p)")
    assert any("faint" in x for x in d.execute_script(CONTRAST_JS))
    d.execute_script("document.getElementById('probe').remove()")
    text = check_page(d, "01-cluster-full")
    assert "GPUs by state" in text and "a100" in text
    d.get(site["url"] + "/ui/jobs")
    # a mistake first: the form says which field, and nothing is submitted
    d.find_element("id", "f-gpus").clear()
    d.find_element("id", "f-gpus").send_keys("0")
    d.find_element("id", "f-command").send_keys("python train.py --llama")
    d.find_element("css selector", "form[action='/ui/jobs'] button[type=submit]").click()
    err = wait(d, lambda: d.find_element("id", "e-gpus"))
    assert "gpus" in err.text and "greater than or equal to 1" in err.text
    check_page(d, "02-submit-error", fresh=False)
    d.find_element("id", "f-gpus").clear()
    d.find_element("id", "f-gpus").send_keys("8")
    d.find_element("css selector", "form[action='/ui/jobs'] button[type=submit]").click()
    wait(d, lambda: "/ui/jobs/" in d.current_url)
    job_id = int(d.current_url.split("/ui/jobs/")[1].split("?")[0])
    # it waits, and says why, in words
    def reason_now() -> str | None:
        d.refresh()
        got = d.find_element("id", "job-reason").text
        return got if "reclaiming" in got else None

    reason = wait(d, reason_now)
    assert d.find_element("id", "job-state").text == "pending"
    assert "team llama at 0/8 guaranteed a100 GPUs" in reason
    check_page(d, "03-job-waiting")
    # the borrowed GPUs are reclaimed (TERM, 10 s grace, KILL) and the job runs: the page
    # refreshes itself (no reload here)
    wait(d, lambda: d.find_element("id", "job-state").text == "running", 40)
    assert "python train.py --llama" in d.find_element("id", "job-command").text
    check_page(d, "04-job-running")
    d.get(site["url"] + "/ui/jobs")
    text = check_page(d, "05-my-jobs")
    assert f"{job_id}" in text and "running" in text
    d.get(site["url"] + "/ui/teams")
    text = check_page(d, "06-teams")
    assert "llama" in text and "vision" in text and "Why this quota" in text
    site["llama_job"] = job_id


def test_other_team_cannot_see_the_command(site: dict[str, Any], browser: Any) -> None:
    job_id = site.get("llama_job")
    assert job_id, "runs after the member test"
    d = browser
    login(d, site, "vic")
    d.get(site["url"] + f"/ui/jobs/{job_id}")
    text = check_page(d, "07-other-team-forbidden")
    assert "Not allowed" in text and "belongs to team llama" in text
    assert "python train.py --llama" not in d.page_source
    d.get(site["url"] + "/ui/jobs")
    assert "python train.py --llama" not in d.page_source
    d.get(site["url"] + "/ui/jobs/not-a-number")
    text = check_page(d, "08-bad-input")
    assert "Check your input" in text and "job_id" in text


def test_admin_publishes_a_plan_and_sees_audit_and_reports(site: dict[str, Any],
                                                           browser: Any) -> None:
    api, tok = site["client"], site["tokens"]
    period = time.strftime("%Y-%m", time.gmtime(time.time() + 32 * 86400))
    for who, team, gpus in (("lee", "llama", 10), ("val", "vision", 6)):
        r = api(tok[who], "POST", "/v1/requests", json={
            "team": team, "period": period, "gpu_type": "a100", "gpus": gpus,
            "justification": f"{team} needs {gpus}"})
        assert r.status_code == 201, r.text
    plan = api(tok["admin"], "POST", "/v1/plans", json={"period": period}).json()["id"]
    d = browser
    login(d, site, "admin")
    d.get(site["url"] + "/ui/plans")
    text = check_page(d, "09-plans-draft")
    assert f"plan {plan}" in text and "llama" in text and "vision" in text
    d.find_element("xpath", "//button[starts-with(normalize-space(), 'Publish plan')]").click()
    wait(d, lambda: "published" in d.find_element("tag name", "main").text)
    text = check_page(d, "10-plans-published")
    assert f"plan {plan} for {period} (published" in text
    d.get(site["url"] + "/ui/audit?action=plan")
    text = check_page(d, "11-audit")
    assert "Chain verified" in text and "plan.published" in text
    d.get(site["url"] + "/ui/disputes")
    check_page(d, "12-disputes")
    d.get(site["url"] + "/ui/reports")
    text = check_page(d, "13-reports")
    assert "philly-sample" in text and "fairshare" in text
    assert d.execute_script("return document.querySelector('figure img').naturalWidth") > 0
    d.get(site["url"] + "/ui")
    check_page(d, "14-cluster")


def test_member_cannot_publish(site: dict[str, Any], browser: Any) -> None:
    d = browser
    login(d, site, "ann")
    d.get(site["url"] + "/ui/plans")
    assert "Publish plan" not in d.page_source
    r = site["client"](site["tokens"]["ann"], "POST", "/v1/plans/1/publish")
    assert r.status_code == 403

