"""Every error Allotment raises on purpose.

    AllotmentError                 base: caught by the CLI, printed without a traceback
    +-- InputError                 bad user input; ``field`` names what is wrong
    |   +-- TraceFormatError       a trace file row or header is wrong (``line`` is 1-based)
    |   +-- OrgFileError           an org YAML file is wrong
    |   +-- ScenarioError          a planner scenario file is wrong
    +-- ConfigurationError         a cluster/org combination that cannot work (quota over capacity)
    +-- BackendError               a backend command failed (Slurm refused a request)
        +-- BackendUnavailable     the backend cannot be reached now (slurmctld down): retry later
        +-- LaunchRefused          the backend will not start this run (no account may run it)
"""

from __future__ import annotations


class AllotmentError(Exception):
    """Base of every error Allotment raises on purpose."""


class InputError(AllotmentError):
    """Bad input from a user: the message names the bad field and its value."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class TraceFormatError(InputError):
    """A trace file has a bad header or rows; every bad row is listed with its line number."""

    def __init__(self, path: str, problems: list[tuple[int, str, str]]) -> None:
        self.path = path
        self.problems = problems
        shown = "\n".join(f"  line {line}: {fld}: {msg}" for line, fld, msg in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        field = problems[0][1] if problems else "trace"
        Exception.__init__(self, f"{path}: {len(problems)} bad row(s)\n{shown}{more}")
        self.field = field
        self.message = str(self)


class OrgFileError(InputError):
    """An org YAML file is malformed or inconsistent."""


class ScenarioError(InputError):
    """A planner scenario file is malformed or inconsistent."""


class ConfigurationError(AllotmentError):
    """A combination of cluster and org that cannot work, e.g. guarantees above capacity."""


class BackendError(AllotmentError):
    """A backend (e.g. Slurm) refused a request; the message has its own words."""


class BackendUnavailable(BackendError):
    """The backend cannot be reached now (e.g. slurmctld is down); nothing was done."""


class LaunchRefused(BackendError):
    """The backend will not start a run (e.g. no Unix account may run the job's team); the
    job waits, with this message as its reason, and nothing was started."""
