"""The preference store: queries, labels and labellers behind one database URL (SQLAlchemy Core).

Labels cost human time (Christiano et al. 2017 taught a Hopper back-flip with 900 of them, 3–5 s
each), so the store's first duty is never to lose one:

- **SQLite by default** — a file in the run directory, opened with ``journal_mode=WAL``,
  ``synchronous=FULL`` (every acknowledged commit is on disk), ``busy_timeout`` and foreign keys
  on. **PostgreSQL by URL** for a team (``postgresql+psycopg://user@host/db``).
- **Group commit** — every write goes through one writer thread that runs the writes waiting at
  that moment in one transaction (each in its own savepoint, so one bad request rolls back alone)
  and acknowledges them only after the commit. Sixteen labellers cost one ``fsync``, not sixteen.
- **Parametrised SQL only** (SQLAlchemy Core expressions); no string-built statements.
- **Undo keeps history** — an undone label is marked ``retracted_at``, never deleted.
- **Schema versioning** — ``rlhf_meta.schema_version`` and :data:`MIGRATIONS`; a store written by
  a newer rlhfkit is refused rather than misread.

Tables::

    labellers (id, name, token_hash, created_at)
    queries   (id, kind, batch, prompt, items, payload, priority, labels_needed, n_labels,
               status, created_at, shown_at)
    shows     (id, query_id, labeller_id, shown_order, shown_at, answered_at)
    labels    (id, query_id, labeller_id, show_id, outcome, ranking, shown_order, shown_at,
               answered_at, reason, retracted_at)

A query's ``items`` are its ``K`` things to compare in **canonical order** (a pair: ``[left,
right]`` as the teacher posted them): ``{"media": "relative/path.mp4"}`` for a clip, ``{"text":
str}`` or ``{"messages": [{"role", "content"}, ...]}`` for a response. Media files live in the
store's ``media/`` folder; only their paths are in the database. A label's ``outcome`` is also
in canonical terms (``LEFT`` means ``items[0]`` won, whatever side it was shown on), and its
``shown_order`` records what the person saw: ``shown_order[p]`` is the canonical index of the
item shown at position ``p`` (``[1, 0]``: the pair was shown swapped). A ranking's ``ranking``
lists canonical indices, best first.

Query status: ``open`` (served to labellers) → ``done`` (``labels_needed`` answers) → ``closed``
(taken by a teacher for training; no more undo). ``cancelled``: the teacher stopped waiting.
Times are seconds since the epoch (UTC, ``time.time()``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import queue
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    func,
    select,
)
from sqlalchemy.engine import Connection, Engine

from rlhfkit.feedback.records import Outcome

__all__ = [
    "LEASE_S",
    "MIGRATIONS",
    "QUERY_KINDS",
    "SCHEMA_VERSION",
    "ConflictError",
    "InvalidInputError",
    "Label",
    "Labeller",
    "NotFoundError",
    "Query",
    "QuerySpec",
    "Shown",
    "Store",
    "StoreError",
    "store_url",
]

SCHEMA_VERSION = 1
"""Version of the schema this code writes; stored in ``rlhf_meta``."""

LEASE_S = 120.0
"""A query shown this many seconds ago and not answered is served to someone else again."""

QUERY_KINDS = ("clip_pair", "text_pair", "ranking")
"""``clip_pair``: two clips; ``text_pair``: a prompt and two responses; ``ranking``: K ≥ 2 items."""

PAIR_OUTCOMES = tuple(o.name for o in Outcome)
"""Answers to a pair: LEFT, RIGHT, TIE, SKIP, BOTH_BAD, CANT_TELL."""

RANKING = "RANKING"
"""The outcome of a label that holds a full ranking (in ``ranking``)."""

_STATUSES = ("open", "done", "closed", "cancelled")
_MAX_TEXT = 1_000_000
_MAX_REASON = 2_000

QueryKind = Literal["clip_pair", "text_pair", "ranking"]
T = TypeVar("T")


class StoreError(Exception):
    """Base of the store's errors; ``status`` is the HTTP status the web app answers with."""

    status = 400


class NotFoundError(StoreError, LookupError):
    """An unknown query, show or labeller, or nothing to undo."""

    status = 404


class ConflictError(StoreError):
    """A request that contradicts the stored state (a second, different answer; undo after training)."""

    status = 409


class InvalidInputError(StoreError, ValueError):
    """A malformed value: an unknown outcome, a ranking that is no permutation, a bad media path."""

    status = 422


# ---------------------------------------------------------------------------------------------
# schema

metadata = MetaData()

