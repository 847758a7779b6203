"""The web dashboard: server-rendered pages (Jinja2) under ``/ui``, same auth as the API.

Log in with an API token: that opens a dashboard session, a random id kept in an HttpOnly,
SameSite=Strict cookie (the API accepts it too) and stored hashed with an expiry; logout
ends it on the server. Every form carries a CSRF field derived from the session id (the
login form one derived from a pre-session cookie), and every form post must come from the
service's own origin (``Origin``, else ``Referer``). A user mistake is shown on the page
next to its field; no page shows a traceback.

    render     the page frame, templates, CSRF and form checks (what every page shares)
    login      log in and out; static files
    cluster    Cluster now, Teams
    jobs       My jobs and queue, a job's page, submit, cancel
    plans      Plans side by side, publish
    reservations  Launch reservations: list, request (leads), approve, cancel
    disputes   Disputes by escalation level
    audit      the audit log and its verification
    reports    simulator reports and their plots
    views      what the pages show, computed from the database (no HTML)
    errors     the error page, and the status of each error (the API's handlers use it too)

The pages call ``governance/`` and ``storage/`` with the same rule functions as the API
(``service/deps.py``), never the API's route handlers.
"""

from __future__ import annotations

from fastapi import APIRouter

from allotment.service.ui import (
    audit,
    cluster,
    disputes,
    jobs,
    login,
    plans,
    reports,
    reservations,
)
from allotment.service.ui.errors import error_page, handles

router = APIRouter()
for _pages in (login, cluster, jobs, plans, reservations, disputes, audit, reports):
    router.include_router(_pages.router)

__all__ = ["error_page", "handles", "router"]
