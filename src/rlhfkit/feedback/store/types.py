"""The store's records, errors and input checks (no database access here).

Everything a labeller or a script hands the store passes one of the checks below before any SQL
runs, so a bad value is refused with an :class:`InvalidInputError` naming the field, and nothing
is written. Text must be storable by both backends: PostgreSQL cannot hold U+0000 in text, and
neither driver can encode a lone surrogate, so both are refused (the rule is the same on SQLite,
so a store can move between backends).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from rlhfkit.feedback.records import Outcome

__all__ = [
    "LEASE_S", "MAX_ID", "PAIR_OUTCOMES", "QUERY_KINDS", "RANKING", "STATUSES",
    "BusyError", "ConflictError", "InvalidInputError", "Label", "LabelResult", "Labeller", "NotFoundError", "Query",
    "QuerySpec", "Shown", "StoreError",
]

LEASE_S = 120.0
"""A query shown this many seconds ago and not answered is served to someone else again."""

QUERY_KINDS = ("clip_pair", "text_pair", "ranking")
"""``clip_pair``: two clips; ``text_pair``: a prompt and two responses; ``ranking``: K ≥ 2 items."""

PAIR_OUTCOMES = tuple(o.name for o in Outcome)
"""Answers to a pair: LEFT, RIGHT, TIE, SKIP, BOTH_BAD, CANT_TELL."""

RANKING = "RANKING"
"""The outcome of a label that holds a full ranking (in ``ranking``)."""

STATUSES = ("open", "done", "closed", "cancelled")
"""Query statuses, in the order a query normally passes through them (``cancelled``: abandoned)."""

MAX_ID = 2**31 - 1
"""Largest row id (PostgreSQL ``integer``); a larger id cannot name a stored row."""

MAX_TEXT = 1_000_000
MAX_REASON = 2_000
MAX_RANKED = 16


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


class BusyError(StoreError):
    """The database stayed contended (or unreachable) through every retry; nothing was written."""

    status = 503


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
    """One question for the labellers; see :mod:`rlhfkit.feedback.store` for ``items`` and ``status``."""

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
    """One stored answer, in canonical terms (see :mod:`rlhfkit.feedback.store`).

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
    """A query to post: see :meth:`rlhfkit.feedback.store.Store.add_queries`."""

    kind: str
    items: Sequence[dict[str, Any]]
    prompt: Any = None
    priority: float = 0.0
    labels_needed: int = 1
    payload: dict[str, Any] | None = None


@dataclass(frozen=True)
class LabelResult:
    """What :meth:`~rlhfkit.feedback.store.Store.submit_label` returns: the stored label, whether it
    repeated an earlier identical POST (then nothing new was written), and the next query if one
    was asked for."""

    label: Label
    duplicate: bool
    next: Shown | None = None
    progress: dict[str, int] = field(default_factory=dict)


def query_from_row(row: Any) -> Query:
    """A :class:`Query` from a ``queries`` row."""
    return Query(row.id, row.kind, tuple(row.items), row.prompt, row.priority, row.labels_needed, row.n_labels,
                 row.status, row.batch, row.payload, row.created_at, row.shown_at)


def label_from_row(row: Any, name: str) -> Label:
    """A :class:`Label` from a ``labels`` row and its labeller's name."""
    return Label(row.id, row.query_id, row.labeller_id, name, row.outcome,
                 tuple(row.ranking) if row.ranking is not None else None, tuple(row.shown_order), row.shown_at,
                 row.answered_at, row.reason, row.retracted_at, row.show_id)


# ---------------------------------------------------------------------------------------------
# checks


def short(value: Any, n: int = 40) -> str:
    """``repr(value)`` cut to ``n`` characters, for error messages about untrusted input."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= n else text[: n - 1] + "…"


def check_id(value: Any, what: str) -> int:
    """``value`` as a row id.

    Raises:
        InvalidInputError: for a non-integer (bools included).
        NotFoundError: for an integer outside ``1..MAX_ID`` (no stored row has it).
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInputError(f"{what} must be an integer, got {short(value)}")
    if not 1 <= value <= MAX_ID:
        raise NotFoundError(f"unknown {what} {short(value, 24)}")
    return value


