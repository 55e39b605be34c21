"""Learning-curve plot of a run: true return vs env steps, labels on a second axis."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rlhfkit.control.checkpoint import RunDir  # noqa: E402

__all__ = ["plot_learning_curve"]


def plot_learning_curve(run: str | Path, out_png: str | Path, *, baseline: str | Path | None = None) -> Path:
    """Plot the mean true return of each iteration's rollout episodes against env steps.

    Labels used are drawn on a second y-axis; a baseline run (PPO on the true reward) is drawn
    if given. The learned return is left out: it lives on the reward model's own scale.

    Returns:
        The path of the written PNG.
    """
    rows = [r for r in RunDir(run).read_metrics() if r.get("true_return") is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["env_steps"] for r in rows], [r["true_return"] for r in rows], label="preferences (true return)",
            color="tab:blue")
    if baseline is not None:
        base = [r for r in RunDir(baseline).read_metrics() if r.get("true_return") is not None]
        ax.plot([r["env_steps"] for r in base], [r["true_return"] for r in base], label="PPO on true reward",
                color="tab:gray", linestyle="--")
    ax.set_xlabel("env steps")
    ax.set_ylabel("mean true episode return (training rollouts)")
    ax2 = ax.twinx()
    ax2.step([r["env_steps"] for r in rows], [r["labels"] for r in rows], where="post", color="tab:orange",
             alpha=0.6, label="labels used")
    ax2.set_ylabel("labels used", color="tab:orange")
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [l.get_label() for l in lines], loc="lower right")
    ax.set_title(Path(run).name)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
