"""The labelling server in its own processes, on SQLite and PostgreSQL: many clients, several server
processes on one store, and SIGKILLs while requests are in flight.

Each client is what the page does: claim, answer with ``next: true``, and on a broken connection
retry the same answer (a retried answer is recognised, never stored twice). What must hold:
every acknowledged label is stored exactly once, nothing is acknowledged before it is committed,
no query gets more labels than it needs, and every stored count is the real one.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from rlhfkit.app.server import free_port, spawn_server
from rlhfkit.feedback.store import QuerySpec, Store

TOKEN = "s" * 24


class Client:
    """A labeller on one server, over a keep-alive connection; retries through server restarts."""

    def __init__(self, port: int, token: str, seed: int, deadline: float) -> None:
        self.port, self.token, self.rng, self.deadline = port, token, random.Random(seed), deadline
        self.conn: http.client.HTTPConnection | None = None
        self.acked: list[int] = []
        self.queries: list[int] = []

    def post(self, path: str, payload: dict) -> dict:
        """POST until a 200 (through connection errors and 503s); raise on any other status."""
        while time.monotonic() < self.deadline:
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                self.conn.request("POST", path, body=json.dumps(payload),
                                  headers={"X-Label-Token": self.token, "Content-Type": "application/json"})
                r = self.conn.getresponse()
                body = json.loads(r.read())
            except (OSError, http.client.HTTPException, ValueError):
                self.close()
                time.sleep(0.05)  # the server was killed: it comes back on the same port
                continue
            if r.status == 503:
                time.sleep(0.05)
                continue
            if r.status != 200:
                raise AssertionError(f"{path} {payload}: {r.status} {body}")
            return body
        raise TimeoutError(f"{path}: no answer before the deadline")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def run(self, n_labels: int, more: Callable[[], bool] | None = None) -> None:
        """Answer ``n_labels`` queries (fewer if none are left), and go on while ``more()`` holds."""
        q = self.post("/api/next", {})["query"]
        while len(self.acked) < n_labels or (more is not None and more()):
            if q is None:
                q = self.post("/api/next", {"wait_s": 0.5})["query"]
                if q is None:
                    return
                continue
            body = self.post("/api/label", {"query_id": q["query_id"], "show_id": q["show_id"],
                                            "outcome": self.rng.choice(["LEFT", "RIGHT", "TIE"]), "next": True})
            self.acked.append(body["label_id"])
            self.queries.append(q["query_id"])
            q = body["query"]
        self.close()


def run_clients(ports: list[int], tokens: list[str], n_labels: int, seconds: float,
                more: Callable[[], bool] | None = None) -> tuple[list[Client], list[str]]:
    deadline = time.monotonic() + seconds
    clients = [Client(ports[i % len(ports)], tok, i, deadline) for i, tok in enumerate(tokens)]
    errors: list[str] = []

    def go(c: Client) -> None:
        try:
            c.run(n_labels, more)
        except Exception as e:  # noqa: BLE001 - reported
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=go, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return clients, errors


def check_store(location: str, clients: list[Client], labels_needed: int) -> list:
    """Acknowledged = stored, once each; no query over-labelled; counts exact. Returns the labels."""
    store = Store(location)
    try:
        labels = store.labels(include_retracted=True)
        queries = store.queries()
    finally:
        store.close()
    acked = [x for c in clients for x in c.acked]
    assert len(acked) == len(set(acked)), "a label was acknowledged twice under two ids"
    assert sorted(lab.id for lab in labels) == sorted(acked), "acknowledged and stored labels differ"
    assert len({(lab.query_id, lab.labeller_id) for lab in labels}) == len(labels), "someone answered twice"
    per_query = Counter(lab.query_id for lab in labels)
    assert max(per_query.values()) <= labels_needed, f"over-labelled: {per_query.most_common(3)}"
    wrong = [(q.id, q.n_labels, per_query[q.id]) for q in queries if q.n_labels != per_query[q.id]]
    assert wrong == [], f"stored counts differ from the real ones (id, n_labels, real): {wrong[:5]}"
    assert all(q.status == ("done" if q.n_labels >= labels_needed else "open") for q in queries)
    return labels


def setup_store(location: str, n_clients: int, n_queries: int, labels_needed: int) -> list[str]:
    store = Store(location)
    tokens = [store.add_labeller(f"labeller{i:02d}") for i in range(n_clients)]
    store.add_queries([QuerySpec("text_pair", [{"text": f"A{i}"}, {"text": f"B{i}"}], prompt=f"p{i}",
                                 priority=float(i % 7), labels_needed=labels_needed) for i in range(n_queries)])
    store.close()
    return tokens


def stop_all(procs: list) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except Exception:  # noqa: BLE001
            p.kill()
        if p.stderr:
            p.stderr.close()


def test_16_clients_200_labels_each_none_lost_none_duplicated(tmp_path) -> None:
    location = str(tmp_path / "labels.sqlite")
    tokens = setup_store(location, 16, 16 * 200 + 50, 1)
    port = free_port()
    proc = spawn_server(location, port, TOKEN, labeller="ann")
    try:
        clients, errors = run_clients([port], tokens, 200, seconds=300)
    finally:
        stop_all([proc])
    assert errors == []
    labels = check_store(location, clients, 1)
    assert len(labels) == 3200 and set(Counter(lab.labeller for lab in labels).values()) == {200}


def test_two_server_processes_on_one_store_label_exactly(store_location: str) -> None:
    """8 clients over 2 `rlhf label serve` processes, 3 labels needed per query."""
    tokens = setup_store(store_location, 8, 150, 3)
    ports = [free_port(), free_port()]
    procs = [spawn_server(store_location, p, TOKEN, labeller="ann") for p in ports]
    try:
        clients, errors = run_clients(ports, tokens, 50, seconds=240)
    finally:
        stop_all(procs)
    assert errors == []
    labels = check_store(store_location, clients, 3)
    assert len(labels) == 400 and all(len(set(c.queries)) == 50 for c in clients)


def test_acknowledged_labels_survive_sigkills_in_flight(store_location: str) -> None:
    """8 clients over 2 server processes; a random one is SIGKILLed every 0.3-0.7 s while requests are
    in flight, and restarted on its port. Every acknowledged label is stored, exactly once."""
    tokens = setup_store(store_location, 8, 2000, 2)
    ports = [free_port(), free_port()]
    procs = [spawn_server(store_location, p, TOKEN, labeller="ann") for p in ports]
    kills, stop = [], threading.Event()

    def killer() -> None:
        rng = random.Random(0)
        while not stop.is_set() and len(kills) < 6:
            time.sleep(rng.uniform(0.3, 0.7))
            i = rng.randrange(len(procs))
            os.kill(procs[i].pid, signal.SIGKILL)  # mid-request: the clients are never idle
            procs[i].wait(10)
            procs[i].stderr.close()
            kills.append(i)
            procs[i] = spawn_server(store_location, ports[i], TOKEN, labeller="ann")

    k = threading.Thread(target=killer)
    k.start()
    try:
        # the clients label until the killer has done 4 kills (a fast machine would finish 60 labels first)
        clients, errors = run_clients(ports, tokens, 60, seconds=240, more=lambda: len(kills) < 4)
    finally:
        stop.set()
        k.join()
        stop_all(procs)
    assert errors == [] and len(kills) >= 3, (errors, kills)
    labels = check_store(store_location, clients, 2)
    assert len(labels) == sum(len(c.acked) for c in clients) > 0


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("http_proxy", raising=False)
