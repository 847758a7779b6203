"""``allot org show|apply|history`` and ``allot inventory show|apply``: the org tree and the
nodes, through the service (admins apply; ``--dry-run`` prints the diff and changes
nothing). Files are YAML or JSON, read here and sent as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from allotment.cli.app import _call, _fail, _when, app, console, load_yaml
from allotment.errors import AllotmentError, InputError

org_app = typer.Typer(no_args_is_help=True, help="The org tree: show it, apply a new one "
                      "(renames, merges, splits, moves keep their history), its versions.")
inventory_app = typer.Typer(no_args_is_help=True, help="The GPU nodes: show them, apply a "
                            "new inventory file.")
app.add_typer(org_app, name="org")
app.add_typer(inventory_app, name="inventory")

MAX_FILE_BYTES = 16 * 2**20  # bigger files are refused before they are read
MAX_VALUES = 1_000_000  # values after YAML aliases are expanded
MAX_DEPTH = 64  # the service's limit on nesting (``service.bounds``)


def _plain(value: Any, field: str) -> Any:
    """``value`` as it will be sent, refusing what JSON cannot carry: a structure that
    contains itself (YAML aliases), more than ``MAX_VALUES`` values once aliases are
    expanded, nesting deeper than ``MAX_DEPTH``, and numbers that are not finite (named by
    their path)."""
    count = 0

    def walk(v: Any, path: str, trail: frozenset[int]) -> Any:
        nonlocal count
        count += 1
        if count > MAX_VALUES:
            raise InputError(field, f"more than {MAX_VALUES:,} values (YAML aliases expanded)")
        if isinstance(v, dict | list):
            if id(v) in trail:
                raise InputError(path, "contains itself (a YAML alias loop)")
            if len(trail) >= MAX_DEPTH:
                raise InputError(path, f"nested deeper than {MAX_DEPTH} levels")
            inner = trail | {id(v)}
            if isinstance(v, dict):
                return {str(k): walk(x, f"{path}.{k}", inner) for k, x in v.items()}
            return [walk(x, f"{path}[{i}]", inner) for i, x in enumerate(v)]
        if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
            raise InputError(path, f"must be a finite number, got {v}")
        if not isinstance(v, str | int | float | bool | type(None)):
            return str(v)  # YAML dates and the like: the service names the field
        return v

    return walk(value, field, frozenset())


def read_file(path: Path, field: str) -> Any:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(field, f"cannot read {path}: {exc.strerror}") from None
    if size > MAX_FILE_BYTES:
        raise InputError(field, f"{path} is {size / 2**20:.1f} MiB; at most "
                         f"{MAX_FILE_BYTES // 2**20} MiB")
    try:
        return load_yaml(path, field)
    except RecursionError:
        raise InputError(field, f"{path} is nested too deeply") from None


def _guarantees(quotas: list[dict[str, Any]]) -> str:
    parts = []
    for q in sorted(quotas, key=lambda q: q["gpu_type"]):
        s = f"{q['guaranteed']} {q['gpu_type']}"
        if q["period"] != "default":
            s += f" ({q['period']})"
        if q["borrow_limit"] is not None:
            s += f", borrow <= {q['borrow_limit']}"
        if q["lend_limit"] is not None:
            s += f", lend <= {q['lend_limit']}"
        parts.append(s)
    return "; ".join(parts)


def print_changes(changes: list[dict[str, Any]], dry_run: bool) -> None:
    if not changes:
        console.print("no changes")
        return
    console.print("would change:" if dry_run else "changes:")
    for c in changes:
        console.print(f"  {c['kind']:<9} {c['text']}", highlight=False, markup=False)


@org_app.command("show")
def org_show(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False
             ) -> None:
    """The org tree with each node's guarantees in force (a published period's over the
    org file's)."""
    org = _call("GET", "/v1/org")
    if as_json:
        print(json.dumps(org, indent=2))
        return
    kids: dict[str | None, list[dict[str, Any]]] = {}
    for n in org["nodes"]:
        kids.setdefault(n["parent"], []).append(n)
    console.print(f"org tree (quotas of period {org['period']}):")

    def show(parent: str | None, depth: int) -> None:
        for n in kids.get(parent, []):
            kind = "team" if n["is_team"] else "group"
            g = _guarantees(n["quotas"]) or ("sum of its teams" if not n["is_team"] else
                                             "no guarantee")
            w = f", weight {n['weight']:g}" if n["weight"] != 1 else ""
            console.print(f"{'  ' * (depth + 1)}{n['name']} ({kind}{w}): {g}",
                          highlight=False, markup=False)
            show(n["name"], depth + 1)

    show(None, 0)


