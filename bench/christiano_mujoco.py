"""Benchmark: Christiano et al. (2017) on MuJoCo, the PPO loop from 350, 700 and 1,400 labels vs PPO on the true reward.

For HalfCheetah-v5 and Hopper-v5, each label budget and each seed it trains the preference loop
(:func:`rlhfkit.control.train`, oracle teacher) and, per env and seed, PPO on the true reward with
the same PPO settings and step budget (:func:`rlhfkit.control.train_baseline`). It prints labels,
env steps, the mean true return of the final policy (10 deterministic evaluation episodes), wall
seconds and env steps per wall second of every run; then, per env and label count, the mean true
return over seeds, the true-reward PPO mean and their ratio, with PASS/FAIL for the issue-15 target
(ratio >= 0.95 with 700 labels on both envs). The paper: 700 labels "nearly match" RL on the true
reward and 1,400 slightly beat it.

The ratio is ``mean return from preferences / mean return of true-reward PPO`` (means over seeds).
With 3 or more seeds on both sides it is followed by a 95% paired-bootstrap interval over seeds
(:func:`ratio_interval`): how far seed noise alone moves the ratio (HalfCheetah PPO is bimodal, some
seeds near 3,000 and most near 1,500, so its intervals are wide).
HalfCheetah and Hopper returns are positive once PPO has learned anything; when the true-reward
mean is <= 0 (a budget too small to learn) a ratio reads backwards, so the difference
``preferences - true reward`` is printed instead and the target counts as FAIL.

Settings from Christiano et al. 2017 (§2.2 and Appendix A.1, the simulated robotics tasks):

- trajectory fragments of 1.5 s of simulated time: ``round(1.5 / env.unwrapped.dt)`` steps,
  HalfCheetah 0.05 s → 30 steps, Hopper 0.008 s → 188 steps (the paper quotes 15-60 steps for its
  tasks; the loop accepts fragments up to PPO's ``n_steps`` = 512 per env, so both fit; a longer
  one would be cut to ``n_steps`` with a note);
- 25% of the labels asked on rollouts of the initial (random) policy before any policy training
  (``initial_label_frac=0.25``);
- the label rate after that ∝ T₀ / (T + T₀) in env steps T (``label_decay_steps`` = T₀);
- an ensemble of 3 reward predictors (two hidden layers of 64, leaky ReLU), each on a bootstrap
  resample of the labels, their outputs normalised and averaged;
- queries picked by ensemble disagreement (variance of P[σ¹ ≻ σ²] across members) among 10× as
  many random candidate pairs (``query_selection="disagreement"``, ``oversample=10``);
- the Bradley-Terry likelihood with a 10% noise floor, P = 0.9·σ(ΔR̂) + 0.05 (``reward.epsilon=0.1``);
- no early termination (§3.1 and App. A.1: "We replaced these termination conditions by a penalty which
  encourages the parameters to remain in the range (and which the agent must learn)"): Hopper runs fixed
  1,000-step episodes made with ``terminate_when_unhealthy=False`` (its preset ``termination="penalty"``): after
  a fall the robot keeps moving and Hopper-v5's healthy bonus of 1 per step is lost; HalfCheetah never
  terminates. Both sides of the comparison train and are evaluated on that task; each Hopper row also gives
  the same policy's return on the standard task (the episode ends at the fall), "standard task". An earlier
  version kept the termination and sat the fallen robot in an absorbing state (last observation repeated,
  reward 0): r̂ still scored the actions taken there and the preference policy learned to fall at once and
  pick the actions r̂ liked in the frozen pose (700 labels: -2.1, bench/results/christiano_mujoco.txt).
  ``--set termination=height --tag=-height`` runs Hopper as rl-teacher builds it (OpenAI's release of the
  method, ``rl_teacher/envs.py``): the same episodes, the reward forward speed plus torso height, no torque
  cost and no healthy bonus (:class:`rlhfkit.control.envs.HeightReward`), baseline included;
- a synthetic oracle teacher that prefers the fragment with the larger true return.

What differs from the paper (Appendix A.1, checked against its text on 2026-12-03):

- the learner is PPO (the library's PPO loop; the paper used TRPO on MuJoCo), with the preset's
  settings: 4 envs × 512 steps, 10 epochs, lr 3e-4, γ 0.99, λ 0.95, no entropy bonus. The paper's
  TRPO used γ 0.995, λ 0.97 and, "when learning from the reward predictor", an entropy bonus of 0.01
  ("this entropy bonus helps to incentivize the increased exploration needed to deal with a changing
  reward function"). Measured with ``--set ppo.ent_coef=0.01 --tag=-ent`` (preferences only, 700
  labels, seeds 0-4): Hopper 452.1 / 1,968.9 / 2,529.7 / 1,713.4 / 2,061.0, mean 1,745.0 against
  1,745.6 without it — it changes which seeds get stuck, not how many; HalfCheetah seeds 0, 1, 3:
  1,420.5 / 1,466.7 / 1,651.6 (mean 1,512.9) against 1,162.2 / 1,555.0 / 1,848.7 (1,522.0). Not pinned;
- the paper removed the control (torque) costs from the reward ("torques are not directly visible
  to a human supervisor"); here both the oracle and true-reward PPO keep gymnasium's reward with its
  control cost (HalfCheetah 0.1·|a|², Hopper 0.001·|a|²);
- the paper quotes 15-60 steps for 1.5 s segments; 1.5 s of Hopper-v5 (dt 0.008 s) is 188 steps;
- the step budget (below) is far smaller than the paper's, and T₀ scales with it: the library's
  default T₀ = budget / 4 (the paper's rate 2·10⁶ / (T + 2·10⁶) would stay almost flat over 500k
  steps; ``--set label_decay_steps=2000000`` uses it anyway);
- labels are asked every ``label_every`` PPO iterations (the presets: HalfCheetah 8, 16,384 env steps;
  Hopper 16; ``--set label_every=1`` for every iteration) on that iteration's rollout, the decaying schedule's labels of the block at once,
  and the reward ensemble is refitted after each session with a 20% validation split and early stopping,
  fixed weight decay 1e-4; the paper trained the predictor asynchronously, held out 1/e of the
  labels and tuned the L2 weight to keep validation loss at 1.1-1.5× training loss (§2.2.3).

Budget: ``--steps`` 500,000 env steps per run by default (PPO on the true reward is still rising
there on both tasks; the usual PPO MuJoCo budget is 1M). Measured here, one torch thread, under
``nice -n 19`` on 2 busy cores: about 1,200 env steps/s of training for either env and either
loop (HalfCheetah 1,236 true-reward / 1,241 preferences; Hopper 1,202), so a run's env stepping
and PPO take about 7 min plus 3-5 s of evaluation. The refits add the rest and grow with the labels
held: one 50-epoch-capped fit of 1,400 labels took 4 s on HalfCheetah (30-step fragments) and 31 s
on Hopper (188-step fragments); with a session every PPO iteration that was 243 refits per run, hence
``label_every`` = 8 (31 refits) and, for Hopper, 16 (15 refits; the estimates that follow were made for one
session per iteration). Estimated wall time per seed: HalfCheetah ~50-60 min (4 runs), Hopper
~2 h 20 min (the 1,400-label run alone ~1 h 15 min); all 24 runs ~10 h in one process, ~5 h in two
(one core each, e.g. ``--envs Hopper-v5 --seeds 0,1`` beside ``--envs Hopper-v5 --seeds 2`` followed
by ``--envs HalfCheetah-v5``). Every row is appended to ``OUT/results.jsonl`` as it finishes, and
``--report`` reads that file and prints the combined summary and curves without training;
``--report --rows bench/results/christiano_mujoco_rows.jsonl`` adds the rows kept in the repository
(append a session's ``results.jsonl`` there before the machine goes: ``bench/out`` is scratch).

    .venv/bin/python bench/christiano_mujoco.py                                # everything, 3 seeds
    .venv/bin/python bench/christiano_mujoco.py --envs Hopper-v5 --seeds 0     # one slice
    .venv/bin/python bench/christiano_mujoco.py --report                       # summary of what ran
    .venv/bin/python bench/christiano_mujoco.py --envs HalfCheetah-v5 --labels 20 --seeds 0 --steps 4096  # smoke

Outputs under ``--out`` (default bench/out/christiano_mujoco): one run directory per run
(config.json, metrics.jsonl, summary.json, checkpoint, and curve.png of each preference run next
to its true-reward run), ``results.jsonl`` (all rows, appended), ``curves-ENV-STEPS.png`` (true
return of the training rollouts vs env steps, mean over seeds per label count and of true-reward
PPO, labels used on a second axis) and ``report.txt`` (the last summary).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from rlhfkit.control import make_config, make_env, train, train_baseline
from rlhfkit.control.checkpoint import RunDir
from rlhfkit.control.config import TrainConfig, apply_overrides
from rlhfkit.control.plots import plot_learning_curve

HERE = Path(__file__).resolve().parent
# every row measured so far, kept in the repository (bench/out is scratch and goes with the machine); rows of the
# sessions before this file existed are transcribed from christiano_mujoco.txt, without run directories or curves
KEPT = HERE / "results" / "christiano_mujoco_rows.jsonl"
ENVS = ["HalfCheetah-v5", "Hopper-v5"]
LABELS = [350, 700, 1400]
STEPS = 500_000
FRAGMENT_SECONDS = 1.5
TARGET_LABELS, TARGET_RATIO = 700, 0.95
PREF, BASE = "preferences", "PPO true reward"
# --set keys that change the learner itself, so the true-reward baseline takes them too
LEARNER_KEYS = ("ppo.", "horizon=", "termination=")




def fragment_steps(env_id: str, n_steps: int) -> tuple[int, str]:
    """Steps in 1.5 s of simulated time (``env.unwrapped.dt``), capped by PPO's ``n_steps``; and a note if capped."""
    env = make_env(env_id)
    dt = float(env.unwrapped.dt)
    env.close()
    k = max(1, round(FRAGMENT_SECONDS / dt))
    if k > n_steps:
        return n_steps, (f"{env_id}: 1.5 s is {k} steps (dt {dt} s), longer than n_steps={n_steps}: "
                         f"fragments of {n_steps}")
    return k, ""


