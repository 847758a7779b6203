"""The inventory as a file: its diff against the stored nodes, then (unless a dry run) the
replacement (``storage.repo.set_inventory``: refused whole for a duplicate node or one
removed or shrunk under running jobs; the scheduler loop rebuilds its state)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from allotment.storage import repo

FIELDS = ("gpu_type", "gpus", "rack", "pod", "state")


def changes(old: Sequence[Any], new: Sequence[repo.NodeSpec]) -> list[dict[str, str]]:
    """Nodes added, removed and changed (field by field), in the new file's order, then
    the removed ones in the old order (pure)."""
    by_old = {n.name: n for n in old}
    names = {n.name for n in new}
    out: list[dict[str, str]] = []
    for n in new:
        o = by_old.get(n.name)
        if o is None:
            out.append({"kind": "added", "node": n.name, "text": f"added {n.name}: {n.gpus} "
                        f"{n.gpu_type} GPUs, rack {n.rack}, pod {n.pod}, {n.state}"})
            continue
        diff = [f"{f} {getattr(o, f)} -> {getattr(n, f)}" for f in FIELDS
                if getattr(o, f) != getattr(n, f)]
        if diff:
            out.append({"kind": "changed", "node": n.name,
                        "text": f"{n.name}: {', '.join(diff)}"})
    for o in old:
        if o.name not in names:
            out.append({"kind": "removed", "node": o.name,
                        "text": f"removed {o.name} ({o.gpus} {o.gpu_type} GPUs)"})
    return out


def apply(s: Session, nodes: Sequence[repo.NodeSpec], actor: str, now: float,
          dry_run: bool = False) -> list[dict[str, str]]:
    """The changes, checked; applied unless ``dry_run``."""
    got = changes(repo.node_rows(s), nodes)
    if dry_run:
        repo.check_inventory(s, nodes)
    else:
        repo.set_inventory(s, nodes, actor, now)
    return got
