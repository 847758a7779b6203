"""The optional native build: the scheduler, the policies and the simulator's inner loop
compiled to C extensions by mypyc (the same typed sources, compiled as they are).

``bash scripts/build-native`` compiles the modules of
``MODULES`` and puts the extensions beside their sources in ``src/``, with a manifest of
the sources' SHA-256. At ``import allotment``, ``activate`` compares the manifest with the
sources: the extensions are used only while every compiled source is unchanged (and not
with ``ALLOTMENT_PURE=1``); otherwise every one of these modules is loaded from its
``.py``, so an edit is never shadowed by a stale build. It is all or nothing: mypyc links
the compiled modules to each other, and a mix would not be what was measured.

Decisions are the same either way (the event logs of a replay are byte-identical; CI runs
the tests on both); only the speed differs (``benchmarks/``). Without a C compiler, or
without the build, everything runs as plain Python.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# the hot path of a replay and of the service's cycle (modules mypyc compiles unchanged)
MODULES = (
    "allotment.domain.cluster",
    "allotment.domain.org",
    "allotment.domain.workload",
    "allotment.policies.__init__",
    "allotment.policies.fairshare",
    "allotment.policies.fifo",
    "allotment.policies.idle",
    "allotment.policies.incentives",
    "allotment.policies.las",
    "allotment.policies.static",
    "allotment.scheduler.__init__",
    "allotment.scheduler.apply",
    "allotment.scheduler.config",
    "allotment.scheduler.cycle",
    "allotment.scheduler.decisions",
    "allotment.scheduler.estimate",
    "allotment.scheduler.heads",
    "allotment.scheduler.launch",
    "allotment.scheduler.ledger",
    "allotment.scheduler.placement",
    "allotment.scheduler.policy",
    "allotment.scheduler.preemption",
    "allotment.scheduler.reservation",
    "allotment.scheduler.snapshot",
    "allotment.scheduler.state",
    "allotment.sim.engine",
    "allotment.sim.journal",
    "allotment.sim.metrics",
)
SRC = Path(__file__).resolve().parent.parent  # the folder that holds the package
MANIFEST = SRC / "allotment" / "_native.json"


def _source(module: str) -> Path:
    return SRC.joinpath(*module.split(".")).with_suffix(".py")


def _name(module: str) -> str:
    return module.removesuffix(".__init__")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def status() -> tuple[bool, str]:
    """Whether the native build may be used now, and why (not)."""
    if os.environ.get("ALLOTMENT_PURE") == "1":
        return False, "ALLOTMENT_PURE=1"
    try:
        manifest = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return False, "not built (bash scripts/build-native)"
    if manifest.get("python") != sys.implementation.cache_tag:
        return False, f"built for {manifest.get('python')}, not {sys.implementation.cache_tag}"
    sources = manifest.get("sources", {})
    for module in MODULES:
        try:
            if sources.get(module) != _digest(_source(module)):
                return False, f"stale: {module} changed since the build"
        except OSError:
            return False, f"stale: {module} is missing"
    return True, "mypyc build of the current sources"


class _PureFinder:
    """Loads the compiled modules from their ``.py`` (the extensions beside them unused)."""

    def __init__(self) -> None:
        self.names = {_name(m): _source(m) for m in MODULES}

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        source = self.names.get(fullname)
        if source is None:
            return None
        loader = importlib.machinery.SourceFileLoader(fullname, str(source))
        return importlib.util.spec_from_file_location(
            fullname, source, loader=loader,
            submodule_search_locations=[str(source.parent)]
            if source.name == "__init__.py" else None)


NATIVE = False  # set by ``activate``
REASON = ""


def activate() -> None:
    """Use the native build if it is current, else make sure its extensions stay unused."""
    global NATIVE, REASON
    NATIVE, REASON = status()
    if not NATIVE:  # (cheap: one dict lookup per import)
        sys.meta_path.insert(0, _PureFinder())


def build() -> int:
    """Compile ``MODULES`` with mypyc in a scratch copy of the sources and install the
    extensions beside the sources, with the manifest. Returns an exit status."""
    import shutil  # (build only: not imported with every ``import allotment``)
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="allotment-native-") as tmp:
        work = Path(tmp)
        shutil.copytree(SRC / "allotment", work / "allotment",
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.json"))
        digests = {m: _digest(work.joinpath(*m.split(".")).with_suffix(".py"))
                   for m in MODULES}
        files = [str(Path(*m.split(".")).with_suffix(".py")) for m in MODULES]
        print(f"compiling {len(files)} modules with mypyc (a minute or two)...", flush=True)
        run = subprocess.run([sys.executable, "-m", "mypyc", *files], cwd=work,
                             capture_output=True, text=True)
        if run.returncode != 0:
            print((run.stdout + run.stderr)[-4000:], file=sys.stderr)
            print("native build failed: everything runs as plain Python", file=sys.stderr)
            return 1
        clean()
        built = [p for p in work.rglob("*.so") if "build" not in p.relative_to(work).parts]
        for p in built:
            dest = SRC / p.relative_to(work)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest)
        MANIFEST.write_text(json.dumps({"python": sys.implementation.cache_tag,
                                        "sources": digests}, indent=1) + "\n")
    print(f"native build installed: {len(built)} extensions under {SRC}")
    return 0


def clean() -> None:
    """Remove the native build (extensions and manifest)."""
    MANIFEST.unlink(missing_ok=True)
    for p in [*SRC.glob("*__mypyc*"), *(SRC / "allotment").rglob("*.so")]:
        p.unlink()


def main(argv: Sequence[str]) -> int:
    """``build``, ``clean`` or ``status`` (``scripts/build-native``)."""
    command = argv[0] if argv else "status"
    if command == "build":
        return build()
    if command == "clean":
        clean()
        print("native build removed")
        return 0
    if command == "status":
        ok, why = status()
        print(f"native: {'yes' if ok else 'no'} ({why})")
        return 0
    print(f"unknown command {command!r}: use build, clean or status", file=sys.stderr)
    return 2