def base_config(env_id: str, steps: int, seed: int, sets: list[str]) -> TrainConfig:
    """The preset with the paper's settings pinned (module docstring) and ``--set`` overrides."""
    cfg = make_config(env_id, total_steps=steps, seed=seed, teacher="oracle", initial_label_frac=0.25,
                      query_selection="disagreement", oversample=10)
    cfg = apply_overrides(cfg, ["reward.ensemble_size=3", "reward.epsilon=0.1"])
    return apply_overrides(cfg, list(sets))


def _progress(name: str, total: int):
    mark = {"next": 0.25}

    def cb(rec: dict) -> None:
        if rec.get("env_steps", 0) >= mark["next"] * total:
            tr = rec.get("true_return")
            print(f"  … {name}: {rec['env_steps']:>8} steps, {rec.get('labels', 0):>4} labels, rollout true return "
                  f"{'-' if tr is None else f'{tr:.0f}'}, {rec.get('wall_s', 0):.0f} s", flush=True)
            while mark["next"] * total <= rec.get("env_steps", 0):
                mark["next"] += 0.25
    return cb


def run_pref(env_id: str, labels: int, seed: int, args: argparse.Namespace) -> dict:
    cfg = base_config(env_id, args.steps, seed, args.sets)
    frag, note = fragment_steps(env_id, cfg.ppo.n_steps)
    if note:
        print(note, flush=True)
    if not any(s.startswith("fragment_length=") for s in args.sets):
        cfg = apply_overrides(cfg, [f"fragment_length={frag}"])
    cfg = apply_overrides(cfg, [f"total_labels={labels}"])
    out = args.out / f"{env_id}-{args.steps}-pref{labels}{args.tag}-s{seed}"
    t = time.perf_counter()
    r = train(cfg, str(out), on_iteration=_progress(out.name, cfg.steps_run))
    wall = time.perf_counter() - t
    return _row(PREF, cfg, r, wall, out, args.tag, args.sets)


