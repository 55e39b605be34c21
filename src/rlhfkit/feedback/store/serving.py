"""Serving and answering queries: the transactions behind ``/api/next``, ``/api/label`` and ``/api/undo``.

Each function here is the body of one writer transaction (:mod:`rlhfkit.feedback.store.writer`)
and takes its connection. How they stay correct with many server processes on one database:

- **SQLite**: every writer transaction starts with ``BEGIN IMMEDIATE``, which takes the
  database's write lock; transactions from all processes run one at a time, so each sees the
  state the previous one committed.
- **PostgreSQL** (``READ COMMITTED``): every change to a query's shows, labels or counters is made
  holding that query's row lock (``SELECT … FOR NO KEY UPDATE``), and what decides the change is
  read *after* taking the lock, in a fresh statement (so it sees every transaction committed
  before). A transaction waits for at most one lock — its first; the queries it claims after that
  are locked with ``SKIP LOCKED`` (another free query is taken instead) or ``NOWAIT`` (the whole
  transaction is retried). A transaction that waits holds nothing, so no cycle of waits — no
  deadlock — can form between these transactions; the writer still retries one if PostgreSQL
  reports a deadlock.

The rules that follow, on both backends:

- A query is served to a labeller only while its active labels plus the live leases of others
  (showings younger than ``lease_s``, unanswered) are fewer than ``labels_needed``; so it is never
  shown to more people than it needs at once.
- ``n_labels`` is recounted from the active labels whenever they change, under the lock: it is
  always the real count.
- A query can collect more than ``labels_needed`` answers in one case only: a labeller answers
  after their lease expired and others meanwhile completed it. That answer is kept (it cost a
  person's time) and counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from rlhfkit.feedback.store import schema as S
from rlhfkit.feedback.store.types import (
    ConflictError,
    InvalidInputError,
    Label,
    LabelResult,
    NotFoundError,
    Shown,
    canonical_answer,
    label_from_row,
    query_from_row,
)

__all__ = ["Ctx", "answer", "claim", "progress", "undo"]

CANDIDATES = 8
"""Queries a claim tries before giving up for this request (PostgreSQL, when others took them
between the search and the lock; the page then polls again)."""


@dataclass(frozen=True)
class Ctx:
    """What the transactions need from their store.

    Attributes:
        lease_s: how long a showing reserves its query (seconds).
        row_locks: lock query rows and re-read after locking (PostgreSQL); False on SQLite,
            whose transactions are serialised whole.
        shuffle: ``shuffle(k)`` → a random permutation of ``range(k)`` (display order).
        name: ``name(conn, labeller_id)`` → the labeller's name; raises NotFoundError.
    """

    lease_s: float
    row_locks: bool
    shuffle: Callable[[int], list[int]]
    name: Callable[[Connection, int], str]


def _slot_free(slot: Any) -> bool:
    return slot.status == "open" and slot.n_labels + slot.leases < slot.labels_needed and not slot.mine


def claim(conn: Connection, ctx: Ctx, labeller_id: int, now: float, *, holding_lock: bool = False) -> Shown | None:
    """Claim the next query for a labeller (see :meth:`Store.next_query`), or None.

    Args:
        holding_lock: this transaction already holds a row lock (it answered a query), so the
            labeller's own showing is locked with ``NOWAIT`` (a refusal retries the transaction).
    """
    ctx.name(conn, labeller_id)  # raises for an unknown labeller
    p = {"lab": labeller_id, "cutoff": now - ctx.lease_s}
    mine = conn.execute(S.SQL_MY_SHOW, p).first()
    if mine is not None:  # a reload, or the query just undone: the same showing again
        shown = _renew(conn, ctx, mine, p, now, holding_lock)
        if shown is not None:
            return shown
    skip: list[int] = []
    for _ in range(CANDIDATES):
        row = conn.execute(S.SQL_NEXT_SKIPPING if skip else S.SQL_NEXT, {**p, "skip": skip} if skip else p).first()
        if row is None:
            return None
        if ctx.row_locks:  # locked now: re-read what decides, as committed by everyone else
            row = conn.execute(S.SQL_SLOT, {**p, "qid": row.id}).one()
            if not _slot_free(row):
                skip.append(row.id)
                continue
        order = ctx.shuffle(len(row.items))
        show_id = conn.execute(S.shows.insert(), {"query_id": row.id, "labeller_id": labeller_id,
                                                  "shown_order": order, "shown_at": now,
                                                  "answered_at": None}).inserted_primary_key[0]
        conn.execute(S.SQL_TOUCH_QUERY, {"qid": row.id, "now": now})
        return Shown(show_id, query_from_row(row), tuple(order), now)
    return None


def _renew(conn: Connection, ctx: Ctx, mine: Any, p: dict[str, Any], now: float, holding_lock: bool) -> Shown | None:
    """Serve the labeller's own live showing again and renew its lease, if it is still theirs."""
    qp = {**p, "qid": mine.query_id}
    if ctx.row_locks:
        conn.execute(S.SQL_LOCK_QUERY_NOWAIT if holding_lock else S.SQL_LOCK_QUERY, qp).one()
        q = conn.execute(S.SQL_SLOT, qp).one()
        if q.status != "open" or q.mine:
            return None
    if conn.execute(S.SQL_RENEW_SHOW, {"sid": mine.id, "now": now, "cutoff": p["cutoff"]}).rowcount != 1:
        return None
    conn.execute(S.SQL_TOUCH_QUERY, {"qid": mine.query_id, "now": now})
    q = conn.execute(S.SQL_QUERY, qp).one()
    return Shown(mine.id, query_from_row(q), tuple(mine.shown_order), now)


