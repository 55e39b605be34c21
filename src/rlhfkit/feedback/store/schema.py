"""The store's tables, schema versions and migrations, and its hot-path SQL (SQLAlchemy Core).

Tables::

    labellers       (id, name, token_hash, created_at)
    labeller_tokens (id, labeller_id, token_hash, created_at, revoked_at)
    queries         (id, kind, batch, prompt, items, payload, priority, labels_needed, n_labels,
                     status, created_at, shown_at)
    shows           (id, query_id, labeller_id, shown_order, shown_at, answered_at)
    labels          (id, query_id, labeller_id, show_id, outcome, ranking, shown_order, shown_at,
                     answered_at, reason, retracted_at)

A labeller may hold several tokens (``labeller_tokens``; ``labellers.token_hash`` keeps the first
one, from schema version 1): starting a server adds one and never revokes the others, so an open
labelling tab keeps working. Every statement is parametrised; none is built from strings.
"""

from __future__ import annotations

from collections.abc import Callable

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
    func,
    select,
)
from sqlalchemy.engine import Connection

from rlhfkit.feedback.store.types import PAIR_OUTCOMES, QUERY_KINDS, RANKING, STATUSES, StoreError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "labeller_tokens", "labellers", "labels", "metadata", "queries",
           "rlhf_meta", "shows", "upgrade"]

SCHEMA_VERSION = 2
"""Version of the schema this code writes; stored in ``rlhf_meta``."""

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

