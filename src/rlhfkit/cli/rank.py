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
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
console = Console()


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(2)


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
            str(row["rank"]), str(row["name"]), f"{row['strength']:+.3f}",
            *([f"[{row['lower']:+.2f}, {row['upper']:+.2f}]"] if has_ci else []),
            str(row["games"]), str(row["wins"]), str(row["losses"]),
            *([str(row["ties"])] if ratings.ties.any() else []),
        )
    return table


@app.command()
def fit(
    data: Annotated[Path, typer.Option(help="CSV file with a header row, one game (or ranking) a row.")],
    winner: Annotated[Optional[str], typer.Option(help="Column naming the winner (left item for a tie).")] = None,
    loser: Annotated[Optional[str], typer.Option(help="Column naming the loser (right item for a tie).")] = None,
    tie: Annotated[Optional[str], typer.Option(help="Column that is true (1/true/yes/tie/draw) for a tie.")] = None,
    home: Annotated[Optional[str], typer.Option(
        help="Column: name of the side at home, or true = the winner was at home, false = the loser; empty = neutral."
    )] = None,
    ranking: Annotated[Optional[str], typer.Option(
        help='Instead of --winner/--loser: column with a multi-way ranking "a > b > c" (Plackett-Luce).'
    )] = None,
    date: Annotated[Optional[str], typer.Option(help="Column with the date (YYYYMMDD, YYYY-MM-DD) or day number.")] = None,
    half_life: Annotated[Optional[float], typer.Option(help="Recency weighting: a game this many days older counts half (needs --date).")] = None,
    covariate: Annotated[Optional[list[str]], typer.Option(
        help="WINNER_COL:LOSER_COL of a numeric attribute known at game time (e.g. a rank); its fitted effect is the prior mean of strengths. Repeatable."
    )] = None,
    transform: Annotated[str, typer.Option(help="Covariate transform: log or identity.")] = "log",
    prior_precision: Annotated[float, typer.Option(help="λ of the N(0, 1/λ) prior on each item's strength.")] = 1.0,
    tie_model: Annotated[str, typer.Option(help="davidson (fit a tie parameter) or half (a tie is half a win).")] = "davidson",
    bootstrap: Annotated[int, typer.Option(help="Bootstrap refits for the intervals (0: none).")] = 100,
    level: Annotated[float, typer.Option(help="Coverage of the bootstrap interval.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    out: Annotated[Path, typer.Option(help="Folder for ratings.csv, ratings.json, config.json and the plots.")] = Path("runs/rank"),
    top: Annotated[int, typer.Option(help="Rows of the table to print (0: all).")] = 20,
    plots: Annotated[bool, typer.Option(help="Write strengths.png and head_to_head.png.")] = True,
    heatmap_top: Annotated[int, typer.Option(help="Items in the head-to-head heatmap.")] = 10,
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
                      f"fitting{f' with {bootstrap} bootstrap refits' if bootstrap else ''}…")
        ratings = (fit_plackett_luce if ranking is not None else fit_bradley_terry)(items, config)
    except (RankDataError, ValueError) as exc:
        _fail(str(exc))
        return
    console.print(_leaderboard(ratings, top))
    notes = []
    if ratings.home_advantage:
        notes.append(f"home advantage {ratings.home_advantage:+.3f}")
    if ratings.nu:
        notes.append(f"Davidson tie parameter ν {ratings.nu:.3f}")
    notes += [f"{n} {c:+.3f}" for n, c in zip(ratings.feature_names, ratings.coef)]
    if notes:
        console.print("; ".join(notes))
    out.mkdir(parents=True, exist_ok=True)
    ratings.to_csv(out / "ratings.csv")
    ratings.save(out / "ratings.json")
    (out / "config.json").write_text(json.dumps({
        "data": str(data), "winner": winner, "loser": loser, "tie": tie, "home": home, "ranking": ranking,
        "date": date, "covariate": covariate or [], "transform": transform, "rank_config": asdict(config),
    }, indent=2))
    written = ["ratings.csv", "ratings.json", "config.json"]
    if plots:
        plot_strengths(ratings, out / "strengths.png", top=max(top, 1) if top > 0 else len(ratings.names))
        plot_head_to_head(ratings, out / "head_to_head.png", top=heatmap_top)
        written += ["strengths.png", "head_to_head.png"]
    console.print(f"wrote {', '.join(written)} to {out}")


@app.command()
def predict(
    model: Annotated[Path, typer.Option(help="ratings.json written by `rlhf rank fit`.")],
    pair: Annotated[Optional[list[str]], typer.Argument(help="Two names: the probability the first beats the second.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="CSV of pairs to predict, instead of PAIR.")] = None,
    left: Annotated[Optional[str], typer.Option(help="Column with the first item of each pair (with --data).")] = None,
    right: Annotated[Optional[str], typer.Option(help="Column with the second item (with --data).")] = None,
    home: Annotated[Optional[str], typer.Option(
        help="Column: the name of the side at home, or true = left at home, false = right; empty = neutral."
    )] = None,
    covariate: Annotated[Optional[list[str]], typer.Option(
        help="LEFT_COL:RIGHT_COL, the covariates the model was fitted with, in the same order."
    )] = None,
    transform: Annotated[str, typer.Option(help="Covariate transform used in the fit: log or identity.")] = "log",
    out: Annotated[Optional[Path], typer.Option(help="Write the predictions as CSV here.")] = None,
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
        _fail(f"{model} was fitted with {n_cov} covariate(s) ({', '.join(ratings.feature_names[::2]) or 'none'}); "
              f"got {len(pairs)} --covariate")
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
    probs = ratings.predict_outcomes(a, b, home=home_codes, features_a=feats_a, features_b=feats_b)  # (B, 3)
    seen = set(ratings.names)
    table = Table(title=f"predictions from {model}")
    for col in ("left", "right", "P(left wins)", "P(right wins)", *(["P(tie)"] if ratings.nu else []), "note"):
        table.add_column(col, justify="left" if col in ("left", "right", "note") else "right")
    for i, (x, y) in enumerate(zip(a, b)):
        note = ", ".join(f"{n} unseen (prior)" for n in (x, y) if n not in seen)
        table.add_row(x, y, f"{probs[i, 0]:.3f}", f"{probs[i, 1]:.3f}", *([f"{probs[i, 2]:.3f}"] if ratings.nu else []), note)
        if i == 49 and len(a) > 50:
            table.add_row("…", f"{len(a) - 50} more", "", "", *([""] if ratings.nu else []), "")
            break
    console.print(table)
    if out is not None:
        with open(out, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["left", "right", "p_left", "p_right", "p_tie"])
            for x, y, p in zip(a, b, probs):
                writer.writerow([x, y, f"{p[0]:.6f}", f"{p[1]:.6f}", f"{p[2]:.6f}"])
        console.print(f"wrote {out}")
