"""The FastAPI app. Routes are thin: they authorise, then call repository functions.

Errors: a user mistake is a 4xx whose ``detail`` names the field
(``{"detail": "gpus: gang of 64 is larger than all 16 a100 GPUs", "field": "gpus"}``),
and the transaction is rolled back, so nothing is written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from allotment import __version__
from allotment.errors import AllotmentError, InputError
from allotment.service.loop import SchedulerLoop
from allotment.storage import repo
from allotment.storage.db import Database


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def create_app(db: Database, loop: SchedulerLoop | None = None, settings: dict[str, Any] | None
               = None) -> FastAPI:
    """The service app on ``db``; with ``loop``, the scheduler runs in a thread of it."""
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
    app.state.settings = {"escalation_s": 2 * 86400.0, "clock": time.time, **(settings or {})}

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        errors = jsonable_encoder(exc.errors(), custom_encoder={Exception: str})
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = _field(tuple(first.get("loc", ())))
        msg = first.get("msg", "invalid")
        if first.get("type") == "json_invalid":
            loc = first.get("loc", ())
            field, msg = "body", f"malformed JSON (at character {loc[-1] if loc else '?'})"
        return JSONResponse(status_code=422, content={
            "detail": f"{field}: {msg}", "field": field,
            "errors": errors})

    @app.exception_handler(InputError)
    async def _input(_r: Request, exc: InputError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc), "field": exc.field})

    @app.exception_handler(repo.NotFound)
    async def _missing(_r: Request, exc: repo.NotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(repo.Conflict)
    async def _conflict(_r: Request, exc: repo.Conflict) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.exception_handler(AllotmentError)
    async def _other(_r: Request, exc: AllotmentError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    from allotment.service import routes

    app.include_router(routes.router)
    return app
