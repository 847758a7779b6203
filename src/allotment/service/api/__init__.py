"""The REST API, one router per resource (``service/app.py`` includes them in this order):

    meta       GET /health
    users      /v1/me, /v1/users, their tokens, disable and enable
    org        /v1/inventory, /v1/org (diff, dry run, apply), /v1/org/history
    jobs       /v1/jobs (submit, list, read, cancel, log, samples), /v1/queue
    usage      /v1/usage, /v1/usage/history
    requests   /v1/requests
    reservations /v1/reservations (request, list, read, approve, cancel)
    plans      /v1/plans (run, list, read, compare, publish)
    disputes   /v1/disputes (file, list, read, resolve)
    audit      /v1/audit, /v1/audit/verify

Each route is thin: it authorises through the dependencies of ``service/deps.py`` (one per
rule), then calls ``governance/`` (workflows) or ``storage/`` (plain reads and writes), and
shapes the answer by ``service/schemas.py``.
"""

from __future__ import annotations

from fastapi import APIRouter

from allotment.service.api import (
    audit,
    disputes,
    jobs,
    meta,
    org,
    plans,
    requests,
    reservations,
    usage,
    users,
)

ROUTERS: tuple[APIRouter, ...] = (meta.router, users.router, org.router, jobs.router,
                                  usage.router, requests.router, reservations.router,
                                  plans.router, disputes.router, audit.router)
