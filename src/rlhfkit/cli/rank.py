"""``rlhf rank``: strengths of players, teams or models from who beat whom (:mod:`rlhfkit.rank`).

``rlhf rank fit`` reads a CSV of games (or of multi-way rankings), fits Bradley-Terry /
Davidson / Plackett-Luce strengths with bootstrap intervals, prints a leaderboard and writes
``ratings.csv``, ``ratings.json`` (for ``predict``), ``config.json`` and the plots.
``rlhf rank predict`` gives win probabilities for new pairs.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

app = typer.Typer(no_args_is_help=True)
console = Console()


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {escape(msg)}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


_OPTION_OF_FIELD = {"prior_precision": "--prior-precision", "half_life": "--half-life", "tie_model": "--tie-model",
                    "n_bootstrap": "--bootstrap", "level": "--level", "transform": "--transform"}
"""RankConfig / reader field names → the options that set them, for error messages."""


def _option_names(message: str) -> str:
    """``message`` with RankConfig field names replaced by the command-line options that set them."""
    for field, option in _OPTION_OF_FIELD.items():
        if message.startswith(field + " "):
            return option + message[len(field):]
    return message


def _pairs(specs: list[str], option: str) -> list[tuple[str, str]]:
    pairs = []
    for spec in specs:
        parts = spec.split(":")
        if len(parts) != 2 or not all(parts):
            _fail(f"{option} {spec!r}: expected two column names as LEFT_COL:RIGHT_COL")
        pairs.append((parts[0], parts[1]))
    return pairs


def _leaderboard(ratings, top: int) -> Table:
    has_ci = ratings.intervals is not None
    table = Table(title=f"strengths (log-odds){'' if top <= 0 else f', top {top}'}")
    for col in ("#", "name", "strength", *([f"{ratings.config.level:.0%} interval"] if has_ci else []),
                "games", "W", "L", *(["T"] if ratings.ties.any() else [])):
        table.add_column(col, justify="left" if col == "name" else "right")
    rows = ratings.table()
    for row in rows[:top] if top > 0 else rows:
        table.add_row(
            str(row["rank"]), Text(str(row["name"])), f"{row['strength']:+.3f}",
            *([f"[{row['lower']:+.2f}, {row['upper']:+.2f}]"] if has_ci else []),
            str(row["games"]), str(row["wins"]), str(row["losses"]),
            *([str(row["ties"])] if ratings.ties.any() else []),
        )
    return table


_FIT_HELP = {
    "data": "CSV file with a header row, one game (or ranking) a row.",
    "winner": "Column naming the winner (the left item for a tie).",
    "loser": "Column naming the loser (the right item for a tie).",
    "tie": "Column that is true (1/true/yes/tie/draw) for a tie.",
    "home": "Column: the name of the side at home, or true = the winner was at home, false = the loser; "
            "empty = neutral. Fits a home advantage.",
    "ranking": 'Instead of --winner/--loser: column with a multi-way ranking "a > b > c" (Plackett-Luce).',
    "date": "Column with the date (YYYYMMDD or YYYY-MM-DD) or a day number.",
    "half_life": "Recency weighting: a game this many days older than the newest counts half (needs --date).",
    "covariate": "WINNER_COL:LOSER_COL of a number known at game time (e.g. a rank or rating points); its "
                 "fitted effect is the prior mean of strengths and covers unseen items. Repeatable.",
    "transform": "Covariate transform: log or identity.",
    "prior_precision": "λ of the N(0, 1/λ) prior on each item's own strength offset.",
    "tie_model": "davidson (fit a tie parameter ν) or half (a tie is half a win).",
    "bootstrap": "Bootstrap refits for the intervals (0: none).",
    "level": "Coverage of the bootstrap interval.",
    "seed": "Seed of the bootstrap.",
    "out": "Folder for ratings.csv, ratings.json, config.json and the plots.",
    "top": "Rows of the table to print, and items in strengths.png (0: all).",
    "plots": "Write strengths.png and head_to_head.png.",
    "heatmap_top": "Items in the head-to-head heatmap.",
}
_H = _FIT_HELP


@app.command()
def fit(
    data: Annotated[Path, typer.Option(help=_H["data"])],
    winner: Annotated[Optional[str], typer.Option(help=_H["winner"])] = None,
    loser: Annotated[Optional[str], typer.Option(help=_H["loser"])] = None,
    tie: Annotated[Optional[str], typer.Option(help=_H["tie"])] = None,
    home: Annotated[Optional[str], typer.Option(help=_H["home"])] = None,
    ranking: Annotated[Optional[str], typer.Option(help=_H["ranking"])] = None,
    date: Annotated[Optional[str], typer.Option(help=_H["date"])] = None,
    half_life: Annotated[Optional[float], typer.Option(help=_H["half_life"])] = None,
    covariate: Annotated[Optional[list[str]], typer.Option(help=_H["covariate"])] = None,
    transform: Annotated[str, typer.Option(help=_H["transform"])] = "log",
    prior_precision: Annotated[float, typer.Option(help=_H["prior_precision"])] = 1.0,
    tie_model: Annotated[str, typer.Option(help=_H["tie_model"])] = "davidson",
    bootstrap: Annotated[int, typer.Option(help=_H["bootstrap"])] = 100,
    level: Annotated[float, typer.Option(help=_H["level"])] = 0.95,
    seed: Annotated[int, typer.Option(help=_H["seed"])] = 0,
    out: Annotated[Path, typer.Option(help=_H["out"])] = Path("runs/rank"),
    top: Annotated[int, typer.Option(help=_H["top"])] = 20,
    plots: Annotated[bool, typer.Option(help=_H["plots"])] = True,
    heatmap_top: Annotated[int, typer.Option(help=_H["heatmap_top"])] = 10,
) -> None:
    """Fit strengths from a CSV of games: Bradley-Terry, Davidson for ties, Plackett-Luce for rankings."""
    from rlhfkit.rank import (
        RankConfig, RankDataError, fit_bradley_terry, fit_plackett_luce, plot_head_to_head, plot_strengths,
        read_comparisons, read_rankings,
    )

    if ranking is None and (winner is None or loser is None):
        _fail("give --winner and --loser (pairwise games) or --ranking (multi-way rankings)")
    if ranking is not None and (winner or loser or tie or home or covariate):
        _fail("--ranking cannot be combined with --winner/--loser/--tie/--home/--covariate")
    if half_life is not None and date is None:
        _fail("--half-life needs --date COL")
    try:
        config = RankConfig(prior_precision=prior_precision, half_life=half_life, tie_model=tie_model,
                            n_bootstrap=bootstrap, level=level, seed=seed)
        if ranking is not None:
            items = read_rankings(data, ranking=ranking, date=date)
            n_data, kind = len(items), "rankings"
        else:
            items = read_comparisons(data, winner=winner, loser=loser, tie=tie, home=home, date=date,
                                     covariates=_pairs(covariate or [], "--covariate"), transform=transform)
            n_data, kind = len(items), "games"
        console.print(f"{data}: {n_data} {kind} among {len(items.names)} items; "
                      f"fitting{f' with {bootstrap} bootstrap refits' if bootstrap else ''}…", markup=False,
                      highlight=False)
        ratings = (fit_plackett_luce if ranking is not None else fit_bradley_terry)(items, config)
    except (RankDataError, ValueError) as exc:
        _fail(_option_names(str(exc)))
        return
    console.print(_leaderboard(ratings, top))
    notes = []
    if ratings.home_advantage:
        notes.append(f"home advantage {ratings.home_advantage:+.3f}")
    if ratings.nu:
        notes.append(f"Davidson tie parameter ν {ratings.nu:.3f}")
    notes += [f"{n} {c:+.3f}" for n, c in zip(ratings.feature_names, ratings.coef)]
    if notes:
        console.print("; ".join(notes), markup=False, highlight=False)
    out.mkdir(parents=True, exist_ok=True)
    ratings.to_csv(out / "ratings.csv")
    ratings.save(out / "ratings.json")
    (out / "config.json").write_text(json.dumps({
        "data": str(data), "winner": winner, "loser": loser, "tie": tie, "home": home, "ranking": ranking,
        "date": date, "covariate": covariate or [], "transform": transform, "rank_config": asdict(config),
    }, indent=2))
    written = ["ratings.csv", "ratings.json", "config.json"]
    if plots:
        model = ("Plackett-Luce" if ranking is not None else "Davidson" if ratings.nu else "Bradley-Terry")
        what = f"{data.name}: {model}, {n_data} {kind}, {len(ratings.names)} items"
        plot_strengths(ratings, out / "strengths.png", top=max(top, 1) if top > 0 else len(ratings.names),
                       title=f"{what}\nstrengths (log-odds)")
        plot_head_to_head(ratings, out / "head_to_head.png", top=heatmap_top, title=f"{what}\nP[row beats column]")
        written += ["strengths.png", "head_to_head.png"]
    console.print(f"wrote {', '.join(written)} to {out}", markup=False, highlight=False)


_PREDICT_HELP = {
    "model": "ratings.json written by `rlhf rank fit`.",
    "pair": "Two names: the probability that the first beats the second.",
    "data": "CSV of pairs to predict, instead of PAIR.",
    "left": "Column with the first item of each pair (with --data).",
    "right": "Column with the second item of each pair (with --data).",
    "home": "Column: the name of the side at home, or true = left at home, false = right; empty = neutral.",
    "covariate": "LEFT_COL:RIGHT_COL of the covariates the model was fitted with, in the same order "
                 "(default: each item's latest covariates from the fit).",
    "transform": "Covariate transform used in the fit: log or identity.",
    "out": "Write the predictions as CSV here.",
    "allow_unseen": "Predict with the prior for names the model has not seen even when they look like a "
                    "misspelling of a known one (default for two names: refuse, and suggest the known name; "
                    "with --data such names are listed with suggestions).",
}
_P = _PREDICT_HELP


@app.command()
def predict(
    model: Annotated[Path, typer.Option(help=_P["model"])],
    pair: Annotated[Optional[list[str]], typer.Argument(help=_P["pair"])] = None,
    data: Annotated[Optional[Path], typer.Option(help=_P["data"])] = None,
    left: Annotated[Optional[str], typer.Option(help=_P["left"])] = None,
    right: Annotated[Optional[str], typer.Option(help=_P["right"])] = None,
    home: Annotated[Optional[str], typer.Option(help=_P["home"])] = None,
    covariate: Annotated[Optional[list[str]], typer.Option(help=_P["covariate"])] = None,
    transform: Annotated[str, typer.Option(help=_P["transform"])] = "log",
    out: Annotated[Optional[Path], typer.Option(help=_P["out"])] = None,
    allow_unseen: Annotated[bool, typer.Option(help=_P["allow_unseen"])] = False,
) -> None:
    """Win (and tie) probabilities for new pairs; unseen names get the prior (strength 0 + covariates)."""
    from rlhfkit.rank import RankDataError, Ratings, read_comparisons

    try:
        ratings = Ratings.load(model)
    except RankDataError as exc:
        _fail(str(exc))
        return
    n_cov = len(ratings.coef) // 2
    pairs = _pairs(covariate or [], "--covariate")
    if pairs and len(pairs) != n_cov:
        fitted = ", ".join(ratings.feature_names[::2]) or "none"
        _fail(f"{model} was fitted with {n_cov} covariate(s) ({fitted}); got {len(pairs)} --covariate")
    if n_cov and not pairs:
        console.print("no --covariate given: each item's latest covariates from the fit are used")
    home_codes = None
    feats_a = feats_b = None
    if data is None:
        if not pair or len(pair) != 2:
            _fail("give two names (PAIR) or --data FILE --left COL --right COL")
        if pairs:
            _fail("--covariate needs --data (the covariate values come from its columns)")
        a, b = [pair[0]], [pair[1]]
    else:
        if pair:
            _fail("give either two names or --data, not both")
        if not left or not right:
            _fail("--data needs --left COL and --right COL")
        try:  # the same checked reading as `fit`, with left in the winner's place
            pairs_read = read_comparisons(data, winner=left, loser=right, home=home, covariates=pairs,
                                          transform=transform)
        except (RankDataError, ValueError) as exc:
            _fail(str(exc))
            return
        a = [pairs_read.names[i] for i in pairs_read.left]
        b = [pairs_read.names[i] for i in pairs_read.right]
        home_codes, feats_a, feats_b = pairs_read.home, pairs_read.features_left, pairs_read.features_right
    seen = set(ratings.names)
    _check_names([*a, *b], ratings.names, allow_unseen or data is not None)
    probs = ratings.predict_outcomes(a, b, home=home_codes, features_a=feats_a, features_b=feats_b)  # (B, 3)
    table = Table(title=f"predictions from {model}")
    for col in ("left", "right", "P(left wins)", "P(right wins)", *(["P(tie)"] if ratings.nu else []), "note"):
        table.add_column(col, justify="left" if col in ("left", "right", "note") else "right")
    tie_cols = 1 if ratings.nu else 0
    for i, (x, y) in enumerate(zip(a, b)):
        note = ", ".join(f"{n} unseen (prior)" for n in (x, y) if n not in seen)
        cells = [f"{p:.3f}" for p in probs[i, : 2 + tie_cols]]
        table.add_row(Text(x), Text(y), *cells, Text(note))
        if i == 49 and len(a) > 50:
            table.add_row("…", f"{len(a) - 50} more", *[""] * (2 + tie_cols), "")
            break
    console.print(table)
    if out is not None:
        with open(out, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["left", "right", "p_left", "p_right", "p_tie"])
            for x, y, p in zip(a, b, probs):
                writer.writerow([x, y, f"{p[0]:.6f}", f"{p[1]:.6f}", f"{p[2]:.6f}"])
        console.print(f"wrote {out}", markup=False, highlight=False)


def _check_names(names: list[str], known: list[str], allow_unseen: bool) -> None:
    """Refuse unseen names that look like misspellings of known ones (unless ``allow_unseen``):
    an unseen name silently gets the prior, which a typo should not."""
    import difflib

    known_set = set(known)
    lowered = {k.lower(): k for k in known}
    unseen = sorted({n for n in names if n not in known_set})
    suspicious = []
    for name in unseen:
        close = ([lowered[name.lower()]] if name.lower() in lowered else
                 difflib.get_close_matches(name, known, n=3, cutoff=0.75))
        if close:
            suspicious.append(f"{name!r} (did you mean {' or '.join(repr(c) for c in close)}?)")
    if suspicious and not allow_unseen:
        _fail(f"unknown name{'s' if len(suspicious) > 1 else ''}: {'; '.join(suspicious[:10])}; pass "
              "--allow-unseen to predict with the prior for names the model has not seen")
    if suspicious:
        console.print(f"names that look misspelt: {'; '.join(suspicious[:10])}", markup=False, highlight=False)
    if unseen:
        console.print(f"{len(unseen)} name(s) not in the model, predicted with the prior: "
                      f"{', '.join(unseen[:10])}{' …' if len(unseen) > 10 else ''}", markup=False, highlight=False)
