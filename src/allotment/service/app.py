"""The FastAPI app: the API's routers (``service/api``, one per resource), the dashboard's
pages (``service/ui``), and the error handlers both share. Routes are thin: they authorise
through the dependencies of ``service/deps.py``, then call ``governance/`` or ``storage/``.

Errors: a user mistake is a 4xx whose ``detail`` names the field
(``{"detail": "gpus: gang of 64 is larger than all 16 a100 GPUs", "field": "gpus"}``),
and the transaction is rolled back, so nothing is written. A 422 quotes at most a short
prefix of the bad value; bodies over ``max_body_bytes`` are a 413 before anything else
runs (``service.bounds``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from allotment import __version__
from allotment.errors import AllotmentError, InputError
from allotment.service.bounds import MAX_BODY_BYTES, BodyLimit, clip, public_error
from allotment.service.loop import SchedulerLoop
from allotment.storage.db import Database
from allotment.storage.group import GroupCommit

log = logging.getLogger("allotment.service")


def _field(loc: tuple[Any, ...]) -> str:
    parts = [clip(str(p), 64) for p in loc if p not in ("body", "query", "path")]
    return clip(".".join(parts), 200) or "body"


def create_app(db: Database, loop: SchedulerLoop | None = None, settings: dict[str, Any] | None
               = None) -> FastAPI:
    """The service app on ``db``; with ``loop``, the scheduler runs in a thread of it.
    ``settings``: ``clock``, ``escalation_s``, ``runs_dir``, ``reports_dir`` and
    ``max_body_bytes`` (the request body limit, 1 MiB by default)."""
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # A request holds SQLite's write lock (BEGIN IMMEDIATE) from its first query to its
        # commit, and may need a worker thread in between (response validation). With too
        # few worker threads, waiting requests could hold them all: a deadlock. 256 threads
        # covers 256 concurrent requests; past that, use PostgreSQL.
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = 256
        thread = None
        if loop is not None:
            thread = threading.Thread(target=loop.run, args=(stop,), daemon=True,
                                      name="allotment-scheduler")
            thread.start()
        yield
        stop.set()
        if thread is not None:
            thread.join(timeout=10)

    app = FastAPI(title="Allotment", version=__version__, lifespan=lifespan,
                  description="Fair, efficient sharing of a GPU fleet among teams.")
    app.state.db = db
    app.state.group_commit = GroupCommit(db)
    app.state.settings = {"escalation_s": 2 * 86400.0, "clock": time.time,
                          "max_body_bytes": MAX_BODY_BYTES, **(settings or {})}
    from allotment.service import security

    app.state.auth_limiter = security.limiter_from(app.state.settings)
    # the body limit acts before anything reads the body (authentication included); the
    # security headers, added last, wrap every response, the limit's 413 too
    app.add_middleware(BodyLimit, max_bytes=int(app.state.settings["max_body_bytes"]))
    app.add_middleware(security.SecurityHeaders)
    from allotment.service.requestlog import RequestLog

    app.add_middleware(RequestLog)  # outermost: every request, the 413s too

    from allotment.service import ui

    def _html(r: Request) -> bool:
        return r.url.path == "/ui" or r.url.path.startswith("/ui/")

    @app.exception_handler(StarletteHTTPException)
    async def _http(r: Request, exc: StarletteHTTPException) -> Any:
        if _html(r):
            return ui.error_page(r, exc.status_code, str(exc.detail), exc.headers)
        return await http_exception_handler(r, exc)

    @app.exception_handler(Exception)
    async def _crash(r: Request, exc: Exception) -> Any:
        log.exception("unhandled error on %s", r.url.path)
        if _html(r):
            return ui.error_page(r, 500, ui.handles(exc)[1])
        return JSONResponse(status_code=500, content={"detail": "internal error; it was logged"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(r: Request, exc: RequestValidationError) -> Any:
        errors = [public_error(e) for e in exc.errors()[:20]]
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = _field(tuple(first.get("loc", ())))
        msg = first.get("msg", "invalid")
        if _html(r):
            return ui.error_page(r, 422, f"{field}: {msg}")
        if first.get("type") == "json_invalid" and len(first.get("loc", ())) > 1:
            loc = first["loc"]
            field, msg = "body", f"malformed JSON (at character {loc[-1]})"
        return JSONResponse(status_code=422, content={
            "detail": f"{field}: {msg}", "field": field,
            "errors": errors})

    @app.exception_handler(AllotmentError)
    async def _mistake(r: Request, exc: AllotmentError) -> Any:
        # InputError 422 (naming the field), NotFound 404, Conflict 409, any other 400
        status, message = ui.handles(exc)
        if _html(r):
            return ui.error_page(r, status, message)
        content: dict[str, Any] = {"detail": clip(str(exc), 2000)}
        if isinstance(exc, InputError):
            content["field"] = clip(exc.field, 200)
        return JSONResponse(status_code=status, content=content)

    from allotment.service.api import ROUTERS

    for router in ROUTERS:
        app.include_router(router)
    app.include_router(ui.router)

    @app.get("/", include_in_schema=False)
    def _root() -> RedirectResponse:
        return RedirectResponse("/ui", status_code=307)

    return app
