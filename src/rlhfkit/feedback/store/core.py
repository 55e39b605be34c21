"""The :class:`Store`: one object over one database URL, its writer, and the public API."""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from rlhfkit.feedback.store import labellers as L
from rlhfkit.feedback.store import schema as S
from rlhfkit.feedback.store import serving, trl
from rlhfkit.feedback.store.engine import make_engine, store_url
from rlhfkit.feedback.store.types import (
    LEASE_S,
    MAX_REASON,
    PAIR_OUTCOMES,
    QUERY_KINDS,
    RANKING,
    STATUSES,
    ConflictError,
    InvalidInputError,
    Label,
    LabelResult,
    Labeller,
    NotFoundError,
    Query,
    QuerySpec,
    Shown,
    StoreError,
    check_id,
    check_item,
    check_json_text,
    check_text,
    label_from_row,
    query_from_row,
    short,
)
from rlhfkit.feedback.store.writer import GroupWriter, PoolWriter

__all__ = ["Store", "store_url"]

T = TypeVar("T")
_ADVISORY_SCHEMA_LOCK = 7253000  # PostgreSQL: two processes opening a new store create it once


class Store:
    """The preference store behind one database URL (see :mod:`rlhfkit.feedback.store`).

    Args:
        location: a database URL (``sqlite:///path/labels.sqlite``,
            ``postgresql://user@host/db``) or a filesystem path of an SQLite file.
        data_dir: folder of ``media/`` (clips) and ``fragments/`` (the arrays behind clip
            queries); default for SQLite: the database file's folder. Required for rendering clips
            into a store on a server database.
        seed: seed of the left/right randomisation (default: unpredictable).
        lease_s: seconds after which an unanswered shown query is served again (default 120).
        create: create a new store when there is none (default); False refuses a missing SQLite
            file or an empty database (for commands that read an existing store, where a
            mistyped path must not silently open an empty one).
        writer_threads: PostgreSQL only: concurrent writer transactions of this process.

    Raises:
        ValueError: for an in-memory SQLite URL (labels would be lost at exit), or a database
            other than SQLite and PostgreSQL.
        NotFoundError: ``create=False`` and no store there.
        StoreError: for a database written by a newer rlhfkit, one that is not a store, or
            PostgreSQL without the ``psycopg`` driver installed.
    """

    def __init__(self, location: str | Path, *, data_dir: str | Path | None = None, seed: int | None = None,
                 lease_s: float = LEASE_S, create: bool = True, writer_threads: int = 4) -> None:
        url = sa.make_url(store_url(location))
        backend = url.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {backend!r}: use an SQLite file or PostgreSQL")
        self.is_sqlite = backend == "sqlite"
        if self.is_sqlite:
            if url.database in (None, "", ":memory:") or "mode=memory" in str(url):
                raise ValueError("the preference store needs a database file: an in-memory SQLite database "
                                 "would lose every label at exit")
            db_path = Path(url.database).expanduser()
            if not create and not db_path.is_file():
                raise NotFoundError(f"no store at {db_path}: check the path (a new store is made by a run with "
                                    "--teacher human, `rlhf label import`, or Store(path) in Python)")
            db_path.parent.mkdir(parents=True, exist_ok=True)
            if data_dir is None:
                data_dir = db_path.parent
        self.data_dir = Path(data_dir).resolve() if data_dir is not None else None
        self.lease_s = float(lease_s)
        self._rng = random.Random(seed) if seed is not None else random.SystemRandom()
        self._rng_lock = threading.Lock()
        self.engine = make_engine(url, writer_threads)
        try:
            with self.engine.connect() as conn:
                conn.execution_options(rlhf_begin="IMMEDIATE")
                with conn.begin():
                    if not self.is_sqlite:
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_SCHEMA_LOCK})
                    self.upgraded_from = S.upgrade(conn, create=create)
        except BaseException:
            self.engine.dispose()
            raise
        self._writer = (GroupWriter(self.engine, lock_path=f"{url.database}-writer.lock") if self.is_sqlite
                        else PoolWriter(self.engine, writer_threads))
        self._tokens = L.TokenCache(self._read)
        self._names: dict[int, str] = {}  # labeller id → name (names never change)
        self._ctx = serving.Ctx(self.lease_s, not self.is_sqlite, self._shuffled, self._name)
        self.version = 0
        """Bumped when this process posts, reopens or cancels queries (long polls watch it)."""

    # -- plumbing -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The database URL with any password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

    @property
    def media_dir(self) -> Path:
        """Folder of the media files (clips); only paths relative to it are stored.

        Raises:
            StoreError: if the store has no ``data_dir`` (a server database opened without one).
        """
        if self.data_dir is None:
            raise StoreError(f"the store {self.url} has no data_dir: pass data_dir= (a folder for media files)")
        return self.data_dir / "media"

    @property
    def fragments_dir(self) -> Path:
        """Folder of the fragment arrays behind clip queries (never served over HTTP)."""
        if self.data_dir is None:
            raise StoreError(f"the store {self.url} has no data_dir: pass data_dir= (a folder for fragment files)")
        return self.data_dir / "fragments"

    @property
    def retries(self) -> int:
        """PostgreSQL transactions run again after a deadlock or lock refusal (0 on SQLite)."""
        return getattr(self._writer, "retries", 0)

    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        with self._read() as conn:
            return int(conn.execute(select(S.rlhf_meta.c.value).where(S.rlhf_meta.c.key == "schema_version")).scalar())

    def pragma(self, name: str) -> Any:
        """Read an SQLite ``PRAGMA`` on a pooled connection (for checks and tests).

        Raises:
            ValueError: for a name that is not a plain identifier, or on a non-SQLite store.
        """
        if not self.is_sqlite or not name.isidentifier():
            raise ValueError(f"pragma {name!r}: only plain SQLite pragma names on an SQLite store")
        with self.engine.connect() as conn:
            return conn.exec_driver_sql(f"PRAGMA {name}").scalar()

    def close(self) -> None:
        """Finish the queued writes, stop the writer and close the connections."""
        self._writer.close()
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _read(self) -> Connection:
        return self.engine.connect()

    def _write(self, fn: Callable[[Connection], T]) -> T:
        return self._writer.call(fn)

    def _shuffled(self, k: int) -> list[int]:
        order = list(range(k))
        with self._rng_lock:
            self._rng.shuffle(order)
        return order

    def _name(self, conn: Connection, labeller_id: int) -> str:
        name = self._names.get(labeller_id)
        if name is None:
            name = conn.execute(S.SQL_LABELLER, {"lab": labeller_id}).scalar()
            if name is None:
                raise NotFoundError(f"unknown labeller id {labeller_id}")
            self._names[labeller_id] = name = str(name)
        return name

    # -- labellers and tokens -------------------------------------------------------------------

    def add_labeller(self, name: str, token: str | None = None) -> str:
        """Register a labeller and return their secret token (shown once; only its hash is stored).

        Args:
            name: a unique display name, 1–100 printable characters (stored as given: whoever
                prints it must escape it).
            token: a token to use (16–512 characters); default a fresh random one (192 bits).

        Raises:
            InvalidInputError: for a bad name or token.
            ConflictError: if the name or the token is already registered.
        """
        token = L.add_labeller(self, name, token)
        self._tokens.expire()
        return token

    def ensure_labeller(self, name: str, token: str | None = None) -> str | None:
        """Register ``name`` unless it exists; return the new token, or None if it existed.

        With ``token`` given and ``name`` existing under another token, the stored token is kept.
        """
        try:
            return self.add_labeller(name, token)
        except ConflictError:
            if any(lab.name == name.strip() for lab in self.labellers()):
                return None
            raise

    def issue_token(self, name: str, token: str | None = None) -> str:
        """Give ``name`` one more valid token (registering them if new) and return it.

        The labeller's other tokens stay valid: starting a server never breaks an open labelling
        tab. Giving a token the labeller already holds changes nothing.

        Raises:
            InvalidInputError: for a bad name or token.
            ConflictError: if another labeller holds ``token``.
        """
        token = L.issue_token(self, name, token)
        self._tokens.load()
        return token

    def set_labeller_token(self, name: str, token: str | None = None) -> str:
        """Give ``name`` a token (registering them if new) and revoke all their others; return it.

        Use :meth:`issue_token` to add a token without breaking the labeller's open pages.

        Raises:
            InvalidInputError: for a bad name or token.
            ConflictError: if another labeller holds ``token``.
        """
        token = L.issue_token(self, name, token)
        L.revoke_other_tokens(self, name, token)
        self._tokens.load()
        return token

    def labellers(self) -> list[Labeller]:
        """Every registered labeller, oldest first."""
        with self._read() as conn:
            rows = conn.execute(select(S.labellers.c.id, S.labellers.c.name, S.labellers.c.created_at)
                                .order_by(S.labellers.c.id)).all()
        return [Labeller(r.id, r.name, r.created_at) for r in rows]

    def labeller_for_token(self, token: str | None) -> Labeller | None:
        """The labeller holding ``token`` (not revoked), or None; compares SHA-256 digests in constant time.

        Every known digest is compared with :func:`hmac.compare_digest` (no early exit), so the
        time taken does not depend on how much of a guessed token is right. Tokens issued by
        another process are seen within 5 s (at once when an unknown token is tried a second later).
        """
        return self._tokens.lookup(token)

    # -- queries ------------------------------------------------------------------------------

    def add_queries(self, specs: Sequence[QuerySpec], *, batch: str = "", status: str = "open") -> list[int]:
        """Post queries; return their ids (in order). All are written in one transaction.

        Args:
            specs: each with ``kind`` (``clip_pair``, ``text_pair``, ``ranking``), ``items``
                (2 for a pair, K ≥ 2 for a ranking; see :mod:`rlhfkit.feedback.store`), an
                optional ``prompt``, ``priority`` (higher is served first, e.g. the ensemble's
                disagreement), ``labels_needed`` (N labellers per query) and a JSON ``payload``.
            batch: a tag grouping the queries (a teacher's request), for progress and collection.
            status: ``open`` (default) or ``done`` (imported answers).

        Raises:
            InvalidInputError: naming the spec and the bad field; nothing is written then.
        """
        check_text(batch, "batch", 200)
        if status not in ("open", "done"):
            raise InvalidInputError(f"status must be 'open' or 'done', got {status!r}")
        rows = []
        now = time.time()
        for n, s in enumerate(specs):
            where = f"query spec {n}"
            if s.kind not in QUERY_KINDS:
                raise InvalidInputError(f"{where}: kind must be one of {', '.join(QUERY_KINDS)}, got {s.kind!r}")
            items = list(s.items)
            if s.kind in ("clip_pair", "text_pair") and len(items) != 2:
                raise InvalidInputError(f"{where}: a {s.kind} needs exactly 2 items, got {len(items)}")
            if s.kind == "ranking" and not 2 <= len(items) <= 16:
                raise InvalidInputError(f"{where}: a ranking needs 2 to 16 items, got {len(items)}")
            try:
                items = [check_item(s.kind, it, i) for i, it in enumerate(items)]
                check_json_text(s.prompt, "the prompt")
                check_json_text(s.payload, "the payload")
            except InvalidInputError as e:
                raise InvalidInputError(f"{where}: {e}") from None
            for it in items:
                if "media" in it and self.data_dir is not None and not (self.media_dir / it["media"]).is_file():
                    raise InvalidInputError(f"{where}: media file {it['media']!r} is not in {self.media_dir}")
            if not isinstance(s.priority, (int, float)) or not math.isfinite(s.priority):
                raise InvalidInputError(f"{where}: priority must be a finite number, got {short(s.priority)}")
            if not isinstance(s.labels_needed, int) or not 1 <= s.labels_needed <= 1000:
                raise InvalidInputError(f"{where}: labels_needed must be an integer in 1..1000, got "
                                        f"{short(s.labels_needed)}")
            rows.append({"kind": s.kind, "batch": batch, "prompt": s.prompt, "items": items, "payload": s.payload,
                         "priority": float(s.priority), "labels_needed": int(s.labels_needed), "n_labels": 0,
                         "status": status, "created_at": now, "shown_at": None})

        def fn(conn: Connection) -> list[int]:
            return [conn.execute(S.queries.insert().values(**row)).inserted_primary_key[0] for row in rows]

        ids = self._write(fn) if rows else []
        if not self.is_sqlite and len(ids) >= 50:
            self._analyze()
        self.version += 1
        return ids

    def _analyze(self) -> None:
        """PostgreSQL: refresh the planner's statistics after a large post. A fresh table looks
        empty to the planner until autovacuum analyses it (a minute or more later), and the
        progress counts then run as nested loops over every open query (7 ms instead of 0.3)."""
        with self.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE queries, labels, shows"))

    def add_query(self, kind: str, items: Sequence[dict[str, Any]], **kw: Any) -> int:
        """Post one query (see :meth:`add_queries`; ``batch`` and ``status`` go to it too)."""
        batch, status = kw.pop("batch", ""), kw.pop("status", "open")
        return self.add_queries([QuerySpec(kind, items, **kw)], batch=batch, status=status)[0]

    def query(self, query_id: int) -> Query:
        """One query by id.

        Raises:
            NotFoundError: for an unknown id.
        """
        check_id(query_id, "query id")
        with self._read() as conn:
            row = conn.execute(S.SQL_QUERY, {"qid": query_id}).first()
        if row is None:
            raise NotFoundError(f"unknown query id {query_id}")
        return query_from_row(row)

    def queries(self, *, batch: str | None = None, status: str | None = None) -> list[Query]:
        """Queries, oldest first, optionally of one batch and/or status."""
        stmt = select(S.queries).order_by(S.queries.c.id)
        if batch is not None:
            stmt = stmt.where(S.queries.c.batch == batch)
        if status is not None:
            stmt = stmt.where(S.queries.c.status == status)
        with self._read() as conn:
            return [query_from_row(r) for r in conn.execute(stmt)]

    def show(self, show_id: int) -> Shown:
        """One showing of a query (what a labeller saw, in which order).

        Raises:
            NotFoundError: for an unknown id.
        """
        check_id(show_id, "show id")
        with self._read() as conn:
            row = conn.execute(S.SQL_SHOW, {"sid": show_id}).first()
            if row is None:
                raise NotFoundError(f"unknown show id {show_id}")
            q = conn.execute(S.SQL_QUERY, {"qid": row.query_id}).one()
        return Shown(row.id, query_from_row(q), tuple(row.shown_order), row.shown_at)

    # -- serving ------------------------------------------------------------------------------

    def next_query(self, labeller_id: int) -> Shown | None:
        """Claim the next query for a labeller, or None when nothing is waiting for them.

        Order: the labeller's own unanswered showing if still leased (a reload shows the same
        query, same sides); else the open query of highest ``priority`` (oldest first among
        equals) that the labeller has not answered and that is not leased to enough others —
        a showing leases a query for :attr:`lease_s` seconds (120: then it is served again). The
        left/right order (a random permutation for rankings) is drawn per showing and stored.
        Safe with any number of processes on one database (:mod:`rlhfkit.feedback.store.serving`).

        Raises:
            NotFoundError: for an unknown labeller.
        """
        check_id(labeller_id, "labeller id")
        return self._write(lambda conn: serving.claim(conn, self._ctx, labeller_id, time.time()))

    async def claim_async(self, labeller_id: int) -> tuple[Shown | None, dict[str, int]]:
        """:meth:`next_query` and the labeller's :meth:`progress`, awaitable (for the web app).

        Both run in the writer's transaction: the event loop waits on the commit without
        tying up a thread, and the counts include the claim. Raises as :meth:`next_query`.
        """
        check_id(labeller_id, "labeller id")

        def fn(conn: Connection) -> tuple[Shown | None, dict[str, int]]:
            shown = serving.claim(conn, self._ctx, labeller_id, time.time())
            return shown, serving.progress(conn, labeller_id)

        return await asyncio.wrap_future(self._writer.submit(fn))

    def has_waiting(self, labeller_id: int) -> bool:
        """Whether an open query still needs an answer from this labeller (a cheap read)."""
        with self._read() as conn:
            return conn.execute(S.SQL_HAS_WAITING, {"lab": labeller_id}).first() is not None

    # -- answering ----------------------------------------------------------------------------

    def submit_label(self, labeller_id: int, query_id: int, show_id: int, outcome: str, *,
                     ranking: Sequence[int] | None = None, reason: str | None = None,
                     want_next: bool = False) -> LabelResult:
        """Store one answer, given **as shown** (``LEFT`` is the item the labeller saw on the left).

        The answer is converted to canonical terms with the showing's order and stored with it.
        Repeating an identical answer (a retried POST) returns the stored label with
        ``duplicate=True`` and writes nothing. Every answer — SKIP included — counts towards the
        query's ``labels_needed``. Answers to queries already collected or cancelled are stored
        too (no label is refused), but not used.

        Args:
            labeller_id: who answers.
            query_id: the query answered.
            show_id: the showing answered (from :meth:`next_query`); it fixes the displayed order.
            outcome: ``LEFT``, ``RIGHT``, ``TIE``, ``BOTH_BAD``, ``CANT_TELL``, ``SKIP``; or
                ``RANKING`` for a ranking query, with ``ranking``.
            ranking: display positions best first (a permutation of ``0..K-1``), for ``RANKING``.
            reason: an optional free-text reason (at most 2,000 characters, no U+0000).
            want_next: also claim the labeller's next query in the same transaction.

        Raises:
            NotFoundError: unknown query, showing or labeller (any id outside ``1..2**31-1``).
            InvalidInputError: an unknown outcome, a bad ranking, a showing of another query or
                another labeller, a bad reason.
            ConflictError: the labeller already gave a different answer to this query.
            BusyError: PostgreSQL stayed contended through every retry (nothing written).
        """
        return self._write(self._label_job(labeller_id, query_id, show_id, outcome, ranking, reason, want_next))

    async def submit_label_async(self, labeller_id: int, query_id: int, show_id: int, outcome: str, *,
                                 ranking: Sequence[int] | None = None, reason: str | None = None,
                                 want_next: bool = False) -> LabelResult:
        """:meth:`submit_label`, awaitable: the event loop waits on the commit without tying up a
        thread. Same arguments, result and errors (input errors raise before anything is queued)."""
        job = self._label_job(labeller_id, query_id, show_id, outcome, ranking, reason, want_next)
        return await asyncio.wrap_future(self._writer.submit(job))

    def _label_job(self, labeller_id: int, query_id: int, show_id: int, outcome: str,
                   ranking: Sequence[int] | None, reason: str | None,
                   want_next: bool) -> Callable[[Connection], LabelResult]:
        check_id(labeller_id, "labeller id")
        check_id(query_id, "query id")
        check_id(show_id, "show id")
        outcome = outcome.upper() if isinstance(outcome, str) else outcome
        if outcome not in (*PAIR_OUTCOMES, RANKING):
            raise InvalidInputError(f"invalid outcome {short(outcome)}; expected one of "
                                    f"{', '.join((*PAIR_OUTCOMES, RANKING))}")
        if reason is not None:
            reason = check_text(reason, "reason", MAX_REASON).strip() or None
        if ranking is not None:
            ranking = list(ranking) if isinstance(ranking, (list, tuple)) else ranking

        def fn(conn: Connection) -> LabelResult:
            res = serving.answer(conn, self._ctx, labeller_id, query_id, show_id, outcome, ranking, reason, want_next)
            res.progress.update(serving.progress(conn, labeller_id))  # counted in the same transaction
            return res

        return fn

    def undo_last(self, labeller_id: int) -> tuple[Label, Shown]:
        """Retract the labeller's most recent active answer and show its query again.

        The label is kept with ``retracted_at`` set (history is never deleted); the query is
        reopened and re-shown to the same labeller in the same displayed order.

        Returns:
            The retracted label and the new showing of its query.

        Raises:
            NotFoundError: the labeller has no answer to undo.
            ConflictError: the answer was already taken for training (query ``closed``) or the
                teacher stopped waiting for it (``cancelled``).
        """
        check_id(labeller_id, "labeller id")
        out = self._write(lambda conn: serving.undo(conn, self._ctx, labeller_id))
        self.version += 1
        return out

    # -- progress, collection -----------------------------------------------------------------

    def progress(self, labeller_id: int | None = None) -> dict[str, int]:
        """Counts for a progress display.

        Returns:
            ``answered`` (active labels, of this labeller if given) and ``waiting`` (open queries
            still needing an answer — from this labeller if given).
        """
        with self._read() as conn:
            return serving.progress(conn, labeller_id)

    def batch_progress(self, batch: str) -> dict[str, int]:
        """``{"total", "done", "open", "closed", "cancelled", "last_answer_at"}`` for one batch."""
        with self._read() as conn:
            rows = conn.execute(select(S.queries.c.status, func.count()).where(S.queries.c.batch == batch)
                                .group_by(S.queries.c.status)).all()
            last = conn.execute(select(func.max(S.labels.c.answered_at))
                                .join(S.queries, S.queries.c.id == S.labels.c.query_id)
                                .where(S.queries.c.batch == batch)).scalar()
        out = {s: 0 for s in STATUSES}
        out.update({status: int(n) for status, n in rows})
        out["total"] = sum(out[s] for s in STATUSES)
        out["last_answer_at"] = float(last) if last is not None else 0.0  # type: ignore[assignment]
        return out

    def collect(self, batch: str, query_ids: Iterable[int] | None = None) -> dict[int, list[Label]]:
        """Close a batch's answered (``done``) queries for training and return their active labels.

        After this, their answers can no longer be undone. Queries still ``open`` are left alone.
        The status change is one atomic ``UPDATE``: an undo racing with it either reopened the
        query first (then it is not collected) or finds it closed (and is refused).

        Returns:
            ``{query_id: [labels]}`` for the queries closed by this call.
        """
        ids = None if query_ids is None else [int(i) for i in query_ids]

        def fn(conn: Connection) -> dict[int, list[Label]]:
            stmt = S.queries.update().where(S.queries.c.batch == batch, S.queries.c.status == "done")
            if ids is not None:
                stmt = stmt.where(S.queries.c.id.in_(ids))
            done = sorted(r.id for r in conn.execute(stmt.values(status="closed").returning(S.queries.c.id)))
            return self._labels_of(conn, done) if done else {}

        return self._write(fn)

    def cancel(self, batch: str) -> int:
        """Stop serving a batch's unanswered queries (status ``cancelled``); return how many.

        Answers that still arrive for them are stored (no label is refused), but not used.
        """
        def fn(conn: Connection) -> int:
            res = conn.execute(S.queries.update().where(S.queries.c.batch == batch, S.queries.c.status == "open")
                               .values(status="cancelled"))
            return int(res.rowcount)

        n = self._write(fn)
        self.version += 1
        return n

    def labels(self, *, query_ids: Iterable[int] | None = None, include_retracted: bool = False) -> list[Label]:
        """Stored labels, oldest first (active only unless ``include_retracted``)."""
        stmt = (select(S.labels, S.labellers.c.name.label("labeller_name"))
                .join(S.labellers, S.labellers.c.id == S.labels.c.labeller_id).order_by(S.labels.c.id))
        if not include_retracted:
            stmt = stmt.where(S.ACTIVE)
        if query_ids is not None:
            stmt = stmt.where(S.labels.c.query_id.in_([int(i) for i in query_ids]))
        with self._read() as conn:
            return [label_from_row(r, r.labeller_name) for r in conn.execute(stmt)]

    def _labels_of(self, conn: Connection, query_ids: list[int]) -> dict[int, list[Label]]:
        out: dict[int, list[Label]] = {i: [] for i in query_ids}
        rows = conn.execute(select(S.labels, S.labellers.c.name.label("labeller_name"))
                            .join(S.labellers, S.labellers.c.id == S.labels.c.labeller_id)
                            .where(S.labels.c.query_id.in_(query_ids), S.ACTIVE)
                            .order_by(S.labels.c.id))
        for r in rows:
            out[r.query_id].append(label_from_row(r, r.labeller_name))
        return out

    # -- TRL preference format ----------------------------------------------------------------

    def export_trl(self, path: str | Path, *, ties: Literal["flag", "drop"] = "flag") -> int:
        """Write the active pair answers as TRL preference JSONL; see :func:`rlhfkit.feedback.store.trl.export_trl`."""
        return trl.export_trl(self, path, ties=ties)

    def import_trl(self, path: str | Path, *, labeller: str = "import") -> tuple[int, int]:
        """Read TRL preference JSONL, idempotently; see :func:`rlhfkit.feedback.store.trl.import_trl`.

        Returns:
            ``(imported, skipped)`` row counts.
        """
        return trl.import_trl(self, path, labeller=labeller)