def check_text(value: Any, what: str, max_len: int) -> str:
    """``value`` if it is a string both backends can store (no U+0000, valid UTF-8) of at most ``max_len``.

    Raises:
        InvalidInputError: naming ``what`` and the problem.
    """
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > max_len:
        raise InvalidInputError(f"{what} must be at most {max_len} characters, got {len(value)}")
    if "\x00" in value:
        raise InvalidInputError(f"{what} must not contain the NUL character (U+0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"{what} is not valid Unicode (a lone surrogate)") from None
    return value


def check_json_text(value: Any, what: str, depth: int = 0) -> None:
    """Check every string (keys included) inside a JSON-like value with :func:`check_text`.

    Raises:
        InvalidInputError: for a bad string, a value JSON cannot hold (NaN, infinity, an object),
            or nesting deeper than 32.
    """
    if depth > 32:
        raise InvalidInputError(f"{what} is nested more than 32 levels deep")
    if isinstance(value, str):
        check_text(value, what, MAX_TEXT)
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str):
                check_text(k, f"{what} (a key)", MAX_TEXT)
            check_json_text(v, what, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            check_json_text(v, what, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError(f"{what} holds {value}, which JSON cannot store")
    elif value is not None and not isinstance(value, (bool, int, float)):
        raise InvalidInputError(f"{what} holds a {type(value).__name__}, which JSON cannot store")


def check_media_path(path: Any) -> str:
    """A media path relative to the store's media folder, normalised.

    Raises:
        InvalidInputError: for a non-string, an absolute path, ``..``, a backslash or a NUL.
    """
    if not isinstance(path, str) or not path:
        raise InvalidInputError(f"a media path must be a non-empty string, got {short(path)}")
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or "\\" in path or "\x00" in path:
        raise InvalidInputError(f"media path {short(path)} must be relative to the store's media folder, "
                                "without '..'")
    check_text(path, "a media path", 1_000)
    return str(p)


def check_item(kind: str, item: Any, i: int) -> dict[str, Any]:
    """One query item (``{"media"}``, ``{"text"}`` or ``{"messages"}``), checked for ``kind``.

    Raises:
        InvalidInputError: naming item ``i`` and the problem.
    """
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
        out["media"] = check_media_path(item["media"])
    elif key == "text":
        check_text(item["text"], f"item {i}'s text", MAX_TEXT)
    else:
        msgs = item["messages"]
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                 for m in msgs):
            raise InvalidInputError(f"item {i}'s messages must be a list of {{'role', 'content'}} objects")
    check_json_text(out, f"item {i}")
    return out


def canonical_answer(kind: str, k: int, order: list[int], outcome: str,
                     ranking: Sequence[int] | None) -> tuple[str, list[int] | None]:
    """Convert an answer given in display positions to canonical item terms.

    Args:
        kind: the query's kind.
        k: its number of items.
        order: the showing's order (``order[p]`` is the canonical index shown at position ``p``).
        outcome: an upper-case outcome name.
        ranking: display positions best first, for ``RANKING``.

    Returns:
        ``(outcome, ranking)`` in canonical terms (``LEFT`` means ``items[0]`` won).

    Raises:
        InvalidInputError: an outcome that does not fit the kind, or a ranking that is not a
            permutation of ``0..k-1``.
    """
    if outcome == RANKING:
        if kind != "ranking":
            raise InvalidInputError(f"outcome RANKING is only for ranking queries; this is a {kind}")
        if ranking is None or not isinstance(ranking, (list, tuple)) or len(ranking) > MAX_RANKED or not all(
                isinstance(p, int) and not isinstance(p, bool) for p in ranking):
            raise InvalidInputError(f"a RANKING answer needs 'ranking': display positions best first, 0..{k - 1}")
        if sorted(ranking) != list(range(k)):
            raise InvalidInputError(f"ranking must be a permutation of 0..{k - 1}, got {short(list(ranking), 80)}")
        return RANKING, [order[p] for p in ranking]
    if ranking is not None:
        raise InvalidInputError(f"'ranking' is only allowed with outcome RANKING, got outcome {outcome}")
    if kind == "ranking" and outcome not in ("SKIP", "CANT_TELL"):
        raise InvalidInputError(f"a ranking query takes RANKING, SKIP or CANT_TELL, got {outcome}")
    if outcome in ("LEFT", "RIGHT"):
        shown = 0 if outcome == "LEFT" else 1
        return ("LEFT" if order[shown] == 0 else "RIGHT"), None
    return outcome, None
