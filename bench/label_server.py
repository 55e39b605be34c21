"""The labelling server under load, on SQLite and PostgreSQL, with 1 or more server processes.

Starts ``rlhf label serve`` in N processes (N ports) on one store, registers the clients as
labellers, posts enough text-pair queries, and runs the clients as threads that each loop
``POST /api/next`` then ``POST /api/label`` over keep-alive HTTP/1.1 connections
(``http.client``, to leave the CPU to the servers); client i talks to server i mod N. Prints
p50, p99 and max latency of each request kind, the label throughput, and what the store holds
afterwards: labels lost (acknowledged, not stored), duplicated (stored twice, or one person
answering a query twice), queries over-labelled (more labels than needed) and stored counts
(``n_labels``) that differ from the real ones — all must be 0.

    .venv/bin/python bench/label_server.py                                   # SQLite, 1 process
    .venv/bin/python bench/label_server.py --store postgresql --processes 1,2,4 --labels-needed 3
    .venv/bin/python bench/label_server.py --store postgresql://user:pw@host/scratch --processes 2
    .venv/bin/python bench/label_server.py --store sqlite --sigkill 8        # durability
    .venv/bin/python bench/label_server.py --store postgresql --malformed    # 4xx, store unchanged

``--store``: ``sqlite`` (a temporary file: WAL, synchronous=FULL), ``postgresql`` (a temporary
server, PostgreSQL's durable defaults, via tests/_postgres.py: needs Debian's ``postgresql``
package), or a ``postgresql://`` URL of an **empty scratch database** (each scenario creates the
tables and drops them after).

Scenarios: back-to-back requests (no think time: a stress test; latency is then bound by
throughput, Little's law), and with ``--think-s`` clients that "think" an exponential time
between seeing a query and answering it (people take 3-5 s; 0.5 s is far busier than 16
people). ``--sigkill K``: K SIGKILLs of a random server process while 8 clients label, each
process restarted on its port; the clients retry through the restarts as the page does; every
acknowledged label must be stored exactly once. ``--malformed``: the malformed requests of
tests/malformed.py against a server process; each must get its 4xx and leave every row as it was.

Only 127.0.0.1 is contacted; every run is bounded by its label count.

What the SQLite figures rest on: the hot routes await the store's group-commit writer directly
(two threads in all, however many labellers), the progress counts are taken in the writer's
transaction, and the server freezes its start-up objects out of the garbage collector.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from rlhfkit.app.server import free_port, spawn_server
from rlhfkit.feedback.store import QuerySpec, Store
from rlhfkit.feedback.store import schema as S

TESTS = Path(__file__).resolve().parents[1] / "tests"
TOKEN = "bench-token-0123456789"


class Locations:
    """Fresh stores for each scenario: SQLite files, databases on a temporary PostgreSQL, or a scratch URL."""

    def __init__(self, kind: str) -> None:
        self.kind, self._tmp, self._server = kind, tempfile.TemporaryDirectory(), None
        if kind == "postgresql":
            sys.path.insert(0, str(TESTS))
            from _postgres import PostgresServer

            self._server = PostgresServer(fast=False)  # durable defaults: fsync on, synchronous_commit on
        self._n = 0

    def new(self) -> str:
        self._n += 1
        if self.kind == "sqlite":
            return str(Path(self._tmp.name) / f"s{self._n}" / "labels.sqlite")
        if self._server is not None:
            return self._server.new_database()
        engine = sa.create_engine(self.kind.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.begin() as conn:
            S.metadata.drop_all(conn)
            conn.execute(sa.text("DROP TABLE IF EXISTS rlhf_meta"))
        engine.dispose()
        return self.kind

    @property
    def label(self) -> str:
        return "SQLite (WAL, synchronous=FULL)" if self.kind == "sqlite" else "PostgreSQL"

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
        self._tmp.cleanup()


class Client:
    """One labeller: claim, answer with next, time each request; retry the same request through
    broken connections and 503s (as the page does)."""

    def __init__(self, port: int, token: str, seed: int) -> None:
        self.port, self.token, self.rng = port, token, np.random.default_rng(seed)
        self.conn: http.client.HTTPConnection | None = None
        self.lat: dict[str, list[float]] = {"next": [], "label": []}
        self.acked: list[int] = []
        self.errors: list[str] = []
        self.retries = 0

    def post(self, path: str, payload: dict, deadline: float) -> dict:
        while time.monotonic() < deadline:
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                self.conn.request("POST", path, body=json.dumps(payload),
                                  headers={"X-Label-Token": self.token, "Content-Type": "application/json"})
                r = self.conn.getresponse()
                body = json.loads(r.read())
            except (OSError, http.client.HTTPException, ValueError):
                self.close()
                self.retries += 1
                time.sleep(0.05)
                continue
            if r.status == 503:
                self.retries += 1
                continue
            if r.status != 200:
                raise RuntimeError(f"{path}: {r.status} {body}")
            return body
        raise TimeoutError(f"{path}: no answer in time")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def run(self, n: int, warmup: int, think_s: float, deadline: float, barrier: threading.Barrier | None,
            combined: bool = False) -> None:
        """Label ``warmup + n`` queries, timing the last ``n``: ``POST /api/next`` then ``POST /api/label``
        (``combined``: the answer asks for the next query, as the page does: one request per label)."""
        try:
            if barrier is not None:
                barrier.wait()
            k, q = 0, None
            while k < warmup + n:
                t0 = time.perf_counter()
                if q is None:
                    q = self.post("/api/next", {"wait_s": 1.0}, deadline)["query"]
                    if q is None:
                        return  # nothing left for this labeller
                    if k >= warmup:
                        self.lat["next"].append(time.perf_counter() - t0)
                if think_s:
                    time.sleep(self.rng.exponential(think_s))
                t1 = time.perf_counter()
                body = self.post("/api/label", {"query_id": q["query_id"], "show_id": q["show_id"], "next": combined,
                                                "outcome": ("LEFT", "RIGHT", "TIE")[k % 3]}, deadline)
                if k >= warmup:
                    self.lat["label"].append(time.perf_counter() - t1)
                self.acked.append(body["label_id"])
                q, k = body.get("query"), k + 1
        except Exception as e:  # noqa: BLE001 - reported
            self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            self.close()


def prepare(location: str, clients: int, n_queries: int, labels_needed: int) -> list[str]:
    store = Store(location)
    tokens = [store.add_labeller(f"labeller{i:02d}") for i in range(clients)]
    for start in range(0, n_queries, 2000):
        store.add_queries([QuerySpec("text_pair", [{"text": f"response A{i}"}, {"text": f"response B{i}"}],
                                     prompt=f"prompt {i}", priority=float(i % 7), labels_needed=labels_needed)
                           for i in range(start, min(n_queries, start + 2000))])
    store.close()
    return tokens


def audit(location: str, acked: list[int], labels_needed: int) -> dict[str, int]:
    """What the store holds against what was acknowledged."""
    store = Store(location)
    try:
        labels = store.labels(include_retracted=True)
        queries = store.queries()
    finally:
        store.close()
    stored = Counter(lab.id for lab in labels)
    per_query = Counter(lab.query_id for lab in labels)
    pairs = Counter((lab.query_id, lab.labeller_id) for lab in labels)
    return {"acked": len(acked), "stored": len(labels),
            "lost": sum(1 for x in set(acked) if x not in stored),
            "duplicated": (len(acked) - len(set(acked))) + sum(n - 1 for n in pairs.values() if n > 1),
            "over_labelled": sum(1 for n in per_query.values() if n > labels_needed),
            "count_wrong": sum(1 for q in queries if q.n_labels != per_query[q.id])}


def start_servers(location: str, n: int) -> tuple[list[int], list]:
    ports = [free_port() for _ in range(n)]
    return ports, [spawn_server(location, p, TOKEN, labeller="bench-admin") for p in ports]


def stop_servers(procs: list) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        p.wait(30)
        p.stderr.close()


def scenario(locs: Locations, processes: int, clients: int, labels: int, warmup: int, think_s: float,
             labels_needed: int, combined: bool) -> tuple[dict[str, np.ndarray], dict[str, int], float]:
    """Latencies (ms) per request kind, the audit, and labels/s."""
    location = locs.new()
    total = clients * (labels + warmup)
    tokens = prepare(location, clients, total // labels_needed + 200, labels_needed)
    ports, procs = start_servers(location, processes)
    cs = [Client(ports[i % processes], tok, i) for i, tok in enumerate(tokens)]
    barrier = threading.Barrier(clients)
    deadline = time.monotonic() + 1800
    threads = [threading.Thread(target=c.run, args=(labels, warmup, think_s, deadline, barrier, combined))
               for c in cs]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    stop_servers(procs)
    errors = [e for c in cs for e in c.errors]
    if errors:
        raise SystemExit(f"client errors: {errors[:5]}")
    lat = {k: np.array([x for c in cs for x in c.lat[k]]) * 1000 for k in ("next", "label")}
    acked = [x for c in cs for x in c.acked]
    return lat, audit(location, acked, labels_needed), len(acked) / wall


def sigkill(locs: Locations, kills: int, processes: int, labels_needed: int) -> dict[str, int]:
    """8 clients, ``kills`` SIGKILLs of a random server process; returns the audit."""
    location = locs.new()
    tokens = prepare(location, 8, 8 * 600 // labels_needed + 200, labels_needed)
    ports, procs = start_servers(location, processes)
    cs = [Client(ports[i % processes], tok, i) for i, tok in enumerate(tokens)]
    deadline = time.monotonic() + 1800
    threads = [threading.Thread(target=c.run, args=(600, 0, 0.0, deadline, None, True)) for c in cs]
    for t in threads:
        t.start()
    rng, done = random.Random(0), 0
    while done < kills and any(t.is_alive() for t in threads):
        time.sleep(rng.uniform(0.3, 1.0))
        i = rng.randrange(processes)
        os.kill(procs[i].pid, signal.SIGKILL)  # while its clients' requests are in flight
        procs[i].wait(10)
        procs[i].stderr.close()
        procs[i] = spawn_server(location, ports[i], TOKEN, labeller="bench-admin")
        done += 1
    for t in threads:
        t.join()
    stop_servers(procs)
    errors = [e for c in cs for e in c.errors]
    if errors:
        raise SystemExit(f"client errors: {errors[:5]}")
    out = audit(location, [x for c in cs for x in c.acked], labels_needed)
    out.update(kills=done, client_retries=sum(c.retries for c in cs))
    return out


def malformed(locs: Locations) -> tuple[int, list[str], bool]:
    """The malformed requests against one server process: (how many, failures, store unchanged)."""
    import httpx

    sys.path.insert(0, str(TESTS))
    from malformed import malformed_requests

    location = locs.new()
    store = Store(location)
    store.add_labeller("ann", token=TOKEN)
    bob = store.labeller_for_token(store.add_labeller("bob")).id
    store.add_queries([QuerySpec("text_pair", [{"text": "a"}, {"text": "b"}]) for _ in range(3)])
    store.close()
    port = free_port()
    proc = spawn_server(location, port, TOKEN, labeller="ann")
    base = f"http://127.0.0.1:{port}"
    try:
        q = httpx.post(f"{base}/api/next", json={}, headers={"X-Label-Token": TOKEN}).json()["query"]
        store = Store(location)
        show = store._write(lambda c: c.execute(S.shows.insert().values(
            query_id=q["query_id"], labeller_id=bob, shown_order=[0, 1], shown_at=time.time())).inserted_primary_key[0])
        other = next(x.id for x in store.queries() if x.id != q["query_id"])

        def rows() -> dict:
            with store.engine.connect() as conn:
                return {t.name: sorted(map(tuple, conn.execute(sa.select(t)).all()), key=repr)
                        for t in S.metadata.sorted_tables}

        before = rows()
        cases = malformed_requests(TOKEN, {"query_id": q["query_id"], "show_id": q["show_id"], "outcome": "LEFT"},
                                   other, show)
        failures = []
        with httpx.Client(base_url=base, timeout=30) as client:
            for name, method, path, kwargs, status, message in cases:
                r = client.request(method, path, **kwargs)
                try:
                    ok = r.status_code == status and message in r.json()["error"]
                except ValueError:
                    ok = False
                if not ok:
                    failures.append(f"{name}: {r.status_code} {r.text[:100]}")
        unchanged = rows() == before
        store.close()
    finally:
        stop_servers([proc])
    return len(cases), failures, unchanged


def main() -> None:
    """Run the chosen scenarios and print their figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="sqlite", help="sqlite | postgresql | postgresql://… (an empty scratch database)")
    ap.add_argument("--processes", default="1", help="server processes, a comma-separated list: 1,2,4")
    ap.add_argument("--clients", type=int, default=16, help="concurrent labellers (threads)")
    ap.add_argument("--labels", type=int, default=200, help="timed labels per client, back to back")
    ap.add_argument("--labels-needed", type=int, default=1, help="labels needed per query (N labellers each)")
    ap.add_argument("--paced-labels", type=int, default=0, help="timed labels per client with think time")
    ap.add_argument("--think-s", type=float, default=0.5, help="mean think time of the paced run (a person: 3-5 s)")
    ap.add_argument("--warmup", type=int, default=10, help="labels per client not timed")
    ap.add_argument("--combined", action="store_true", help="answer and claim the next query in one request "
                                                            "(as the page does) instead of two")
    ap.add_argument("--sigkill", type=int, default=0, help="durability run: this many SIGKILLs (8 clients)")
    ap.add_argument("--malformed", action="store_true", help="only the malformed-request check")
    args = ap.parse_args()
    locs = Locations(args.store)
    try:
        if args.malformed:
            n, failures, unchanged = malformed(locs)
            print(f"{locs.label}: {n} malformed requests, {n - len(failures)} answered with their 4xx JSON error; "
                  f"store unchanged: {unchanged}")
            for f in failures:
                print("  FAILED", f)
            return
        procs = [int(x) for x in args.processes.split(",")]
        if args.sigkill:
            for p in procs:
                a = audit_line(sigkill(locs, args.sigkill, p, args.labels_needed))
                print(f"{locs.label}, {p} process(es), 8 clients, {args.sigkill} SIGKILLs: {a}")
            return
        print(f"labelling server (`rlhf label serve`, own processes), {locs.label}, {args.clients} clients, "
              f"{args.labels_needed} label(s) needed per query, keep-alive HTTP/1.1 on 127.0.0.1")
        print(f"{'procs':<6}{'scenario':<30}{'request':<14}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
              f"{'labels/s':>10}  audit")
        for p in procs:
            runs = [(f"back-to-back ({args.labels}/client)", args.labels, 0.0)]
            if args.paced_labels > 0:
                runs.append((f"think ~{args.think_s:g} s ({args.paced_labels}/client)", args.paced_labels, args.think_s))
            for title, labels, think in runs:
                lat, aud, rate = scenario(locs, p, args.clients, labels, args.warmup, think, args.labels_needed,
                                          args.combined)
                for name, key in (("next query", "next"), ("label + next" if args.combined else "submit label", "label")):
                    x = lat[key]
                    if len(x) == 0:
                        continue
                    print(f"{p:<6}{title:<30}{name:<14}{len(x):>6}{np.percentile(x, 50):>9.1f}"
                          f"{np.percentile(x, 99):>9.1f}{x.max():>9.1f}{rate:>10.0f}  {audit_line(aud)}")
                    title = ""
        print("target: back-to-back p99 < 50 ms on one process; lost = duplicated = over-labelled = wrong counts = 0")
    finally:
        locs.close()


def audit_line(a: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in a.items())


if __name__ == "__main__":
    main()
