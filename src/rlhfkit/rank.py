"""Strengths from comparisons: rank players, teams, checkpoints or models from who beat whom.

A maximum-a-posteriori fit of the choice models in :mod:`rlhfkit.choice` — the same
Bradley-Terry the reward models use — with one log-strength per item:

- pairwise outcomes (:class:`Comparisons`): Bradley-Terry (Bradley & Terry 1952), Davidson's
  (1970) model when there are ties, an optional home / order advantage ``h`` (Agresti 2002,
  "Categorical Data Analysis", §10.6, order effects: ``P[home wins] = σ(s_home - s_away + h)``),
  optional match-time covariates whose fitted coefficients give the prior mean of every item's
  strength (structured Bradley-Terry, Springall 1973; Turner & Firth 2012, "Bradley-Terry models
  in R");
- multi-way rankings (:class:`Rankings`): Plackett-Luce (Plackett 1975; Luce 1959).

The log-posterior is::

    Σ_b w_b · log P[outcome_b | s] − (λ/2) Σ_i θ_i² − (κ/2) (‖β‖² + h²)

with item strength ``s_i = θ_i + x_i·β``: ``θ`` the item's own offset under a Gaussian prior
``N(0, 1/λ)`` ("a small prior": it makes the maximum exist when an item never lost, and shrinks
items with few comparisons towards the prior mean), ``x_i`` the item's covariates at the time of
the comparison (centred on their training mean) and ``β`` their coefficients. Weights
``w_b = 2^(−age_b / half_life)`` discount old comparisons exponentially (the time-weighted
pseudo-likelihood of Dixon & Coles 1997, "Modelling association football scores").
The optimiser is L-BFGS (Nocedal & Wright 2006, Alg. 7.4) with a backtracking line search; the
objective is convex, so it finds the unique maximum.

An item never seen in training gets the prior: offset ``θ = 0`` and, where covariates are
used, the covariates it has at prediction time (or, if none are given, the training mean).

Confidence intervals are percentile bootstrap intervals (Efron & Tibshirani 1993, §13.3):
comparisons resampled with replacement, the model refitted from the point estimate.

Units: strengths are natural log-odds; ``s_a − s_b = 1`` means ``P[a beats b] = σ(1) ≈ 0.73``.

Example — a leaderboard of checkpoints from human votes::

    votes = Comparisons.from_names(["ckpt-3", "ckpt-3", "ckpt-2"], ["ckpt-1", "ckpt-2", "ckpt-1"],
                                   ties=[False, True, False])
    board = fit_bradley_terry(votes, RankConfig(n_bootstrap=200))
    board.table()                          # rows strongest first: name, strength, lower, upper, …
    board.predict_proba("ckpt-3", "ckpt-1")  # (1,) P[ckpt-3 wins]; Davidson keeps ties apart
"""

from __future__ import annotations

import csv
import difflib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from rlhfkit.choice import LEFT, RIGHT, TIE, bradley_terry_nll, davidson_logprobs, davidson_nll, plackett_luce_nll

__all__ = [
    "Comparisons",
    "RankConfig",
    "RankDataError",
    "Rankings",
    "Ratings",
    "covariate_features",
    "fit_bradley_terry",
    "fit_plackett_luce",
    "plot_head_to_head",
    "plot_strengths",
    "read_comparisons",
    "read_rankings",
    "recency_weights",
    "simulate_season",
    "spearman",
]

_DTYPE = torch.float64


class RankDataError(ValueError):
    """Bad input data for ranking; the message names the file, line and column at fault."""


# ----------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------


def _optional(value: np.ndarray | None, dtype, shape: tuple[int, ...], what: str) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=dtype)
    if arr.shape != shape:
        raise ValueError(f"{what} must have shape {shape}, got {arr.shape}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must be finite (no NaN or inf)")
    return arr


