"""Bounded input: what the service accepts before it trusts a request.

    body size      at most ``max_body_bytes`` (1 MiB by default; ``allot serve/up
                   --max-body-bytes``), enforced by ``BodyLimit``, a pure ASGI middleware in
                   front of routing, parsing and authentication: a declared Content-Length
                   above the limit is refused at once, unread; a body without one is read and
                   counted up to the limit. 413 {"detail", "field": "body", "limit_bytes"}.
    JSON nesting   at most ``MAX_JSON_DEPTH`` levels of arrays and objects, measured on the
                   raw bytes without recursion before any parser runs (Python's json module,
                   pydantic and the planner all recurse).
    JSON values    numbers finite and integers within +-2**53; text without NUL (no database
                   text column holds it) and without lone surrogates (no database stores
                   them: they are not Unicode text), found by an iterative walk that names
                   the field.
    types          request schemas are strict: no string or bool for an integer, no string
                   for a number or a bool (``schemas.In``); ISO strings stay dates.
    paths, queries every integer is bounded: ``Id``, ``OptionalId``, ``Offset``, ``Limit``
                   and ``Flag`` below, used by the API and the dashboard alike.
    answers        a 422 quotes at most a short prefix of a bad value (``public_error``).
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from collections.abc import Callable, Coroutine
from itertools import accumulate
from typing import Annotated, Any

from fastapi import Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BeforeValidator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from allotment.domain import period

MAX_BODY_BYTES = 1 << 20
MAX_JSON_DEPTH = 64
MAX_JSON_INT = 2**53  # beyond this JSON numbers lose precision in most clients
INT32_MAX = 2_147_483_647  # ids are INTEGER columns on SQLite and PostgreSQL alike

# -- paths and queries: one set of bounded integers for the API and the dashboard --------
def _digits(value: Any) -> Any:
    """An integer in a path or query is its ASCII digits, nothing else: the lax parse
    would read ``1_0`` as 10 and ``+1``, `` 1``, ``1.0`` as 1 (a mistyped id acting on
    another job)."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError(f"{short(value, 20)} is not a whole number (ASCII digits only)")
    return value


Digits = BeforeValidator(_digits)
Id = Annotated[int, Path(ge=1, le=INT32_MAX), Digits]
OptionalId = Annotated[int | None, Query(ge=1, le=INT32_MAX), Digits]
Offset = Annotated[int, Query(ge=0, le=10**9), Digits]
Limit = Annotated[int, Query(ge=1, le=500), Digits]
Flag = Annotated[int, Query(ge=0, le=1), Digits]
PeriodQuery = Annotated[str | None, Query(pattern=period.PATTERN)]  # YYYY-MM, 1970-2099
ReservationName = Annotated[str, Path(min_length=1, max_length=64,
                                      pattern=r"^[A-Za-z0-9._-]{1,64}$")]
NO_NUL = r"^[^\x00]*$"


