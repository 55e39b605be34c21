"""Latency of the labelling server under 16 concurrent labellers: "next query" and "submit label".

Starts ``rlhf label serve`` in its own process on an SQLite store in a temporary folder (WAL,
synchronous=FULL: every acknowledged label is on disk), registers 16 labellers, posts enough
text-pair queries, and runs 16 client threads that each loop ``POST /api/next`` then
``POST /api/label`` over keep-alive HTTP/1.1 connections (``http.client``, to leave the CPU to
the server). Prints p50, p99 and max latency of each request kind and the label throughput.
Target: p99 < 50 ms for both.

    .venv/bin/python bench/label_server.py [--clients 16] [--labels 200] [--think-s 0.5]

Two scenarios: back-to-back requests (no think time: a stress test, latency is then bound by
throughput, Little's law) and paced clients that "think" an exponential time between seeing a
query and answering it (people take 3-5 s; --think-s 0.5 is far busier than 16 people).

Only 127.0.0.1 is contacted; the run is bounded by the label count.

What the figures rest on: the hot routes await the store's group-commit writer directly (two
threads in all, however many labellers: a pool of worker threads doing SQLite calls fought over
the GIL and halved throughput), the progress counts are taken in the writer's transaction, and
the server freezes its start-up objects out of the garbage collector (full collections stalled
all requests for 50-100 ms, which set p99).
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from rlhfkit.app.server import free_port, spawn_server
from rlhfkit.feedback.store import QuerySpec, Store

TOKEN = "bench-token-0123456789"





def run(clients: int, labels: int, warmup: int, think_s: float) -> tuple[dict[str, np.ndarray], int, float]:
    """One scenario: returns latencies in ms per request kind, labels stored, wall seconds."""
    n_total = clients * (labels + warmup)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels.sqlite"
        store = Store(path)
        tokens = [store.add_labeller(f"labeller{i:02d}") for i in range(clients)]
        store.add_queries([QuerySpec("text_pair", [{"text": f"response A{i}"}, {"text": f"response B{i}"}],
                                     prompt=f"prompt {i}", priority=float(i % 7)) for i in range(n_total + 100)])
        store.close()
        port = free_port()
        proc = spawn_server(path, port, TOKEN)
        lat: dict[str, list[float]] = {"next": [], "label": []}
        lock = threading.Lock()
        errors: list[str] = []
        barrier = threading.Barrier(clients)

        def client(i: int) -> None:
            mine: dict[str, list[float]] = {"next": [], "label": []}
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # keep-alive; light on CPU
            headers = {"X-Label-Token": tokens[i], "Content-Type": "application/json"}
            rng = np.random.default_rng(i)

            def post(path: str, payload: dict) -> tuple[int, dict]:
                conn.request("POST", path, body=json.dumps(payload), headers=headers)
                r = conn.getresponse()
                return r.status, json.loads(r.read())

            barrier.wait()
            for k in range(warmup + labels):
                t0 = time.perf_counter()
                status, body = post("/api/next", {})
                t1 = time.perf_counter()
                q = body.get("query")
                if status != 200 or q is None:
                    errors.append(f"next: {status} {body}")
                    return
                if think_s:
                    time.sleep(rng.exponential(think_s))
                t2 = time.perf_counter()
                status, body = post("/api/label", {"query_id": q["query_id"], "show_id": q["show_id"],
                                                   "outcome": "LEFT" if k % 2 else "RIGHT"})
                t3 = time.perf_counter()
                if status != 200:
                    errors.append(f"label: {status} {body}")
                    return
                if k >= warmup:
                    mine["next"].append(t1 - t0)
                    mine["label"].append(t3 - t2)
            conn.close()
            with lock:
                for key in lat:
                    lat[key].extend(mine[key])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
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
        store = Store(path)
        stored = len(store.labels())
        store.close()
    return {k: np.array(v) * 1000 for k, v in lat.items()}, stored, wall


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16, help="concurrent labellers (threads)")
    ap.add_argument("--labels", type=int, default=200, help="timed labels per client, no think time")
    ap.add_argument("--paced-labels", type=int, default=30, help="timed labels per client with think time")
    ap.add_argument("--think-s", type=float, default=0.5, help="mean think time of the paced run (a person: 3-5 s)")
    ap.add_argument("--warmup", type=int, default=10, help="labels per client not timed")
    args = ap.parse_args()
    print(f"labelling server (`rlhf label serve`, own process), SQLite store (WAL, synchronous=FULL), "
          f"{args.clients} concurrent clients, keep-alive HTTP/1.1 on 127.0.0.1")
    print(f"{'scenario':<34}{'request':<14}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'labels/s':>10}")
    scenarios = [(f"back-to-back ({args.labels}/client)", args.labels, 0.0)]
    if args.paced_labels > 0 and args.think_s > 0:
        scenarios.append((f"think ~{args.think_s:g} s ({args.paced_labels}/client)", args.paced_labels, args.think_s))
    for title, labels, think in scenarios:
        lat, stored, wall = run(args.clients, labels, args.warmup, think)
        for name, key in (("next query", "next"), ("submit label", "label")):
            x = lat[key]
            print(f"{title:<34}{name:<14}{len(x):>6}{np.percentile(x, 50):>9.1f}{np.percentile(x, 99):>9.1f}"
                  f"{x.max():>9.1f}{stored / wall:>10.0f}")
            title = ""
    print("target: p99 < 50 ms")


if __name__ == "__main__":
    main()