@org_app.command("apply")
def org_apply(
    file: Annotated[Path, typer.Argument(help="org file (YAML or JSON, `org:` at the top)")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the diff, change "
                                          "nothing")] = False,
    force: Annotated[list[str] | None, typer.Option(
        help="OLD=NEW: the running and pending work of removed team OLD goes to team NEW "
        "(repeat for several)")] = None,
) -> None:
    """Replace the org tree (admins): prints the diff, then applies it in one transaction.
    Nodes may carry `renamed_from: old`, `merged_from` (old nodes) or `split_from: old`; their
    jobs, usage, decayed usage and period quotas follow."""
    try:
        data = _plain(read_file(file, "file"), "file")
    except AllotmentError as exc:
        _fail(exc)
        return
    if not isinstance(data, dict) or "org" not in data:
        _fail(InputError("org", f"{file}: an org file has `org:` at the top"))
        return
    params: dict[str, Any] = {"dry_run": "true" if dry_run else "false"}
    if force:
        params["force"] = force
    got = _call("PUT", "/v1/org", json={"org": data["org"]}, params=params)
    print_changes(got["changes"], dry_run)
    if not dry_run:
        moved = ", ".join(f"{k} {v}" for k, v in got["moved"].items() if v)
        console.print(f"applied as org version {got['version']}"
                      + (f"; rows re-keyed: {moved}" if moved else ""))


@org_app.command("history")
def org_history(limit: Annotated[int, typer.Option(help="at most this many")] = 20) -> None:
    """The org's versions, newest first (admins)."""
    page = _call("GET", "/v1/org/history", params={"limit": limit})
    t = Table(title=f"{len(page['items'])} of {page['total']} org versions")
    for col in ("version", "when", "by", "teams", "changes"):
        t.add_column(col, overflow="fold")
    for v in page["items"]:
        t.add_row(str(v["id"]), _when(v["created_at"]), v["actor"], str(v["teams"]),
                  "; ".join(c["text"] for c in v["changes"]) or "org set")
    console.print(t)


@inventory_app.command("show")
def inventory_show(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False
                   ) -> None:
    """The GPU nodes and the GPUs by type."""
    inv = _call("GET", "/v1/inventory")
    if as_json:
        print(json.dumps(inv, indent=2))
        return
    t = Table(title="GPUs: " + ", ".join(f"{n} {k}" for k, n in inv["gpus_by_type"].items()))
    for col in ("node", "gpu type", "gpus", "rack", "pod", "state"):
        t.add_column(col)
    for n in inv["nodes"]:
        t.add_row(n["name"], n["gpu_type"], str(n["gpus"]), str(n["rack"]), str(n["pod"]),
                  n["state"])
    console.print(t)


@inventory_app.command("apply")
def inventory_apply(
    file: Annotated[Path, typer.Argument(help="inventory file (YAML or JSON, `nodes:` at "
                                         "the top: name, gpu_type, gpus, rack, pod, state)")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the diff, change "
                                          "nothing")] = False,
) -> None:
    """Replace the nodes (admins): prints the diff, then applies it."""
    try:
        data = _plain(read_file(file, "file"), "file")
    except AllotmentError as exc:
        _fail(exc)
        return
    if not isinstance(data, dict) or "nodes" not in data:
        _fail(InputError("nodes", f"{file}: an inventory file has `nodes:` at the top"))
        return
    got = _call("PUT", "/v1/inventory", json={"nodes": data["nodes"]},
                params={"dry_run": "true" if dry_run else "false"})
    print_changes(got["changes"], dry_run)
    if not dry_run:
        console.print("applied: " + ", ".join(f"{n} {k} GPUs"
                                              for k, n in got["gpus_by_type"].items()))
