"""Reading preference and SFT data files (JSONL, JSON, Parquet, ``datasets`` directories) into raw rows,
and :class:`DataError`, the error that names the file, line and field of bad input.

The row formats and the records they become are :mod:`rlhfkit.language.data`'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["DataError"]


class DataError(ValueError):
    """A bad input row (or, with ``line=None``, a bad file).

    Attributes:
        path: the file or directory read.
        line: 1-based line of a JSONL file, or 1-based row of a JSON list, Parquet file or
            ``datasets`` directory; ``None`` when the whole file is at fault.
        field: the column at fault, or ``None`` (malformed JSON, the row is not an object, ...).
        reason: what is wrong, without the location.

    ``str(e)`` reads ``data/prefs.jsonl, line 12, field "chosen": empty response``.
    """

    def __init__(self, path: str, line: int | None, field: str | None, reason: str, *, unit: str = "line"):
        self.path, self.line, self.field, self.reason = str(path), line, field, reason
        where = self.path
        if line is not None:
            where += f", {unit} {line}"
        if field is not None:
            where += f', field "{field}"'
        super().__init__(f"{where}: {reason}")


class _Bad(Exception):
    """A row-level problem, before the path and line are known."""

    def __init__(self, field: str | None, reason: str):
        self.field, self.reason = field, reason


def _read_jsonl(path: Path) -> tuple[list[tuple[int, Any]], str]:
    """``(line, row)`` for every non-blank line; a malformed line's row is a ``_Bad``."""
    rows: list[tuple[int, Any]] = []
    try:
        with open(path, encoding="utf-8-sig") as fh:
            for line, text in enumerate(fh, 1):
                if not text.strip():
                    continue
                try:
                    rows.append((line, json.loads(text)))
                except json.JSONDecodeError as exc:
                    rows.append((line, _Bad(None, f"malformed JSON: {exc.msg} (column {exc.colno})")))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(str(path), None, None, f"cannot read the file ({exc})") from exc
    return rows, "line"


def _read_json(path: Path) -> tuple[list[tuple[int, Any]], str]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise DataError(str(path), exc.lineno, None, f"malformed JSON: {exc.msg} (column {exc.colno})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(str(path), None, None, f"cannot read the file ({exc})") from exc
    if isinstance(doc, dict):
        key = next((k for k in ("data", "train") if isinstance(doc.get(k), list)), None)
        if key is None:
            raise DataError(
                str(path), None, None, f'expected a list of rows, or {{"data" | "train": [...]}}; got keys {list(doc)}'
            )
        doc = doc[key]
    if not isinstance(doc, list):
        raise DataError(str(path), None, None, f"expected a list of rows, got {type(doc).__name__}")
    return list(enumerate(doc, 1)), "row"


def _read_parquet(path: Path) -> tuple[list[tuple[int, Any]], str, list[str]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a bad file
        raise DataError(str(path), None, None, f"cannot read as Parquet ({exc})") from exc
    return list(enumerate(table.to_pylist(), 1)), "row", table.column_names


def _read_datasets_dir(path: Path, split: str) -> tuple[list[tuple[int, Any]], str, list[str]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # FileNotFoundError for a directory that is not a saved dataset, ...
        raise DataError(
            str(path), None, None, f"not a dataset directory saved with save_to_disk ({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(str(path), None, None, f"no split {split!r}; the splits are: {', '.join(ds)}")
        ds = ds[split]
    return list(enumerate(ds.to_list(), 1)), "row", list(ds.column_names)


def _read(path: Path, split: str) -> tuple[list[tuple[int, Any]], str, list[str]]:
    if path.is_dir():
        return _read_datasets_dir(path, split)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path)
    if suffix in (".jsonl", ".json"):
        rows, unit = _read_jsonl(path) if suffix == ".jsonl" else _read_json(path)
        columns: dict[str, None] = {}
        for _, row in rows:
            if isinstance(row, dict):
                columns.update(dict.fromkeys(row))
        return rows, unit, list(columns)
    raise DataError(
        str(path), None, None, "unknown format; expected .jsonl, .json, .parquet or a datasets save_to_disk directory"
    )
