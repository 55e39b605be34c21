"""Comparison and ranking records, the fit's configuration, and the data error (see :mod:`rlhfkit.rank`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rlhfkit.choice import LEFT, TIE


TIE_MODELS = ("davidson", "half")
"""How a tie is modelled: Davidson's ν, or half a win and half a loss."""


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
        if self.tie_model not in TIE_MODELS:
            raise ValueError(f"tie_model must be one of {sorted(TIE_MODELS)}, got {self.tie_model!r}")
        if not self.coef_precision > 0:
            raise ValueError(f"coef_precision must be > 0, got {self.coef_precision}")
        if self.n_bootstrap < 0:
            raise ValueError(f"n_bootstrap must be >= 0, got {self.n_bootstrap}")
        if not 0 < self.level < 1:
            raise ValueError(f"level must be in (0, 1), got {self.level}")
