"""Benchmark: deep RL from preferences, rlhfkit vs the `imitation` library, side by side.

For each env and seed it prints labels, env steps, mean true return of the final policy (10
evaluation episodes, deterministic), the true-reward PPO baseline at the same step budget, wall
seconds and env steps per wall second. On Pendulum-v1 it also runs imitation's documented
preference-comparisons example with its tuned setting (200 comparisons, 50k steps, 60
iterations) in its own virtual environment (bench/.venv-imitation, made by
bench/peers/setup_imitation.sh: imitation pins gymnasium 0.29 and stable-baselines3 2.2, so it
never enters the project's environment). Runs are sequential, so both share the same machine.

    .venv/bin/python bench/control.py                       # everything, 3 seeds
    .venv/bin/python bench/control.py --envs Pendulum-v1 --seeds 0 --no-peer
    .venv/bin/python bench/control.py --algos pebble --envs Pendulum-v1   # PEBBLE (SAC) and true-reward SAC
    .venv/bin/python bench/control.py --envs rlhfkit/CartPoleCos-v0 --labels 30 --steps 196608 --tag=-30
    .venv/bin/python bench/control.py --algos pebble --envs HalfCheetah-v5 --no-peer \
        --set sac.hidden_sizes=128,128 --set sac.updates_per_step=0.5      # 100k steps, ~10 min per run per core

``--algos ppo,pebble`` picks the learners: PPO (Christiano et al. 2017) and PEBBLE (Lee et al. 2021),
each next to its own learner on the true reward (PPO or SAC) at the same step budget.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rlhfkit.control import CARTPOLE_COS_ID, make_config, train, train_baseline
from rlhfkit.control.config import apply_overrides

HERE = Path(__file__).resolve().parent
LABELS = {"Pendulum-v1": 200, CARTPOLE_COS_ID: 100}
STEPS = {"Pendulum-v1": 50_000, CARTPOLE_COS_ID: 50_000, "HalfCheetah-v5": 100_000}


def _who(algo: str) -> str:
    return "rlhfkit" if algo == "ppo" else f"rlhfkit {algo}"


def run_ours(env: str, seed: int, out: Path, algo: str = "ppo", sets: list[str] = (), tag: str = "") -> dict:
    cfg = make_config(env, algo=algo, total_labels=LABELS.get(env, 200), total_steps=STEPS.get(env, 50_000),
                      seed=seed)
    cfg = apply_overrides(cfg, list(sets))
    t = time.perf_counter()
    r = train(cfg, str(out / f"{env.replace('/', '_')}-{algo}{tag}-s{seed}"))
    wall = time.perf_counter() - t
    return {"who": _who(algo) + tag, "env": env, "seed": seed, "labels": r.labels, "env_steps": r.env_steps,
            "mean_true_return": r.mean_return, "wall_s": wall, "steps_per_s": r.env_steps / wall}


def run_baseline(env: str, seed: int, out: Path, algo: str = "ppo", sets: list[str] = ()) -> dict:
    """The true-reward learner; of ``sets`` only the learner's own settings (``ppo.*``, ``sac.*``, ``horizon``)
    apply, so that it trains like the preference run it is compared with."""
    cfg = make_config(env, algo=algo, total_steps=STEPS.get(env, 50_000), seed=seed)
    cfg = apply_overrides(cfg, [x for x in sets if x.startswith(("ppo.", "sac.", "horizon=", "termination="))])
    t = time.perf_counter()
    r = train_baseline(cfg, str(out / f"{env.replace('/', '_')}-{algo}-baseline-s{seed}"))
    wall = time.perf_counter() - t
    learner = "SAC" if algo == "pebble" else "PPO"
    return {"who": f"{learner} true reward", "env": env, "seed": seed, "labels": 0, "env_steps": r.env_steps,
            "mean_true_return": r.mean_return, "wall_s": wall, "steps_per_s": r.env_steps / wall}


def run_imitation(seed: int, out: Path) -> dict | None:
    venv = HERE / ".venv-imitation"
    if not (venv / "bin" / "python").exists():
        print("setting up the imitation peer environment (bench/peers/setup_imitation.sh) ...", flush=True)
        subprocess.run(["bash", str(HERE / "peers" / "setup_imitation.sh")], check=True)
    js = out / f"imitation-s{seed}.json"
    cmd = [str(venv / "bin" / "python"), str(HERE / "peers" / "imitation_pendulum.py"), "--seed", str(seed),
           "--json", str(js)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"imitation peer failed (seed {seed}):\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    rec = json.loads(js.read_text().strip().splitlines()[-1])
    rec = rec[0] if isinstance(rec, list) else rec
    return {"who": f"imitation {rec.get('version', '')}".strip(), "env": "Pendulum-v1", "seed": seed,
            "labels": rec["labels"], "env_steps": rec["env_steps"], "mean_true_return": rec["mean_true_return"],
            "wall_s": rec["wall_s"], "steps_per_s": rec["env_steps"] / rec["wall_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", nargs="+", default=["Pendulum-v1", CARTPOLE_COS_ID])
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    ap.add_argument("--no-peer", action="store_true", help="skip the imitation peer")
    ap.add_argument("--no-baseline", action="store_true", help="skip the true-reward PPO baseline")
    ap.add_argument("--no-ours", action="store_true", help="run only the baselines (and peer)")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "control")
    ap.add_argument("--algos", default="ppo", help="comma-separated learners: ppo, pebble")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="a config override KEY=VALUE for our "
                    "learners (repeatable), e.g. pebble.qpa=true")
    ap.add_argument("--tag", default="", help="suffix of our rows' name and run directories (for --set variants)")
    ap.add_argument("--labels", type=int, default=None, help="label budget for every env (default: per env, "
                    f"{LABELS})")
    ap.add_argument("--steps", type=int, default=None, help="env-step budget of every run, baselines included "
                    f"(default: per env, {STEPS})")
    args = ap.parse_args()
    for env in args.envs:
        if args.labels is not None:
            LABELS[env] = args.labels
        if args.steps is not None:
            STEPS[env] = args.steps
    algos = [a for a in args.algos.split(",") if a]
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    header = f"{'who':<22} {'env':<24} {'seed':>4} {'labels':>6} {'env steps':>9} {'true return':>11} {'wall s':>7} {'steps/s':>8}"
    print(header, flush=True)

    def show(r: dict | None) -> None:
        if r is None:
            return
        rows.append(r)
        print(f"{r['who']:<22} {r['env']:<24} {r['seed']:>4} {r['labels']:>6} {r['env_steps']:>9} "
              f"{r['mean_true_return']:>11.1f} {r['wall_s']:>7.1f} {r['steps_per_s']:>8.0f}", flush=True)

    for env in args.envs:
        for seed in args.seeds:
            for algo in algos:
                if algo == "pebble" and env == CARTPOLE_COS_ID:
                    continue  # discrete actions: SAC here is continuous; CartPoleCos stays with PPO
                if not args.no_ours:
                    show(run_ours(env, seed, args.out, algo, args.sets, args.tag))
                if not args.no_baseline:
                    show(run_baseline(env, seed, args.out, algo, args.sets))
            if env == "Pendulum-v1" and not args.no_peer:
                show(run_imitation(seed, args.out))
    print("\nsummary (mean over seeds)")
    for (who, env) in dict.fromkeys((r["who"], r["env"]) for r in rows):
        rs = [r for r in rows if r["who"] == who and r["env"] == env]
        print(f"{who:<22} {env:<24} true return {np.mean([r['mean_true_return'] for r in rs]):8.1f}   "
              f"wall {np.mean([r['wall_s'] for r in rs]):6.1f} s   over {len(rs)} seed(s)")
    for env in args.envs:
        for algo in algos:
            who, learner = _who(algo) + args.tag, "SAC" if algo == "pebble" else "PPO"
            ours = [r for r in rows if r["who"] == who and r["env"] == env]
            base = [r for r in rows if r["who"] == f"{learner} true reward" and r["env"] == env]
            peer = [r for r in rows if r["who"].startswith("imitation") and r["env"] == env]
            if ours and base:
                o, b = np.mean([r["mean_true_return"] for r in ours]), np.mean([r["mean_true_return"] for r in base])
                if b > 0:
                    print(f"{env}: {who} / true-reward {learner} return ratio {o / b:.3f}")
                else:  # a ratio of negative returns reads backwards: give the difference
                    print(f"{env}: {who} minus true-reward {learner} return {o - b:+.1f}")
                print(f"{env}: {who} env steps/s {np.mean([r['steps_per_s'] for r in ours]):.0f} vs true-reward "
                      f"{learner} {np.mean([r['steps_per_s'] for r in base]):.0f}")
            if ours and peer:
                print(f"{env}: {who} wall time / imitation wall time "
                      f"{np.mean([r['wall_s'] for r in ours]) / np.mean([r['wall_s'] for r in peer]):.2f}")
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
