"""Simulated seasons with known strengths, and rank correlation, for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from rlhfkit.choice import LEFT
from rlhfkit.rank.records import Comparisons


# ----------------------------------------------------------------------------------------------
# Simulation and evaluation helpers
# ----------------------------------------------------------------------------------------------


def _nba_schedule() -> list[tuple[int, int, int]]:
    """``(team_a, team_b, games)`` for 30 teams: 2 conferences × 3 divisions × 5 teams; 4 games
    against division rivals, 4 or 3 against the other conference teams (3 against four of them,
    a circulant pattern), 2 against the other conference: 82 games a team, 1,230 in all."""
    pairs = []
    team = lambda conf, div, k: conf * 15 + div * 5 + k  # noqa: E731
    for conf in range(2):
        for div in range(3):
            for k in range(5):
                for k2 in range(k + 1, 5):
                    pairs.append((team(conf, div, k), team(conf, div, k2), 4))
        for div in range(3):
            nxt = (div + 1) % 3
            for k in range(5):
                for k2 in range(5):
                    pairs.append((team(conf, div, k), team(conf, nxt, k2), 3 if (k2 - k) % 5 in (0, 1) else 4))
    for a in range(15):
        for b in range(15, 30):
            pairs.append((a, b, 2))
    return pairs


def _uneven_schedule(rng: np.random.Generator, n_games: int) -> list[tuple[int, int, int]]:
    """``(team_a, team_b, games)`` for 30 teams in 2 conferences of 15: ``n_games`` drawn at
    random over the pairs, a pair within a conference 3× as likely as one across, each team
    with its own activity level ``exp(N(0, 0.3²))`` — so teams play different numbers of games
    against differently strong opponents."""
    activity = np.exp(0.3 * rng.standard_normal(30))
    a, b = np.triu_indices(30, k=1)
    rate = activity[a] * activity[b] * np.where(a // 15 == b // 15, 3.0, 1.0)
    games = rng.multinomial(n_games, rate / rate.sum())
    return [(int(i), int(j), int(g)) for i, j, g in zip(a, b, games) if g]


_SCHEDULES = {"nba": lambda rng, n_games: _nba_schedule(), "uneven": _uneven_schedule}


def simulate_season(
    seed: int = 0, *, schedule: Literal["uneven", "nba"] = "uneven", home_advantage: float = 0.0
) -> tuple[Comparisons, np.ndarray]:
    """A simulated season like the course's: 30 teams with strengths ``N(0, 1)`` and 1,230
    games, each won with Bradley-Terry probability ``σ(s_home − s_away + home_advantage)``
    (Bradley & Terry 1952); home and away alternate within each pairing.

    ``schedule``: ``"uneven"`` (default) draws the games at random, more often within a
    conference and for more active teams, so both the number of games and the strength of the
    opponents differ between teams; ``"nba"`` is the balanced NBA shape (82 games each: 4 against
    division rivals, 3–4 within the conference, 2 across).

    Returns:
        ``(comparisons, strengths)``: left = winner, with ``home``; ``(30,)`` true strengths
        indexed like ``comparisons.names`` (``"team00"``…).

    Raises:
        ValueError: on an unknown schedule.
    """
    if schedule not in _SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(_SCHEDULES)}, got {schedule!r}")
    rng = np.random.default_rng(seed)
    strengths = rng.standard_normal(30)
    names = tuple(f"team{i:02d}" for i in range(30))
    home_team, away_team = [], []
    for a, b, games in _SCHEDULES[schedule](rng, 1230):
        extra_home = a if rng.random() < 0.5 else b  # who hosts the odd game of a pairing
        for g in range(games):
            h = extra_home if g == games - 1 and games % 2 else (a if g % 2 == 0 else b)
            home_team.append(h)
            away_team.append(b if h == a else a)
    home_team, away_team = np.array(home_team), np.array(away_team)
    p_home = 1 / (1 + np.exp(-(strengths[home_team] - strengths[away_team] + home_advantage)))
    home_won = rng.random(len(home_team)) < p_home
    winner = np.where(home_won, home_team, away_team)
    loser = np.where(home_won, away_team, home_team)
    comps = Comparisons(names=names, left=winner, right=loser, outcome=np.full(len(winner), LEFT),
                        home=np.where(home_won, 1.0, -1.0))
    return comps, strengths


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=np.float64)
    xs = x[order]
    start = 0
    for i in range(1, len(x) + 1):
        if i == len(x) or xs[i] != xs[start]:
            ranks[order[start:i]] = (start + i - 1) / 2
            start = i
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's (1904) rank correlation: the Pearson correlation of average ranks (tied
    values share the mean of their ranks). ``x``, ``y``: ``(N,)``.

    Raises:
        ValueError: if the lengths differ or there are fewer than two values.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"x and y must be 1-D of equal length >= 2, got {x.shape} and {y.shape}")
    return float(np.corrcoef(_average_ranks(x), _average_ranks(y))[0, 1])
