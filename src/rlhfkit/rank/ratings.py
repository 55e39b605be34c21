"""Fitted strengths and what they predict (see :mod:`rlhfkit.rank`)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from rlhfkit.choice import davidson_logprobs
from rlhfkit.rank.records import RankDataError, RankConfig


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
