"""Notify: what a user must know (an idle warning, a reclaim, a preemption) becomes a log
line and a row of the notification outbox, in the same transaction as the decision; the
webhook is sent later, off the scheduling path, by ``service.notify.Notifier``. A receiver
that is slow or down never delays a tick."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from allotment.storage import outbox

log = logging.getLogger("allotment.scheduler")


def notice(s: Session, now: float, kind: str, job_id: int, team: str, user: str,
           reason: str) -> None:
    log.warning("%s: job %s of team %s (user %s): %s", kind, job_id, team, user, reason,
                extra={"event": kind, "job_id": job_id, "team": team, "reason": reason})
    outbox.add(s, now, kind, {"event": kind, "job_id": job_id, "team": team, "user": user,
                              "reason": reason})
