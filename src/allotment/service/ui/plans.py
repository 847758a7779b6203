"""Plans: the published plan of the period beside a draft, team by team, with both
reasons; an admin publishes the draft from here."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from allotment.governance import plans as workflow
from allotment.service.bounds import Id, OptionalId
from allotment.service.deps import require_role
from allotment.service.ui import views
from allotment.service.ui.render import form, now, page, page_router, session, user_of
from allotment.storage import plans as stored

router = page_router()


@router.get("/plans")
def plans(request: Request, draft: OptionalId = None) -> HTMLResponse:
    user = user_of(request)
    with session(request) as s:
        v = views.plan_side_by_side(s, now(request), draft)
        for p in v["plans"]:
            s.expunge(p)
    return page(request, "plans.html", user, active="plans", v=v)


@router.post("/plans/{plan_id}/publish")
async def publish(request: Request, plan_id: Id) -> Response:
    user = user_of(request)
    await form(request)
    with session(request) as s:  # the API's rule and workflow
        require_role(user, "admin")
        workflow.publish(s, stored.get(s, plan_id), user.name, now(request))
    return RedirectResponse(f"/ui/plans?draft={plan_id}", status_code=303)
