"""Launch reservations, the workflow: a lead asks for N GPUs of a type for a window, an
admin approves; the scheduler (``scheduler.launch``) then frees those GPUs by the start.

A request (``request``) is checked in this order, the first problem refused naming its
field (``InputError``, a 422): ``name`` ``[A-Za-z0-9._-]{1,64}`` and not ``.`` or ``..``
(path segments that clients drop from a URL; default ``<team>-<start as YYYYmmddHHMM>``,
the team's name cut to 40 characters, made unique with ``-2``, ``-3``...), ``team`` a
known team, ``gpu_type`` one of the inventory (may be left out when it has one type),
``gpus`` a whole number >= 1, ``hours`` finite, > 0 and at most 31
days, its window not empty (start + hours > start), ``start`` finite, from year 1 (UTC),
not in the past (a minute's slack, for a start typed as "now"), with the window ending
before year 10000 (UTC), ``reason`` not empty.

Then two refusals with the reason (``Conflict``, a 409):

- infeasible: more GPUs than the type has installed ("S GPUs short");
- conflicting: the pending and approved reservations of the type whose window overlaps
  this one, plus this one, need more than the type has installed (each named, with how
  many GPUs short). Overlapping reservations are added up whether or not they overlap one
  another: a safe bound, exact for the usual case of one launch at a time. Each counts as
  the whole nodes the scheduler holds for it (``scheduler.launch``: no two reservations
  share a node): its GPUs rounded up to a multiple of the type's largest node,
      need = sum over them of ceil(gpus / M) * M,   M the most GPUs a node of the type has
  (exact when the type's nodes are of one size), so that every accepted one gets nodes.

Approval: a request whose GPUs, with the team's other overlapping reservations, fit the
team's guarantee of the type in the quotas in force at its start is approved at once
(``approved_by`` "auto"); any other stays pending with its ``impact`` (``impact``) until an
admin approves it (``approve``, which checks the conflicts again). A pending or approved
reservation may be cancelled (``cancel``) by a lead of its team or an admin, an approved
one only until its end (after that it happened). Every change
is in the audit log (scope ``org``: every user reads the reservations) with its reason;
two writers never both pass the conflict check: each holds the audit chain's head row
(which every audited write takes) from before its check until it commits. Approving and
cancelling take it too before they read the status (then read again), so an approval and
a cancellation at once are one after the other: a cancelled reservation is never approved.
Approving, auto-approving and cancelling an approved one note a ``reshape`` in the
scheduler's inbox, so the loop rebuilds its state with the new set (``storage.reservations
.launches``).

A job may name a reservation (``check_job``, at submit): it must exist, be approved or
pending, not have ended, be of the job's team and GPU type, and hold at least the job's
gang.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from allotment.domain.cluster import GpuType
from allotment.domain.reservation import held_gpus
from allotment.errors import InputError
from allotment.storage import audit, inbox, repo
from allotment.storage import reorg as reorg_rows
from allotment.storage import reservations as stored
from allotment.storage.models import ReservationRow

NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_HOURS = 31 * 24
START_SLACK_S = 60.0
# the window's end must be a date: 10000-01-01T00:00:00Z, past the last one there is
LATEST_END = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp() + 1.0
MAX_REASON = 4000


# -- times --------------------------------------------------------------------------------
def parse_start(text: str) -> float:
    """An ISO 8601 date and time (``2026-12-01T09:00``, ``...Z``, ``...+02:00``; without an
    offset: UTC) as Unix seconds; ``InputError`` naming ``start`` otherwise."""
    try:
        t = datetime.fromisoformat(text)
    except (ValueError, TypeError):
        raise InputError("start", f"{text[:40]!r} is not an ISO 8601 date and time "
                         "(e.g. 2026-12-01T09:00:00Z)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    try:
        at = t.timestamp()
        datetime.fromtimestamp(at, UTC)  # before year 1 in UTC (an offset) is no date
    except (OverflowError, OSError, ValueError):
        raise InputError("start", f"{text[:40]!r} is out of range") from None
    return at


def iso(t: float) -> str:
    """Unix seconds as ISO 8601 in UTC (``2026-12-01T09:00:00Z``)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def public(row: ReservationRow) -> dict[str, Any]:
    """A reservation as the API shows it."""
    return {"name": row.name, "team": row.team, "gpu_type": row.gpu_type, "gpus": row.gpus,
            "start": iso(row.start_time), "hours": round((row.end_time - row.start_time)
                                                          / 3600, 6),
            "end": iso(row.end_time), "reason": row.reason, "status": row.status,
            "requested_by": row.requested_by, "approved_by": row.approved_by,
            "impact": dict(row.impact or {})}


