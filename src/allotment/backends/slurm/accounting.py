"""Usage up from Slurm's own accounting: ``sacct`` records as GPU-seconds per team and hour.

``sacct -D`` lists every attempt of a requeued job as its own record (state PREEMPTED or
REQUEUED), so preempted work is counted and preemptions can be counted too. Times are read
as epoch seconds (``SLURM_TIME_FORMAT=%s``), so no time zone is guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from allotment.backends.slurm.sync import BORROW_QOS

FIELDS = ("jobidraw", "jobname", "account", "user", "qos", "state", "submit", "start", "end",
          "elapsedraw", "alloctres", "reqtres", "partition")


@dataclass(frozen=True)
class SacctRecord:
    job_id: str
    name: str
    account: str
    user: str
    qos: str
    state: str
    submit: float | None
    start: float | None
    end: float | None
    elapsed_s: int
    gpus: dict[str, int]  # GPU type ("" when untyped) -> GPUs allocated (requested if none)
    partition: str

    @property
    def gpu_total(self) -> int:
        typed = {k: v for k, v in self.gpus.items() if k}
        return sum(typed.values()) if typed else self.gpus.get("", 0)


def sacct_args(start: float, end: float) -> list[str]:
    return ["sacct", "-a", "-X", "-D", "-n", "-P", "-S", _ts(start), "-E", _ts(end),
            "-o", ",".join(FIELDS)]


def _ts(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))


def _time(text: str) -> float | None:
    text = text.strip()
    if not text or text in ("Unknown", "None", "0"):
        return None
    try:
        return float(text)
    except ValueError:
        from datetime import datetime

        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            return None


def parse_gpus(tres: str) -> dict[str, int]:
    """``billing=1,cpu=1,gres/gpu=4,gres/gpu:a100=4`` -> {"": 4, "a100": 4}."""
    out: dict[str, int] = {}
    for part in tres.split(","):
        key, _, value = part.strip().partition("=")
        if key == "gres/gpu" or key.startswith("gres/gpu:"):
            try:
                n = int(float(value))
            except ValueError:
                continue
            out[key[len("gres/gpu:"):] if ":" in key else ""] = n
    return out


def parse_sacct(text: str, fields: Iterable[str] = FIELDS) -> list[SacctRecord]:
    cols = {f: k for k, f in enumerate(fields)}
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        r = line.split("|")
        if len(r) < len(cols):
            continue

        def get(name: str, r: list[str] = r) -> str:
            return r[cols[name]].strip() if name in cols else ""

        gpus = parse_gpus(get("alloctres")) or parse_gpus(get("reqtres"))
        try:
            elapsed = int(get("elapsedraw") or 0)
        except ValueError:
            elapsed = 0
        out.append(SacctRecord(get("jobidraw"), get("jobname"), get("account"), get("user"),
                               get("qos"), get("state").split(" ")[0], _time(get("submit")),
                               _time(get("start")), _time(get("end")), elapsed, gpus,
                               get("partition")))
    return out


@dataclass
class TeamUsage:
    used_gpu_s: float = 0.0
    borrowed_gpu_s: float = 0.0
    preemptions: int = 0


def usage_by_hour(records: Iterable[SacctRecord], start: float, end: float,
                  team_of: Callable[[str], str | None], gpu_type_of: Callable[[str], str],
                  now: float) -> dict[tuple[str, str, int], TeamUsage]:
    """GPU-seconds inside ``[start, end)`` per (team, GPU type, hour start); a record still
    running counts up to ``now``. Records of accounts that are no team are left out."""
    out: dict[tuple[str, str, int], TeamUsage] = {}
    for r in records:
        team = team_of(r.account)
        if team is None or r.start is None:
            continue
        r_end = r.end if r.end is not None else now
        typed = {k: v for k, v in r.gpus.items() if k}
        for typ, n in (typed.items() if typed else [("", r.gpus.get("", 0))]):
            if n <= 0:
                continue
            gpu_type = typ or gpu_type_of(r.account)
            t = max(r.start, start)
            stop = min(r_end, end)
            while t < stop:
                hour = int(t // 3600 * 3600)
                seg = min(stop, hour + 3600) - t
                u = out.setdefault((team, gpu_type, hour), TeamUsage())
                u.used_gpu_s += seg * n
                if r.qos == BORROW_QOS:
                    u.borrowed_gpu_s += seg * n
                t += seg
        if r.state == "PREEMPTED" and r.end is not None and start <= r.end < end:
            hour = int(r.end // 3600 * 3600)
            typ = next((k for k in r.gpus if k), "") or gpu_type_of(r.account)
            out.setdefault((team, typ, hour), TeamUsage()).preemptions += 1
    return out
