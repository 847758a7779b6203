"""Import an existing Slurm cluster: its account tree as an org file, its GPU nodes as an
inventory (``allot slurm import``). Pure parsers over ``sacctmgr``/``sinfo`` output, plus
one function that runs them.

A guarantee is read from the account association's ``GrpTRES`` GPU limit or, where it has
none, from the limit of a QOS of the account's own: its default QOS, the default of no
other account, and preempted by no QOS (a limit on work that cannot be preempted; how
``allot slurm sync`` puts a team's guarantee on ``allot_g_<team>``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from allotment.backends.slurm.cmd import Slurm
from allotment.backends.slurm.sync import parse_tres

DOWN_STATES = ("down", "drain", "drng", "fail", "maint", "boot", "unk", "npc", "futr")


@dataclass(frozen=True)
class ImportedNode:
    name: str
    gpu_type: str
    gpus: int
    state: str  # up | down


def parse_gres(gres: str, default_type: str) -> tuple[str, int] | None:
    """``gpu:8``, ``gpu:a100:8``, ``gpu:a100:4(S:0-1),gpu:v100:2`` -> (type, count) of the
    node's GPUs (the first type when a node has several), None without GPUs."""
    total, first = 0, None
    for part in re.split(r",(?![^(]*\))", gres):
        part = re.sub(r"\(.*\)", "", part.strip())
        bits = part.split(":")
        if not bits or bits[0] != "gpu" or len(bits) < 2:
            continue
        try:
            n = int(bits[-1])
        except ValueError:
            continue
        typ = bits[1] if len(bits) == 3 else default_type
        first = first or typ
        total += n
    return (first, total) if first and total else None


def parse_sinfo(text: str, default_type: str = "gpu") -> list[ImportedNode]:
    """``sinfo -N -h -o '%N|%G|%t'`` -> GPU nodes (a node listed in several partitions once)."""
    out: dict[str, ImportedNode] = {}
    for line in text.splitlines():
        bits = line.strip().split("|")
        if len(bits) < 3 or bits[0] in out:
            continue
        g = parse_gres(bits[1], default_type)
        if g is None:
            continue
        state = "down" if bits[2].rstrip("*~#!%$@^-").lower().startswith(DOWN_STATES) \
            or bits[2].endswith("*") else "up"
        out[bits[0]] = ImportedNode(bits[0], g[0], g[1], state)
    return list(out.values())


def parse_accounts(text: str) -> list[tuple[str, str, str, str]]:
    """``sacctmgr -n -P show assoc format=account,parentname,user,grptres,fairshare`` ->
    (account, parent, grptres, fairshare) of the account associations (no users, no root)."""
    out = []
    for line in text.splitlines():
        bits = (line.strip().split("|") + [""] * 5)[:5]
        account, parent, user, grp, share = bits
        if account and not user and account != "root":
            out.append((account, parent or "root", grp, share))
    return out


def own_qos_limits(assoc_text: str, qos_text: str) -> dict[str, str]:
    """account -> ``GrpTRES`` of the QOS of its own (see above), from ``sacctmgr -n -P show
    assoc format=account,user,defaultqos`` and ``show qos format=name,preempt,grptres``."""
    default: dict[str, str] = {}
    for line in assoc_text.splitlines():
        account, user, dqos = (line.strip().split("|") + [""] * 3)[:3]
        if account and not user and account != "root" and dqos:
            default[account] = dqos
    limits: dict[str, str] = {}
    preempted: set[str] = set()
    for line in qos_text.splitlines():
        name, preempt, grp = (line.strip().split("|") + [""] * 3)[:3]
        if name:
            limits[name] = grp
            preempted.update(q for q in preempt.split(",") if q)
    users = list(default.values())
    return {a: limits[q] for a, q in default.items()
            if users.count(q) == 1 and q not in preempted and limits.get(q)}


def org_from_accounts(rows: list[tuple[str, str, str, str]], gpu_types: list[str],
                      qos_limits: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """An org file (``org:`` list) mirroring the account tree; a ``GrpTRES`` GPU limit
    (the association's, else its own QOS's in ``qos_limits``) becomes the node's
    guarantee, a numeric fairshare its weight."""
    qos_limits = qos_limits or {}
    children: dict[str, list[str]] = {}
    info = {a: (g, s) for a, _, g, s in rows}
    for a, p, _, _ in rows:
        children.setdefault(p if p in info else "root", []).append(a)

    def guarantee(grp: str) -> dict[str, int] | None:
        tres = dict(parse_tres(grp))
        out: dict[str, int] = {}
        for t in gpu_types:
            if f"gres/gpu:{t}" in tres:
                out[t] = tres[f"gres/gpu:{t}"]
        if not out and "gres/gpu" in tres and len(gpu_types) == 1:
            out[gpu_types[0]] = tres["gres/gpu"]
        return out or None

    def node(a: str, seen: frozenset[str]) -> dict[str, Any]:
        grp, share = info[a]
        d: dict[str, Any] = {"name": a}
        if share.isdigit() and int(share) > 0:
            d["weight"] = int(share)
        g = guarantee(grp) or guarantee(qos_limits.get(a, ""))
        if g is not None:
            d["guaranteed"] = g
        kids = [node(c, seen | {a}) for c in sorted(children.get(a, [])) if c not in seen]
        if kids:
            d["children"] = kids
        return d

    return [node(a, frozenset()) for a in sorted(children.get("root", []))]


def import_cluster(slurm: Slurm, default_type: str = "gpu") -> tuple[list[ImportedNode],
                                                                      list[dict[str, Any]]]:
    nodes = parse_sinfo(slurm.run(["sinfo", "-N", "-h", "-o", "%N|%G|%t"]), default_type)
    rows = parse_accounts(slurm.run(["sacctmgr", "-n", "-P", "show", "assoc",
                                     "format=account,parentname,user,grptres,fairshare"]))
    own = own_qos_limits(
        slurm.run(["sacctmgr", "-n", "-P", "show", "assoc", "format=account,user,defaultqos"]),
        slurm.run(["sacctmgr", "-n", "-P", "show", "qos", "format=name,preempt,grptres"]))
    return nodes, org_from_accounts(rows, sorted({n.gpu_type for n in nodes}), own)