@dataclass(frozen=True, eq=False)
class Comparisons:
    """Pairwise outcomes between ``N`` named items, ``B`` comparisons.

    Fields (``B`` comparisons, ``N`` items, ``F`` covariates):

    - ``names``: ``(N,)`` item names; ``left``/``right``: ``(B,)`` int indices into ``names``.
    - ``outcome``: ``(B,)`` int codes :data:`~rlhfkit.choice.LEFT` (left won),
      :data:`~rlhfkit.choice.RIGHT` or :data:`~rlhfkit.choice.TIE`.
    - ``home``: optional ``(B,)`` in ``{+1, 0, -1}``: +1 the left item had the home (or
      presentation-order) advantage, −1 the right one, 0 neither.
    - ``time``: optional ``(B,)`` float, days (any origin), for recency weighting.
    - ``weight``: optional ``(B,)`` float ≥ 0, multiplies each comparison's log-likelihood.
    - ``features_left``/``features_right``: optional ``(B, F)`` covariates of each side at the
      time of the comparison (e.g. :func:`covariate_features` of an external ranking);
      ``feature_names``: ``(F,)``.

    Raises:
        ValueError: on inconsistent shapes, indices out of range, an item compared with itself,
            unknown outcome codes, negative weights or non-finite numbers.
    """

    names: tuple[str, ...]
    left: np.ndarray
    right: np.ndarray
    outcome: np.ndarray
    home: np.ndarray | None = None
    time: np.ndarray | None = None
    weight: np.ndarray | None = None
    features_left: np.ndarray | None = None
    features_right: np.ndarray | None = None
    feature_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "names", tuple(str(n) for n in self.names))
        n = len(self.names)
        if len(set(self.names)) != n:
            raise ValueError("names must be unique")
        left, right = np.asarray(self.left, dtype=np.int64), np.asarray(self.right, dtype=np.int64)
        if left.ndim != 1 or left.shape != right.shape:
            raise ValueError(f"left and right must both have shape (B,), got {left.shape} and {right.shape}")
        (b,) = left.shape
        for side, idx in (("left", left), ("right", right)):
            bad = np.flatnonzero((idx < 0) | (idx >= n))
            if bad.size:
                raise ValueError(f"{side}[{bad[0]}] = {idx[bad[0]]} is not an index into names (N = {n})")
        same = np.flatnonzero(left == right)
        if same.size:
            raise ValueError(f"comparison {same[0]}: item {self.names[left[same[0]]]!r} is compared with itself")
        outcome = _optional(self.outcome, np.int64, (b,), "outcome")
        if np.any((outcome < 0) | (outcome > 2)):
            raise ValueError("outcome codes must be 0 (left won), 1 (right won) or 2 (tie)")
        home = _optional(self.home, np.float64, (b,), "home")
        if home is not None and np.any(~np.isin(home, (-1.0, 0.0, 1.0))):
            raise ValueError("home must be +1 (left at home), -1 (right at home) or 0 (neutral)")
        weight = _optional(self.weight, np.float64, (b,), "weight")
        if weight is not None and np.any(weight < 0):
            raise ValueError("weight must be >= 0")
        if (self.features_left is None) != (self.features_right is None):
            raise ValueError("give both features_left and features_right, or neither")
        f = len(self.feature_names)
        feats = [_optional(x, np.float64, (b, f), name) for x, name in
                 ((self.features_left, "features_left"), (self.features_right, "features_right"))]
        if self.features_left is None and f:
            raise ValueError("feature_names given without features_left/features_right")
        set_(self, "left", left)
        set_(self, "right", right)
        set_(self, "outcome", outcome)
        set_(self, "home", home)
        set_(self, "time", _optional(self.time, np.float64, (b,), "time"))
        set_(self, "weight", weight)
        set_(self, "features_left", feats[0])
        set_(self, "features_right", feats[1])
        set_(self, "feature_names", tuple(self.feature_names))

    def __len__(self) -> int:
        return int(self.left.shape[0])

    def select(self, keep: np.ndarray) -> Comparisons:
        """The comparisons where ``keep`` (``(B,)`` bool) is True; items re-indexed to those
        that still appear, in their original order."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != self.left.shape:
            raise ValueError(f"keep must have shape {self.left.shape}, got {keep.shape}")
        used = np.zeros(len(self.names), dtype=bool)
        used[self.left[keep]] = used[self.right[keep]] = True
        new_index = np.cumsum(used) - 1
        pick = lambda x: None if x is None else x[keep]  # noqa: E731
        return Comparisons(
            names=tuple(n for n, u in zip(self.names, used) if u), left=new_index[self.left[keep]],
            right=new_index[self.right[keep]], outcome=self.outcome[keep], home=pick(self.home),
            time=pick(self.time), weight=pick(self.weight), features_left=pick(self.features_left),
            features_right=pick(self.features_right), feature_names=self.feature_names,
        )

    @classmethod
    def from_names(
        cls,
        winners: Sequence[str],
        losers: Sequence[str],
        *,
        ties: Sequence[bool] | None = None,
        **fields: np.ndarray | tuple[str, ...] | None,
    ) -> Comparisons:
        """Comparisons from parallel lists of winner and loser names (``B`` each).

        Items are indexed in order of first appearance. ``ties[b]`` True marks comparison ``b``
        a tie (then winner/loser is just left/right). Other keyword fields (``home``, ``time``,
        ``weight``, ``features_left``, ``features_right``, ``feature_names``) pass through, with
        *left* = winner.

        Raises:
            ValueError: as :class:`Comparisons`, or if the lists (or ``ties``) differ in length.
        """
        if len(winners) != len(losers):
            raise ValueError(f"winners and losers differ in length: {len(winners)} and {len(losers)}")
        index: dict[str, int] = {}
        left = np.array([index.setdefault(str(w), len(index)) for w in winners] or [], dtype=np.int64)
        right = np.array([index.setdefault(str(x), len(index)) for x in losers] or [], dtype=np.int64)
        outcome = np.full(len(left), LEFT, dtype=np.int64)
        if ties is not None:
            if len(ties) != len(left):
                raise ValueError(f"ties has {len(ties)} entries for {len(left)} comparisons")
            outcome[np.asarray(ties, dtype=bool)] = TIE
        return cls(names=tuple(index), left=left, right=right, outcome=outcome, **fields)


@dataclass(frozen=True, eq=False)
class Rankings:
    """Multi-way rankings of ``N`` named items: ``R`` lists of at most ``K`` items, best first.

    - ``names``: ``(N,)``; ``items``: ``(R, K)`` int indices into ``names``, best first,
      padded with −1 after the last item of shorter lists.
    - ``time``/``weight``: optional ``(R,)``, as in :class:`Comparisons`.

    Raises:
        ValueError: on a bad shape, an index out of range, padding before a real item, a list
            with fewer than two items, or an item twice in one list.
    """

    names: tuple[str, ...]
    items: np.ndarray
    time: np.ndarray | None = None
    weight: np.ndarray | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "names", tuple(str(n) for n in self.names))
        items = np.asarray(self.items, dtype=np.int64)
        if items.ndim != 2 or items.shape[1] < 2:
            raise ValueError(f"items must be (R, K) with K >= 2, got shape {items.shape}")
        mask = items >= 0
        if np.any(mask[:, 1:] & ~mask[:, :-1]):
            raise ValueError("items: padding (-1) must come after the real items of each list")
        if np.any(mask.sum(1) < 2):
            raise ValueError(f"ranking {int(np.argmin(mask.sum(1)))} has fewer than two items")
        if np.any(items >= len(self.names)):
            raise ValueError(f"items holds an index >= N = {len(self.names)}")
        for r, row in enumerate(items):
            real = row[row >= 0]
            if len(np.unique(real)) != len(real):
                raise ValueError(f"ranking {r} lists an item twice")
        (r,) = items.shape[:1]
        set_(self, "items", items)
        set_(self, "time", _optional(self.time, np.float64, (r,), "time"))
        weight = _optional(self.weight, np.float64, (r,), "weight")
        if weight is not None and np.any(weight < 0):
            raise ValueError("weight must be >= 0")
        set_(self, "weight", weight)

    def __len__(self) -> int:
        return int(self.items.shape[0])

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[str]], **fields: np.ndarray | None) -> Rankings:
        """Rankings from lists of names, each best first; items indexed by first appearance."""
        index: dict[str, int] = {}
        k = max((len(x) for x in lists), default=2)
        items = np.full((len(lists), max(k, 2)), -1, dtype=np.int64)
        for r, names in enumerate(lists):
            for j, name in enumerate(names):
                items[r, j] = index.setdefault(str(name), len(index))
        return cls(names=tuple(index), items=items, **fields)


@dataclass(frozen=True)
class RankConfig:
    """How to fit strengths. Defaults are generic; ``bench/rank.py`` shows tuned values."""

    prior_precision: float = 1.0
    """λ > 0: each item's offset has prior N(0, 1/λ), λ in 1 / log-odds². Larger shrinks harder."""
    half_life: float | None = None
    """Recency weighting: a comparison ``half_life`` days older than the newest counts half.
    None: all comparisons count fully. Needs ``time``."""
    tie_model: Literal["davidson", "half"] = "davidson"
    """Ties: Davidson's (1970) tie parameter ν, or "half" = half a win to each side."""
    fit_home: bool = True
    """Fit a home / order advantage ``h`` when the data has ``home``."""
    coef_precision: float = 1e-3
    """κ: weak Gaussian prior precision on covariate coefficients β and on ``h``."""
    n_bootstrap: int = 0
    """Bootstrap refits for the intervals; 0 skips them."""
    level: float = 0.95
    """Coverage of the bootstrap percentile interval."""
    seed: int = 0
    """Seed of the bootstrap resampling."""
    max_iter: int = 500
    """L-BFGS iterations at most."""

    def __post_init__(self) -> None:
        if not self.prior_precision > 0:
            raise ValueError(
                f"prior_precision must be > 0, got {self.prior_precision} (without a prior, an item "
                "that never lost has infinite strength)"
            )
        if self.half_life is not None and not self.half_life > 0:
            raise ValueError(f"half_life must be > 0 days or None, got {self.half_life}")
        if self.tie_model not in _PAIR_NLL:
            raise ValueError(f"tie_model must be one of {sorted(_PAIR_NLL)}, got {self.tie_model!r}")
        if not self.coef_precision > 0:
            raise ValueError(f"coef_precision must be > 0, got {self.coef_precision}")
        if self.n_bootstrap < 0:
            raise ValueError(f"n_bootstrap must be >= 0, got {self.n_bootstrap}")
        if not 0 < self.level < 1:
            raise ValueError(f"level must be in (0, 1), got {self.level}")