# -- the rules ----------------------------------------------------------------------------
def impact(gpus: int, team: str, guarantees: Mapping[str, int], capacity: int,
           reserved: Mapping[str, int]) -> dict[str, Any]:
    """Whose guarantees shrink, by how many GPUs, while a reservation of ``gpus`` GPUs for
    ``team`` holds them.

        G_t   team t's guarantee of the type (the quotas in force at the start)
        R_t   GPUs of t's other reservations of the type overlapping the window
        B     = min(gpus, max(0, gpus + R_team - G_team))   GPUs beyond team's guarantee
        F     = max(0, C - sum_t G_t - sum_{t != team} max(0, R_t - G_t))
                the capacity C no team is guaranteed, less what other reservations beyond
                their own guarantees already take of it
        U     = min(B, F)                     taken from the unguaranteed capacity first
        S_v   = (B - U) * G_v / sum_{w != team} G_w   for each other team v with G_v > 0,
                rounded down, the GPUs left over going one each to the largest remainders
                (ties: team name)

    B = 0: the reservation fits the team's guarantee (it is approved at once). S_v <= G_v
    whenever the request does not conflict (sum of overlapping reservations <= C). Returns
    ``{"beyond_guarantee": B, "team_guarantee": G_team, "from_unguaranteed": U,
    "shrinks": {v: S_v > 0}}``."""
    g_team = guarantees.get(team, 0)
    beyond = min(gpus, max(0, gpus + reserved.get(team, 0) - g_team))
    free = max(0, capacity - sum(guarantees.values()) - sum(
        max(0, r - guarantees.get(t, 0)) for t, r in reserved.items() if t != team))
    unguaranteed = min(beyond, free)
    rest = beyond - unguaranteed
    others = {v: g for v, g in guarantees.items() if v != team and g > 0}
    total = sum(others.values())
    shrinks: dict[str, int] = {}
    if rest > 0 and total > 0:
        exact = {v: rest * g / total for v, g in others.items()}
        shrinks = {v: math.floor(x) for v, x in exact.items()}
        left = rest - sum(shrinks.values())
        for v in sorted(exact, key=lambda v: (-(exact[v] - shrinks[v]), v))[:left]:
            shrinks[v] += 1
    return {"beyond_guarantee": beyond, "team_guarantee": g_team,
            "from_unguaranteed": unguaranteed,
            "shrinks": {v: n for v, n in sorted(shrinks.items()) if n > 0}}


def _impact_text(imp: dict[str, Any], team: str, gpu_type: str, guarantees: Mapping[str, int],
                 start: float, end: float) -> str:
    if not imp["beyond_guarantee"]:
        return f"fits {team}'s guarantee of {imp['team_guarantee']} {gpu_type} GPUs"
    parts = [f"{imp['beyond_guarantee']} GPUs beyond {team}'s guarantee of "
             f"{imp['team_guarantee']} {gpu_type}"]
    if imp["from_unguaranteed"]:
        parts.append(f"{imp['from_unguaranteed']} from capacity no team is guaranteed")
    parts += [f"{v}'s guarantee shrinks by {n} ({guarantees.get(v, 0)} -> "
              f"{guarantees.get(v, 0) - n})" for v, n in imp["shrinks"].items()]
    return "; ".join(parts) + f", from {iso(start)} to {iso(end)}"


def _refuse_conflicts(s: Session, name: str, gpu_type: str, gpus: int, start: float,
                      end: float) -> None:
    """``Conflict`` if the request is infeasible or conflicts (module docstring)."""
    cap = repo.capacity(s).get(GpuType(gpu_type), 0)
    if gpus > cap:
        raise repo.Conflict(f"gpus: {gpus} {gpu_type} GPUs asked but the cluster has "
                            f"{cap}: {gpus - cap} GPUs short")
    others = stored.overlapping(s, gpu_type, start, end, other_than=name)
    node = repo.largest_node(s, GpuType(gpu_type)) or 1
    need = sum(held_gpus(g, node) for g in [gpus, *(o.gpus for o in others)])
    if need > cap:
        named = ", ".join(f"{o.name} ({o.gpus} GPUs of team {o.team}, {o.status}, "
                          f"{iso(o.start_time)} to {iso(o.end_time)})" for o in others)
        raise repo.Conflict(f"conflicts with reservation(s) {named}: with this one they "
                            f"need {need} of the {cap} {gpu_type} GPUs, {need - cap} GPUs "
                            f"short (each holds whole nodes of {node} GPUs)")


