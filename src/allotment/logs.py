"""One logging setup for every process (``allot up``, ``serve``, ``scheduler``): lines for
people by default, JSON lines with ``--log-format json`` (or ``$ALLOTMENT_LOG_FORMAT``).

A JSON line holds ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message`` and the
fields the call gave in ``extra`` (a decision: ``event``, ``job``, ``team``, ``reason``;
a request: ``method``, ``path``, ``status``, ``duration_ms``, ``client``). Nothing here
ever logs a credential: request lines carry no headers and their query strings are
redacted (``redact_query``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import Any

FORMATS = ("text", "json")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message",
                                                                              "asctime"}
_SECRET_NAME = re.compile(r"token|key|secret|passw|session|csrf|auth|cookie", re.I)
_SECRET_VALUE = re.compile(r"^(alt_|Bearer\s)", re.I)  # API tokens start with alt_


class JsonLines(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage()}
        for k, v in record.__dict__.items():
            if k not in _STANDARD and not k.startswith("_"):
                out[k] = v if isinstance(v, str | int | float | bool | None) else str(v)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(fmt: str | None = None, level: int = logging.INFO) -> None:
    """Send the ``allotment`` loggers (and uvicorn's errors) to stderr, in ``fmt``
    (``text`` or ``json``; default ``$ALLOTMENT_LOG_FORMAT``, else ``text``)."""
    fmt = (fmt or os.environ.get("ALLOTMENT_LOG_FORMAT") or "text").lower()
    if fmt not in FORMATS:
        raise ValueError(f"--log-format: {fmt!r} is not one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    for name, at in (("allotment", level), ("uvicorn", max(level, logging.WARNING))):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(at)
        logger.propagate = False


def decision(log: logging.Logger, event: str, job: int | str, team: str, reason: str,
             **more: Any) -> None:
    """Log one scheduling decision with its job, team and reason (as fields in JSON)."""
    log.info("%s job %s of team %s: %s", event, job, team, reason,
             extra={"event": event, "job": job, "team": team, "reason": reason, **more})


def redact_query(query: str) -> str:
    """A query string fit for a log: the value of any parameter whose name or value looks
    like a credential replaced by ``REDACTED``."""
    if not query:
        return ""
    parts = []
    for pair in query.split("&"):
        name, eq, value = pair.partition("=")
        from urllib.parse import unquote_plus

        if _SECRET_NAME.search(unquote_plus(name)) or _SECRET_VALUE.match(unquote_plus(value)):
            value = "REDACTED"
        parts.append(f"{name}{eq}{value}")
    return "&".join(parts)


__all__ = ["FORMATS", "JsonLines", "decision", "redact_query", "setup_logging"]
