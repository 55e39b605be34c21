"""Reading games and rankings from CSV files, with errors that name the file, line and column."""

from __future__ import annotations

import csv
import difflib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from rlhfkit.rank.records import RankDataError, Comparisons, Rankings


# ----------------------------------------------------------------------------------------------
# Reading CSV files
# ----------------------------------------------------------------------------------------------

_TRUE = {"1", "true", "t", "yes", "y", "tie", "draw"}
_FALSE = {"0", "false", "f", "no", "n", ""}


def _open_rows(path: str | Path, columns: Sequence[str]):
    """Yield ``(line, row)`` from a CSV file after checking the header has ``columns``."""
    path = Path(path)
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise RankDataError(f"{path}: cannot open ({exc.strerror})") from exc
    with fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames
        if not header:
            raise RankDataError(f"{path}: the file is empty; expected a header row with columns {list(columns)}")
        for col in columns:
            if col not in header:
                close = difflib.get_close_matches(col, header, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise RankDataError(f"{path}: no column {col!r}.{hint} The columns are: {', '.join(header)}")
        n = 0
        for row in reader:
            n += 1
            yield reader.line_num, row
        if n == 0:
            raise RankDataError(f"{path}: the file has a header but no data rows")


def _cell(path, line: int, row: dict, col: str) -> str:
    value = (row.get(col) or "").strip()
    if not value:
        raise RankDataError(f"{path}, line {line}, column {col!r}: empty value")
    return value


def _parse_time(path, line: int, col: str, value: str) -> float:
    """Days: ``YYYYMMDD`` and ``YYYY-MM-DD`` are dates (days since 1970-01-01); other numbers
    are taken as days already."""
    import datetime as dt

    v = value.strip()
    try:
        if len(v) == 8 and v.isdigit():
            d = dt.date(int(v[:4]), int(v[4:6]), int(v[6:]))
        elif len(v) == 10 and v[4] == "-" and v[7] == "-":
            d = dt.date.fromisoformat(v)
        else:
            return float(v)
        return float((d - dt.date(1970, 1, 1)).days)
    except ValueError:
        raise RankDataError(
            f"{path}, line {line}, column {col!r}: {value!r} is not a date (YYYYMMDD or YYYY-MM-DD) or a number of days"
        ) from None


_TRANSFORMS = {"log": math.log, "identity": float}


def covariate_features(values: Sequence[float | None], transform: Literal["log", "identity"] = "log") -> np.ndarray:
    """``(B, 2)`` covariates ``[t(value), missing]`` from one numeric attribute of each side, e.g.
    an external rank (1 = best) or ranking points; ``None`` or NaN = missing.

    ``t`` is ``log`` (the usual transform of ranks and points in tennis models, e.g. Klaassen &
    Magnus 2003, "Forecasting the winner of a tennis match"; the fitted coefficient's sign
    says whether larger is better) or the identity. A missing value gives ``[0, 1]``: the
    indicator's coefficient learns the strength of, e.g., unranked players.

    Raises:
        ValueError: for a value ``<= 0`` under ``log``, or an unknown transform.
    """
    if transform not in _TRANSFORMS:
        raise ValueError(f"transform must be one of {sorted(_TRANSFORMS)}, got {transform!r}")
    out = np.zeros((len(values), 2))
    for b, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out[b, 1] = 1.0
        elif transform == "log" and not v > 0:
            raise ValueError(f"value {v} at position {b}: the log transform needs values > 0")
        else:
            out[b, 0] = _TRANSFORMS[transform](v)
    return out


def read_comparisons(
    path: str | Path,
    *,
    winner: str,
    loser: str,
    tie: str | None = None,
    home: str | None = None,
    date: str | None = None,
    covariates: Sequence[tuple[str, str]] = (),
    transform: Literal["log", "identity"] = "log",
) -> Comparisons:
    """Read pairwise outcomes from a CSV file with a header row, one comparison a row.

    Args:
        path: the CSV file.
        winner, loser: columns naming the winner and the loser (left and right for a tie).
        tie: optional column, true (``1/true/yes/tie/draw``) when the game was a tie.
        home: optional column: the name of the item at home (the winner's or the loser's), or
            ``1/true/yes`` = the winner was at home, ``0/false/no`` = the loser was, empty = neutral.
        date: optional column, ``YYYYMMDD`` / ``YYYY-MM-DD`` or a number of days (recency).
        covariates: ``(winner_col, loser_col)`` pairs of numeric attributes of each side at the
            time of the game, e.g. ``("winner_rank_points", "loser_rank_points")``; empty =
            missing. Each becomes two covariates via :func:`covariate_features`.
        transform: applied to every covariate, ``"log"`` (values > 0) or ``"identity"``.

    Returns:
        :class:`Comparisons` with left = winner.

    Raises:
        RankDataError: for an unreadable or empty file, a missing column, an empty cell, an item
            playing itself, or a value that does not parse — naming file, line and column.
    """
    if transform not in _TRANSFORMS:
        raise ValueError(f"transform must be one of {sorted(_TRANSFORMS)}, got {transform!r}")
    covariates = [tuple(pair) for pair in covariates]
    if any(len(pair) != 2 for pair in covariates):
        raise ValueError("covariates must be (winner_column, loser_column) pairs")
    cov_cols = [col for pair in covariates for col in pair]
    cols = [c for c in (winner, loser, tie, home, date, *cov_cols) if c]
    winners, losers, ties, homes, times = [], [], [], [], []
    cov_values: dict[str, list[float | None]] = {col: [] for col in cov_cols}
    for line, row in _open_rows(path, cols):
        w, l = _cell(path, line, row, winner), _cell(path, line, row, loser)
        if w == l:
            raise RankDataError(
                f"{path}, line {line}: {w!r} plays against themself (columns {winner!r} and {loser!r})"
            )
        winners.append(w)
        losers.append(l)
        if tie:
            v = (row[tie] or "").strip().lower()
            if v not in _TRUE | _FALSE:
                raise RankDataError(f"{path}, line {line}, column {tie!r}: {row[tie]!r} is not true/false")
            ties.append(v in _TRUE)
        if home:
            v = (row[home] or "").strip()
            code = {w: 1.0, l: -1.0}.get(v)
            if code is None:
                low = v.lower()
                code = 0.0 if not low else 1.0 if low in _TRUE else -1.0 if low in _FALSE else None
            if code is None:
                raise RankDataError(
                    f"{path}, line {line}, column {home!r}: {v!r} is neither side's name ({w!r}, {l!r}) "
                    "nor true/false (true = the winner was at home)"
                )
            homes.append(code)
        if date:
            times.append(_parse_time(path, line, date, _cell(path, line, row, date)))
        for col in cov_cols:
            v = (row[col] or "").strip()
            try:
                x = float(v) if v else None
                if x is not None and (not math.isfinite(x) or (transform == "log" and x <= 0)):
                    raise ValueError
            except ValueError:
                need = "a number > 0" if transform == "log" else "a finite number"
                raise RankDataError(
                    f"{path}, line {line}, column {col!r}: {v!r} is not {need} (empty = missing)"
                ) from None
            cov_values[col].append(x)
    fields: dict = {}
    if home:
        fields["home"] = np.array(homes)
    if date:
        fields["time"] = np.array(times)
    if covariates:
        fields.update(
            features_left=np.hstack([covariate_features(cov_values[w], transform) for w, _ in covariates]),
            features_right=np.hstack([covariate_features(cov_values[l], transform) for _, l in covariates]),
            feature_names=tuple(name for w, l in covariates for name in (f"{transform}({w}|{l})", f"missing({w}|{l})")),
        )
    return Comparisons.from_names(winners, losers, ties=ties if tie else None, **fields)


def read_rankings(path: str | Path, *, ranking: str, sep: str = ">", date: str | None = None) -> Rankings:
    """Read multi-way rankings: a column holding names best first, e.g. ``"a > b > c"``.

    Raises:
        RankDataError: for an unreadable or empty file, a missing column, a list with fewer
            than two names or a name twice — naming file, line and column.
    """
    lists, times = [], []
    for line, row in _open_rows(path, [c for c in (ranking, date) if c]):
        names = [x.strip() for x in _cell(path, line, row, ranking).split(sep)]
        if len(names) < 2 or not all(names):
            raise RankDataError(
                f"{path}, line {line}, column {ranking!r}: expected at least two names separated by {sep!r}"
            )
        if len(set(names)) != len(names):
            raise RankDataError(f"{path}, line {line}, column {ranking!r}: a name appears twice")
        lists.append(names)
        if date:
            times.append(_parse_time(path, line, date, _cell(path, line, row, date)))
    return Rankings.from_lists(lists, time=np.array(times) if date else None)
