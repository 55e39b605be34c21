"""The preference store: queries, labels and labellers behind one database URL (SQLAlchemy Core).

Labels cost human time (Christiano et al. 2017 taught a Hopper back-flip with 900 of them, 3–5 s
each), so the store's first duty is never to lose one:

- **SQLite by default** — a file in the run directory, opened with ``journal_mode=WAL``,
  ``synchronous=FULL`` (every acknowledged commit is on disk), ``busy_timeout`` and foreign keys
  on. **PostgreSQL by URL** for a team (``postgresql://user@host/db``; ``pip install
  'rlhfkit[postgres]'`` for the psycopg driver). Any number of server processes may share one
  store on either backend.
- **Acknowledged after commit** — every write goes through the store's writer
  (:mod:`~rlhfkit.feedback.store.writer`): group commit on SQLite, concurrent transactions with
  row locks and retries on PostgreSQL; a caller hears back only once the COMMIT returned.
- **Exact under concurrency** — claims and answers hold the query's lock
  (:mod:`~rlhfkit.feedback.store.serving` says how): a query is never served to more labellers
  than it needs and ``n_labels`` is always its real count of active labels.
- **Checked input, parametrised SQL** — every value is checked before any SQL runs
  (:mod:`~rlhfkit.feedback.store.types`; a bad one raises :class:`InvalidInputError` and writes
  nothing), and every statement is a SQLAlchemy Core expression.
- **Undo keeps history** — an undone label is marked ``retracted_at``, never deleted.
- **Schema versioning** — ``rlhf_meta.schema_version`` and :data:`MIGRATIONS`; a store written by
  a newer rlhfkit is refused rather than misread (:mod:`~rlhfkit.feedback.store.schema`).

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

from rlhfkit.feedback.store.core import Store, store_url
from rlhfkit.feedback.store.schema import MIGRATIONS, SCHEMA_VERSION
from rlhfkit.feedback.store.types import (
    LEASE_S,
    MAX_ID,
    PAIR_OUTCOMES,
    QUERY_KINDS,
    RANKING,
    BusyError,
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
    check_media_path,
)

__all__ = [
    "LEASE_S", "MAX_ID", "MIGRATIONS", "PAIR_OUTCOMES", "QUERY_KINDS", "RANKING", "SCHEMA_VERSION",
    "BusyError", "ConflictError", "InvalidInputError", "Label", "LabelResult", "Labeller", "NotFoundError", "Query",
    "QuerySpec", "Shown", "Store", "StoreError", "check_media_path", "store_url",
]
