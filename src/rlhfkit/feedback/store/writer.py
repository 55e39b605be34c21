"""The store's writers: every write runs here, and is acknowledged only after its COMMIT returned.

- :class:`GroupWriter` (SQLite): one thread; the writes waiting at one moment share one
  ``BEGIN IMMEDIATE`` transaction, each in its own savepoint, so one bad request rolls back alone
  and sixteen labellers cost one ``fsync``, not sixteen. SQLite's write lock serialises these
  transactions across processes.
- :class:`PoolWriter` (PostgreSQL): a few threads, one write per ``READ COMMITTED`` transaction
  (concurrent commits share WAL flushes on the server). Row locks keep concurrent transactions
  from over-serving a query (see :mod:`rlhfkit.feedback.store.serving`); a transaction the server
  aborts for a deadlock, a serialisation failure or a lock it would not wait for (``NOWAIT``) is
  retried from scratch — PostgreSQL rolled all of it back — and after :data:`ATTEMPTS` tries the
  caller gets a :class:`~rlhfkit.feedback.store.types.BusyError` with nothing written.

A write is a function ``fn(conn) -> result`` that does all its reads and writes on ``conn``; it
may run more than once (only the last run commits), so it must not have effects outside the
database.
"""

from __future__ import annotations

import os
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from rlhfkit.feedback.store.types import BusyError, StoreError

__all__ = ["ATTEMPTS", "RETRYABLE_SQLSTATES", "GroupWriter", "PoolWriter", "is_retryable"]

T = TypeVar("T")

RETRYABLE_SQLSTATES = {"40001": "serialization failure", "40P01": "deadlock", "55P03": "lock not available"}
"""PostgreSQL errors after which the whole transaction was rolled back and may simply run again."""

ATTEMPTS = 30
"""Tries of one PostgreSQL write before it fails with :class:`BusyError` (back-off 1-50 ms)."""


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is a PostgreSQL deadlock, serialisation failure or ``NOWAIT`` refusal."""
    return isinstance(exc, sa.exc.DBAPIError) and getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES


class _Base:
    """A queue of ``(fn, future)`` jobs consumed by ``n`` daemon threads."""

    def __init__(self, engine: Engine, n_threads: int, name: str) -> None:
        self._engine = engine
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._threads = [threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(n_threads)]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[[Connection], T]) -> Future:
        """Queue ``fn(conn)``; the future resolves once its transaction committed (or failed).

        Raises:
            StoreError: if the store is closed.
        """
        if self._closed:
            raise StoreError("the store is closed")
        fut: Future = Future()
        self._queue.put((fn, fut))
        return fut

    def call(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in a writer transaction; return its result once committed."""
        return self.submit(fn).result()

    def close(self) -> None:
        """Finish the queued writes and stop the threads."""
        if not self._closed:
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)
            for t in self._threads:
                t.join(timeout=30)

    def _run(self) -> None:
        raise NotImplementedError


class GroupWriter(_Base):
    """SQLite: one thread; the writes queued at one moment share a transaction (group commit).

    Each write runs in a savepoint, so its error rolls back only its own changes; results (and
    errors) are delivered only after the COMMIT returned, i.e. after the data is on disk. If the
    COMMIT itself fails, every write of the batch gets the error (none of them is stored).

    Args:
        engine: the SQLite engine.
        max_batch: most writes per transaction.
        lock_path: a file whose ``flock`` the writers of every process take around their
            transaction. SQLite's own lock stays what keeps the data right; this one only queues
            the processes: a waiting writer wakes the moment the lock is free, where SQLite's
            busy handler polls with sleeps of up to 100 ms (several server processes on one
            store). None, or a system without ``flock``: SQLite's lock alone.
    """

    def __init__(self, engine: Engine, max_batch: int = 64, lock_path: str | None = None) -> None:
        self._max_batch = max_batch
        self._lock_fd = _open_lock(lock_path)
        super().__init__(engine, 1, "rlhfkit-store-writer")

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._execute(batch)

    def _execute(self, batch: list) -> None:
        if self._lock_fd is None:
            self._transaction(batch)
            return
        import fcntl

        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            self._transaction(batch)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Finish the queued writes, stop the thread and close the lock file."""
        super().close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _transaction(self, batch: list) -> None:
        done: list[tuple[Future, Any, BaseException | None]] = []
        try:
            with self._engine.connect() as conn:
                conn.execution_options(rlhf_begin="IMMEDIATE")
                with conn.begin():
                    for fn, fut in batch:
                        sp = conn.begin_nested()
                        try:
                            result = fn(conn)
                        except BaseException as e:  # noqa: BLE001 - delivered to the caller
                            sp.rollback()
                            done.append((fut, None, e))
                        else:
                            sp.commit()
                            done.append((fut, result, None))
        except BaseException as e:  # noqa: BLE001 - the commit failed: nothing of this batch is stored
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        for fut, result, err in done:
            if err is not None:
                fut.set_exception(err)
            else:
                fut.set_result(result)


def _open_lock(path: str | None) -> int | None:
    """A descriptor of ``path`` to ``flock``, or None where that is not possible."""
    if path is None:
        return None
    try:
        import fcntl  # noqa: F401 - POSIX only

        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except (ImportError, OSError):
        return None


class PoolWriter(_Base):
    """PostgreSQL: ``n_threads`` threads, each running one write per transaction, retried on
    deadlocks, serialisation failures and ``NOWAIT`` refusals (see the module docstring)."""

    def __init__(self, engine: Engine, n_threads: int = 4, attempts: int = ATTEMPTS) -> None:
        self._attempts = attempts
        self.retries = 0
        """Transactions run again so far (for benchmarks and tests)."""
        super().__init__(engine, n_threads, "rlhfkit-store-writer")

    def _run(self) -> None:
        rng = random.Random()
        while True:
            item = self._queue.get()
            if item is None:
                break
            fn, fut = item
            self._execute(fn, fut, rng)

    def _execute(self, fn: Callable[[Connection], Any], fut: Future, rng: random.Random) -> None:
        for attempt in range(self._attempts):
            try:
                with self._engine.begin() as conn:
                    result = fn(conn)
            except sa.exc.DBAPIError as e:
                if is_retryable(e) and attempt + 1 < self._attempts:
                    self.retries += 1
                    time.sleep(rng.uniform(0.001, min(0.05, 0.002 * 2 ** attempt)))
                    continue
                if is_retryable(e):
                    kind = RETRYABLE_SQLSTATES[e.orig.sqlstate]  # type: ignore[union-attr]
                    e = BusyError(f"the database stayed busy ({kind}) through {self._attempts} tries; "
                                  "nothing was written: try again")
                fut.set_exception(e)
                return
            except BaseException as e:  # noqa: BLE001 - delivered to the caller; the transaction rolled back
                fut.set_exception(e)
                return
            fut.set_result(result)
            return
