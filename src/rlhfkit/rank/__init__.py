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


from rlhfkit.rank.data import covariate_features, read_comparisons, read_rankings
from rlhfkit.rank.fit import fit_bradley_terry, fit_plackett_luce, recency_weights
from rlhfkit.rank.plots import plot_head_to_head, plot_strengths
from rlhfkit.rank.ratings import Ratings
from rlhfkit.rank.records import Comparisons, RankConfig, RankDataError, Rankings
from rlhfkit.rank.simulate import simulate_season, spearman

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
