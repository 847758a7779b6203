"""A bounded schemathesis run against the served OpenAPI spec finds no 5xx."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.service.conftest import LiveServer, World


def test_no_server_errors(world: World, tmp_path: Path) -> None:
    """Fuzzed requests on every route, as admin, answer 2xx or 4xx, never 5xx."""
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert exe, "schemathesis is a dev dependency"
    with LiveServer(world.client.app) as server:
        r = subprocess.run(
            [exe, "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error",
             "--max-examples", "15", "-H", f"Authorization: Bearer {world.tokens['admin']}",
             "--seed", "1", "--no-color"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