def answer(conn: Connection, ctx: Ctx, labeller_id: int, query_id: int, show_id: int, outcome: str,
           ranking: Sequence[int] | None, reason: str | None, want_next: bool) -> LabelResult:
    """Store one answer (see :meth:`Store.submit_label`; arguments already checked for type)."""
    now = time.time()
    name = ctx.name(conn, labeller_id)  # raises for an unknown labeller
    q = conn.execute(S.SQL_LOCK_QUERY if ctx.row_locks else S.SQL_QUERY, {"qid": query_id}).first()
    if q is None:
        raise NotFoundError(f"unknown query id {query_id}")
    s = conn.execute(S.SQL_SHOW_AND_PREV, {"sid": show_id, "qid": query_id, "lab": labeller_id}).first()
    if s is None:
        raise NotFoundError(f"unknown show id {show_id}")
    if s.query_id != query_id or s.labeller_id != labeller_id:
        raise InvalidInputError(f"show {show_id} is not a showing of query {query_id} to this labeller")
    order = list(s.shown_order)
    canon_outcome, canon_ranking = canonical_answer(q.kind, len(q.items), order, outcome, ranking)
    if s.prev_id is not None:
        if s.prev_outcome == canon_outcome and (s.prev_ranking or None) == canon_ranking:  # a retried POST
            prev = conn.execute(S.labels.select().where(S.labels.c.id == s.prev_id)).one()
            nxt = claim(conn, ctx, labeller_id, now, holding_lock=True) if want_next else None
            return LabelResult(label_from_row(prev, name), True, nxt)
        raise ConflictError(f"you already answered query {query_id} ({s.prev_outcome}); undo it first (key u)")
    values = {"query_id": query_id, "labeller_id": labeller_id, "show_id": show_id, "outcome": canon_outcome,
              "ranking": canon_ranking, "shown_order": order, "shown_at": s.shown_at, "answered_at": now,
              "reason": reason, "retracted_at": None}
    try:
        label_id = conn.execute(S.labels.insert(), values).inserted_primary_key[0]
    except sa.exc.IntegrityError:  # SQLite without the lock: another request of this labeller won
        raise ConflictError(f"query {query_id} was just answered by you in another request; reload the page") from None
    conn.execute(S.SQL_ANSWER_SHOW, {"sid": show_id, "now": now})
    _recount(conn, q, opening=False)
    lab = Label(label_id, query_id, labeller_id, name, canon_outcome,
                tuple(canon_ranking) if canon_ranking is not None else None, tuple(order), s.shown_at, now,
                reason, None, show_id)
    nxt = claim(conn, ctx, labeller_id, now, holding_lock=True) if want_next else None
    return LabelResult(lab, False, nxt)


def _recount(conn: Connection, q: Any, *, opening: bool) -> None:
    """Set a (locked) query's ``n_labels`` to its real count of active labels and its status to
    match: ``open`` → ``done`` once enough; ``done`` → ``open`` again when ``opening`` (an undo)."""
    conn.execute(S.SQL_RECOUNT, {"qid": q.id, "opening": opening})


def undo(conn: Connection, ctx: Ctx, labeller_id: int) -> tuple[Label, Shown]:
    """Retract the labeller's last active answer and show its query again (see :meth:`Store.undo_last`)."""
    now = time.time()
    name = ctx.name(conn, labeller_id)
    p = {"lab": labeller_id}
    for attempt in range(3):
        row = conn.execute(S.SQL_LAST_LABEL, p).first()
        if row is None:
            raise NotFoundError("nothing to undo: you have no answers yet")
        if not ctx.row_locks:
            break
        conn.execute(S.SQL_LOCK_QUERY if attempt == 0 else S.SQL_LOCK_QUERY_NOWAIT, {"qid": row.query_id}).one()
        again = conn.execute(S.SQL_LAST_LABEL, p).first()  # after the lock: still the last one?
        if again is not None and again.id == row.id:
            break
    else:
        raise ConflictError("your answers changed while undoing (another tab?); reload the page")
    q = conn.execute(S.SQL_QUERY, {"qid": row.query_id}).one()
    if q.status in ("closed", "cancelled"):
        raise ConflictError(f"your last answer (query {q.id}) was already used for training and cannot be "
                            "undone; undo works until the agent's next training step")
    conn.execute(S.labels.update().where(S.labels.c.id == row.id).values(retracted_at=now))
    _recount(conn, q, opening=True)
    conn.execute(S.SQL_TOUCH_QUERY, {"qid": q.id, "now": now})
    order = list(row.shown_order)
    show_id = conn.execute(S.shows.insert().values(query_id=q.id, labeller_id=labeller_id, shown_order=order,
                                                   shown_at=now)).inserted_primary_key[0]
    q = conn.execute(S.SQL_QUERY, {"qid": q.id}).one()
    undone = conn.execute(S.labels.select().where(S.labels.c.id == row.id)).one()
    return label_from_row(undone, name), Shown(show_id, query_from_row(q), tuple(order), now)


def progress(conn: Connection, labeller_id: int | None) -> dict[str, int]:
    """``answered`` (active labels, of this labeller if given) and ``waiting`` (open queries still
    needing an answer — from this labeller if given), in one statement."""
    if labeller_id is None:
        r = conn.execute(S.SQL_PROGRESS_ALL).one()
        return {"answered": int(r.answered), "waiting": int(r.waiting)}
    r = conn.execute(S.SQL_PROGRESS_ME, {"lab": labeller_id}).one()
    return {"answered": int(r.answered), "waiting": int(r.open_needing) - int(r.mine_open)}