# -- the body size limit -----------------------------------------------------------------
def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n} bytes"


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with a 413 before anything behind this
    middleware (routing, parsing, authentication) runs. A declared Content-Length over the
    limit is refused without reading the body (the server discards it and keeps the
    connection); a body without Content-Length (chunked) is read here, counted, and handed
    on whole only if it fits."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None:
            if declared > self.max_bytes:
                await self._refuse(send)
            else:  # the server delivers exactly the declared length, no more
                await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                pending = [message]
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                pending = [{"type": "http.request", "body": b"".join(chunks),
                            "more_body": False}]
                break

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({
            "detail": f"body: larger than the limit of {self.max_bytes} bytes "
                      f"({_size(self.max_bytes)}); the operator sets it with "
                      f"--max-body-bytes",
            "field": "body", "limit_bytes": self.max_bytes}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# -- JSON: depth before parsing, then values -----------------------------------------------
# A JSON string, or an unterminated one running to the end: every match attempt succeeds
# and the scan moves past it, so the scan is linear in the body (no retries from each ").
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEP = [0] * 256
for _c in b"[{":
    _STEP[_c] = 1
for _c in b"]}":
    _STEP[_c] = -1
# bytes that may hide a value the walk must look at: NaN, infinities, exponents or digit
# runs that overflow, escapes (\u0000, \ud800) and UTF-8 encoded surrogates (0xED ...)
_SUSPECT = re.compile(rb"NaN|Infinity|[eE][+-]?[0-9]{3}|[0-9]{16}|\\u|\xed")


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw`` (brackets inside strings do
    not count), without recursion: strings are cut out, then the brackets are summed."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None."""
    if "\x00" in text:
        return "must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"must be Unicode text (a lone surrogate at character {exc.start})"
    return None


def first_bad_value(value: Any) -> tuple[tuple[str | int, ...], str] | None:
    """The path to the first value (in document order) that no database can store or that
    is not a JSON number, and why; None if all are fine. Iterative: any depth is safe."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str):
            why = text_problem(v)
            if why is not None:
                return path, why
        elif isinstance(v, bool) or v is None:
            continue
        elif isinstance(v, int):
            if not -MAX_JSON_INT <= v <= MAX_JSON_INT:
                return path, "integers must be within -2^53 and 2^53"
        elif isinstance(v, float):
            if not math.isfinite(v):
                return path, "must be a finite number (not NaN or an infinity)"
        elif isinstance(v, dict):
            for key in v:
                why = text_problem(key) if isinstance(key, str) else None
                if why is not None:
                    return path, f"key {short(key)} {why}"
            stack.extend(((*path, k), x) for k, x in reversed(list(v.items())))
        elif isinstance(v, list | tuple):
            stack.extend(((*path, k), v[k]) for k in range(len(v) - 1, -1, -1))
    return None


def checked_json(raw: bytes) -> Any:
    """Parse a JSON body, refusing (``RequestValidationError``, a 422 naming the field)
    nesting deeper than ``MAX_JSON_DEPTH``, bytes that are not UTF-8, and values that
    ``first_bad_value`` finds."""
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise _invalid((), f"nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects",
                       "json_too_deep")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestValidationError([{
            "type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
            "input": {}, "ctx": {"error": exc.msg}}]) from None
    except UnicodeDecodeError as exc:
        raise _invalid((), f"not UTF-8 (byte {exc.start})", "json_invalid") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of over 4300 digits
        raise _invalid((), f"malformed JSON: {short(str(exc))}", "json_invalid") from None
    if _SUSPECT.search(raw):
        bad = first_bad_value(value)
        if bad is not None:
            raise _invalid(bad[0], bad[1], "value_error", _at(value, bad[0]))
    return value


def _at(value: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


def _invalid(path: tuple[str | int, ...], msg: str, kind: str,
             value: Any = None) -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": ("body", *path), "msg": msg,
                                    "input": value}])


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                            and media.endswith("+json"))


class CheckedJsonRoute(APIRoute):
    """An ``APIRoute`` whose JSON body goes through ``checked_json`` before FastAPI reads
    it (FastAPI then takes the parsed value from the request instead of parsing again)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def checked(request: Request) -> Response:
            if _is_json(request.headers.get("content-type")):
                raw = await request.body()
                if raw:
                    request._json = checked_json(raw)
            return await handler(request)

        return checked


# -- answers: never more than a short prefix of a bad value ------------------------------
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 2
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 5


def short(value: Any, limit: int = 80) -> str:
    """A repr of ``value`` of at most ``limit`` characters (ASCII-safe: surrogates and
    control characters come out escaped)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _plain(value: Any) -> bool:
    """A value a 422 may quote as it is: short, and valid JSON."""
    if value is None or isinstance(value, bool | int):
        return not isinstance(value, int) or abs(value) <= MAX_JSON_INT
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= 60 and text_problem(value) is None


def public_error(err: dict[str, Any]) -> dict[str, Any]:
    """One pydantic error as a 422 shows it: ``loc`` parts clipped, ``input`` and every
    ``ctx`` value quoted as they are when short and plain, else as a short repr."""
    out: dict[str, Any] = {
        "type": err.get("type", "value_error"),
        "loc": [p if isinstance(p, int) else clip(str(p), 64) for p in err.get("loc", ())],
        "msg": clip(str(err.get("msg", "invalid")), 300),
    }
    if "input" in err:
        out["input"] = err["input"] if _plain(err["input"]) else short(err["input"])
    if err.get("ctx"):
        out["ctx"] = {clip(str(k), 64): v if _plain(v) else short(v)
                      for k, v in err["ctx"].items()}
    return out