def run_base(env_id: str, seed: int, args: argparse.Namespace) -> dict:
    sets = [s for s in args.sets if s.startswith(LEARNER_KEYS)]
    tag = args.tag if sets else ""
    cfg = base_config(env_id, args.steps, seed, sets)
    out = args.out / f"{env_id}-{args.steps}-ppo-true{tag}-s{seed}"
    t = time.perf_counter()
    r = train_baseline(cfg, str(out), on_iteration=_progress(out.name, cfg.steps_run))
    wall = time.perf_counter() - t
    return _row(BASE, cfg, r, wall, out, tag, sets)


def _row(who: str, cfg: TrainConfig, r, wall: float, out: Path, tag: str, sets: list[str]) -> dict:
    return {"who": who, "env": cfg.env_id, "seed": cfg.seed, "steps": cfg.total_steps, "tag": tag,
            "labels": r.labels, "label_budget": cfg.total_labels if who == PREF else 0,
            "fragment_length": cfg.fragment_length if who == PREF else None, "env_steps": r.env_steps,
            "mean_true_return": r.mean_return, "std_true_return": float(np.std(r.eval_returns)),
            "mean_standard_return": float(np.mean(r.standard_returns)) if r.standard_returns else None,
            "wall_s": wall, "steps_per_s": r.env_steps / wall, "run_dir": str(out.resolve()), "sets": list(sets),
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}


