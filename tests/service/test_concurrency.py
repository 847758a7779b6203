"""50 clients submit 2,000 jobs at once to a live server while the scheduler loop runs:
none lost, none duplicated, never more GPUs held than exist."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from allotment.backends.fake import FakeBackend
from allotment.service.loop import LoopConfig, SchedulerLoop
from allotment.storage import jobs as jobrepo
from allotment.storage.models import JobRow
from tests.service.conftest import LiveServer, World


def test_50_clients_2000_jobs(world: World) -> None:
    """Every submission lands once; GPUs held never exceed the nodes, and no GPU index is
    given to two jobs."""
    loop = SchedulerLoop(world.db, FakeBackend(), LoopConfig(tick_s=0.05))
    stop = threading.Event()
    ticker = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    with LiveServer(world.client.app) as server:
        ticker.start()

        def client(k: int) -> list[int]:
            who = ["member_own", "lead_other", "admin"][k % 3]
            team = {"member_own": "llama", "lead_other": "vision", "admin": "infra"}[who]
            out = []
            with httpx.Client(base_url=server.url, timeout=120,
                              headers={"Authorization": f"Bearer {world.tokens[who]}"}) as c:
                for n in range(40):
                    r = c.post("/v1/jobs", json={"team": team, "gpu_type": "a100",
                                                 "gpus": 1 + (k + n) % 8,
                                                 "command": f"run client={k} n={n}"})
                    assert r.status_code == 201, r.text
                    out.append(r.json()["id"])
            return out

        with ThreadPoolExecutor(50) as pool:
            ids = [i for chunk in pool.map(client, range(50)) for i in chunk]
        stop.set()
        ticker.join(timeout=30)
    assert len(ids) == len(set(ids)) == 2000
    with world.db.session() as s:
        rows = s.query(JobRow).all()
        commands = sorted(r.command for r in rows)
        active = jobrepo.active(s)
    assert commands == sorted(f"run client={k} n={n}" for k in range(50) for n in range(40))
    held: dict[str, list[int]] = {}
    for j in active:
        for node, gpu_ids in j.gpu_ids.items():
            held.setdefault(node, []).extend(gpu_ids)
    assert active, "the loop admitted nothing while clients submitted"
    for node, gpu_ids in held.items():
        assert len(gpu_ids) == len(set(gpu_ids)) <= 8, node