def _assess(s: Session, name: str, team: str, gpu_type: str, gpus: int, start: float,
            end: float) -> tuple[dict[str, Any], str]:
    """The impact (``impact``) against the quotas in force at ``start`` and the other
    overlapping reservations, with its text."""
    try:
        org = repo.load_org(s, start)
    except Exception as exc:  # an org that does not fit the inventory
        raise repo.Conflict(f"the org's quotas do not fit the inventory: {exc}") from None
    t = GpuType(gpu_type)
    guarantees: dict[str, int] = {}
    cap = repo.capacity(s).get(t, 0)
    if org is not None and t in org.gpu_types:
        guarantees = {str(x): org.guarantee_of(x, t) for x in org.team_ids}
    reserved: dict[str, int] = {}
    for o in stored.overlapping(s, gpu_type, start, end, other_than=name):
        reserved[o.team] = reserved.get(o.team, 0) + o.gpus
    imp = impact(gpus, team, guarantees, cap, reserved)
    text = _impact_text(imp, team, gpu_type, guarantees, start, end)
    return {**imp, "text": text}, text


def _unique_name(s: Session, team: str, start: float) -> str:
    # 40 + "-YYYYmmddHHMM" + "-k" stays within the 64 characters of a name up to k = 10**9
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", team)[:40]
    base = f"{stem}-{datetime.fromtimestamp(start, UTC):%Y%m%d%H%M}"
    name, k = base, 1
    while stored.find(s, name) is not None:
        k += 1
        name = f"{base}-{k}"
    return name


def request(s: Session, actor: str, now: float, *, team: str, gpus: int, start: float,
            hours: float, reason: str, gpu_type: str | None = None,
            name: str | None = None) -> ReservationRow:
    """Check, refuse or store a request (module docstring): approved at once when it fits
    the team's guarantee, else pending with its impact."""
    # one writer at a time checks and writes (the audit head), the team included: a
    # reorganisation that removes it commits before this reads the org, or after this
    # commits (and then cancels it)
    reorg_rows.lock(s)
    if name is not None and (not isinstance(name, str) or not NAME.match(name)
                             or name in (".", "..")):
        raise InputError("name", f"{str(name)[:70]!r} must be 1 to 64 letters, digits, '.', "
                         "'_' or '-', and not '.' or '..'")
    if not isinstance(team, str) or not repo.is_team(s, team):
        raise InputError("team", f"unknown team {str(team)[:70]!r}")
    cap = repo.capacity(s)
    if gpu_type is None:
        if len(cap) != 1:
            raise InputError("gpu_type", f"choose one of {sorted(cap)}")
        gpu_type = str(next(iter(cap)))
    elif gpu_type not in cap:
        raise InputError("gpu_type", f"unknown GPU type {gpu_type[:70]!r}; inventory has "
                         f"{sorted(cap)}")
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise InputError("gpus", f"must be a whole number >= 1, got {str(gpus)[:30]}")
    if isinstance(hours, bool) or not isinstance(hours, int | float) \
            or not math.isfinite(hours) or not 0 < hours <= MAX_HOURS:
        raise InputError("hours", f"must be more than 0 and at most {MAX_HOURS} (31 days), "
                         f"got {str(hours)[:30]}")
    if isinstance(start, bool) or not isinstance(start, int | float) \
            or not math.isfinite(start):
        raise InputError("start", "must be a finite time")
    if start < now - START_SLACK_S:
        raise InputError("start", f"{iso(start)} is in the past (now {iso(now)})")
    if start + hours * 3600.0 <= start:
        raise InputError("hours", f"{hours:g} hours is no time at that start: the window "
                         "would be empty")
    if start + hours * 3600.0 >= LATEST_END:
        raise InputError("start", "the window must end before 10000-01-01T00:00:00Z")
    if not isinstance(reason, str) or not reason.strip():
        raise InputError("reason", "say why the GPUs are needed (the launch)")
    if len(reason) > MAX_REASON:
        raise InputError("reason", f"at most {MAX_REASON} characters")
    end = start + hours * 3600.0
    if name is None:
        name = _unique_name(s, team, start)
    elif stored.find(s, name) is not None:
        raise repo.Conflict(f"a reservation named {name!r} exists; choose another name")
    _refuse_conflicts(s, name, gpu_type, gpus, start, end)
    imp, text = _assess(s, name, team, gpu_type, gpus, start, end)
    auto = imp["beyond_guarantee"] == 0
    row = stored.add(s, name=name, team=team, gpu_type=gpu_type, gpus=gpus, start_time=start,
                     end_time=end, reason=reason.strip(),
                     status=stored.APPROVED if auto else stored.PENDING,
                     requested_by=actor, approved_by="auto" if auto else None,
                     created_at=now, impact=imp)
    data = {"team": team, "gpu_type": gpu_type, "gpus": gpus, "start": iso(start),
            "end": iso(end), "impact": imp}
    audit.append(s, now, actor, "reservation.requested", f"reservation:{name}",
                 row.reason, data, audit.ORG)
    if auto:
        audit.append(s, now, "auto", "reservation.approved", f"reservation:{name}",
                     f"auto-approved: {text}", data, audit.ORG)
        inbox.note(s, inbox.Change.RESHAPE)
    return row


