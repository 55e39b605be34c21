"""Concurrent writes to one store, on SQLite and PostgreSQL: group commit, several store objects
(as several server processes would hold) on one database, deadlock retries.

The HTTP tests with real server processes are in test_app.py; these drive the store directly, so
they can hold the writer, count exactly and run in a second or two.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from rlhfkit.feedback.store import BusyError, InvalidInputError, NotFoundError, QuerySpec, Store
from rlhfkit.feedback.store import schema as S
from rlhfkit.feedback.store.writer import PoolWriter


def text_pairs(n: int, labels_needed: int = 1) -> list[QuerySpec]:
    return [QuerySpec("text_pair", [{"text": f"A{i}"}, {"text": f"B{i}"}], prompt=f"p{i}", priority=float(n - i),
                      labels_needed=labels_needed) for i in range(n)]


@pytest.fixture
def store(store_location: str, tmp_path: Path):
    s = Store(store_location, data_dir=tmp_path, seed=0)
    yield s
    s.close()


def test_one_failing_write_in_a_group_commit_fails_alone(store: Store) -> None:
    """Writes queued together share a transaction (SQLite); ones that fail *inside* it roll back alone."""
    n = 60
    store.add_queries(text_pairs(n))
    who = [store.labeller_for_token(store.add_labeller(f"l{i}")).id for i in range(n)]
    shown = [store.next_query(lab) for lab in who]  # each labeller holds a different query
    entered, gate = threading.Event(), threading.Event()
    blocker = store._writer.submit(lambda conn: entered.set() or gate.wait(10))  # hold the writer:
    assert entered.wait(10)  # it is inside its transaction (done gathering a batch); the answers queue up
    outcomes: dict[int, object] = {}

    def answer(i: int) -> None:
        q, s = shown[i].query.id, shown[i].show_id
        if i % 6 == 0:  # each of these passes the checks at the door and fails in the transaction
            q = 100_000  # a well-formed id of no query
        elif i % 6 == 3:
            s = shown[i - 1].show_id  # another labeller's showing
        try:
            outcomes[i] = store.submit_label(who[i], q, s, "LEFT" if i % 2 else "RIGHT")
        except (NotFoundError, InvalidInputError) as e:
            outcomes[i] = e

    threads = [threading.Thread(target=answer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    if isinstance(store._writer, PoolWriter):
        time.sleep(0.3)
    else:
        deadline = time.monotonic() + 10
        while store._writer._queue.qsize() < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store._writer._queue.qsize() == n  # all 60 wait behind the blocker: one batch
    gate.set()
    for t in threads:
        t.join()
    blocker.result()
    bad = {i for i in range(n) if i % 6 in (0, 3)}
    assert {i for i, o in outcomes.items() if isinstance(o, Exception)} == bad
    assert all(isinstance(outcomes[i], NotFoundError if i % 6 == 0 else InvalidInputError) for i in bad)
    labels = store.labels(include_retracted=True)
    assert sorted(lab.query_id for lab in labels) == sorted(shown[i].query.id for i in range(n) if i not in bad)
    assert sorted(lab.id for lab in labels) == sorted(outcomes[i].label.id for i in range(n) if i not in bad)
    assert sum(q.n_labels for q in store.queries()) == n - len(bad)


def run_labellers(stores: list[Store], n_labellers: int, undo_every: int, seconds: float) -> list[str]:
    """Labellers spread over ``stores`` answer (and sometimes undo) until nothing waits for them (as the
    page does, they ask again while :meth:`Store.has_waiting` says a query needs them: on PostgreSQL a
    claim skips a query another transaction holds locked that instant); return errors."""
    errors: list[str] = []
    ids = [stores[0].labeller_for_token(stores[0].add_labeller(f"lab{i}")).id for i in range(n_labellers)]

    def labeller(i: int) -> None:
        store, rng = stores[i % len(stores)], random.Random(i)
        deadline = time.monotonic() + seconds
        try:
            shown = None
            while time.monotonic() < deadline:
                while shown is None and store.has_waiting(ids[i]):  # as the page's long poll: a query
                    shown = store.next_query(ids[i])  # locked by another claim this instant is skipped
                    time.sleep(0.01 if shown is None else 0)
                if shown is None:
                    break
                res = store.submit_label(ids[i], shown.query.id, shown.show_id, rng.choice(["LEFT", "RIGHT", "TIE"]),
                                         want_next=True)
                shown = res.next
                if undo_every and rng.random() < 1 / undo_every:
                    _, shown = store.undo_last(ids[i])
        except Exception as e:  # noqa: BLE001 - reported
            errors.append(f"labeller {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=labeller, args=(i,)) for i in range(n_labellers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def check_exact(store: Store, labels_needed: int) -> None:
    """Every query done with exactly ``labels_needed`` active labels from distinct labellers, counted right."""
    labels = store.labels()
    per_query = Counter(lab.query_id for lab in labels)
    assert len({(lab.query_id, lab.labeller_id) for lab in labels}) == len(labels)  # no one answered twice
    for q in store.queries():
        assert q.n_labels == per_query[q.id], f"query {q.id}: n_labels {q.n_labels}, real {per_query[q.id]}"
        assert q.n_labels == labels_needed and q.status == "done", (q.id, q.n_labels, q.status)


@pytest.mark.parametrize("undo_every", [0, 4])
def test_several_stores_on_one_database_serve_each_query_exactly(store_location: str, undo_every: int) -> None:
    """Three store objects (three server processes' worth) and 12 labellers on 40 queries needing 3
    labels each: no query over-labelled, every count exact — with undos mixed in."""
    stores = [Store(store_location, seed=i) for i in range(3)]
    try:
        stores[0].add_queries(text_pairs(40, labels_needed=3))
        errors = run_labellers(stores, 12, undo_every, seconds=60)
        assert errors == []
        check_exact(stores[0], 3)
    finally:
        for s in stores:
            s.close()


def test_postgresql_deadlocks_are_retried(pg_server) -> None:
    """Two writes that lock two query rows in opposite orders: PostgreSQL aborts one, the writer runs it again."""
    store = Store(pg_server.new_schema())
    try:
        a, b = store.add_queries(text_pairs(2))
        step = threading.Barrier(2)

        def locker(first: int, second: int):
            runs = []

            def fn(conn) -> int:
                runs.append(1)
                conn.execute(S.SQL_LOCK_QUERY, {"qid": first}).one()
                if len(runs) == 1:
                    step.wait(5)  # both hold their first lock
                conn.execute(S.SQL_LOCK_QUERY, {"qid": second}).one()
                conn.execute(S.SQL_TOUCH_QUERY, {"qid": first, "now": float(first)})
                return len(runs)

            return fn

        f1, f2 = store._writer.submit(locker(a, b)), store._writer.submit(locker(b, a))
        runs = sorted([f1.result(timeout=30), f2.result(timeout=30)])
        assert runs == [1, 2] and store.retries == 1  # one was the deadlock's victim, and ran again
        assert {q.shown_at for q in store.queries()} == {float(a), float(b)}  # both committed
    finally:
        store.close()


def test_postgresql_gives_up_with_busy_after_its_tries(pg_server) -> None:
    engine = sa.create_engine(pg_server.url())
    writer = PoolWriter(engine, n_threads=1, attempts=3)

    class Deadlock(Exception):
        sqlstate = "40P01"

    def always(conn):
        raise sa.exc.OperationalError("SELECT 1", {}, Deadlock())

    try:
        with pytest.raises(BusyError, match="deadlock.*3 tries; nothing was written"):
            writer.call(always)
        assert writer.retries == 2
    finally:
        writer.close()
        engine.dispose()
