"""TRL's preference format (JSONL of ``prompt``, ``chosen``, ``rejected``) out of and into a store."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.engine import Connection

from rlhfkit.feedback.store import schema as S
from rlhfkit.feedback.store.types import RANKING, InvalidInputError, check_item, check_json_text, query_from_row

if TYPE_CHECKING:
    from rlhfkit.feedback.store.core import Store

__all__ = ["export_trl", "import_trl"]


def export_trl(store: Store, path: str | Path, *, ties: Literal["flag", "drop"] = "flag") -> int:
    """Write the active pair answers as TRL preference JSONL; return the number of rows.

    One row per answer: ``{"prompt", "chosen", "rejected"}`` (TRL's explicit-prompt preference
    format; ``prompt`` is left out when the query has none, e.g. clips, whose ``chosen`` /
    ``rejected`` are media paths relative to the media folder) plus ``query_id`` and
    ``labeller``. A ranking of K gives its K(K-1)/2 implied pairs. ``SKIP`` and ``CANT_TELL``
    are never exported; ``TIE`` and ``BOTH_BAD`` are kept with ``"tie": true`` (``ties="flag"``,
    chosen/rejected then in canonical order) or left out (``ties="drop"``). The file is written
    to ``PATH.tmp`` and renamed, so a failed export leaves no half file.

    Raises:
        ValueError: for an unknown ``ties`` value.
        FileNotFoundError: if the folder of ``path`` does not exist.
    """
    if ties not in ("flag", "drop"):
        raise ValueError(f"ties must be 'flag' or 'drop', got {ties!r}")
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such folder")
    with store._read() as conn:
        qs = {r.id: query_from_row(r) for r in conn.execute(select(S.queries))}
    n = 0
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for lab in store.labels():
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


def _content_key(labeller: str, prompt: Any, items: Any, tie: bool) -> str:
    return json.dumps([labeller, prompt, items, tie], sort_keys=True, ensure_ascii=False)


def import_trl(store: Store, path: str | Path, *, labeller: str = "import") -> tuple[int, int]:
    """Read TRL preference JSONL (``chosen``, ``rejected``, optional ``prompt`` and ``tie``).

    Each row becomes a ``text_pair`` query (status ``done``, items ``[chosen, rejected]``)
    answered ``LEFT`` (``TIE`` when ``"tie": true``) by ``labeller`` (created if new). All rows
    are written in one transaction: a bad row writes nothing. Importing is idempotent: a row
    whose prompt, chosen, rejected and tie ``labeller`` already has in an imported query is
    skipped (counted as a multiset, so a file's own repeated rows are each imported once; running
    the same import twice adds nothing).

    Returns:
        ``(imported, skipped)``: rows written, and rows already in the store.

    Raises:
        ValueError: naming ``file:line`` and the problem (bad JSON, missing or mistyped field,
            text a database cannot hold).
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
            except (ValueError, RecursionError) as e:
                raise ValueError(f"{where}: not valid JSON ({type(e).__name__}: {str(e)[:80]})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: expected a JSON object with 'chosen' and 'rejected'")
            for key in ("chosen", "rejected"):
                if key not in obj:
                    raise ValueError(f"{where}: missing field {key!r}")
            prompt = obj.get("prompt")
            tie = obj.get("tie", False)
            try:
                items = [_item_from_value(obj["chosen"]), _item_from_value(obj["rejected"])]
                items = [check_item("text_pair", it, i) for i, it in enumerate(items)]
                if prompt is not None and not isinstance(prompt, (str, list)):
                    raise InvalidInputError("'prompt' must be a string or a list of messages")
                check_json_text(prompt, "'prompt'")
            except (InvalidInputError, TypeError) as e:
                raise ValueError(f"{where}: {e}") from None
            if not isinstance(tie, bool):
                raise ValueError(f"{where}: 'tie' must be true or false")
            rows.append((prompt, items, tie, lineno))
    store.ensure_labeller(labeller)
    source = Path(path).name.encode("utf-8", "replace").decode("utf-8")  # undecodable bytes in a file name

    def fn(conn: Connection) -> tuple[int, int]:
        if not store.is_sqlite:  # two imports at once would both miss each other's rows
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7253001)"))
        now = time.time()
        lab_id = conn.execute(select(S.labellers.c.id).where(S.labellers.c.name == labeller)).scalar_one()
        have = Counter(_content_key(labeller, r.prompt, r.items, r.outcome == "TIE") for r in conn.execute(
            select(S.queries.c.prompt, S.queries.c["items"], S.labels.c.outcome)
            .join(S.labels, S.labels.c.query_id == S.queries.c.id)
            .where(S.queries.c.batch.startswith("import:", autoescape=True), S.labels.c.labeller_id == lab_id)))
        written = 0
        for prompt, items, tie, lineno in rows:
            key = _content_key(labeller, prompt, items, tie)
            if have[key] > 0:
                have[key] -= 1
                continue
            qid = conn.execute(S.queries.insert().values(
                kind="text_pair", batch=f"import:{source}"[:200], prompt=prompt, items=items, payload=None,
                priority=0.0, labels_needed=1, n_labels=1, status="done", created_at=now,
                shown_at=None)).inserted_primary_key[0]
            conn.execute(S.labels.insert().values(
                query_id=qid, labeller_id=lab_id, show_id=None, outcome="TIE" if tie else "LEFT", ranking=None,
                shown_order=[0, 1], shown_at=None, answered_at=now, reason=f"imported from {source}:{lineno}",
                retracted_at=None))
            written += 1
        return written, len(rows) - written

    return store._write(fn)


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
