"""Notify: a log line, and a webhook when one is configured, for what a user must know
(an idle warning, a reclaim). A receiver that is down never stops scheduling."""

from __future__ import annotations

import json
import logging
import urllib.request

log = logging.getLogger("allotment.scheduler")


def notify(webhook_url: str | None, kind: str, job_id: int, team: str, user: str,
           reason: str) -> None:
    msg = {"event": kind, "job_id": job_id, "team": team, "user": user, "reason": reason}
    log.warning("%s job %s of team %s: %s", kind, job_id, team, reason)
    if webhook_url:
        try:
            req = urllib.request.Request(webhook_url, json.dumps(msg).encode(),
                                         {"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=2).close()
        except Exception as exc:  # a webhook that is down must not stop scheduling
            log.warning("webhook %s failed: %s", webhook_url, exc)
