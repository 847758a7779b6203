"""The optional native build (``allotment._native``): used only while it matches the
sources, never shadowing an edit; ``ALLOTMENT_PURE=1`` turns it off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from allotment import _native


def _import_cycle(env: dict[str, str]) -> tuple[str, str]:
    out = subprocess.run(
        [sys.executable, "-c", "import allotment._native as n, allotment.scheduler.cycle as c;"
                               "print(n.NATIVE); print(c.__file__)"],
        env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout.split()
    return out[0], out[1]


def test_pure_environment_loads_every_module_from_its_source() -> None:
    native, path = _import_cycle({"ALLOTMENT_PURE": "1"})
    assert native == "False" and path.endswith("cycle.py")


@pytest.mark.skipif(not _native.NATIVE, reason=f"no current native build ({_native.REASON})")
def test_a_current_build_is_used() -> None:
    native, path = _import_cycle({"ALLOTMENT_PURE": ""})
    assert native == "True" and path.endswith(".so")


def _manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **changes: object) -> None:
    sources = {m: _native._digest(_native._source(m)) for m in _native.MODULES}
    data: dict[str, object] = {"python": sys.implementation.cache_tag, "sources": sources}
    data.update(changes)
    path = tmp_path / "_native.json"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(_native, "MANIFEST", path)
    monkeypatch.delenv("ALLOTMENT_PURE", raising=False)


def test_a_manifest_of_the_current_sources_is_accepted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _manifest(tmp_path, monkeypatch)
    assert _native.status() == (True, "mypyc build of the current sources")


def test_a_build_of_other_sources_is_refused(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    sources = {m: _native._digest(_native._source(m)) for m in _native.MODULES}
    sources["allotment.scheduler.snapshot"] = "0" * 64  # as if snapshot.py were edited
    _manifest(tmp_path, monkeypatch, sources=sources)
    assert _native.status() == (False,
                                "stale: allotment.scheduler.snapshot changed since the build")


def test_a_build_for_another_python_or_none_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _manifest(tmp_path, monkeypatch, python="cpython-310")
    ok, why = _native.status()
    assert not ok and why.startswith("built for cpython-310")
    monkeypatch.setattr(_native, "MANIFEST", tmp_path / "absent.json")
    assert _native.status() == (False, "not built (bash scripts/build-native)")


def test_the_pure_finder_loads_sources_and_packages() -> None:
    finder = _native._PureFinder()
    spec = finder.find_spec("allotment.scheduler.cycle", None)
    assert spec is not None and spec.origin is not None and spec.origin.endswith("cycle.py")
    package = finder.find_spec("allotment.scheduler", None)
    assert package is not None and package.submodule_search_locations
    assert finder.find_spec("allotment.service.app", None) is None  # not compiled: as usual
