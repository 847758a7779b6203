"""The audit log as a reader sees it.

Who reads what: an admin reads every entry; anyone else the entries of scope ``org``, those
of the teams under its org node (``team:T``), and those of the disputes it may see now
(``dispute:N``, the rule of ``governance.disputes``, so a dispute's new leads read its
history once it escalates to them). An entry's scope is fixed when it is written
(``storage.audit.scope_for``).

The chain's verification: an admin learns which entries fail; anyone else only whether the
chain holds and how many entries it has, not which entries (of other teams, maybe) failed.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from allotment.governance import disputes
from allotment.storage import audit, repo
from allotment.storage import disputes as stored_disputes
from allotment.storage.models import AuditRow, User


def readable_by(s: Session, user: User) -> audit.Where | None:
    """The entries ``user`` may read, as a condition for storage (None: all, for admins)."""
    if user.role == "admin":
        return None
    teams = sorted(repo.teams_under(s, user.org_node))
    return audit.readable(teams, stored_disputes.scopes(disputes.visible_to(s, user)))


def page(s: Session, user: User, action: str | None, subject: str | None, limit: int,
         offset: int, contains: bool = False) -> tuple[list[AuditRow], int]:
    """One page of the entries ``user`` may read, newest first, and how many match in all;
    ``action`` and ``subject`` match exactly, or as substrings with ``contains``."""
    return audit.page(s, action, subject, contains, readable_by(s, user), limit, offset)


def check(s: Session, user: User) -> audit.Verification:
    """The chain's verification, as much of it as ``user`` may learn."""
    got = audit.verify(s)
    if user.role == "admin" or got.ok:
        return got
    return audit.Verification(False, got.entries, [
        "the audit chain does not verify; an admin can see which entries"], got.keyed_from)
