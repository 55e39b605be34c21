"""Benchmark: the InstructGPT loop on a task with a known gold reward (issue 14).

Two-digit addition from ``bench/grpo_arith.py`` (its SFT'd char-level Llama at ~7–9% held-out exact
match, its prompts and 500 held-out problems; run ``grpo_arith.py prepare`` first):

1. ``pairs``: the SFT model samples two completions of 1,000 training prompts; a synthetic oracle
   teacher (``rlhfkit.language.teacher``) labels each pair by a gold reward with partial credit by
   digit (``digit_credit``: the share of answer characters right, 1 for an exact match) — with exact
   match alone ~85% of pairs at this starting accuracy would be ties of two wrong answers;
2. ``rm``: a reward model on those labels (Bradley-Terry, ties ½), from the SFT model's backbone;
3. ``ppo``: PPO with Ziegler et al.'s adaptive KL controller on the learned reward model ("rm"),
   next to PPO on the gold exact-match reward itself ("gold"), each for ``--budget`` seconds of
   training, the held-out greedy exact match evaluated every ``--eval-every`` seconds (evaluation
   excluded from the clock); GRPO on the gold reward is ``grpo_arith.py``'s race;
4. ``overopt``: PPO on the learned reward with β = 0, a fixed β and the adaptive controller, gold
   (exact match) watched: the over-optimisation PNGs (proxy and gold reward against KL).

Target: the learned-reward run gains ≥ 90% of the gold-reward run's accuracy gain in the same time.

    .venv/bin/python bench/instructgpt_arith.py all --budget 600
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARITH = HERE / "out" / "grpo_arith"
OUT = HERE / "out" / "instructgpt_arith"


def exact_match(prompts, completions, answer, **columns):
    """Gold: 1.0 when the completion is exactly the answer (``" 95"``), else 0.0."""
    return [float(c == a) for c, a in zip(completions, answer)]


def digit_credit(prompts, completions, answer, **columns):
    """The teacher's gold: the share of the answer's characters right in place, over the longer of the two
    (so a longer or shorter answer loses); 1.0 exactly when the completion is the answer."""
    out = []
    for c, a in zip(completions, answer):
        hits = sum(x == y for x, y in zip(c, a))
        out.append(hits / max(len(c), len(a), 1))
    return out


def _setup(threads: int):
    import torch

    torch.set_num_threads(threads)


def pairs(a: argparse.Namespace) -> None:
    _setup(a.threads)
    from rlhfkit.language.models import load_causal_lm, load_tokenizer
    from rlhfkit.language.prompts import load_prompts
    from rlhfkit.language.rewards import RewardFunction
    from rlhfkit.language.teacher import TextTeacher, label_sampled_pairs, write_preferences

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tok, model = load_tokenizer(ARITH / "sft"), load_causal_lm(ARITH / "sft")
    prompts = load_prompts(ARITH / "train.jsonl").examples
    teacher = TextTeacher([RewardFunction("digit_credit", digit_credit)], "oracle", seed=0)
    t0 = time.perf_counter()
    labelled = label_sampled_pairs(model, tok, prompts, teacher, n_pairs=a.pairs, max_new_tokens=5, seed=0)
    write_preferences(out / "pairs.jsonl", labelled.examples)
    info = {"pairs_asked": a.pairs, "kept": len(labelled.examples), "ties": labelled.ties,
            "skipped": labelled.skipped, "identical": labelled.identical, "blank": labelled.blank,
            "seconds": round(time.perf_counter() - t0, 1)}
    (out / "pairs.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))


def rm(a: argparse.Namespace) -> None:
    _setup(a.threads)
    from rlhfkit.language.data import load_data
    from rlhfkit.language.models import load_reward_model, load_tokenizer, save_model
    from rlhfkit.language.reward import train_reward_model
    from rlhfkit.language.train import TrainArgs, train_val_split

    out = Path(a.out)
    tok = load_tokenizer(ARITH / "sft")
    examples = load_data(out / "pairs.jsonl").examples
    train, val = train_val_split(examples, 0.1, 0)
    model = load_reward_model(ARITH / "sft", pad_token_id=tok.pad_token_id)
    args = TrainArgs(lr=a.rm_lr, epochs=a.rm_epochs, batch_size=32, max_length=32, eval_every=10, warmup_ratio=0.1,
                     seed=0)
    fitted = train_reward_model(model, tok, train, val, args)
    save_model(fitted.model, tok, out / "rm")
    info = {"train_pairs": len(train), "val_pairs": len(val), **fitted.best, "train_s": round(fitted.wall_s, 1)}
    (out / "rm.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))


def ppo_run(a: argparse.Namespace, name: str, *, reward: str, beta: float, kl_target: float | None,
            budget: float, gold_watch: bool = True) -> dict:
    _setup(a.threads)
    from rlhfkit.language.models import load_causal_lm, load_tokenizer
    from rlhfkit.language.online import evaluate_greedy
    from rlhfkit.language.ppo import PPOSettings, train_ppo
    from rlhfkit.language.prompts import load_prompts
    from rlhfkit.language.rewards import RewardFunction, load_reward_function
    from rlhfkit.language.train import TrainArgs

    out = Path(a.out)
    tok, model = load_tokenizer(ARITH / "sft"), load_causal_lm(ARITH / "sft")
    train, held = load_prompts(ARITH / "train.jsonl").examples, load_prompts(ARITH / "eval.jsonl").examples
    gold = RewardFunction("exact_match", exact_match)
    rewards = [gold] if reward == "gold" else [load_reward_function(str(out / "rm"))]

    def evaluate(m) -> dict[str, float]:
        return {"eval/accuracy": evaluate_greedy(m, tok, held, [gold], max_new_tokens=5)["eval/reward"]}

    args = TrainArgs(lr=a.lr, max_steps=10**9, schedule="constant", warmup_ratio=0.0, max_length=32, seed=a.seed)
    settings = PPOSettings(prompts_per_step=a.prompts_per_step, num_generations=a.generations, ppo_epochs=a.ppo_epochs,
                           mini_batches=a.mini_batches, max_new_tokens=5, beta=beta, kl_target=kl_target,
                           kl_horizon=a.kl_horizon, eval_every_s=a.eval_every, max_train_s=budget)
    run_dir = out / "runs" / name
    r = train_ppo(model, tok, train, rewards, args, settings, gold=[gold] if gold_watch and reward != "gold" else (),
                  evaluate=evaluate, out=run_dir)
    curve = [{"train_s": round(h["time/train_wall_s"], 1), "step": h["step"], "accuracy": h["eval/accuracy"]}
             for h in r.history if "eval/accuracy" in h]
    record = {"name": name, "reward": reward, "beta": beta, "kl_target": kl_target, "curve": curve,
              "steps": r.steps, "train_wall_s": r.wall_s, "gen_s": r.generate_s, "train_s": r.train_s,
              "trained_tokens_per_s": r.trained_tokens_per_s}
    (run_dir / "record.json").write_text(json.dumps(record))
    print(f"{name}: {curve[0]['accuracy']:.3f} → {curve[-1]['accuracy']:.3f} in {r.wall_s:.0f} s, {r.steps} steps",
          flush=True)
    return record


def ppo(a: argparse.Namespace) -> None:
    results = {n: ppo_run(a, n, reward=n, beta=a.beta, kl_target=a.kl_target, budget=a.budget)
               for n in ("rm", "gold")}
    start = results["gold"]["curve"][0]["accuracy"]
    gains = {n: r["curve"][-1]["accuracy"] - start for n, r in results.items()}
    ratio = gains["rm"] / gains["gold"] if gains["gold"] > 0 else float("nan")
    lines = [f"budget {a.budget:.0f} s each; start {start:.3f}",
             *(f"{n:5s} final {r['curve'][-1]['accuracy']:.3f} (gain {gains[n]:+.3f}), {r['steps']} steps"
               for n, r in results.items()),
             f"{'PASS' if ratio >= 0.9 else 'FAIL'}  learned-reward gain / gold-reward gain = {ratio:.2f} (target ≥ 0.90)"]
    print("\n".join(lines))
    (Path(a.out) / "ppo.txt").write_text("\n".join(lines) + "\n")
    _plot(results, Path(a.out) / "ppo.png")


def overopt(a: argparse.Namespace) -> None:
    for name, beta, target in (("beta0", 0.0, None), ("fixed", a.beta, None), ("adaptive", a.beta, a.kl_target)):
        ppo_run(a, f"overopt_{name}", reward="rm", beta=beta, kl_target=target, budget=a.budget)


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, r in results.items():
        ax.plot([c["train_s"] / 60 for c in r["curve"]], [100 * c["accuracy"] for c in r["curve"]], marker="o", ms=3,
                label=f"PPO on the {'learned reward model' if name == 'rm' else 'gold reward'}")
    ax.set_xlabel("training wall time (minutes)")
    ax.set_ylabel("held-out exact match (%)")
    ax.set_title("InstructGPT loop on two-digit addition, 2 CPU cores")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cmd", choices=["pairs", "rm", "ppo", "overopt", "all"])
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pairs", type=int, default=1000)
    p.add_argument("--rm-lr", type=float, default=3e-4)
    p.add_argument("--rm-epochs", type=float, default=3.0)
    p.add_argument("--budget", type=float, default=600.0)
    p.add_argument("--eval-every", type=float, default=60.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--prompts-per-step", type=int, default=32)
    p.add_argument("--generations", type=int, default=1)
    p.add_argument("--ppo-epochs", type=int, default=2)
    p.add_argument("--mini-batches", type=int, default=2)
    p.add_argument("--beta", type=float, default=0.05)
    p.add_argument("--kl-target", type=float, default=1.0)
    p.add_argument("--kl-horizon", type=float, default=10_000.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    steps = {"pairs": [pairs], "rm": [rm], "ppo": [ppo], "overopt": [overopt], "all": [pairs, rm, ppo, overopt]}
    for fn in steps[a.cmd]:
        fn(a)


if __name__ == "__main__":
    main()