rlhf_meta = Table(
    "rlhf_meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

labellers = Table(
    "labellers", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

queries = Table(
    "queries", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("batch", String(200), nullable=False, default=""),
    Column("prompt", JSON, nullable=True),
    Column("items", JSON, nullable=False),
    Column("payload", JSON, nullable=True),
    Column("priority", Float, nullable=False, default=0.0),
    Column("labels_needed", Integer, nullable=False, default=1),
    Column("n_labels", Integer, nullable=False, default=0),
    Column("status", String(16), nullable=False, default="open"),
    Column("created_at", Float, nullable=False),
    Column("shown_at", Float, nullable=True),
    CheckConstraint(f"kind IN {QUERY_KINDS!r}", name="ck_queries_kind"),
    CheckConstraint(f"status IN {_STATUSES!r}", name="ck_queries_status"),
    CheckConstraint("labels_needed >= 1", name="ck_queries_labels_needed"),
    Index("ix_queries_serve", "status", sa.desc("priority"), "id"),
    Index("ix_queries_open", "status", "n_labels", "labels_needed"),
    Index("ix_queries_batch", "batch"),
)

shows = Table(
    "shows", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("query_id", Integer, ForeignKey("queries.id"), nullable=False),
    Column("labeller_id", Integer, ForeignKey("labellers.id"), nullable=False),
    Column("shown_order", JSON, nullable=False),
    Column("shown_at", Float, nullable=False),
    Column("answered_at", Float, nullable=True),
    Index("ix_shows_query", "query_id"),
    Index("ix_shows_labeller", "labeller_id", "answered_at"),
)

labels = Table(
    "labels", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("query_id", Integer, ForeignKey("queries.id"), nullable=False),
    Column("labeller_id", Integer, ForeignKey("labellers.id"), nullable=False),
    Column("show_id", Integer, ForeignKey("shows.id"), nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("ranking", JSON, nullable=True),
    Column("shown_order", JSON, nullable=False),
    Column("shown_at", Float, nullable=True),
    Column("answered_at", Float, nullable=False),
    Column("reason", Text, nullable=True),
    Column("retracted_at", Float, nullable=True),
    CheckConstraint(f"outcome IN {(*PAIR_OUTCOMES, RANKING)!r}", name="ck_labels_outcome"),
    Index("ix_labels_labeller", "labeller_id", "retracted_at", "answered_at"),
)
# at most one active (not undone) label per (query, labeller): a retried POST never duplicates
Index("uq_labels_active", labels.c.query_id, labels.c.labeller_id, unique=True,
      sqlite_where=labels.c.retracted_at.is_(None), postgresql_where=labels.c.retracted_at.is_(None))

# Hot-path statements, built once: SQLAlchemy then reuses their compiled form. All parametrised.
_b = sa.bindparam
_ACTIVE = labels.c.retracted_at.is_(None)
_ANSWERED_BY_ME = select(labels.c.id).where(labels.c.query_id == queries.c.id, labels.c.labeller_id == _b("lab"),
                                            _ACTIVE).exists()
_NEEDS = (queries.c.status == "open") & (queries.c.n_labels < queries.c.labels_needed)
_SQL_LABELLER = select(labellers.c.name).where(labellers.c.id == _b("lab"))
_SQL_MY_SHOW = (select(shows.c.id, shows.c.shown_order, shows.c.query_id)
                .join(queries, queries.c.id == shows.c.query_id)
                .where(shows.c.labeller_id == _b("lab"), shows.c.answered_at.is_(None), shows.c.shown_at > _b("cutoff"),
                       queries.c.status == "open", ~_ANSWERED_BY_ME)
                .order_by(shows.c.shown_at.desc(), shows.c.id.desc()).limit(1))
_LEASES = (select(func.count()).select_from(shows)
           .where(shows.c.query_id == queries.c.id, shows.c.answered_at.is_(None), shows.c.shown_at > _b("cutoff"),
                  shows.c.labeller_id != _b("lab"))
           .scalar_subquery())
_SQL_NEXT = (select(queries)
             .where(queries.c.status == "open", queries.c.n_labels + _LEASES < queries.c.labels_needed, ~_ANSWERED_BY_ME)
             .order_by(queries.c.priority.desc(), queries.c.id).limit(1))
_SQL_NEXT_LOCKING = _SQL_NEXT.with_for_update(skip_locked=True, of=queries)
_SQL_HAS_WAITING = select(queries.c.id).where(_NEEDS, ~_ANSWERED_BY_ME).limit(1)
_SQL_QUERY = select(queries).where(queries.c.id == _b("qid"))
_SQL_SHOW = select(shows).where(shows.c.id == _b("sid"))
_SQL_TOUCH_SHOW = shows.update().where(shows.c.id == _b("sid")).values(shown_at=_b("now"))
_SQL_TOUCH_QUERY = queries.update().where(queries.c.id == _b("qid")).values(shown_at=_b("now"))
_SQL_ANSWER_SHOW = shows.update().where(shows.c.id == _b("sid")).values(answered_at=_b("now"))
_SQL_COUNT_QUERY = (queries.update().where(queries.c.id == _b("qid"))
                    .values(n_labels=_b("n"), status=_b("st")))
_SQL_ACTIVE_LABEL = select(labels).where(labels.c.query_id == _b("qid"), labels.c.labeller_id == _b("lab"), _ACTIVE)
_SQL_OPEN_NEEDING = select(func.count()).select_from(queries).where(_NEEDS)
_SQL_ALL_ANSWERED = select(func.count()).select_from(labels).where(_ACTIVE)
_SQL_MY_ANSWERED = select(func.count()).select_from(labels).where(labels.c.labeller_id == _b("lab"), _ACTIVE)
# driven from the labeller's labels (a correlated EXISTS keeps SQLite from scanning every open query)
_SQL_MY_OPEN = (select(func.count()).select_from(labels)
                .where(labels.c.labeller_id == _b("lab"), _ACTIVE,
                       select(queries.c.id).where(queries.c.id == labels.c.query_id, _NEEDS).exists()))

Migration = Callable[[Connection], None]
MIGRATIONS: dict[int, Migration] = {}
"""``MIGRATIONS[v]`` upgrades a store from schema version ``v`` to ``v + 1`` inside one
transaction. A fresh store is created at :data:`SCHEMA_VERSION` directly. Add an entry (and bump
:data:`SCHEMA_VERSION`) for every change to the tables above."""


def _upgrade(conn: Connection) -> int:
    """Create or migrate the schema on ``conn`` (inside a transaction); return the version found."""
    insp = sa.inspect(conn)
    names = set(insp.get_table_names())
    if "rlhf_meta" not in names:
        if names & {"queries", "labels", "labellers"}:
            raise StoreError("this database has rlhfkit-like tables but no rlhf_meta table: not an rlhfkit store")
        metadata.create_all(conn)
        conn.execute(rlhf_meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
        return 0
    found = conn.execute(select(rlhf_meta.c.value).where(rlhf_meta.c.key == "schema_version")).scalar()
    version = int(found) if found is not None else 0
    if version > SCHEMA_VERSION:
        raise StoreError(f"the store has schema version {version}, newer than this rlhfkit's {SCHEMA_VERSION}: "
                         "upgrade rlhfkit to open it")
    for v in range(version, SCHEMA_VERSION):
        if v not in MIGRATIONS:
            raise StoreError(f"no migration from schema version {v} to {v + 1}")
        MIGRATIONS[v](conn)
        conn.execute(rlhf_meta.update().where(rlhf_meta.c.key == "schema_version").values(value=str(v + 1)))
    return version


# ---------------------------------------------------------------------------------------------
# records


@dataclass(frozen=True)
class Labeller:
    """A person (or script) who answers queries; identified on the web page by a secret token."""

    id: int
    name: str
    created_at: float


@dataclass(frozen=True)
class Query:
    """One question for the labellers; see the module docstring for ``items`` and ``status``."""

    id: int
    kind: str
    items: tuple[dict[str, Any], ...]
    prompt: Any
    priority: float
    labels_needed: int
    n_labels: int
    status: str
    batch: str
    payload: dict[str, Any] | None
    created_at: float
    shown_at: float | None


@dataclass(frozen=True)
class Shown:
    """A query as served to one labeller: ``order[p]`` is the canonical index shown at position ``p``."""

    show_id: int
    query: Query
    order: tuple[int, ...]
    shown_at: float

    @property
    def items_shown(self) -> list[dict[str, Any]]:
        """The query's items in the order the labeller sees them (left first)."""
        return [self.query.items[i] for i in self.order]

    def to_json(self) -> dict[str, Any]:
        """What the web page needs: ids, kind, prompt and the items in display order."""
        return {"query_id": self.query.id, "show_id": self.show_id, "kind": self.query.kind,
                "prompt": self.query.prompt, "items": self.items_shown, "shown_at": self.shown_at}


@dataclass(frozen=True)
class Label:
    """One stored answer, in canonical terms (see the module docstring).

    Attributes:
        outcome: ``LEFT``, ``RIGHT``, ``TIE``, ``BOTH_BAD``, ``CANT_TELL``, ``SKIP`` or ``RANKING``.
        ranking: for ``RANKING``, canonical item indices best first; else None.
        shown_order: canonical index of the item shown at each position.
        retracted_at: when the labeller undid it, or None for an active label.
    """

    id: int
    query_id: int
    labeller_id: int
    labeller: str
    outcome: str
    ranking: tuple[int, ...] | None
    shown_order: tuple[int, ...]
    shown_at: float | None
    answered_at: float
    reason: str | None
    retracted_at: float | None
    show_id: int | None

    @property
    def pair_outcome(self) -> Outcome | None:
        """The :class:`Outcome` of a pair label, None for a ranking."""
        return Outcome[self.outcome] if self.outcome != RANKING else None


@dataclass(frozen=True)
class QuerySpec:
    """A query to post: see :meth:`Store.add_queries`."""

    kind: str
    items: Sequence[dict[str, Any]]
    prompt: Any = None
    priority: float = 0.0
    labels_needed: int = 1
    payload: dict[str, Any] | None = None


@dataclass(frozen=True)
class LabelResult:
    """What :meth:`Store.submit_label` returns: the stored label, whether it repeated an earlier
    identical POST (then nothing new was written), and the next query if one was asked for."""

    label: Label
    duplicate: bool
    next: Shown | None = None
    progress: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# the group-commit writer


class _Writer:
    """One thread that runs every write; the writes queued at one moment share a transaction.

    Each write runs in a savepoint, so its error rolls back only its own changes; results (and
    errors) are delivered only after the COMMIT returned, i.e. after the data is on disk.
    """

    def __init__(self, engine: Engine, max_batch: int = 64) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="rlhfkit-store-writer", daemon=True)
        self._closed = False
        self._thread.start()

    def submit(self, fn: Callable[[Connection], T]) -> Future:
        """Queue ``fn(conn)`` for the writer's next transaction; the future resolves once committed."""
        fut: Future = Future()
        if self._closed:
            raise StoreError("the store is closed")
        self._queue.put((fn, fut))
        return fut

    def call(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in the writer's transaction; return its result once committed."""
        return self.submit(fn).result()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout=30)

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


# ---------------------------------------------------------------------------------------------
# the store


def store_url(location: str | Path) -> str:
    """A database URL from a URL or a filesystem path (a path means an SQLite file).

    >>> store_url("runs/p0/labels.sqlite")  # doctest: +SKIP
    'sqlite:////abs/runs/p0/labels.sqlite'
    """
    text = str(location)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _check_media_path(path: Any) -> str:
    if not isinstance(path, str) or not path:
        raise InvalidInputError(f"a media path must be a non-empty string, got {path!r}")
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or "\\" in path or "\x00" in path:
        raise InvalidInputError(f"media path {path!r} must be relative to the store's media folder, without '..'")
    return str(p)


def _check_item(kind: str, item: Any, i: int) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InvalidInputError(f"item {i} must be an object, got {type(item).__name__}")
    keys = set(item) & {"media", "text", "messages"}
    if len(keys) != 1:
        raise InvalidInputError(f"item {i} must have exactly one of 'media', 'text', 'messages', got keys {sorted(item)}")
    (key,) = keys
    if kind == "clip_pair" and key != "media":
        raise InvalidInputError(f"a clip_pair's item {i} must be {{'media': path}}, got key {key!r}")
    if kind == "text_pair" and key == "media":
        raise InvalidInputError(f"a text_pair's item {i} must be {{'text': str}} or {{'messages': [...]}}")
    out = dict(item)
    if key == "media":
        out["media"] = _check_media_path(item["media"])
    elif key == "text":
        if not isinstance(item["text"], str) or len(item["text"]) > _MAX_TEXT:
            raise InvalidInputError(f"item {i}'s text must be a string of at most {_MAX_TEXT} characters")
    else:
        msgs = item["messages"]
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                 for m in msgs):
            raise InvalidInputError(f"item {i}'s messages must be a list of {{'role', 'content'}} objects")
    return out


class Store:
    """The preference store behind one database URL.

    Args:
        location: a database URL (``sqlite:///path/labels.sqlite``,
            ``postgresql+psycopg://user@host/db``) or a filesystem path of an SQLite file.
        data_dir: folder of ``media/`` (clips) and ``fragments/`` (the arrays behind clip
            queries); default for SQLite: the database file's folder. Required for rendering clips
            into a store on a server database.
        seed: seed of the left/right randomisation (default: unpredictable).
        lease_s: seconds after which an unanswered shown query is served again (default 120).

    Raises:
        ValueError: for an in-memory SQLite URL (labels would be lost at exit).
        StoreError: for a database written by a newer rlhfkit, or one that is not a store.
    """

    def __init__(self, location: str | Path, *, data_dir: str | Path | None = None, seed: int | None = None,
                 lease_s: float = LEASE_S) -> None:
        url = sa.make_url(store_url(location))
        self.is_sqlite = url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if url.database in (None, "", ":memory:") or "mode=memory" in str(url):
                raise ValueError("the preference store needs a database file: an in-memory SQLite database "
                                 "would lose every label at exit")
            db_path = Path(url.database).expanduser()
            db_path.parent.mkdir(parents=True, exist_ok=True)
            if data_dir is None:
                data_dir = db_path.parent
        self.data_dir = Path(data_dir).resolve() if data_dir is not None else None
        self.lease_s = float(lease_s)
        self._rng = random.Random(seed) if seed is not None else random.SystemRandom()
        self._rng_lock = threading.Lock()
        # SQLite connections are cheap to keep and costly to open (the PRAGMAs): keep one per
        # server thread rather than closing overflow connections after each request
        self.engine = sa.create_engine(url, pool_size=48 if self.is_sqlite else 8, max_overflow=16,
                                       pool_pre_ping=not self.is_sqlite)
        if self.is_sqlite:
            self._sqlite_events(self.engine)
        with self.engine.connect() as conn:
            conn.execution_options(rlhf_begin="IMMEDIATE")
            with conn.begin():
                self.upgraded_from = _upgrade(conn)
        self._writer = _Writer(self.engine)
        self._tokens: list[tuple[str, Labeller]] = []
        self._tokens_loaded = 0.0
        self._tokens_lock = threading.Lock()
        self._names: dict[int, str] = {}  # labeller id → name (names never change)
        self.version = 0
        """Bumped when this process posts, reopens or cancels queries (long polls watch it)."""

    @staticmethod
    def _sqlite_events(engine: Engine) -> None:
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (see _on_begin)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout = 30000")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = FULL")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.get_execution_options().get("rlhf_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {'IMMEDIATE' if mode == 'IMMEDIATE' else 'DEFERRED'}")

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

    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        with self._read() as conn:
            return int(conn.execute(select(rlhf_meta.c.value).where(rlhf_meta.c.key == "schema_version")).scalar())

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
        """Stop the writer thread and close the connections."""
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

    # -- labellers ----------------------------------------------------------------------------

    def add_labeller(self, name: str, token: str | None = None) -> str:
        """Register a labeller and return their secret token (shown once; only its hash is stored).

        Args:
            name: a unique display name, 1–100 printable characters.
            token: a token to use (≥ 16 characters); default a fresh random one (192 bits).

        Raises:
            InvalidInputError: for a bad name or a short token.
            ConflictError: if the name or the token is already registered.
        """
        name = name.strip()
        if not 1 <= len(name) <= 100 or not name.isprintable():
            raise InvalidInputError(f"labeller name must be 1-100 printable characters, got {name!r}")
        if token is not None and len(token) < 16:
            raise InvalidInputError("a labeller token must be at least 16 characters long")
        token = token or secrets.token_urlsafe(24)
        digest = _hash_token(token)

        def fn(conn: Connection) -> None:
            if conn.execute(select(labellers.c.id).where(labellers.c.name == name)).first():
                raise ConflictError(f"labeller {name!r} already exists")
            if conn.execute(select(labellers.c.id).where(labellers.c.token_hash == digest)).first():
                raise ConflictError("that token is already in use by another labeller")
            conn.execute(labellers.insert().values(name=name, token_hash=digest, created_at=time.time()))

        self._write(fn)
        self._tokens_loaded = 0.0
        return token

    def ensure_labeller(self, name: str, token: str | None = None) -> str | None:
        """Register ``name`` unless it exists; return the new token, or None if it existed.

        With ``token`` given and ``name`` existing under another token, the stored token is kept.
        """
        try:
            return self.add_labeller(name, token)
        except ConflictError:
            if any(lab.name == name for lab in self.labellers()):
                return None
            raise

    def set_labeller_token(self, name: str, token: str | None = None) -> str:
        """Give ``name`` a new token (registering them if new) and return it; the old one stops working.

        Raises:
            InvalidInputError: for a bad name or a short token.
            ConflictError: if another labeller holds ``token``.
        """
        if token is not None and len(token) < 16:
            raise InvalidInputError("a labeller token must be at least 16 characters long")
        token = token or secrets.token_urlsafe(24)
        digest = _hash_token(token)
        if not any(lab.name == name.strip() for lab in self.labellers()):
            return self.add_labeller(name, token)

        def fn(conn: Connection) -> None:
            other = conn.execute(select(labellers.c.name).where(labellers.c.token_hash == digest)).scalar()
            if other is not None and other != name.strip():
                raise ConflictError("that token is already in use by another labeller")
            conn.execute(labellers.update().where(labellers.c.name == name.strip()).values(token_hash=digest))

        self._write(fn)
        self._tokens_loaded = 0.0
        self._load_tokens()
        return token

    def labellers(self) -> list[Labeller]:
        """Every registered labeller, oldest first."""
        with self._read() as conn:
            rows = conn.execute(select(labellers.c.id, labellers.c.name, labellers.c.created_at)
                                .order_by(labellers.c.id)).all()
        return [Labeller(r.id, r.name, r.created_at) for r in rows]

    def labeller_for_token(self, token: str | None) -> Labeller | None:
        """The labeller holding ``token``, or None; compares SHA-256 digests in constant time.

        Every known digest is compared with :func:`hmac.compare_digest` (no early exit), so the
        time taken does not depend on how much of a guessed token is right.
        """
        if not token or len(token) > 512:
            return None
        digest = _hash_token(token)
        if time.monotonic() - self._tokens_loaded > 5.0:  # tokens changed by another process expire here
            self._load_tokens()
        found = self._match_token(digest)
        if found is None and time.monotonic() - self._tokens_loaded > 1.0:
            self._load_tokens()
            found = self._match_token(digest)
        return found

    def _match_token(self, digest: str) -> Labeller | None:
        found = None
        for known, lab in self._tokens:
            if hmac.compare_digest(known, digest):
                found = lab
        return found

    def _load_tokens(self) -> None:
        with self._tokens_lock:
            with self._read() as conn:
                rows = conn.execute(select(labellers)).all()
            self._tokens = [(r.token_hash, Labeller(r.id, r.name, r.created_at)) for r in rows]
            self._tokens_loaded = time.monotonic()

    # -- queries ------------------------------------------------------------------------------

    def add_queries(self, specs: Sequence[QuerySpec], *, batch: str = "", status: str = "open") -> list[int]:
        """Post queries; return their ids (in order). All are written in one transaction.

        Args:
            specs: each with ``kind`` (``clip_pair``, ``text_pair``, ``ranking``), ``items``
                (2 for a pair, K ≥ 2 for a ranking; see the module docstring), an optional
                ``prompt``, ``priority`` (higher is served first, e.g. the ensemble's disagreement),
                ``labels_needed`` (N labellers per query) and a JSON ``payload``.
            batch: a tag grouping the queries (a teacher's request), for progress and collection.
            status: ``open`` (default) or ``done`` (imported answers).

        Raises:
            InvalidInputError: naming the spec and the bad field; nothing is written then.
        """
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
                items = [_check_item(s.kind, it, i) for i, it in enumerate(items)]
            except InvalidInputError as e:
                raise InvalidInputError(f"{where}: {e}") from None
            for it in items:
                if "media" in it and self.data_dir is not None and not (self.media_dir / it["media"]).is_file():
                    raise InvalidInputError(f"{where}: media file {it['media']!r} is not in {self.media_dir}")
            if not math.isfinite(s.priority):
                raise InvalidInputError(f"{where}: priority must be finite, got {s.priority}")
            if s.labels_needed < 1:
                raise InvalidInputError(f"{where}: labels_needed must be >= 1, got {s.labels_needed}")
            if status not in ("open", "done"):
                raise InvalidInputError(f"status must be 'open' or 'done', got {status!r}")
            rows.append({"kind": s.kind, "batch": batch, "prompt": s.prompt, "items": items, "payload": s.payload,
                         "priority": float(s.priority), "labels_needed": int(s.labels_needed), "n_labels": 0,
                         "status": status, "created_at": now, "shown_at": None})

        def fn(conn: Connection) -> list[int]:
            return [conn.execute(queries.insert().values(**row)).inserted_primary_key[0] for row in rows]

        ids = self._write(fn) if rows else []
        self.version += 1
        return ids

    def add_query(self, kind: str, items: Sequence[dict[str, Any]], **kw: Any) -> int:
        """Post one query (see :meth:`add_queries`; ``batch`` and ``status`` go to it too)."""
        batch, status = kw.pop("batch", ""), kw.pop("status", "open")
        return self.add_queries([QuerySpec(kind, items, **kw)], batch=batch, status=status)[0]

    def query(self, query_id: int) -> Query:
        """One query by id.

        Raises:
            NotFoundError: for an unknown id.
        """
        with self._read() as conn:
            row = conn.execute(select(queries).where(queries.c.id == query_id)).first()
        if row is None:
            raise NotFoundError(f"unknown query id {query_id}")
        return _query(row)

    def queries(self, *, batch: str | None = None, status: str | None = None) -> list[Query]:
        """Queries, oldest first, optionally of one batch and/or status."""
        stmt = select(queries).order_by(queries.c.id)
        if batch is not None:
            stmt = stmt.where(queries.c.batch == batch)
        if status is not None:
            stmt = stmt.where(queries.c.status == status)
        with self._read() as conn:
            return [_query(r) for r in conn.execute(stmt)]

    def show(self, show_id: int) -> Shown:
        """One showing of a query (what a labeller saw, in which order).

        Raises:
            NotFoundError: for an unknown id.
        """
        with self._read() as conn:
            row = conn.execute(select(shows).where(shows.c.id == show_id)).first()
            if row is None:
                raise NotFoundError(f"unknown show id {show_id}")
            q = conn.execute(select(queries).where(queries.c.id == row.query_id)).one()
        return Shown(row.id, _query(q), tuple(row.shown_order), row.shown_at)

    # -- serving ------------------------------------------------------------------------------

    def next_query(self, labeller_id: int) -> Shown | None:
        """Claim the next query for a labeller, or None when nothing is waiting for them.

        Order: the labeller's own unanswered showing if still leased (a reload shows the same
        query, same sides); else the open query of highest ``priority`` (oldest first among
        equals) that the labeller has not answered and that is not leased to enough others —
        a showing leases a query for :attr:`lease_s` seconds (120: then it is served again). The
        left/right order (a random permutation for rankings) is drawn per showing and stored.

        Raises:
            NotFoundError: for an unknown labeller.
        """
        return self._write(lambda conn: self._next(conn, labeller_id, time.time()))

    async def claim_async(self, labeller_id: int) -> tuple[Shown | None, dict[str, int]]:
        """:meth:`next_query` and the labeller's :meth:`progress`, awaitable (for the web app).

        Both run in the writer's transaction: the event loop waits on the commit without
        tying up a thread, and the counts include the claim. Raises as :meth:`next_query`.
        """
        def fn(conn: Connection) -> tuple[Shown | None, dict[str, int]]:
            shown = self._next(conn, labeller_id, time.time())
            return shown, self._progress(conn, labeller_id)

        return await asyncio.wrap_future(self._writer.submit(fn))

    def _next(self, conn: Connection, labeller_id: int, now: float) -> Shown | None:
        self._name(conn, labeller_id)  # raises for an unknown labeller
        p = {"lab": labeller_id, "cutoff": now - self.lease_s}
        mine = conn.execute(_SQL_MY_SHOW, p).first()
        if mine is not None:  # a reload, or the query just undone: the same showing again
            conn.execute(_SQL_TOUCH_SHOW, {"sid": mine.id, "now": now})
            conn.execute(_SQL_TOUCH_QUERY, {"qid": mine.query_id, "now": now})
            q = conn.execute(_SQL_QUERY, {"qid": mine.query_id}).one()
            return Shown(mine.id, _query(q), tuple(mine.shown_order), now)
        row = conn.execute(_SQL_NEXT if self.is_sqlite else _SQL_NEXT_LOCKING, p).first()
        if row is None:
            return None
        order = self._shuffled(len(row.items))
        show_id = conn.execute(shows.insert(), {"query_id": row.id, "labeller_id": labeller_id, "shown_order": order,
                                                "shown_at": now, "answered_at": None}).inserted_primary_key[0]
        conn.execute(_SQL_TOUCH_QUERY, {"qid": row.id, "now": now})
        return Shown(show_id, _query(row), tuple(order), now)

    def has_waiting(self, labeller_id: int) -> bool:
        """Whether an open query still needs an answer from this labeller (a cheap read)."""
        with self._read() as conn:
            return conn.execute(_SQL_HAS_WAITING, {"lab": labeller_id}).first() is not None

    # -- answering ----------------------------------------------------------------------------

    def submit_label(self, labeller_id: int, query_id: int, show_id: int, outcome: str, *,
                     ranking: Sequence[int] | None = None, reason: str | None = None,
                     want_next: bool = False) -> LabelResult:
        """Store one answer, given **as shown** (``LEFT`` is the item the labeller saw on the left).

        The answer is converted to canonical terms with the showing's order and stored with it.
        Repeating an identical answer (a retried POST) returns the stored label with
        ``duplicate=True`` and writes nothing. Every answer — SKIP included — counts towards the
        query's ``labels_needed``.

        Args:
            labeller_id: who answers.
            query_id: the query answered.
            show_id: the showing answered (from :meth:`next_query`); it fixes the displayed order.
            outcome: ``LEFT``, ``RIGHT``, ``TIE``, ``BOTH_BAD``, ``CANT_TELL``, ``SKIP``; or
                ``RANKING`` for a ranking query, with ``ranking``.
            ranking: display positions best first (a permutation of ``0..K-1``), for ``RANKING``.
            reason: an optional free-text reason (at most 2,000 characters).
            want_next: also claim the labeller's next query in the same transaction.

        Raises:
            NotFoundError: unknown query, showing or labeller.
            InvalidInputError: an unknown outcome, a bad ranking, a showing of another query or
                another labeller, an over-long reason.
            ConflictError: the labeller already gave a different answer to this query.
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
        outcome = str(outcome).upper()
        if outcome not in (*PAIR_OUTCOMES, RANKING):
            raise InvalidInputError(f"invalid outcome {outcome!r}; expected one of {', '.join((*PAIR_OUTCOMES, RANKING))}")
        if reason is not None and (not isinstance(reason, str) or len(reason) > _MAX_REASON):
            raise InvalidInputError(f"reason must be a string of at most {_MAX_REASON} characters")
        reason = reason.strip() or None if isinstance(reason, str) else None

        def fn(conn: Connection) -> LabelResult:
            res = answer(conn)
            res.progress.update(self._progress(conn, labeller_id))  # counted in the same transaction
            return res

        def answer(conn: Connection) -> LabelResult:
            now = time.time()
            q = conn.execute(_SQL_QUERY, {"qid": query_id}).first()
            if q is None:
                raise NotFoundError(f"unknown query id {query_id}")
            s = conn.execute(_SQL_SHOW, {"sid": show_id}).first()
            if s is None:
                raise NotFoundError(f"unknown show id {show_id}")
            if s.query_id != query_id or s.labeller_id != labeller_id:
                raise InvalidInputError(f"show {show_id} is not a showing of query {query_id} to this labeller")
            order = list(s.shown_order)
            canon_outcome, canon_ranking = _canonical(q.kind, len(q.items), order, outcome, ranking)
            name = self._name(conn, labeller_id)
            prev = conn.execute(_SQL_ACTIVE_LABEL, {"qid": query_id, "lab": labeller_id}).first()
            if prev is not None:
                if prev.outcome == canon_outcome and (prev.ranking or None) == canon_ranking:  # a retried POST
                    nxt = self._next(conn, labeller_id, now) if want_next else None
                    return LabelResult(_label(prev, name), True, nxt)
                raise ConflictError(f"you already answered query {query_id} ({prev.outcome}); undo it first (key u)")
            values = {"query_id": query_id, "labeller_id": labeller_id, "show_id": show_id, "outcome": canon_outcome,
                      "ranking": canon_ranking, "shown_order": order, "shown_at": s.shown_at, "answered_at": now,
                      "reason": reason, "retracted_at": None}
            try:
                label_id = conn.execute(labels.insert(), values).inserted_primary_key[0]
            except sa.exc.IntegrityError:  # another process recorded this labeller's answer a moment ago
                raise ConflictError(f"query {query_id} was just answered by you in another request; reload the page")
            conn.execute(_SQL_ANSWER_SHOW, {"sid": show_id, "now": now})
            n = q.n_labels + 1
            status = "done" if q.status == "open" and n >= q.labels_needed else q.status
            conn.execute(_SQL_COUNT_QUERY, {"qid": query_id, "n": n, "st": status})
            lab = Label(label_id, query_id, labeller_id, name, canon_outcome,
                        tuple(canon_ranking) if canon_ranking is not None else None, tuple(order), s.shown_at, now,
                        reason, None, show_id)
            nxt = self._next(conn, labeller_id, now) if want_next else None
            return LabelResult(lab, False, nxt)

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
        def fn(conn: Connection) -> tuple[Label, Shown]:
            now = time.time()
            row = conn.execute(select(labels).where(labels.c.labeller_id == labeller_id,
                                                    labels.c.retracted_at.is_(None))
                               .order_by(labels.c.answered_at.desc(), labels.c.id.desc()).limit(1)).first()
            if row is None:
                raise NotFoundError("nothing to undo: you have no answers yet")
            q = conn.execute(select(queries).where(queries.c.id == row.query_id)).one()
            if q.status in ("closed", "cancelled"):
                raise ConflictError(f"your last answer (query {q.id}) was already used for training and cannot be "
                                    "undone; undo works until the agent's next training step")
            conn.execute(labels.update().where(labels.c.id == row.id).values(retracted_at=now))
            n = max(q.n_labels - 1, 0)
            conn.execute(queries.update().where(queries.c.id == q.id)
                         .values(n_labels=n, status="open" if n < q.labels_needed else q.status, shown_at=now))
            order = list(row.shown_order)
            show_id = conn.execute(shows.insert().values(query_id=q.id, labeller_id=labeller_id, shown_order=order,
                                                         shown_at=now)).inserted_primary_key[0]
            q = conn.execute(select(queries).where(queries.c.id == q.id)).one()
            undone = conn.execute(select(labels).where(labels.c.id == row.id)).one()
            return _label(undone, self._name(conn, labeller_id)), Shown(show_id, _query(q), tuple(order), now)

        out = self._write(fn)
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
            return self._progress(conn, labeller_id)

    @staticmethod
    def _progress(conn: Connection, labeller_id: int | None) -> dict[str, int]:
        open_needing = int(conn.execute(_SQL_OPEN_NEEDING).scalar())
        if labeller_id is None:
            return {"answered": int(conn.execute(_SQL_ALL_ANSWERED).scalar()), "waiting": open_needing}
        p = {"lab": labeller_id}
        answered = int(conn.execute(_SQL_MY_ANSWERED, p).scalar())
        return {"answered": answered, "waiting": open_needing - int(conn.execute(_SQL_MY_OPEN, p).scalar())}

    def batch_progress(self, batch: str) -> dict[str, int]:
        """``{"total", "done", "open", "closed", "cancelled", "last_answer_at"}`` for one batch."""
        with self._read() as conn:
            rows = conn.execute(select(queries.c.status, func.count()).where(queries.c.batch == batch)
                                .group_by(queries.c.status)).all()
            last = conn.execute(select(func.max(labels.c.answered_at)).join(queries, queries.c.id == labels.c.query_id)
                                .where(queries.c.batch == batch)).scalar()
        out = {s: 0 for s in _STATUSES}
        out.update({status: int(n) for status, n in rows})
        out["total"] = sum(out[s] for s in _STATUSES)
        out["last_answer_at"] = float(last) if last is not None else 0.0  # type: ignore[assignment]
        return out

    def collect(self, batch: str, query_ids: Iterable[int] | None = None) -> dict[int, list[Label]]:
        """Close a batch's answered (``done``) queries for training and return their active labels.

        After this, their answers can no longer be undone. Queries still ``open`` are left alone.

        Returns:
            ``{query_id: [labels]}`` for the queries closed by this call.
        """
        ids = None if query_ids is None else [int(i) for i in query_ids]

        def fn(conn: Connection) -> dict[int, list[Label]]:
            stmt = select(queries.c.id).where(queries.c.batch == batch, queries.c.status == "done")
            if ids is not None:
                stmt = stmt.where(queries.c.id.in_(ids))
            done = [r.id for r in conn.execute(stmt)]
            if not done:
                return {}
            conn.execute(queries.update().where(queries.c.id.in_(done)).values(status="closed"))
            return self._labels_of(conn, done)

        return self._write(fn)

    def cancel(self, batch: str) -> int:
        """Stop serving a batch's unanswered queries (status ``cancelled``); return how many.

        Answers that still arrive for them are stored (no label is refused), but not used.
        """
        def fn(conn: Connection) -> int:
            res = conn.execute(queries.update().where(queries.c.batch == batch, queries.c.status == "open")
                               .values(status="cancelled"))
            return int(res.rowcount)

        n = self._write(fn)
        self.version += 1
        return n

    def labels(self, *, query_ids: Iterable[int] | None = None, include_retracted: bool = False) -> list[Label]:
        """Stored labels, oldest first (active only unless ``include_retracted``)."""
        stmt = (select(labels, labellers.c.name.label("labeller_name"))
                .join(labellers, labellers.c.id == labels.c.labeller_id).order_by(labels.c.id))
        if not include_retracted:
            stmt = stmt.where(labels.c.retracted_at.is_(None))
        if query_ids is not None:
            stmt = stmt.where(labels.c.query_id.in_([int(i) for i in query_ids]))
        with self._read() as conn:
            return [_label(r, r.labeller_name) for r in conn.execute(stmt)]

    def _labels_of(self, conn: Connection, query_ids: list[int]) -> dict[int, list[Label]]:
        out: dict[int, list[Label]] = {i: [] for i in query_ids}
        rows = conn.execute(select(labels, labellers.c.name.label("labeller_name"))
                            .join(labellers, labellers.c.id == labels.c.labeller_id)
                            .where(labels.c.query_id.in_(query_ids), labels.c.retracted_at.is_(None))
                            .order_by(labels.c.id))
        for r in rows:
            out[r.query_id].append(_label(r, r.labeller_name))
        return out

    def _name(self, conn: Connection, labeller_id: int) -> str:
        name = self._names.get(labeller_id)
        if name is None:
            name = conn.execute(_SQL_LABELLER, {"lab": labeller_id}).scalar()
            if name is None:
                raise NotFoundError(f"unknown labeller id {labeller_id}")
            self._names[labeller_id] = name = str(name)
        return name

    # -- TRL preference format ----------------------------------------------------------------

    def export_trl(self, path: str | Path, *, ties: Literal["flag", "drop"] = "flag") -> int:
        """Write the active pair answers as TRL preference JSONL; return the number of rows.

        One row per answer: ``{"prompt", "chosen", "rejected"}`` (TRL's explicit-prompt preference
        format; ``prompt`` is left out when the query has none, e.g. clips, whose ``chosen`` /
        ``rejected`` are media paths relative to the media folder) plus ``query_id`` and
        ``labeller``. A ranking of K gives its K(K-1)/2 implied pairs. ``SKIP`` and ``CANT_TELL``
        are never exported; ``TIE`` and ``BOTH_BAD`` are kept with ``"tie": true`` (``ties="flag"``,
        chosen/rejected then in canonical order) or left out (``ties="drop"``).

        Raises:
            ValueError: for an unknown ``ties`` value.
        """
        if ties not in ("flag", "drop"):
            raise ValueError(f"ties must be 'flag' or 'drop', got {ties!r}")
        with self._read() as conn:
            qs = {r.id: _query(r) for r in conn.execute(select(queries))}
        n = 0
        tmp = Path(path).with_name(Path(path).name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for lab in self.labels():
                q = qs[lab.query_id]
                pairs: list[tuple[int, int, bool]] = []
                if lab.outcome == "LEFT":
                    pairs = [(0, 1, False)]
                elif lab.outcome == "RIGHT":
                    pairs = [(1, 0, False)]
                elif lab.outcome in ("TIE", "BOTH_BAD") and ties == "flag":
                    pairs = [(0, 1, True)]
                elif lab.outcome == RANKING and lab.ranking:
                    r = lab.ranking
                    pairs = [(r[i], r[j], False) for i in range(len(r)) for j in range(i + 1, len(r))]
                for w, l, tie in pairs:
                    row: dict[str, Any] = {}
                    if q.prompt is not None:
                        row["prompt"] = q.prompt
                    row["chosen"], row["rejected"] = _item_value(q.items[w]), _item_value(q.items[l])
                    if tie:
                        row["tie"] = True
                    row["query_id"], row["labeller"] = q.id, lab.labeller
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                    n += 1
            f.flush()
        tmp.replace(path)
        return n

    def import_trl(self, path: str | Path, *, labeller: str = "import") -> int:
        """Read TRL preference JSONL (``chosen``, ``rejected``, optional ``prompt`` and ``tie``).

        Each row becomes a ``text_pair`` query (status ``done``, items ``[chosen, rejected]``)
        answered ``LEFT`` (``TIE`` when ``"tie": true``) by ``labeller`` (created if new). All rows
        are written in one transaction: a bad row writes nothing.

        Returns:
            The number of rows imported.

        Raises:
            ValueError: naming ``file:line`` and the problem (bad JSON, missing or mistyped field).
        """
        rows = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise ValueError(f"{where}: expected a JSON object with 'chosen' and 'rejected'")
                for key in ("chosen", "rejected"):
                    if key not in obj:
                        raise ValueError(f"{where}: missing field {key!r}")
                try:
                    items = [_item_from_value(obj["chosen"]), _item_from_value(obj["rejected"])]
                    items = [_check_item("text_pair", it, i) for i, it in enumerate(items)]
                except (InvalidInputError, TypeError) as e:
                    raise ValueError(f"{where}: {e}") from None
                prompt = obj.get("prompt")
                if prompt is not None and not isinstance(prompt, (str, list)):
                    raise ValueError(f"{where}: 'prompt' must be a string or a list of messages")
                tie = obj.get("tie", False)
                if not isinstance(tie, bool):
                    raise ValueError(f"{where}: 'tie' must be true or false")
                rows.append((prompt, items, tie, lineno))
        self.ensure_labeller(labeller)
        source = Path(path).name

        def fn(conn: Connection) -> int:
            now = time.time()
            lab_id = conn.execute(select(labellers.c.id).where(labellers.c.name == labeller)).scalar_one()
            for prompt, items, tie, lineno in rows:
                qid = conn.execute(queries.insert().values(
                    kind="text_pair", batch=f"import:{source}", prompt=prompt, items=items, payload=None,
                    priority=0.0, labels_needed=1, n_labels=1, status="done", created_at=now,
                    shown_at=None)).inserted_primary_key[0]
                conn.execute(labels.insert().values(
                    query_id=qid, labeller_id=lab_id, show_id=None, outcome="TIE" if tie else "LEFT", ranking=None,
                    shown_order=[0, 1], shown_at=None, answered_at=now, reason=f"imported from {source}:{lineno}",
                    retracted_at=None))
            return len(rows)

        return self._write(fn)


# ---------------------------------------------------------------------------------------------
# helpers


def _query(row: Any) -> Query:
    return Query(row.id, row.kind, tuple(row.items), row.prompt, row.priority, row.labels_needed, row.n_labels,
                 row.status, row.batch, row.payload, row.created_at, row.shown_at)


def _label(row: Any, name: str) -> Label:
    return Label(row.id, row.query_id, row.labeller_id, name, row.outcome,
                 tuple(row.ranking) if row.ranking is not None else None, tuple(row.shown_order), row.shown_at,
                 row.answered_at, row.reason, row.retracted_at, row.show_id)


def _canonical(kind: str, k: int, order: list[int], outcome: str,
               ranking: Sequence[int] | None) -> tuple[str, list[int] | None]:
    """Convert an answer given in display positions to canonical item terms."""
    if outcome == RANKING:
        if kind != "ranking":
            raise InvalidInputError(f"outcome RANKING is only for ranking queries; this is a {kind}")
        if ranking is None or not isinstance(ranking, (list, tuple)) or not all(
                isinstance(p, int) and not isinstance(p, bool) for p in ranking):
            raise InvalidInputError(f"a RANKING answer needs 'ranking': display positions best first, 0..{k - 1}")
        if sorted(ranking) != list(range(k)):
            raise InvalidInputError(f"ranking must be a permutation of 0..{k - 1}, got {list(ranking)}")
        return RANKING, [order[p] for p in ranking]
    if ranking is not None:
        raise InvalidInputError(f"'ranking' is only allowed with outcome RANKING, got outcome {outcome}")
    if kind == "ranking" and outcome not in ("SKIP", "CANT_TELL"):
        raise InvalidInputError(f"a ranking query takes RANKING, SKIP or CANT_TELL, got {outcome}")
    if outcome in ("LEFT", "RIGHT"):
        shown = 0 if outcome == "LEFT" else 1
        return ("LEFT" if order[shown] == 0 else "RIGHT"), None
    return outcome, None


def _item_value(item: dict[str, Any]) -> Any:
    for key in ("text", "messages", "media"):
        if key in item:
            return item[key]
    raise KeyError(f"item without text, messages or media: {item}")


def _item_from_value(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"text": value}
    if isinstance(value, list):
        return {"messages": value}
    raise TypeError(f"'chosen' and 'rejected' must be strings or lists of messages, got {type(value).__name__}")
