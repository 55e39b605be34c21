"""Plots of fitted strengths: a leaderboard chart and a head-to-head heatmap."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rlhfkit.rank.ratings import Ratings


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------


def plot_strengths(ratings: Ratings, path: str | Path, *, top: int = 30, title: str | None = None) -> None:
    """Save a chart of the ``top`` strongest items' strengths (log-odds), with their bootstrap
    intervals as error bars when ``ratings.intervals`` is set. Writes a PNG (or any format
    matplotlib infers from ``path``); ``title`` says what was fitted (default: the model and
    the number of items)."""
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
    ax.set_title(title or f"{_model(ratings)}: top {len(idx)} of {len(ratings.names)} items", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_head_to_head(ratings: Ratings, path: str | Path, *, top: int = 10, title: str | None = None) -> None:
    """Save a heatmap of ``P[row beats column]`` among the ``top`` strongest items (neutral
    venue, latest covariates), from :meth:`Ratings.predict_proba`; ``title`` says what was fitted."""
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
    ax.set_title(title or f"{_model(ratings)}: P[row beats column], top {k}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _model(ratings: Ratings) -> str:
    return "Davidson (ties)" if ratings.nu else "Bradley-Terry / Plackett-Luce"