# ----------------------------------------------------------------------------------------------
# Fitted strengths
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Ratings:
    """Fitted strengths of ``N`` items (log-odds units), with what is needed to predict.

    ``strengths = offsets + (latest_features − feature_mean) @ coef``: ``(N,)``, each item's
    strength with its most recent covariates. Covariates are centred on their ``(F,)`` training
    mean, so an item with average covariates (or an unseen item with none given) sits at its
    offset, which is 0 for an unseen item. ``coef``: ``(F,)``, log-odds per unit of each
    covariate. ``intervals``: ``(N, 2)`` bootstrap percentile bounds of ``strengths``, or None.
    ``wins``/``losses``/``ties``: ``(N,)`` counts in the data (for rankings: items ranked
    below / above). ``home_advantage`` ``h`` and Davidson's ``nu`` are 0 when not fitted.
    """

    names: tuple[str, ...]
    offsets: np.ndarray
    coef: np.ndarray
    feature_names: tuple[str, ...]
    latest_features: np.ndarray
    feature_mean: np.ndarray
    home_advantage: float
    nu: float
    wins: np.ndarray
    losses: np.ndarray
    ties: np.ndarray
    config: RankConfig
    intervals: np.ndarray | None = None
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(self.names)})

    @property
    def strengths(self) -> np.ndarray:
        """``(N,)`` log-strengths with each item's latest covariates."""
        return self.offsets + (self.latest_features - self.feature_mean) @ self.coef

    def order(self) -> np.ndarray:
        """``(N,)`` item indices, strongest first."""
        return np.argsort(-self.strengths, kind="stable")

    def index(self, names: Sequence[str] | str) -> np.ndarray:
        """``(B,)`` indices of ``names``; −1 for items not seen in training."""
        names = [names] if isinstance(names, str) else names
        return np.array([self._index.get(str(n), -1) for n in names], dtype=np.int64)

    def score(self, names: Sequence[str] | str, features: np.ndarray | None = None) -> np.ndarray:
        """``(B,)`` strengths of ``names``, given their ``(B, F)`` covariates now (optional).

        An unseen name gets the prior: offset 0, and ``features`` (or, if None, the training
        mean of the covariates). A seen name without ``features`` uses its latest covariates.

        Raises:
            ValueError: if ``features`` is not ``(B, F)``.
        """
        idx = self.index(names)
        seen = idx >= 0
        offsets = np.where(seen, self.offsets[np.maximum(idx, 0)], 0.0)
        if features is None:
            features = np.where(seen[:, None], self.latest_features[np.maximum(idx, 0)], self.feature_mean)
        features = np.asarray(features, dtype=np.float64)
        if features.shape != (len(idx), len(self.coef)):
            raise ValueError(f"features must be (B, F) = {(len(idx), len(self.coef))}, got {features.shape}")
        return offsets + (features - self.feature_mean) @ self.coef

    def predict_outcomes(
        self,
        a: Sequence[str] | str,
        b: Sequence[str] | str,
        *,
        home: np.ndarray | None = None,
        features_a: np.ndarray | None = None,
        features_b: np.ndarray | None = None,
    ) -> np.ndarray:
        """``(B, 3)`` probabilities of (``a`` wins, ``b`` wins, tie) — Davidson (1970), Eq. 2.1,
        via :func:`rlhfkit.choice.davidson_logprobs`; with ``nu = 0`` it is Bradley-Terry.

        ``a``, ``b``: ``B`` names each (a single name is a batch of one); unseen names get the
        prior (see :meth:`score`). ``home``: ``(B,)`` +1 when ``a`` is at home, −1 when ``b`` is,
        0 neutral. ``features_a``/``features_b``: ``(B, F)`` covariates now, or None.

        Raises:
            ValueError: if ``a`` and ``b`` differ in length or a covariate array is not ``(B, F)``.
        """
        sa = self.score(a, features_a)
        sb = self.score(b, features_b)
        if home is not None:
            sa = sa + self.home_advantage * np.asarray(home, dtype=np.float64)
        logp = davidson_logprobs(torch.as_tensor(sa), torch.as_tensor(sb), self.nu)
        return logp.exp().numpy()

    def predict_proba(self, a: Sequence[str] | str, b: Sequence[str] | str, **kwargs) -> np.ndarray:
        """``(B,)`` P[``a`` beats ``b``] (without ties: ``σ(s_a − s_b [+ h])``, Bradley & Terry
        1952). Keyword arguments as :meth:`predict_outcomes`."""
        return self.predict_outcomes(a, b, **kwargs)[:, 0]

    def table(self) -> list[dict[str, float | int | str]]:
        """Leaderboard rows, strongest first: rank, name, strength, lower, upper, games, wins,
        losses, ties."""
        s = self.strengths
        rows = []
        for rank, i in enumerate(self.order(), start=1):
            lo, hi = (self.intervals[i] if self.intervals is not None else (math.nan, math.nan))
            rows.append({
                "rank": rank, "name": self.names[i], "strength": float(s[i]),
                "lower": float(lo), "upper": float(hi),
                "games": int(self.wins[i] + self.losses[i] + self.ties[i]),
                "wins": int(self.wins[i]), "losses": int(self.losses[i]), "ties": int(self.ties[i]),
            })
        return rows

    def to_csv(self, path: str | Path) -> None:
        """Write :meth:`table` as CSV (strengths in log-odds, 6 decimals)."""
        rows = self.table()
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["rank", "name"])
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})

    def save(self, path: str | Path) -> None:
        """Write everything :meth:`load` needs to predict, as JSON."""
        data = {
            "names": list(self.names), "offsets": self.offsets.tolist(), "coef": self.coef.tolist(),
            "feature_names": list(self.feature_names), "latest_features": self.latest_features.tolist(),
            "feature_mean": self.feature_mean.tolist(), "home_advantage": self.home_advantage,
            "nu": self.nu, "wins": self.wins.tolist(), "losses": self.losses.tolist(),
            "ties": self.ties.tolist(), "config": asdict(self.config),
            "intervals": None if self.intervals is None else self.intervals.tolist(),
        }
        Path(path).write_text(json.dumps(data))

    @classmethod
    def load(cls, path: str | Path) -> Ratings:
        """Read ratings written by :meth:`save`. Raises ``RankDataError`` on a malformed file."""
        try:
            d = json.loads(Path(path).read_text())
            f = len(d["coef"])
            return cls(
                names=tuple(d["names"]), offsets=np.array(d["offsets"], dtype=np.float64),
                coef=np.array(d["coef"], dtype=np.float64), feature_names=tuple(d["feature_names"]),
                latest_features=np.array(d["latest_features"], dtype=np.float64).reshape(len(d["names"]), f),
                feature_mean=np.array(d["feature_mean"], dtype=np.float64),
                home_advantage=float(d["home_advantage"]), nu=float(d["nu"]),
                wins=np.array(d["wins"]), losses=np.array(d["losses"]), ties=np.array(d["ties"]),
                config=RankConfig(**d["config"]),
                intervals=None if d["intervals"] is None else np.array(d["intervals"], dtype=np.float64),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RankDataError(f"{path}: not a ratings file written by Ratings.save ({exc})") from exc


# ----------------------------------------------------------------------------------------------
# Fitting
# ----------------------------------------------------------------------------------------------


def recency_weights(time: np.ndarray, half_life: float | None, now: float | None = None) -> np.ndarray:
    """``(B,)`` weights ``2^(−(now − time) / half_life)``; all 1 when ``half_life`` is None.

    ``time`` in days; ``now`` defaults to the newest ``time``.
    """
    time = np.asarray(time, dtype=np.float64)
    if half_life is None:
        return np.ones_like(time)
    now = float(time.max()) if now is None else now
    return np.exp2(-(now - time) / half_life)


def _nll_davidson(s_l: Tensor, s_r: Tensor, outcome: Tensor, log_nu: Tensor) -> Tensor:
    return davidson_nll(s_l, s_r, outcome, log_nu.exp())


_HALF_TARGET = torch.tensor([1.0, 0.0, 0.5], dtype=_DTYPE)  # indexed by LEFT, RIGHT, TIE


def _nll_half(s_l: Tensor, s_r: Tensor, outcome: Tensor, log_nu: Tensor) -> Tensor:
    return bradley_terry_nll(s_l, s_r, _HALF_TARGET[outcome])


_PAIR_NLL = {"davidson": _nll_davidson, "half": _nll_half}


def _lbfgs(params: list[Tensor], objective, max_iter: int, tol: float = 1e-6) -> None:
    """Minimise the convex ``objective()`` over ``params`` in place: L-BFGS, two-loop recursion
    (Nocedal & Wright 2006, Alg. 7.4, memory 20) with a backtracking Armijo line search (Alg. 3.1).

    Stops when the largest gradient entry is below ``tol`` or the objective stops changing.
    Our own few lines rather than ``torch.optim.LBFGS``, whose constructor imports
    ``torch._dynamo`` (about 2 s on a cold process, 50× the fit itself). Runs on one intra-op
    thread: these problems are small, where threads cost more than they give (16 ms vs 0.4 ms an
    evaluation on a busy 2-core machine); the caller's thread count is restored afterwards.
    """
    sizes = [p.numel() for p in params]

    def evaluate(x: Tensor) -> tuple[float, Tensor]:
        with torch.no_grad():
            for p, chunk in zip(params, x.split(sizes)):
                p.copy_(chunk.view_as(p))
        loss = objective()
        grads = torch.autograd.grad(loss, params)
        return float(loss.detach()), torch.cat([g.reshape(-1) for g in grads])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = torch.cat([p.detach().reshape(-1) for p in params])
        f, g = evaluate(x)
        memory: list[tuple[Tensor, Tensor, float]] = []  # (s, y, 1 / y·s)
        for _ in range(max_iter):
            if float(g.abs().max()) <= tol:
                break
            q, alphas = g.clone(), []
            for s_k, y_k, rho in reversed(memory):
                alpha = rho * float(s_k @ q)
                q -= alpha * y_k
                alphas.append(alpha)
            if memory:
                s_k, y_k, _ = memory[-1]
                q *= float(s_k @ y_k) / float(y_k @ y_k)
            else:
                q /= max(1.0, float(g.abs().sum()))
            for (s_k, y_k, rho), alpha in zip(memory, reversed(alphas)):
                q += s_k * (alpha - rho * float(y_k @ q))
            d = -q
            slope = float(g @ d)
            if slope >= 0:  # not a descent direction: restart from steepest descent
                memory.clear()
                d, slope = -g / max(1.0, float(g.abs().sum())), -float(g @ g) / max(1.0, float(g.abs().sum()))
            t = 1.0
            while True:
                f_new, g_new = evaluate(x + t * d)
                if f_new <= f + 1e-4 * t * slope or t < 1e-10:
                    break
                t *= 0.5
            if f_new > f:  # no progress possible at this precision
                evaluate(x)
                break
            s_k, y_k = t * d, g_new - g
            ys = float(y_k @ s_k)
            if ys > 1e-12:
                memory = [*memory[-19:], (s_k, y_k, 1.0 / ys)]
            converged = f - f_new <= 1e-12 * max(1.0, abs(f))
            x, f, g = x + s_k, f_new, g_new
            if converged:
                break
    finally:
        torch.set_num_threads(threads)


def _bootstrap(
    fit_once, base: np.ndarray, n: int, config: RankConfig
) -> np.ndarray:
    """Percentile intervals ``(N, 2)`` from ``n`` refits on resampled weights."""
    rng = np.random.default_rng(config.seed)
    draws = np.stack([fit_once(rng.multinomial(len(base), np.full(len(base), 1.0 / len(base))) * base)
                      for _ in range(n)])  # (n, N)
    alpha = (1 - config.level) / 2
    return np.quantile(draws, [alpha, 1 - alpha], axis=0).T


def fit_bradley_terry(comparisons: Comparisons, config: RankConfig = RankConfig()) -> Ratings:
    """Fit item strengths to pairwise outcomes by MAP (see the module docstring for the model).

    Each comparison's likelihood is :func:`rlhfkit.choice.bradley_terry_nll` (Bradley & Terry
    1952) — or, when the data has ties, :func:`rlhfkit.choice.davidson_nll` with a fitted tie
    parameter ``ν`` (Davidson 1970, Eq. 2.1) or half a win (``config.tie_model = "half"``) — on
    scores ``s_left = θ_l + x_l·β + h·home``, ``s_right = θ_r + x_r·β`` (covariates ``x``
    centred on their training mean).

    Args:
        comparisons: ``B`` outcomes among ``N`` items.
        config: prior, recency, ties, bootstrap; see :class:`RankConfig`.

    Returns:
        :class:`Ratings` with ``(N,)`` strengths (and ``(N, 2)`` intervals if
        ``config.n_bootstrap > 0``).

    Raises:
        ValueError: if there are no comparisons, or ``half_life`` is set but ``time`` is not.
    """
    c = comparisons
    if len(c) == 0:
        raise ValueError("no comparisons to fit")
    if config.half_life is not None and c.time is None:
        raise ValueError("half_life needs the comparisons' time (days)")
    n, f = len(c.names), len(c.feature_names)
    base = np.ones(len(c)) if c.weight is None else c.weight.copy()
    if c.time is not None:
        base *= recency_weights(c.time, config.half_life)
    left, right = torch.as_tensor(c.left), torch.as_tensor(c.right)
    outcome = torch.as_tensor(c.outcome)
    x_mean = np.concatenate([c.features_left, c.features_right]).mean(0) if f else np.zeros(0)  # (F,)
    # Covariates centred on their training mean: an item with average covariates has strength θ.
    x_l = torch.as_tensor(c.features_left - x_mean if f else np.zeros((len(c), 0)), dtype=_DTYPE)  # (B, F)
    x_r = torch.as_tensor(c.features_right - x_mean if f else np.zeros((len(c), 0)), dtype=_DTYPE)  # (B, F)
    fit_home = config.fit_home and c.home is not None and bool(np.any(c.home != 0))
    home = torch.as_tensor(c.home if fit_home else np.zeros(len(c)), dtype=_DTYPE)
    has_ties = bool(np.any(c.outcome == TIE))
    fit_nu = has_ties and config.tie_model == "davidson"
    pair_nll = _PAIR_NLL["davidson" if fit_nu else "half"]
    latest = _latest_features(c, n, f, x_mean)
    theta = torch.zeros(n, dtype=_DTYPE, requires_grad=True)
    beta = torch.zeros(f, dtype=_DTYPE, requires_grad=True)
    h = torch.zeros((), dtype=_DTYPE, requires_grad=fit_home)
    log_nu = torch.tensor(math.log(0.5) if fit_nu else 0.0, dtype=_DTYPE, requires_grad=fit_nu)
    params = [p for p in (theta, beta, h, log_nu) if p.requires_grad]
    lam, kappa = config.prior_precision, config.coef_precision

    def fit_once(weight: np.ndarray, start: list[Tensor] | None = None) -> np.ndarray:
        w = torch.as_tensor(weight, dtype=_DTYPE)
        with torch.no_grad():
            for p, p0 in zip((theta, beta, h, log_nu), start or ()):
                p.copy_(p0)

        def objective() -> Tensor:
            s_l = theta[left] + x_l @ beta + h * home  # (B,)
            s_r = theta[right] + x_r @ beta  # (B,)
            nll = (w * pair_nll(s_l, s_r, outcome, log_nu)).sum()
            return nll + 0.5 * lam * theta.square().sum() + 0.5 * kappa * (beta.square().sum() + h.square())

        _lbfgs(params, objective, config.max_iter)
        with torch.no_grad():
            return (theta + torch.as_tensor(latest - x_mean) @ beta).numpy().copy()

    fit_once(base)
    point = [p.detach().clone() for p in (theta, beta, h, log_nu)]
    intervals = None
    if config.n_bootstrap:
        intervals = _bootstrap(lambda w: fit_once(w, point), base, config.n_bootstrap, config)
    theta_hat, beta_hat, h_hat, log_nu_hat = (p.numpy() for p in point)
    wins = np.bincount(c.left[c.outcome == LEFT], minlength=n) + np.bincount(c.right[c.outcome == RIGHT], minlength=n)
    losses = np.bincount(c.right[c.outcome == LEFT], minlength=n) + np.bincount(c.left[c.outcome == RIGHT], minlength=n)
    ties = np.bincount(c.left[c.outcome == TIE], minlength=n) + np.bincount(c.right[c.outcome == TIE], minlength=n)
    return Ratings(
        names=c.names, offsets=theta_hat.copy(), coef=beta_hat.copy(), feature_names=c.feature_names,
        latest_features=latest,
        feature_mean=x_mean, home_advantage=float(h_hat), nu=float(np.exp(log_nu_hat)) if fit_nu else 0.0,
        wins=wins, losses=losses, ties=ties, config=config, intervals=intervals,
    )


def _latest_features(c: Comparisons, n: int, f: int, default: np.ndarray) -> np.ndarray:
    """``(N, F)`` each item's covariates at its most recent comparison (by time, else by row);
    ``default`` for an item without comparisons."""
    latest = np.tile(default, (n, 1))
    if not f:
        return latest
    order = np.argsort(c.time, kind="stable") if c.time is not None else np.arange(len(c))
    items = np.stack([c.left[order], c.right[order]], axis=1).ravel()  # (2B,) in time order
    feats = np.stack([c.features_left[order], c.features_right[order]], axis=1).reshape(-1, f)  # (2B, F)
    seen, last_from_end = np.unique(items[::-1], return_index=True)
    latest[seen] = feats[::-1][last_from_end]
    return latest


def fit_plackett_luce(rankings: Rankings, config: RankConfig = RankConfig()) -> Ratings:
    """Fit item strengths to multi-way rankings by MAP under Plackett-Luce.

    ``P[ranking] = Π_k exp(θ_(k)) / Σ_{j≥k} exp(θ_(j))`` (Plackett 1975; Luce 1959), via
    :func:`rlhfkit.choice.plackett_luce_nll`, with the Gaussian prior and recency weights of
    :func:`fit_bradley_terry`. A list of two items is a Bradley-Terry comparison.

    Args:
        rankings: ``R`` lists of up to ``K`` of ``N`` items, best first.
        config: see :class:`RankConfig` (ties and home do not apply).

    Returns:
        :class:`Ratings`; ``wins[i]`` counts the items ranked below ``i`` over all lists.

    Raises:
        ValueError: if there are no rankings, or ``half_life`` is set but ``time`` is not.
    """
    r = rankings
    if len(r) == 0:
        raise ValueError("no rankings to fit")
    if config.half_life is not None and r.time is None:
        raise ValueError("half_life needs the rankings' time (days)")
    n = len(r.names)
    base = np.ones(len(r)) if r.weight is None else r.weight.copy()
    if r.time is not None:
        base *= recency_weights(r.time, config.half_life)
    mask = torch.as_tensor(r.items >= 0)  # (R, K)
    items = torch.as_tensor(np.maximum(r.items, 0))  # (R, K)
    theta = torch.zeros(n, dtype=_DTYPE, requires_grad=True)
    lam = config.prior_precision

    def fit_once(weight: np.ndarray, start: Tensor | None = None) -> np.ndarray:
        w = torch.as_tensor(weight, dtype=_DTYPE)
        if start is not None:
            with torch.no_grad():
                theta.copy_(start)

        def objective() -> Tensor:
            nll = plackett_luce_nll(theta[items], mask)  # (R,)
            return (w * nll).sum() + 0.5 * lam * theta.square().sum()

        _lbfgs([theta], objective, config.max_iter)
        return theta.detach().numpy().copy()

    point = fit_once(base)
    start = torch.as_tensor(point)
    intervals = _bootstrap(lambda w: fit_once(w, start), base, config.n_bootstrap, config) if config.n_bootstrap else None
    wins, losses = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    for row in r.items:
        real = row[row >= 0]
        k = len(real)
        wins[real] += k - 1 - np.arange(k)
        losses[real] += np.arange(k)
    return Ratings(
        names=r.names, offsets=point, coef=np.zeros(0), feature_names=(), latest_features=np.zeros((n, 0)),
        feature_mean=np.zeros(0), home_advantage=0.0, nu=0.0, wins=wins, losses=losses,
        ties=np.zeros(n, dtype=np.int64), config=config, intervals=intervals,
    )


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


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------


def plot_strengths(ratings: Ratings, path: str | Path, *, top: int = 30) -> None:
    """Save a chart of the ``top`` strongest items' strengths (log-odds), with their bootstrap
    intervals as error bars when ``ratings.intervals`` is set. Writes a PNG (or any format
    matplotlib infers from ``path``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = ratings.order()[: max(top, 1)]
    s = ratings.strengths[idx]
    y = np.arange(len(idx))[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(idx) + 1.2))
    if ratings.intervals is not None:
        lo, hi = ratings.intervals[idx, 0], ratings.intervals[idx, 1]
        ax.errorbar(s, y, xerr=[np.maximum(s - lo, 0), np.maximum(hi - s, 0)], fmt="o", capsize=2)
    else:
        ax.plot(s, y, "o")
    ax.set_yticks(y, [ratings.names[i] for i in idx], fontsize=8)
    ax.set_xlabel("strength (log-odds)" + (f", {ratings.config.level:.0%} bootstrap interval" if ratings.intervals is not None else ""))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_head_to_head(ratings: Ratings, path: str | Path, *, top: int = 10) -> None:
    """Save a heatmap of ``P[row beats column]`` among the ``top`` strongest items (neutral
    venue, latest covariates), from :meth:`Ratings.predict_proba`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = ratings.order()[: max(top, 2)]
    names = [ratings.names[i] for i in idx]
    k = len(names)
    a = [names[i] for i in range(k) for _ in range(k)]
    b = [names[j] for _ in range(k) for j in range(k)]
    p = ratings.predict_proba(a, b).reshape(k, k)  # (K, K)
    np.fill_diagonal(p, np.nan)
    fig, ax = plt.subplots(figsize=(0.55 * k + 2.5, 0.55 * k + 1.5))
    im = ax.imshow(p, cmap="RdBu", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if i != j:
                ax.text(j, i, f"{p[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("opponent")
    fig.colorbar(im, ax=ax, label="P[row beats column]")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