HEADER = (f"{'who':<16} {'env':<15} {'steps':>7} {'seed':>4} {'labels':>6} {'frag':>4} {'env steps':>9} "
          f"{'true return':>11} {'wall s':>7} {'steps/s':>7}")


def fmt_row(r: dict) -> str:
    who = r["who"] + (r["tag"] or "")
    frag = r.get("fragment_length") or "-"
    return (f"{who:<16} {r['env']:<15} {r['steps']:>7} {r['seed']:>4} {r['labels']:>6} {frag:>4} {r['env_steps']:>9} "
            f"{r['mean_true_return']:>11.1f} {r['wall_s']:>7.0f} {r['steps_per_s']:>7.0f}"
            + (f"   standard task {r['mean_standard_return']:.1f}" if r.get("mean_standard_return") is not None else ""))


def merge_rows(*row_lists: list[dict]) -> list[dict]:
    """Rows of several files, a later list's row replacing an earlier one with the same (who, env, steps, tag,
    label budget, seed)."""
    latest: dict[tuple, dict] = {}
    for rows in row_lists:
        for r in rows:
            latest[(r["who"], r["env"], r["steps"], r["tag"], r["label_budget"], r["seed"])] = r
    return list(latest.values())


def read_rows(path: Path) -> list[dict]:
    """Rows of ``results.jsonl``; a rerun of the same (who, env, steps, tag, label budget, seed) replaces the
    older row."""
    if not path.is_file():
        return []
    return merge_rows([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def _mean(rows: list[dict], key: str = "mean_true_return") -> float:
    return float(np.mean([r[key] for r in rows]))


def ratio_interval(ours: list[float], base: list[float], level: float = 0.95, n_boot: int = 10_000,
                   seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``mean(ours) / mean(base)`` by the paired bootstrap over seeds.

    ``ours[i]`` and ``base[i]`` are the returns of the same seed (preferences, true reward); seeds are resampled
    with replacement ``n_boot`` times (Efron & Tibshirani 1993, ch. 13, percentile interval). With 5-10 seeds
    this says how far seed noise alone could move the ratio; it is not a significance test. Raises ValueError
    for unequal or empty lists.
    """
    if not ours or len(ours) != len(base):
        raise ValueError(f"paired returns needed: {len(ours)} preference vs {len(base)} true-reward seeds")
    o, b = np.asarray(ours, dtype=float), np.asarray(base, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(o), size=(n_boot, len(o)))
    ratios = o[idx].mean(1) / b[idx].mean(1)
    alpha = (1.0 - level) / 2
    return float(np.quantile(ratios, alpha)), float(np.quantile(ratios, 1 - alpha))


def summary(rows: list[dict]) -> list[str]:
    """The per-env, per-label-count summary and the verdict on the 700-label target."""
    lines = ["", "per-run rows", HEADER]
    order = sorted(rows, key=lambda r: (r["env"], r["steps"], r["tag"], r["who"] != BASE, r["label_budget"], r["seed"]))
    lines += [fmt_row(r) for r in order]
    lines += ["", "summary (means over seeds; ratio = preferences / true-reward PPO)"]
    verdicts: dict[str, str] = {}
    groups = dict.fromkeys((r["env"], r["steps"], r["tag"]) for r in rows if r["who"] == PREF)
    for env, steps, tag in groups:
        base = [r for r in rows if r["who"] == BASE and r["env"] == env and r["steps"] == steps and r["tag"] == tag]
        if not base and tag:
            base = [r for r in rows if r["who"] == BASE and r["env"] == env and r["steps"] == steps and not r["tag"]]
        b = _mean(base) if base else None
        title = f"{env}, {steps:,} env steps" + (f", {tag}" if tag else "")
        lines.append(title + (f": true-reward PPO {b:.1f} over {len(base)} seed(s), "
                              f"{_mean(base, 'steps_per_s'):.0f} steps/s" if base else ": no true-reward PPO rows"))
        for n in sorted({r["label_budget"] for r in rows if r["who"] == PREF and (r["env"], r["steps"], r["tag"]) ==
                         (env, steps, tag)}):
            ours = [r for r in rows if r["who"] == PREF and (r["env"], r["steps"], r["tag"], r["label_budget"]) ==
                    (env, steps, tag, n)]
            o = _mean(ours)
            sd = float(np.std([r["mean_true_return"] for r in ours]))
            text = f"  {n:>5} labels: {o:8.1f} ± {sd:6.1f} over {len(ours)} seed(s)"
            # the ratio compares the same seeds: true-reward PPO's spread over seeds is as large as the gaps
            seeds = {r["seed"] for r in ours}
            matched = [r for r in base if r["seed"] in seeds]
            b = _mean(matched) if len(matched) == len(seeds) else (_mean(base) if base else None)
            if b is None:
                verdict = "no baseline"
            elif b > 0:
                ratio = o / b
                text += f"   vs {b:8.1f} ({'same seeds' if len(matched) == len(seeds) else 'all seeds'})   ratio {ratio:.3f}"
                if len(matched) == len(seeds) >= 3:  # how far seed noise alone moves the ratio
                    by_seed = {r["seed"]: r["mean_true_return"] for r in matched}
                    lo, hi = ratio_interval([r["mean_true_return"] for r in ours], [by_seed[r["seed"]] for r in ours])
                    text += f" (95% seed bootstrap {lo:.2f}-{hi:.2f})"
                verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
            else:  # a ratio of non-positive returns reads backwards: give the difference
                text += f"   vs {b:8.1f}   difference {o - b:+.1f} (true-reward mean <= 0: no ratio)"
                verdict = "FAIL"
            text += f"   {_mean(ours, 'steps_per_s'):.0f} steps/s"
            if matched and all(r.get("mean_standard_return") is not None for r in ours + matched):
                text += (f"   (standard task: {_mean(ours, 'mean_standard_return'):.1f} vs "
                         f"{_mean(matched, 'mean_standard_return'):.1f})")
            if n == TARGET_LABELS:
                text += f"   target ratio >= {TARGET_RATIO}: {verdict}"
                verdicts[f"{env} ({steps:,} steps{', ' + tag if tag else ''})"] = verdict
            lines.append(text)
    if verdicts:
        missing = [e for e in ENVS if not any(k.startswith(e + " ") for k in verdicts)]
        ok = all(v == "PASS" for v in verdicts.values()) and not missing
        lines.append("")
        lines.append(f"target ({TARGET_LABELS} labels, ratio >= {TARGET_RATIO} on both envs): "
                     + ("PASS" if ok else "FAIL") + "   ("
                     + "; ".join(f"{k}: {v}" for k, v in verdicts.items())
                     + (f"; not run: {', '.join(missing)}" if missing else "") + ")")
    return lines


def _curve(run_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(env steps, true return of the training rollouts, labels used) of one run, from its metrics.jsonl."""
    recs = RunDir(run_dir).read_metrics()
    steps = np.array([r["env_steps"] for r in recs], dtype=float)
    ret = np.array([np.nan if r.get("true_return") is None else r["true_return"] for r in recs], dtype=float)
    labels = np.array([r.get("labels", 0) for r in recs], dtype=float)
    return steps, ret, labels


def _mean_curve(run_dirs: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs on the union of their env-step grids (each run interpolated over its own finite points)."""
    curves = [c for c in (_curve(d) for d in run_dirs) if len(c[0])]
    if not curves:
        return (np.array([]),) * 4
    grid = np.unique(np.concatenate([c[0] for c in curves]))
    ys, ls = [], []
    for s, y, lab in curves:
        ok = np.isfinite(y)
        ys.append(np.interp(grid, s[ok], y[ok], left=np.nan, right=np.nan) if ok.any() else np.full(len(grid), np.nan))
        ls.append(np.interp(grid, s, lab))
    ys_a = np.array(ys)
    with warnings.catch_warnings():  # all-NaN columns (no episode finished yet) stay NaN quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        return grid, np.nanmean(ys_a, 0), np.nanstd(ys_a, 0), np.mean(ls, 0)


def plot_curves(rows: list[dict], out: Path) -> list[Path]:
    """One PNG per (env, budget, tag): mean true return vs env steps per label count and of true-reward PPO."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for env, steps, tag in dict.fromkeys((r["env"], r["steps"], r["tag"]) for r in rows if r["who"] == PREF):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        ax2 = ax.twinx()
        pref = [r for r in rows if r["who"] == PREF and (r["env"], r["steps"], r["tag"]) == (env, steps, tag)]
        base = [r for r in rows
                if r["who"] == BASE and r["env"] == env and r["steps"] == steps and r["tag"] in (tag, "")]
        if tag and any(r["tag"] == tag for r in base):
            base = [r for r in base if r["tag"] == tag]
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, n in enumerate(sorted({r["label_budget"] for r in pref})):
            dirs = [r["run_dir"] for r in pref if r["label_budget"] == n and Path(r["run_dir"]).is_dir()]
            x, y, sd, lab = _mean_curve(dirs)
            if not len(x):
                continue
            c = colors[i % len(colors)]
            ax.plot(x, y, color=c, marker="." if len(x) < 20 else None, label=f"{n} labels ({len(dirs)} seed(s))")
            ax.fill_between(x, y - sd, y + sd, color=c, alpha=0.12)
            ax2.step(x, lab, where="post", color=c, linestyle=":", alpha=0.7)
        dirs = [r["run_dir"] for r in base if Path(r["run_dir"]).is_dir()]
        x, y, sd, _ = _mean_curve(dirs)
        if len(x):
            ax.plot(x, y, color="black", linestyle="--", marker="." if len(x) < 20 else None,
                    label=f"PPO on the true reward ({len(dirs)} seed(s))")
            ax.fill_between(x, y - sd, y + sd, color="gray", alpha=0.12)
        if not ax.lines:  # rows without run directories (transcribed, or the machine's bench/out is gone)
            plt.close(fig)
            continue
        ax.set_xlabel("env steps")
        ax.set_ylabel("mean true episode return (training rollouts)")
        ax2.set_ylabel("labels used (dotted)")
        ax2.set_ylim(bottom=0)
        ax.legend(loc="upper left", fontsize=8)
        ax.set_title(f"{env}: Christiano et al. 2017 with PPO, oracle labels vs true reward, {steps:,} env steps"
                     + (f" {tag}" if tag else "") + "\nmean ± std over seeds", fontsize=10)
        fig.tight_layout()
        png = out / f"curves-{env}-{steps}{tag}.png"
        fig.savefig(png, dpi=110)
        plt.close(fig)
        written.append(png)
    return written


def report(out: Path, kept: list[Path] = ()) -> None:
    """Print and save the summary of ``kept`` rows files (e.g. bench/results/christiano_mujoco_rows.jsonl) merged
    with ``OUT/results.jsonl`` (whose rows win), and draw the curves of the runs whose directories still exist."""
    rows = merge_rows(*(read_rows(k) for k in kept), read_rows(out / "results.jsonl"))
    if not rows:
        print(f"no rows in {out / 'results.jsonl'}" + "".join(f" or {k}" for k in kept))
        return
    lines = summary(rows)
    print("\n".join(lines), flush=True)
    (out / "report.txt").write_text("\n".join(lines).lstrip("\n") + "\n")
    for png in plot_curves(rows, out):
        print(f"learning curves: {png}")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", nargs="+", default=ENVS)
    ap.add_argument("--labels", type=_ints, default=LABELS, help="comma-separated label budgets (default 350,700,1400)")
    ap.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=STEPS, help=f"env steps per run (default {STEPS:,})")
    ap.add_argument("--no-baseline", action="store_true", help="skip the true-reward PPO baseline")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="a config override KEY=VALUE "
                    "(repeatable), e.g. label_decay_steps=2000000; ppo.* and horizon also go to the baseline")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "christiano_mujoco")
    ap.add_argument("--tag", default="", help="suffix of the rows' name and run directories (for --set variants)")
    ap.add_argument("--report", action="store_true", help="only read OUT/results.jsonl and print the summary")
    ap.add_argument("--rows", type=Path, action="append", default=[],
                    help="with --report: also a kept rows file (repeatable; OUT/results.jsonl wins on the same run), "
                         f"e.g. {KEPT.relative_to(HERE.parent)}")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report:
        report(args.out, args.rows)
        return
    torch.set_num_threads(1)
    log = args.out / "results.jsonl"
    print(HEADER, flush=True)

    def keep(r: dict) -> None:
        with log.open("a") as f:
            f.write(json.dumps(r) + "\n")
        print(fmt_row(r), flush=True)

    for env in args.envs:
        for seed in args.seeds:
            base = None
            if not args.no_baseline:
                base = run_base(env, seed, args)
                keep(base)
            for n in args.labels:
                r = run_pref(env, n, seed, args)
                keep(r)
                if base is not None:
                    plot_learning_curve(r["run_dir"], Path(r["run_dir"]) / "curve.png", baseline=base["run_dir"])
    report(args.out)


if __name__ == "__main__":
    main()
