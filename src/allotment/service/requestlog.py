"""One log line per request (logger ``allotment.requests``): method, path, the query string
with credentials redacted, status, duration and client address. Never a header, a cookie
or a body, so never a token (API tokens travel in ``Authorization``, sessions in a cookie,
the login form's token in its body)."""

from __future__ import annotations

import logging
import time
from typing import Any

from allotment.logs import redact_query

log = logging.getLogger("allotment.requests")


class RequestLog:
    """ASGI middleware: logs each HTTP request once its response has started."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            query = redact_query(scope.get("query_string", b"").decode("latin-1"))
            path = scope.get("path", "")
            client = (scope.get("client") or ("-", 0))[0]
            ms = round((time.perf_counter() - started) * 1000, 1)
            log.info("%s %s%s %s %.1f ms %s", scope.get("method"), path,
                     f"?{query}" if query else "", status[0], ms, client,
                     extra={"method": scope.get("method"), "path": path, "query": query,
                            "status": status[0], "duration_ms": ms, "client": client})
