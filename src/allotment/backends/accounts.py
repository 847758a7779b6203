"""Which Unix account runs a job of the local executor, and whether the job may run at all.

A job's account is, first match wins:
1. ``users.<user>`` of the operator's mapping (``--run-as FILE``), then ``teams.<team>``, then
   ``default``;
2. else, when the service can switch accounts (it runs as root), the team's *dynamic*
   account: a uid of its own from ``dynamic_uids`` (default 1900000000-1900065535, a range
   systemd and container tools leave unused), with no passwd entry and gid = uid, as systemd's
   DynamicUser does. It is handed out on first use and kept in ``DATA_DIR/accounts.json``, so
   a team keeps its uid (and its files) across restarts. Two teams share an account only
   where the operator's mapping says so.
3. else the *shared account*: the service's own user. A job there can read everything the
   service can (its database, the client config with the admin token, every run), so it is
   allowed for an org of one team; with more teams only when the operator says so
   (``--shared-account``); otherwise the job waits, with a reason that names the fix.
   As root there is no shared account: jobs never run as root.

The mapping file (YAML or JSON)::

    default: allot-jobs          # optional
    teams: {llama: allot-llama, vision: allot-vision}
    users: {ann: ann}            # a user's jobs, in any of its teams
    dynamic_uids: 1900000000-1900065535   # optional

An account is a user name or a numeric uid; it may be neither root nor the service's own user.
A named account's job gets that account's supplementary groups (as ``su`` or Slurm give
them); a dynamic or numeric one gets none.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from allotment.errors import ConfigurationError, InputError, LaunchRefused

DYNAMIC_UIDS = (1_900_000_000, 1_900_065_535)
_KEYS = ("default", "teams", "users", "dynamic_uids")
# capabilities the service needs to run jobs as other accounts: set their ids (SETUID,
# SETGID), hand them their work folder (CHOWN), signal them (KILL), read their util file
# (DAC_READ_SEARCH, or DAC_OVERRIDE)
_CAP_CHOWN, _CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_KILL, _CAP_SETGID, _CAP_SETUID = (
    0, 1, 2, 5, 6, 7)


@dataclass(frozen=True, slots=True)
class Account:
    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str  # "allot-llama", or "uid 1900000000" for an account without a name
    login: str | None = None  # the passwd name, for USER and LOGNAME

    @property
    def shared(self) -> bool:
        return self.uid == os.geteuid()


@dataclass(frozen=True, slots=True)
class RunAsMap:
    default: str | int | None = None
    teams: dict[str, str | int] = field(default_factory=dict)
    users: dict[str, str | int] = field(default_factory=dict)
    dynamic_uids: tuple[int, int] = DYNAMIC_UIDS


def _caps(kind: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(kind + ":"):
                return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def can_switch_accounts() -> bool:
    """Root with the capabilities above; or a non-root service that holds them as ambient
    capabilities (systemd's ``AmbientCapabilities=``), which its runners inherit."""
    caps = _caps("CapEff" if os.geteuid() == 0 else "CapAmb")
    need = [_CAP_CHOWN, _CAP_KILL, _CAP_SETGID, _CAP_SETUID]
    read = caps >> _CAP_DAC_OVERRIDE & 1 or caps >> _CAP_DAC_READ_SEARCH & 1
    return bool(read) and all(caps >> c & 1 for c in need)


def load_run_as(path: Path) -> RunAsMap:
    """Parse and check a ``--run-as`` file; errors name the field (``run-as.teams.llama``)."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise InputError("run-as", f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InputError("run-as", f"{path} is not YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise InputError("run-as", "must be a mapping with teams, users and/or default")
    for key in raw:
        if key not in _KEYS:
            raise InputError(f"run-as.{key}", f"unknown key; use {', '.join(_KEYS)}")
    out: dict[str, dict[str, str | int]] = {}
    for key in ("teams", "users"):
        part = raw.get(key) or {}
        if not isinstance(part, dict):
            raise InputError(f"run-as.{key}", "must map names to Unix accounts")
        for name, acct in part.items():
            _account_value(f"run-as.{key}.{name}", acct)
        out[key] = {str(k): v for k, v in part.items()}
    default = raw.get("default")
    if default is not None:
        _account_value("run-as.default", default)
    m = RunAsMap(default, out["teams"], out["users"], _uid_range(raw.get("dynamic_uids")))
    for where, acct in [("run-as.default", m.default),
                        *((f"run-as.teams.{k}", v) for k, v in m.teams.items()),
                        *((f"run-as.users.{k}", v) for k, v in m.users.items())]:
        if acct is not None:
            try:
                lookup(acct)
            except LaunchRefused as exc:
                raise InputError(where, str(exc)) from None
    return m


def _account_value(where: str, acct: Any) -> None:
    if isinstance(acct, bool) or not isinstance(acct, str | int) or acct == "":
        raise InputError(where, f"{acct!r} is not a Unix account name or uid")


def _uid_range(raw: Any) -> tuple[int, int]:
    if raw is None:
        return DYNAMIC_UIDS
    try:
        lo, hi = (int(x) for x in str(raw).split("-"))
    except ValueError:
        raise InputError("run-as.dynamic_uids", f"{raw!r} is not FIRST-LAST") from None
    if not 1000 <= lo <= hi < 2**31 - 1:
        raise InputError("run-as.dynamic_uids", f"{raw!r}: need 1000 <= FIRST <= LAST < 2^31")
    return lo, hi


def lookup(acct: str | int) -> Account:
    """The account of a name or uid; refused for root and for the service's own user."""
    try:
        pw = pwd.getpwuid(acct) if isinstance(acct, int) else pwd.getpwnam(acct)
    except KeyError:
        if isinstance(acct, int) and acct > 0:
            a = Account(acct, acct, (), f"uid {acct}")
        else:
            raise LaunchRefused(f"no Unix account {acct!r} on this machine") from None
    else:
        groups = tuple(g for g in os.getgrouplist(pw.pw_name, pw.pw_gid) if g != pw.pw_gid)
        a = Account(pw.pw_uid, pw.pw_gid, groups, pw.pw_name, pw.pw_name)
    if a.uid == 0:
        raise LaunchRefused(f"{acct!r} is root: jobs never run as root")
    if a.uid == os.geteuid():
        raise LaunchRefused(f"{acct!r} is the service's own account, which can read the "
                            "service's database and config")
    return a


def service_account() -> Account:
    uid, gid = os.geteuid(), os.getegid()
    try:
        login: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        login = None
    return Account(uid, gid, (), login or f"uid {uid}", login)


class RunAs:
    """The account policy of one local executor (see the module docstring).

    ``can_switch`` defaults to what this process can do; ``shared_ok`` is the operator's
    ``--shared-account``; ``registry`` is where dynamic uids are kept (``None``: no dynamic
    accounts, so an unmapped team is refused).
    """

    def __init__(self, mapping: RunAsMap | None = None, *, registry: Path | None = None,
                 can_switch: bool | None = None, shared_ok: bool = False) -> None:
        self.mapping = mapping
        self.registry = registry
        self.can_switch = can_switch_accounts() if can_switch is None else can_switch
        self.shared_ok = shared_ok
        self.service = service_account()
        self._dynamic: dict[str, Account] = {}
        if self.can_switch and shared_ok:
            raise ConfigurationError(
                "--shared-account: this service can switch Unix accounts (it runs as "
                f"{self.service.name}), and it never runs jobs as itself; to let teams share "
                "one unprivileged account, map them to it with --run-as (default: ACCOUNT)")
        if not self.can_switch and mapping is not None:
            names = {a for a in (mapping.default, *mapping.teams.values(),
                                 *mapping.users.values()) if a is not None}
            raise ConfigurationError(
                f"--run-as: this service runs as {self.service.name}, not root, so it cannot "
                f"run jobs as {', '.join(sorted(map(str, names))) or 'other accounts'}; run it "
                "as root (or with ambient CAP_SETUID, CAP_SETGID, CAP_CHOWN, CAP_KILL and "
                "CAP_DAC_READ_SEARCH)")

    @property
    def mode(self) -> str:
        return "isolated" if self.can_switch else "shared"

    def account(self, team: str, user: str) -> Account:
        """The account a job of ``team`` submitted by ``user`` runs as; ``LaunchRefused``
        when there is none (a mapped account was removed, the dynamic range is full)."""
        if not self.can_switch:
            return self.service
        m = self.mapping
        if m is not None:
            for where, acct in ((f"users.{user}", m.users.get(user)),
                                (f"teams.{team}", m.teams.get(team)),
                                ("default", m.default)):
                if acct is not None:
                    try:
                        return lookup(acct)
                    except LaunchRefused as exc:
                        raise LaunchRefused(f"--run-as {where}: {exc}") from None
        return self._dynamic_account(team)

    def refusal(self, team: str, user: str, teams: int) -> str | None:
        """Why a job of ``team`` may not start now (``teams``: how many the org has)."""
        if not self.can_switch:
            if teams > 1 and not self.shared_ok:
                return (f"not started: the local executor runs as {self.service.name}, not "
                        "root, so it cannot give each team its own Unix account, and this "
                        f"org has {teams} teams whose jobs could read each other's files and "
                        "the service's; run the service as root (jobs then run as per-team "
                        "accounts, see --run-as), or restart it with --shared-account to "
                        "accept that")
            return None
        try:
            self.account(team, user)
        except LaunchRefused as exc:
            return f"not started: {exc}"
        return None

    def warning(self) -> str | None:
        if self.can_switch:
            return None
        if self.shared_ok:
            return (f"shared account: every team's jobs run as the service's own user "
                    f"{self.service.name} (--shared-account), so any job can read the "
                    "service's database, its config (the admin token) and every other run")
        return (f"shared account: jobs run as the service's own user {self.service.name} and "
                "can read everything the service can; with more than one team they are "
                "refused (run as root for per-team accounts, or pass --shared-account)")

    def isolation(self) -> dict[str, Any]:
        return {"mode": self.mode, "account": None if self.can_switch else self.service.name,
                "shared_account": self.shared_ok, "warning": self.warning()}

    # -- dynamic accounts -----------------------------------------------------------------
    def _dynamic_account(self, team: str) -> Account:
        got = self._dynamic.get(team)
        if got is not None:
            return got
        if self.registry is None:
            raise LaunchRefused(f"team {team!r} has no Unix account: map it with --run-as")
        lo, hi = self.mapping.dynamic_uids if self.mapping is not None else DYNAMIC_UIDS
        uid = _allocate(self.registry, team, lo, hi)
        acct = Account(uid, uid, (), f"uid {uid}")
        self._dynamic[team] = acct
        return acct


def _taken(uid: int) -> bool:
    for look in (pwd.getpwuid, grp.getgrgid):
        try:
            look(uid)
            return True
        except KeyError:
            pass
    return False


def _allocate(registry: Path, team: str, lo: int, hi: int) -> int:
    """The team's uid in ``registry`` (JSON ``{"teams": {team: uid}}``, 0600), handing out
    the lowest free one in ``lo..hi`` (not in passwd or group either) on first use."""
    registry.parent.mkdir(parents=True, exist_ok=True)
    lock = os.open(registry.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        teams: dict[str, int] = {}
        with contextlib.suppress(FileNotFoundError):
            teams = {str(k): int(v) for k, v in
                     json.loads(registry.read_text()).get("teams", {}).items()}
        if team in teams:
            return teams[team]
        used = set(teams.values())
        uid = next((u for u in range(lo, hi + 1) if u not in used and not _taken(u)), None)
        if uid is None:
            raise LaunchRefused(f"the dynamic uid range {lo}-{hi} is full: widen "
                                "dynamic_uids in --run-as, or map teams to accounts")
        teams[team] = uid
        tmp = registry.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"teams": teams}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, registry)
        return uid
    finally:
        os.close(lock)
