"""Web hardening: security headers on every answer, the same-origin check of state-changing
requests made with the dashboard's cookie, and the rate limit on failed authentication."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Pages: scripts and styles from the service only (no inline script, no eval); inline
# style *attributes* are allowed for the bar widths of the teams page (they cannot run
# code); no framing, no plugins, forms post to the service only.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; "
            "style-src-attr 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
DOCS_CSP = "frame-ancestors 'none'"  # /docs and /redoc load FastAPI's own CDN assets
COMMON = (("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "same-origin"),
          ("X-Frame-Options", "DENY"))


def headers_for(path: str) -> list[tuple[str, str]]:
    """The security headers of an answer to ``path``."""
    if path == "/ui" or path.startswith("/ui/"):
        out = [("Content-Security-Policy", PAGE_CSP)]
        if not path.startswith("/ui/static/"):
            out.append(("Cache-Control", "no-store"))
    elif path.startswith(("/docs", "/redoc")):
        out = [("Content-Security-Policy", DOCS_CSP)]
    else:
        out = [("Content-Security-Policy", API_CSP)]
    return [*COMMON, *out]


class SecurityHeaders:
    """ASGI middleware: adds ``headers_for(path)`` to every HTTP answer that does not set
    them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = headers_for(str(scope.get("path", "")))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in extra:
                    if k not in headers:
                        headers[k] = v
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- same origin ------------------------------------------------------------------------------
def own_origins(request: Request) -> set[str]:
    """The service's origin as this request reached it (scheme and Host), plus any the
    operator lists in the ``public_origins`` setting (behind a TLS proxy, say)."""
    settings = request.app.state.settings
    configured = {str(o).rstrip("/") for o in settings.get("public_origins") or ()}
    return configured | {f"{request.url.scheme}://{request.url.netloc}"}


def same_origin(request: Request) -> bool:
    """A state-changing request came from the service's own pages: its ``Origin`` (else
    its ``Referer``'s origin) is the service's. Neither header, or ``Origin: null``: no."""
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if not referer:
            return False
        try:
            parts = urlsplit(referer)
        except ValueError:  # not a URL ("http://[::1"): no origin, as without the header
            return False
        if not parts.scheme or not parts.netloc:
            return False
        origin = f"{parts.scheme}://{parts.netloc}"
    return origin.rstrip("/") in own_origins(request)


# -- failed authentication ------------------------------------------------------------------
class AuthLimiter:
    """At most ``limit`` failed authentications per client address in any ``window_s``.

    Each address has a bucket of ``limit`` tries, refilled at ``limit / window_s`` per
    second; a presented credential that is wrong (a token, a session cookie, a token in
    the login form) takes one. With the bucket empty the address is refused with 429
    until one try has refilled: ``retry_after = (1 - tries) / rate`` seconds. While it is
    refused no credential from it is checked at all, valid ones included, or guessing
    would simply go on behind the 429. Requests without a credential never count.

    Memory: at most ``max_clients`` addresses; when full, buckets that have refilled are
    dropped first, then the least recently failed."""

    def __init__(self, limit: int = 20, window_s: float = 60.0,
                 clock: Callable[[], float] | None = None, max_clients: int = 10_000) -> None:
        import time

        self.limit, self.window_s = max(1, int(limit)), max(1e-3, float(window_s))
        self.rate = self.limit / self.window_s
        self.clock = clock or time.monotonic
        self.max_clients = max(1, int(max_clients))
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tries, at
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def _tries(self, addr: str, now: float) -> float:
        got = self._buckets.get(addr)
        if got is None:
            return float(self.limit)
        tries, at = got
        return min(float(self.limit), tries + max(0.0, now - at) * self.rate)

    def retry_after(self, addr: str) -> int | None:
        """Seconds until ``addr`` may try again; None if it may now."""
        with self._lock:
            now = float(self.clock())
            tries = self._tries(addr, now)
            if tries >= 1.0:
                return None
            return max(1, math.ceil((1.0 - tries) / self.rate))

    def failed(self, addr: str) -> None:
        with self._lock:
            now = float(self.clock())
            tries = self._tries(addr, now)
            self._buckets[addr] = (max(0.0, tries - 1.0), now)
            self._buckets.move_to_end(addr)
            if len(self._buckets) > self.max_clients:
                self._prune(now)

    def _prune(self, now: float) -> None:
        for a in [a for a in self._buckets if self._tries(a, now) >= self.limit]:
            del self._buckets[a]
        keep = self.max_clients - self.max_clients // 10  # room, so this runs only now and then
        while len(self._buckets) > max(1, keep):
            self._buckets.popitem(last=False)


def limiter_from(settings: dict[str, Any]) -> AuthLimiter:
    """The limiter the settings ask for: ``auth_fail_limit`` (20) failures per
    ``auth_fail_window_s`` (60 s) per address, on the service's clock."""
    return AuthLimiter(int(settings.get("auth_fail_limit", 20)),
                       float(settings.get("auth_fail_window_s", 60.0)), settings.get("clock"),
                       int(settings.get("auth_fail_max_clients", 10_000)))


def limiter_of(request: Request) -> AuthLimiter:
    got: AuthLimiter = request.app.state.auth_limiter
    return got


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"
