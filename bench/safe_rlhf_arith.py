"""Benchmark: Safe RLHF's PPO-Lagrangian against a fixed penalty, on a reward and a cost that conflict (issue 14).

The task is ``grpo_arith.py``'s two-digit addition from its SFT checkpoint (run ``grpo_arith.py
prepare`` first). Reward: exact match. Cost: 1 when the completion contains the digit ``7`` — a
"forbidden token" that about a fifth of the right answers need, so being right and being safe
conflict on those problems. The constraint: the mean cost of sampled completions ``≤ d``
(``--threshold``, default 0.05).

* ``lagrangian``: PPO with the cost as a second value head and the advantage ``(A_r − λ A_c)/(1 + λ)``;
  ``log λ`` rises by ``lr (J_C − d)`` each step (Dai et al. 2023, eq. 26–27), from ``--lambda-init``.
* ``fixed c``: PPO on ``reward − c · cost`` with a constant ``c`` (``--penalties``), the usual
  reward-shaping answer.

Each run trains for ``--budget`` seconds; the held-out greedy accuracy and cost rate on 500 problems
are evaluated every ``--eval-every`` seconds. Target: λ rises until the mean cost falls to ``≤ d``,
and the Lagrangian's final accuracy beats every fixed-penalty run that meets the same cost.

    .venv/bin/python bench/safe_rlhf_arith.py --budget 300
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from grpo_arith import OUT as ARITH
from grpo_arith import exact_match

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "safe_rlhf_arith"


def has_seven(prompts, completions, **columns):
    """The cost: 1.0 when the completion contains the digit 7, else 0.0."""
    return [float("7" in c) for c in completions]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--budget", type=float, default=300.0)
    p.add_argument("--eval-every", type=float, default=30.0)
    p.add_argument("--threshold", type=float, default=0.05)
    p.add_argument("--lambda-init", type=float, default=0.1)
    p.add_argument("--lambda-lr", type=float, default=1.0)
    p.add_argument("--penalties", type=float, nargs="+", default=[2.0])
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--beta", type=float, default=0.05)
    p.add_argument("--prompts-per-step", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--only", choices=["lagrangian", "fixed", "report"], default=None,
                   help="run one arm (two processes side by side), or only report the saved runs")
    a = p.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    from instructgpt_arith import run_ppo

    from rlhfkit.language.models import load_tokenizer
    from rlhfkit.language.online import evaluate_greedy
    from rlhfkit.language.ppo import PPOSettings
    from rlhfkit.language.prompts import load_prompts
    from rlhfkit.language.rewards import RewardFunction
    from rlhfkit.language.train import TrainArgs

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(ARITH / "sft")
    train, held = load_prompts(ARITH / "train.jsonl").examples, load_prompts(ARITH / "eval.jsonl").examples
    reward = RewardFunction("exact_match", exact_match)

    def evaluate(m) -> dict[str, float]:
        acc = evaluate_greedy(m, tok, held, [reward], max_new_tokens=5)["eval/reward"]
        cost = evaluate_greedy(m, tok, held, [RewardFunction("has_seven", has_seven)], max_new_tokens=5)["eval/reward"]
        return {"eval/accuracy": acc, "eval/cost": cost}

    args = TrainArgs(lr=a.lr, max_steps=10**9, schedule="constant", warmup_ratio=0.0, max_length=32, seed=a.seed)
    base = dict(prompts_per_step=a.prompts_per_step, num_generations=a.generations, ppo_epochs=1, mini_batches=1,
                max_new_tokens=5, beta=a.beta,
                eval_every_s=a.eval_every, max_train_s=a.budget)
    runs = {}
    if a.only in (None, "lagrangian"):
        settings = PPOSettings(**base, cost_threshold=a.threshold, lambda_init=a.lambda_init, lambda_lr=a.lambda_lr)
        runs["lagrangian"] = run_ppo("lagrangian", out, [reward], model_dir=ARITH / "sft", train=train, held=held,
                                     evaluate=evaluate, args=args, settings=settings,
                                     costs=[RewardFunction("has_seven", has_seven)])
    if a.only in (None, "fixed"):
        for c in a.penalties:
            runs[f"fixed c={c:g}"] = run_ppo(
                f"fixed_{c:g}", out, [reward, RewardFunction("has_seven", has_seven, weight=-c)],
                model_dir=ARITH / "sft", train=train, held=held, evaluate=evaluate, args=args,
                settings=PPOSettings(**base), gold=[RewardFunction("has_seven_watch", has_seven)])
    for rec in sorted((out / "runs").glob("*/record.json")):
        name = rec.parent.name
        key = "lagrangian" if name == "lagrangian" else f"fixed c={name.removeprefix('fixed_')}"
        if key not in runs and (name == "lagrangian" or name.startswith("fixed_")):
            runs[key] = json.loads(rec.read_text())
    lines = [f"Safe RLHF on addition: reward exact match, cost 'contains a 7', d = {a.threshold}; {a.budget:.0f} s each, "
             f"β {a.beta}, lr {a.lr}, {a.prompts_per_step} prompts × {a.generations} completions per step, λ from "
             f"{a.lambda_init} at lr {a.lambda_lr} (log space), seed {a.seed}"]
    for name, r in runs.items():
        rows = [json.loads(x) for x in (out / "runs" / r["name"] / "metrics.jsonl").read_text().splitlines()]
        rows = [x for x in rows if "reward/mean" in x]
        cost_key = "cost/mean" if "cost/mean" in rows[-1] else "gold/mean"
        tail = rows[-max(len(rows) // 10, 1):]
        train_cost = sum(x[cost_key] for x in tail) / len(tail)
        first, last = r["curve"][0], r["curve"][-1]
        text = (f"{name:12s} held-out accuracy {first['accuracy']:.3f} → {last['accuracy']:.3f}, held-out cost rate "
                f"{first['cost']:.3f} → {last['cost']:.3f}; sampled cost over the last 10% of steps {train_cost:.3f} "
                f"({'meets' if train_cost <= a.threshold else 'misses'} d); {r['steps']} steps")
        if "lagrange/lambda" in rows[-1]:
            lam = [x["lagrange/lambda"] for x in rows]
            below = next((i for i, x in enumerate(rows) if x["cost/mean"] <= a.threshold and i > 5), None)
            text += f"; λ {lam[0]:.3f} → max {max(lam):.3f} → {lam[-1]:.3f}, first step with cost ≤ d: {below}"
        r["train_cost"] = train_cost
        lines.append(text)
    if "lagrangian" in runs:
        lag = runs["lagrangian"]
        meeting = {n: r for n, r in runs.items() if n != "lagrangian" and r["train_cost"] <= a.threshold}
        ok = lag["train_cost"] <= a.threshold and all(lag["curve"][-1]["accuracy"] > r["curve"][-1]["accuracy"]
                                                      for r in meeting.values()) and bool(meeting)
        lines.append(f"{'PASS' if ok else 'FAIL'}  the Lagrangian meets d and beats every fixed penalty that meets it "
                     f"({', '.join(meeting) or 'none met it'})")
    print("\n".join(lines))
    with (out / "safe.txt").open("a") as f:
        f.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
