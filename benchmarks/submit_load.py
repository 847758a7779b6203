"""Submit latency under load: 50 clients submit 2,000 jobs at once to a live `allot up`
(SQLite, the scheduler loop running and admitting them, 64 fake GPUs), each over its own
keep-alive connection, spread over 5 client processes (one Python process cannot drive 50
connections without becoming the bottleneck itself). Prints p50, p99 and max of the time
from sending a POST /v1/jobs to its 201. Target: p99 under 500 ms. The last line is
``p50_ms=<n> p99_ms=<n>``.

    python benchmarks/submit_load.py [--clients 50] [--jobs 2000] [--gpus 64]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table


def free_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return int(sk.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    k = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(k, len(ordered)) - 1]


def client_process(url: str, token: str, k0: int, threads: int, per: int, barrier: Any,
                   results: Any) -> None:
    """``threads`` clients in this process, each submitting ``per`` jobs on its own
    connection; all processes start together."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)

    def client(k: int) -> None:
        mine: list[float] = []
        with httpx.Client(base_url=url, timeout=120,
                          headers={"Authorization": f"Bearer {token}"}) as c:
            start.wait()
            for n in range(per):
                body = {"team": "default", "gpu_type": "fake", "gpus": 1 + (k + n) % 8,
                        "command": f"sleep {1 + n % 5}"}
                t = time.perf_counter()
                r = c.post("/v1/jobs", json=body)
                mine.append((time.perf_counter() - t) * 1000)
                if r.status_code != 201:
                    with lock:
                        failures.append(f"{r.status_code} {r.text[:120]}")
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=client, args=(k0 * threads + k,)) for k in range(threads)]
    for th in pool:
        th.start()
    barrier.wait()
    start.wait()
    for th in pool:
        th.join()
    results.put((latencies, failures))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--gpus", type=int, default=64)
    args = ap.parse_args()
    allot = str(Path(sys.executable).parent / "allot")
    # the jobs still running when the service stops may write their logs as the folder goes
    with tempfile.TemporaryDirectory(prefix="allotment-submit-", ignore_cleanup_errors=True) as tmp:
        port = free_port()
        env = {**os.environ, "ALLOTMENT_CONFIG": f"{tmp}/config.json"}
        env.pop("ALLOTMENT_DB", None)
        # as root, jobs run as per-team uids and must reach their work folders (0711 above
        # them); otherwise they share this user's account, which must be said
        Path(tmp).chmod(0o711)
        accounts = [] if os.geteuid() == 0 else ["--shared-account"]
        proc = subprocess.Popen(
            [allot, "up", "--port", str(port), "--data-dir", f"{tmp}/data",
             "--fake-gpus", str(args.gpus), *accounts],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            url = f"http://127.0.0.1:{port}"
            end = time.time() + 120
            while True:
                try:
                    httpx.get(f"{url}/health", timeout=2)
                    break
                except httpx.TransportError:
                    if proc.poll() is not None or time.time() > end:
                        why = proc.stderr.read() if proc.stderr else ""
                        sys.exit(f"allot up did not start: {why}")
                    time.sleep(0.1)
            token = json.loads(Path(f"{tmp}/config.json").read_text())["token"]
            per = args.jobs // args.clients
            procs = 5 if args.clients % 5 == 0 else 1
            ctx = multiprocessing.get_context("fork")
            barrier = ctx.Barrier(procs + 1)
            results = ctx.Queue()
            workers = [ctx.Process(target=client_process, args=(
                url, token, k, args.clients // procs, per, barrier, results))
                for k in range(procs)]
            for wk in workers:
                wk.start()
            barrier.wait()
            t0 = time.perf_counter()
            parts = [results.get(timeout=600) for _ in workers]
            wall = time.perf_counter() - t0
            for wk in workers:
                wk.join()
            latencies = [x for lat, _ in parts for x in lat]
            failures = [f for _, fail in parts for f in fail]
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
                admitted = c.get("/v1/jobs", params={"state": ["starting", "running"],
                                                     "limit": 1}).json()["total"]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    table = Table(title=f"{args.clients} clients x {per} submits against allot up on SQLite "
                        f"({args.gpus} fake GPUs, the loop admitting), {wall:.1f} s in all")
    for col in ("submits", "failed", "p50 ms", "p99 ms", "max ms", "running after",
                "target p99 < 500 ms"):
        table.add_column(col, justify="right")
    table.add_row(f"{len(latencies):,}", str(len(failures)), f"{p50:.0f}", f"{p99:.0f}",
                  f"{max(latencies):.0f}", str(admitted), "met" if p99 < 500 else "MISSED")
    Console(width=140).print(table)
    for f in failures[:5]:
        print("failure:", f)
    print(f"p50_ms={p50:.0f} p99_ms={p99:.0f}")


if __name__ == "__main__":
    main()
