"""Sending notifications: a worker that takes due rows of the outbox (``storage.outbox``)
and POSTs each to the webhook as Slack-compatible JSON (``{"text": ..., "event": ...,
...}``), with a timeout, and bounded retries with exponential backoff:

    attempt k (0-based) failed -> next at now + min(backoff_s x 2^k, max_backoff_s)
    after max_attempts failures -> given up (kept, with the last error)

Rows are claimed before they are sent (``claimed_until``), so two senders (``allot serve``
and a separate ``allot scheduler``) never send one twice, and a sender that dies mid-send
leaves the row to be retried once its claim runs out. Without a webhook URL, rows are
marked given up with that reason: the log lines were the notification.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from allotment.storage import outbox
from allotment.storage.db import Database

log = logging.getLogger("allotment.notify")


def slack_text(kind: str, payload: dict[str, Any]) -> str:
    what = kind.replace("_", " ")
    subject = (f"job {payload['job_id']} of team {payload.get('team', '?')}"
               if "job_id" in payload else payload.get("subject", ""))
    return f"Allotment {what}: {subject}: {payload.get('reason', '')}".strip()


class Notifier:
    def __init__(self, db: Database, url: str | None, clock: Callable[[], float] = time.time,
                 timeout_s: float = 5.0, max_attempts: int = 6, backoff_s: float = 2.0,
                 max_backoff_s: float = 300.0, poll_s: float = 1.0,
                 client: httpx.Client | None = None) -> None:
        self.db = db
        self.url = url
        self.clock = clock
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.poll_s = poll_s
        self.client = client or httpx.Client(timeout=timeout_s)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def pump(self, limit: int = 50) -> int:
        """Send what is due now; returns how many were delivered."""
        now = self.clock()
        # a claim outlives one send's timeout, so no other sender takes it meanwhile
        with self.db.session() as s:
            rows = outbox.claim(s, self.holder, now, self.timeout_s * 2 + 5, limit)
        sent = 0
        for nid, kind, payload, attempts in rows:
            error = self._send(kind, payload)
            now = self.clock()
            with self.db.session() as s:
                if error is None:
                    outbox.delivered(s, nid, self.holder, now)
                    sent += 1
                    continue
                retry = None
                if self.url is not None and attempts + 1 < self.max_attempts:
                    retry = now + min(self.backoff_s * 2 ** attempts, self.max_backoff_s)
                outbox.failed(s, nid, self.holder, retry, error, now)
            if self.url is not None:
                log.warning("webhook for notification %s failed (attempt %d): %s%s", nid,
                            attempts + 1, error, "" if retry else "; giving up")
        return sent

    def _send(self, kind: str, payload: dict[str, Any]) -> str | None:
        if self.url is None:
            return "no webhook URL configured (the log line was the notification)"
        try:
            r = self.client.post(self.url, json={"text": slack_text(kind, payload), **payload})
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if r.status_code >= 300:
            return f"HTTP {r.status_code}: {r.text[:200]}"
        return None

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    self.pump()
                except Exception:
                    log.exception("notification worker failed; retrying")
                stop.wait(self.poll_s)
        finally:
            self.close()

    def close(self) -> None:
        self.client.close()

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), daemon=True,
                                  name="allotment-notify")
        thread.start()
        return thread
