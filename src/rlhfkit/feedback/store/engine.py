"""Opening the database: URLs, the engine and its connection pool, SQLite's durability settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from rlhfkit.feedback.store.types import StoreError

__all__ = ["make_engine", "store_url"]


def store_url(location: str | Path) -> str:
    """A database URL from a URL or a filesystem path (a path means an SQLite file).

    ``postgresql://…`` (no driver named) means ``postgresql+psycopg://…``.

    >>> store_url("runs/p0/labels.sqlite")  # doctest: +SKIP
    'sqlite:////abs/runs/p0/labels.sqlite'
    """
    text = str(location)
    if "://" in text:
        for bare in ("postgresql://", "postgres://"):
            if text.startswith(bare):
                return "postgresql+psycopg://" + text[len(bare):]
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def make_engine(url: sa.URL, writer_threads: int) -> Engine:
    """The engine of a store's database.

    SQLite: a pool of up to 64 connections (cheap to keep, costly to open: the PRAGMAs), each
    opened with ``journal_mode=WAL``, ``synchronous=FULL``, ``busy_timeout=30000`` and foreign
    keys on; SQLAlchemy emits the ``BEGIN`` itself (``IMMEDIATE`` for writers, see
    ``execution_options(rlhf_begin="IMMEDIATE")``). PostgreSQL: ``writer_threads + 4`` pooled
    connections (8 more on demand), each checked before use (a restarted server is no error).

    Raises:
        StoreError: PostgreSQL without the psycopg driver installed.
    """
    is_sqlite = url.get_backend_name() == "sqlite"
    try:
        engine = sa.create_engine(url, pool_size=48 if is_sqlite else writer_threads + 4,
                                  max_overflow=16 if is_sqlite else 8, pool_pre_ping=not is_sqlite)
    except ModuleNotFoundError as e:
        raise StoreError(f"a PostgreSQL store needs the psycopg driver ({e.name} is missing): "
                         "pip install 'rlhfkit[postgres]'") from None
    if is_sqlite:
        _sqlite_events(engine)
    return engine


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
