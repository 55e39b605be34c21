"""Learning-curve plot of a run: true return vs env steps, labels on a second axis."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rlhfkit.control.checkpoint import RunDir  # noqa: E402

__all__ = ["plot_learning_curve"]


def plot_learning_curve(run: str | Path, out_png: str | Path, *, baseline: str | Path | None = None) -> Path:
    """Plot the mean true return of each iteration's rollout episodes against env steps.

    Labels used are drawn on a second y-axis; a baseline run (PPO on the true reward) is drawn
    if given. The learned return is left out: it lives on the reward model's own scale. A run of
    PPO on the true reward (``rlhf control baseline``: no labels) is drawn as such, without the
    labels axis. The title says what ran (env, labels and teacher, env steps, seed).

    Returns:
        The path of the written PNG.
    """
    run_dir = RunDir(run)
    rows = [r for r in run_dir.read_metrics() if r.get("true_return") is not None]
    config = json.loads(run_dir.config_path.read_text()) if run_dir.config_path.is_file() else {}
    is_baseline = bool(rows) and all(r.get("labels", 0) == 0 for r in rows)
    learner = "SAC" if config.get("algo") == "pebble" else "PPO"
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["env_steps"] for r in rows], [r["true_return"] for r in rows],
            label=f"{learner} on the true reward" if is_baseline else
            f"from preferences ({'PEBBLE' if learner == 'SAC' else 'PPO'}; true return)", color="tab:blue")
    if baseline is not None:
        base_dir = RunDir(baseline)
        base = [r for r in base_dir.read_metrics() if r.get("true_return") is not None]
        base_cfg = json.loads(base_dir.config_path.read_text()) if base_dir.config_path.is_file() else {}
        ax.plot([r["env_steps"] for r in base], [r["true_return"] for r in base],
                label=f"{'SAC' if base_cfg.get('algo') == 'pebble' else 'PPO'} on the true reward",
                color="tab:gray", linestyle="--")
    ax.set_xlabel("env steps")
    ax.set_ylabel("mean true episode return (training rollouts)")
    lines = ax.get_legend_handles_labels()[0]
    if not is_baseline:
        ax2 = ax.twinx()
        ax2.step([r["env_steps"] for r in rows], [r["labels"] for r in rows], where="post", color="tab:orange",
                 alpha=0.6, label="labels used")
        ax2.set_ylabel("labels used", color="tab:orange")
        lines += ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [line.get_label() for line in lines], loc="lower right")
    env, seed = config.get("env_id", "?"), config.get("seed", "?")
    steps = rows[-1]["env_steps"] if rows else config.get("total_steps", "?")
    what = (f"{learner} on the true reward" if is_baseline else
            f"{rows[-1]['labels'] if rows else config.get('total_labels', '?')} {config.get('teacher', '?')} labels")
    ax.set_title(f"{env}: {what}, {steps} env steps, seed {seed}\n{Path(run).name}", fontsize=10)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
