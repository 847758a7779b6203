"""A small HTTP client for the CLI: URL and token from the environment or a config file.

    ALLOTMENT_URL     (default http://127.0.0.1:8787)
    ALLOTMENT_TOKEN   the API token
    ALLOTMENT_CONFIG  (default ~/.config/allotment/config.json) {"url": ..., "token": ...}
The environment wins over the file. ``allot up`` and ``allot login`` write the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from allotment.errors import AllotmentError

DEFAULT_URL = "http://127.0.0.1:8787"
# How long an idle keep-alive connection is reused. It must stay well below the service's
# own idle timeout (``SERVER_KEEPALIVE_S``): with both at 5 s (httpx's and uvicorn's
# defaults) a request sent on a connection idle for about 5 s crossed the server closing
# it, and the client got "Connection reset by peer" (the demo's steps idle about that long).
# The client closes idle connections first, so it never sends on one the server drops.
KEEPALIVE_EXPIRY_S = 4.0
SERVER_KEEPALIVE_S = 30


class ServiceError(AllotmentError):
    """The service refused a request (the message is its ``detail``) or cannot be reached."""


def config_path() -> Path:
    env = os.environ.get("ALLOTMENT_CONFIG")
    return Path(env) if env else Path.home() / ".config" / "allotment" / "config.json"


def read_config() -> dict[str, str]:
    p = config_path()
    try:
        data = json.loads(p.read_text())
        return {k: str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_config(url: str, token: str) -> Path:
    """Write the config 0600 from its first byte (a new file, renamed over the old one), in
    a folder made 0700 if it is new: the token is an admin's for ``allot up``."""
    p = config_path()
    missing = [d for d in (p.parent, *p.parent.parents) if not d.exists()]
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps({"url": url, "token": token}, indent=2) + "\n")
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p


class Client:
    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        cfg = read_config()
        self.url = (url or os.environ.get("ALLOTMENT_URL") or cfg.get("url")
                    or DEFAULT_URL).rstrip("/")
        self.token = token or os.environ.get("ALLOTMENT_TOKEN") or cfg.get("token") or ""
        self.http = httpx.Client(base_url=self.url, timeout=60.0,
                                 limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_S),
                                 headers={"Authorization": f"Bearer {self.token}"})

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise ServiceError(f"cannot reach the service at {self.url} ({exc}); "
                               "start it with `allot up` or set ALLOTMENT_URL") from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            if r.status_code == 401 and not self.token:
                detail = "no API token: set ALLOTMENT_TOKEN or run `allot login`"
            raise ServiceError(f"{r.status_code}: {detail}")
        if r.status_code == 204:
            return None
        ctype = r.headers.get("content-type", "")
        return r.json() if "json" in ctype else r.text