def _locked(s: Session, row: ReservationRow) -> None:
    """Take the audit head's lock, then read ``row`` again: a status read before the lock
    may be stale (an approval and a cancellation at once), and writing the row before the
    lock deadlocks with a writer that holds the lock and writes the row next."""
    reorg_rows.lock(s)
    s.refresh(row)


def approve(s: Session, row: ReservationRow, actor: str, now: float) -> ReservationRow:
    """An admin approves a pending reservation (the conflicts checked again, the impact
    recomputed against the quotas now in force at its start)."""
    _locked(s, row)
    if row.status != stored.PENDING:
        raise repo.Conflict(f"reservation {row.name!r} is {row.status}, not pending")
    if row.end_time <= now:
        raise repo.Conflict(f"reservation {row.name!r} ended at {iso(row.end_time)}")
    _refuse_conflicts(s, row.name, row.gpu_type, row.gpus, row.start_time, row.end_time)
    imp, text = _assess(s, row.name, row.team, row.gpu_type, row.gpus, row.start_time,
                        row.end_time)
    row.status, row.approved_by, row.impact = stored.APPROVED, actor, imp
    audit.append(s, now, actor, "reservation.approved", f"reservation:{row.name}",
                 f"approved by {actor}: {text}", {"team": row.team, "impact": imp}, audit.ORG)
    inbox.note(s, inbox.Change.RESHAPE)
    return row


def cancel(s: Session, row: ReservationRow, actor: str, now: float) -> ReservationRow:
    """Cancel a pending or approved reservation (jobs naming it that still wait are then
    refused by the scheduler, with the reason; running ones keep running)."""
    _locked(s, row)
    if row.status == stored.CANCELLED:
        raise repo.Conflict(f"reservation {row.name!r} is already cancelled")
    if row.status == stored.APPROVED and row.end_time <= now:
        raise repo.Conflict(f"reservation {row.name!r} ended at {iso(row.end_time)}: it "
                            "happened, it cannot be cancelled")
    was = row.status
    row.status = stored.CANCELLED
    audit.append(s, now, actor, "reservation.cancelled", f"reservation:{row.name}",
                 f"cancelled by {actor} (was {was})", {"team": row.team, "was": was},
                 audit.ORG)
    if was == stored.APPROVED:
        inbox.note(s, inbox.Change.RESHAPE)
    return row


def check_job(s: Session, team: str, gpu_type: str, gpus: int, name: str, now: float) -> None:
    """A job naming reservation ``name`` (module docstring); ``InputError`` naming
    ``reservation`` otherwise."""
    row = stored.find(s, name)
    if row is None:
        raise InputError("reservation", f"no reservation named {name[:70]!r}")
    if row.status == stored.CANCELLED:
        raise InputError("reservation", f"reservation {name!r} was cancelled")
    if row.end_time <= now:
        raise InputError("reservation", f"reservation {name!r} ended at {iso(row.end_time)}")
    if row.team != team:
        raise InputError("reservation", f"reservation {name!r} belongs to team {row.team!r}, "
                         f"not {team!r}")
    if row.gpu_type != gpu_type:
        raise InputError("reservation", f"reservation {name!r} holds {row.gpu_type} GPUs, "
                         f"not {gpu_type}")
    if gpus > row.gpus:
        raise InputError("reservation", f"gang of {gpus} exceeds the {row.gpus} GPUs of "
                         f"reservation {name!r}")
