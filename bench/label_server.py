"""Latency of the labelling server under 16 concurrent labellers: "next query" and "submit label".

Starts ``rlhf label serve`` in its own process on an SQLite store in a temporary folder (WAL,
synchronous=FULL: every acknowledged label is on disk), registers 16 labellers, posts enough
text-pair queries, and runs 16 client threads that each loop ``POST /api/next`` then
``POST /api/label`` over keep-alive HTTP/1.1 connections. Prints p50, p99 and max latency of
each request kind and the label throughput. Target: p99 < 50 ms for both.

    .venv/bin/python bench/label_server.py [--clients 16] [--labels 200] [--warmup 10]

Only 127.0.0.1 is contacted; the run is bounded by the label count.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from rlhfkit.feedback.store import QuerySpec, Store

TOKEN = "bench-token-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(store: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from rlhfkit.cli import main; main()", "label", "serve", "--store", str(store),
           "--port", str(port), "--token", TOKEN]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start within 30 s")


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16, help="concurrent labellers (threads)")
    ap.add_argument("--labels", type=int, default=200, help="labels per client")
    ap.add_argument("--warmup", type=int, default=10, help="labels per client not timed")
    args = ap.parse_args()
    n_total = args.clients * (args.labels + args.warmup)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels.sqlite"
        store = Store(path)
        tokens = [store.add_labeller(f"labeller{i:02d}") for i in range(args.clients)]
        store.add_queries([QuerySpec("text_pair", [{"text": f"response A{i}"}, {"text": f"response B{i}"}],
                                     prompt=f"prompt {i}", priority=float(i % 7)) for i in range(n_total + 100)])
        store.close()
        port = _free_port()
        proc = _spawn(path, port)
        lat: dict[str, list[float]] = {"next": [], "label": []}
        lock = threading.Lock()
        errors: list[str] = []
        barrier = threading.Barrier(args.clients)

        def client(i: int) -> None:
            mine: dict[str, list[float]] = {"next": [], "label": []}
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-Label-Token": tokens[i]},
                              timeout=30) as c:
                barrier.wait()
                for k in range(args.warmup + args.labels):
                    t0 = time.perf_counter()
                    r = c.post("/api/next")
                    t1 = time.perf_counter()
                    q = r.json()["query"]
                    if r.status_code != 200 or q is None:
                        errors.append(f"next: {r.status_code} {r.text[:200]}")
                        return
                    r = c.post("/api/label", json={"query_id": q["query_id"], "show_id": q["show_id"],
                                                   "outcome": "LEFT" if k % 2 else "RIGHT"})
                    t2 = time.perf_counter()
                    if r.status_code != 200:
                        errors.append(f"label: {r.status_code} {r.text[:200]}")
                        return
                    if k >= args.warmup:
                        mine["next"].append(t1 - t0)
                        mine["label"].append(t2 - t1)
            with lock:
                for key in lat:
                    lat[key].extend(mine[key])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        proc.terminate()
        proc.wait(10)
        if errors:
            raise SystemExit(f"errors: {errors[:5]}")
        stored = len(Store(path).labels())
    print(f"labelling server, SQLite (WAL, synchronous=FULL), {args.clients} concurrent clients x "
          f"{args.labels} labels (+{args.warmup} warm-up each), keep-alive HTTP/1.1 on 127.0.0.1")
    print(f"{'request':<14}{'n':>7}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for name, key in (("next query", "next"), ("submit label", "label")):
        x = np.array(lat[key]) * 1000
        print(f"{name:<14}{len(x):>7}{np.percentile(x, 50):>10.1f}{np.percentile(x, 99):>10.1f}{x.max():>10.1f}")
    print(f"throughput: {stored / wall:.0f} labels/s stored ({stored} labels in {wall:.1f} s); target p99 < 50 ms")


if __name__ == "__main__":
    main()