labeller_tokens = Table(
    "labeller_tokens", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("labeller_id", Integer, ForeignKey("labellers.id"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
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
    CheckConstraint(f"status IN {STATUSES!r}", name="ck_queries_status"),
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


# ---------------------------------------------------------------------------------------------
# versions


def _v1_to_v2(conn: Connection) -> None:
    """Several tokens per labeller: ``labeller_tokens``, seeded with each labeller's one token."""
    labeller_tokens.create(conn)
    conn.execute(labeller_tokens.insert().from_select(
        ["labeller_id", "token_hash", "created_at"],
        select(labellers.c.id, labellers.c.token_hash, labellers.c.created_at)))


Migration = Callable[[Connection], None]
MIGRATIONS: dict[int, Migration] = {1: _v1_to_v2}
"""``MIGRATIONS[v]`` upgrades a store from schema version ``v`` to ``v + 1`` inside one
transaction. A fresh store is created at :data:`SCHEMA_VERSION` directly. Add an entry (and bump
:data:`SCHEMA_VERSION`) for every change to the tables above."""


def upgrade(conn: Connection, *, create: bool = True) -> int:
    """Create or migrate the schema on ``conn`` (inside a transaction); return the version found.

    Args:
        conn: a connection inside a transaction (all or nothing).
        create: create the tables in a database without them (else refuse).

    Returns:
        The version the database had (0 for a database created now).

    Raises:
        StoreError: for a database that is not a store (or empty with ``create=False``), one
            written by a newer rlhfkit, or a missing migration.
    """
    target = SCHEMA_VERSION
    names = set(sa.inspect(conn).get_table_names())
    if "rlhf_meta" not in names:
        if names & {"queries", "labels", "labellers"}:
            raise StoreError("this database has rlhfkit-like tables but no rlhf_meta table: not an rlhfkit store")
        if not create:
            raise StoreError("this database holds no rlhfkit store (no rlhf_meta table)")
        metadata.create_all(conn)
        conn.execute(rlhf_meta.insert().values(key="schema_version", value=str(target)))
        return 0
    found = conn.execute(select(rlhf_meta.c.value).where(rlhf_meta.c.key == "schema_version")).scalar()
    version = int(found) if found is not None else 0
    if version > target:
        raise StoreError(f"the store has schema version {version}, newer than this rlhfkit's {target}: "
                         "upgrade rlhfkit to open it")
    for v in range(version, target):
        if v not in MIGRATIONS:
            raise StoreError(f"no migration from schema version {v} to {v + 1}")
        MIGRATIONS[v](conn)
        conn.execute(rlhf_meta.update().where(rlhf_meta.c.key == "schema_version").values(value=str(v + 1)))
    return version


# ---------------------------------------------------------------------------------------------
# hot-path statements, built once: SQLAlchemy then reuses their compiled form. All parametrised.
# ``FOR NO KEY UPDATE`` (with_for_update(key_share=True)) locks a query row on PostgreSQL without
# blocking the foreign-key checks of inserts that reference it; SQLite ignores it (its writers
# are serialised by BEGIN IMMEDIATE).

_b = sa.bindparam
ACTIVE = labels.c.retracted_at.is_(None)
ANSWERED_BY_ME = (select(labels.c.id)
                  .where(labels.c.query_id == queries.c.id, labels.c.labeller_id == _b("lab"), ACTIVE).exists())
NEEDS = (queries.c.status == "open") & (queries.c.n_labels < queries.c.labels_needed)
LEASES = (select(func.count()).select_from(shows)
          .where(shows.c.query_id == queries.c.id, shows.c.answered_at.is_(None), shows.c.shown_at > _b("cutoff"),
                 shows.c.labeller_id != _b("lab"))
          .scalar_subquery())
"""Live leases of a query held by labellers other than ``lab`` (shown, unanswered, younger than the lease)."""

SQL_LABELLER = select(labellers.c.name).where(labellers.c.id == _b("lab"))
SQL_MY_SHOW = (select(shows.c.id, shows.c.shown_order, shows.c.query_id)
               .join(queries, queries.c.id == shows.c.query_id)
               .where(shows.c.labeller_id == _b("lab"), shows.c.answered_at.is_(None), shows.c.shown_at > _b("cutoff"),
                      queries.c.status == "open", ~ANSWERED_BY_ME)
               .order_by(shows.c.shown_at.desc(), shows.c.id.desc()).limit(1))
_NEXT = (select(queries)
         .where(queries.c.status == "open", queries.c.n_labels + LEASES < queries.c.labels_needed, ~ANSWERED_BY_ME)
         .order_by(queries.c.priority.desc(), queries.c.id).limit(1))
SQL_NEXT = _NEXT.with_for_update(skip_locked=True, key_share=True, of=queries)
SQL_NEXT_SKIPPING = (_NEXT.where(queries.c.id.not_in(_b("skip", expanding=True)))
                     .with_for_update(skip_locked=True, key_share=True, of=queries))
SQL_SLOT = (select(queries, LEASES.label("leases"), ANSWERED_BY_ME.label("mine"))
            .where(queries.c.id == _b("qid")))
"""A query with its live leases and whether ``lab`` answered it: read after locking the row."""
SQL_QUERY = select(queries).where(queries.c.id == _b("qid"))
SQL_LOCK_QUERY = SQL_QUERY.with_for_update(key_share=True)
SQL_LOCK_QUERY_NOWAIT = SQL_QUERY.with_for_update(key_share=True, nowait=True)
SQL_SHOW = select(shows).where(shows.c.id == _b("sid"))
_PREV = labels.alias("prev")
SQL_SHOW_AND_PREV = (select(shows, _PREV.c.id.label("prev_id"), _PREV.c.outcome.label("prev_outcome"),
                            _PREV.c.ranking.label("prev_ranking"))
                     .outerjoin(_PREV, sa.and_(_PREV.c.query_id == _b("qid"), _PREV.c.labeller_id == _b("lab"),
                                               _PREV.c.retracted_at.is_(None)))
                     .where(shows.c.id == _b("sid")))
"""A showing, and the labeller's active label of the query answered (``prev_*``, NULL if none)."""
SQL_RENEW_SHOW = (shows.update()
                  .where(shows.c.id == _b("sid"), shows.c.answered_at.is_(None), shows.c.shown_at > _b("cutoff"))
                  .values(shown_at=_b("now")))
SQL_TOUCH_QUERY = queries.update().where(queries.c.id == _b("qid")).values(shown_at=_b("now"))
SQL_ANSWER_SHOW = shows.update().where(shows.c.id == _b("sid")).values(answered_at=_b("now"))
_REAL_COUNT = (select(func.count()).select_from(labels).where(labels.c.query_id == queries.c.id, ACTIVE)
               .scalar_subquery())
SQL_RECOUNT = (queries.update().where(queries.c.id == _b("qid"))
               .values(n_labels=_REAL_COUNT,
                       status=sa.case((sa.and_(queries.c.status == "open", _REAL_COUNT >= queries.c.labels_needed), "done"),
                                      (sa.and_(queries.c.status == "done", _b("opening"),
                                               _REAL_COUNT < queries.c.labels_needed), "open"),
                                      else_=queries.c.status)))
"""Set a query's ``n_labels`` to its real count of active labels, and its status to match:
``open`` → ``done`` once enough; ``done`` → ``open`` again when ``opening`` (an undo)."""
SQL_LAST_LABEL = (select(labels).where(labels.c.labeller_id == _b("lab"), ACTIVE)
                  .order_by(labels.c.answered_at.desc(), labels.c.id.desc()).limit(1))
SQL_HAS_WAITING = select(queries.c.id).where(NEEDS, ~ANSWERED_BY_ME).limit(1)
_OPEN_NEEDING = select(func.count()).select_from(queries).where(NEEDS).scalar_subquery()
SQL_PROGRESS_ALL = select(_OPEN_NEEDING.label("waiting"),
                          select(func.count()).select_from(labels).where(ACTIVE).scalar_subquery().label("answered"))
# the labeller's open count is driven from their labels (a correlated EXISTS keeps SQLite from
# scanning every open query)
SQL_PROGRESS_ME = select(
    _OPEN_NEEDING.label("open_needing"),
    select(func.count()).select_from(labels).where(labels.c.labeller_id == _b("lab"), ACTIVE)
    .scalar_subquery().label("answered"),
    select(func.count()).select_from(labels)
    .where(labels.c.labeller_id == _b("lab"), ACTIVE,
           select(queries.c.id).where(queries.c.id == labels.c.query_id, NEEDS).exists())
    .scalar_subquery().label("mine_open"))
