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

from grpo_arith import problems, prompt  # the task's problems and prompt format (bench/ is on sys.path)

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


def distance_credit(prompts, completions, answer, **columns):
    """An alternative teacher's gold: ``1 / (1 + |c - a|)`` for a completion that reads as an integer ``c``
    (1.0 exactly when right, a near miss above a far one), 0 for one that does not: almost no ties."""
    out = []
    for c, a in zip(completions, answer):
        try:
            out.append(1.0 / (1.0 + abs(int(c.strip()) - int(a.strip()))))
        except ValueError:
            out.append(0.0)
    return out


GOLDS = {"digit": digit_credit, "distance": distance_credit}


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
    teacher = TextTeacher([RewardFunction(a.teacher_gold, GOLDS[a.teacher_gold])], "oracle", seed=0)
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
    from rlhfkit.language.data import train_val_split
    from rlhfkit.language.train import TrainArgs

    out = Path(a.out)
    tok = load_tokenizer(ARITH / "sft")
    examples = load_data(out / "pairs.jsonl").examples
    train, val = train_val_split(examples, 0.1, 0)
    model = load_reward_model(ARITH / "sft", pad_token_id=tok.pad_token_id)
    args = TrainArgs(lr=a.rm_lr, epochs=a.rm_epochs, batch_size=32, max_length=32, eval_every=10, warmup_ratio=0.1,
                     seed=0)
    fitted = train_reward_model(model, tok, train, val, args, select=("val/loss", "min"))
    save_model(fitted.model, tok, out / "rm")
    info = {"train_pairs": len(train), "val_pairs": len(val), **fitted.best, "train_s": round(fitted.wall_s, 1)}
    (out / "rm.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))


def run_ppo(name: str, out: Path, rewards: list, *, model_dir: Path, train: list, held: list, evaluate,
            args, settings, gold: list = (), costs: list = (), segments: list = (), ptx: list = ()) -> dict:
    """Train one PPO run in ``out / "runs" / name`` and return its record (curve of ``eval/*`` metrics
    against training wall time and steps, the time split, trained tokens/s)."""
    from rlhfkit.language.models import load_causal_lm, load_tokenizer
    from rlhfkit.language.ppo import train_ppo

    tok, model = load_tokenizer(model_dir), load_causal_lm(model_dir)
    run_dir = out / "runs" / name
    r = train_ppo(model, tok, train, rewards, args, settings, gold=gold, costs=costs, segments=segments, ptx=ptx,
                  evaluate=evaluate, out=run_dir)
    curve = [{"train_s": round(h["time/train_wall_s"], 1), "step": h["step"],
              **{k.removeprefix("eval/"): v for k, v in h.items() if k.startswith("eval/")}}
             for h in r.history if any(k.startswith("eval/") for k in h)]
    last = next((h for h in reversed(r.history) if "reward/mean" in h), {})
    record = {"name": name, "curve": curve, "steps": r.steps, "train_wall_s": r.wall_s, "gen_s": r.generate_s,
              "train_s": r.train_s, "trained_tokens_per_s": r.trained_tokens_per_s,
              "last": {k: v for k, v in last.items() if isinstance(v, (int, float))}}
    (run_dir / "record.json").write_text(json.dumps(record))
    return record


def ppo_run(a: argparse.Namespace, name: str, *, reward: str, beta: float, kl_target: float | None,
            budget: float, gold_watch: bool = True, ptx_coef: float = 0.0) -> dict:
    _setup(a.threads)
    from rlhfkit.language.data import SFTExample
    from rlhfkit.language.models import load_tokenizer
    from rlhfkit.language.online import evaluate_greedy
    from rlhfkit.language.ppo import PPOSettings
    from rlhfkit.language.prompts import load_prompts
    from rlhfkit.language.rewards import RewardFunction, load_reward_function
    from rlhfkit.language.train import TrainArgs

    out = Path(a.out)
    tok = load_tokenizer(ARITH / "sft")
    train, held = load_prompts(ARITH / "train.jsonl").examples, load_prompts(ARITH / "eval.jsonl").examples
    gold = RewardFunction("exact_match", exact_match)
    rewards = [gold] if reward == "gold" else [load_reward_function(str(out / "rm"))]
    ptx = [SFTExample(prompt=prompt(x, y), completion=f" {x + y}") for x, y in problems()["sft"]] if ptx_coef > 0 else []
    held_text = [SFTExample(prompt=p.prompt, completion=p.columns["answer"]) for p in load_prompts(ARITH / "choose.jsonl").examples]

    def evaluate(m) -> dict[str, float]:
        return {"eval/accuracy": evaluate_greedy(m, tok, held, [gold], max_new_tokens=5)["eval/reward"],
                "eval/sft_nll": text_nll(m, tok, held_text)}

    args = TrainArgs(lr=a.lr, max_steps=10**9, schedule="constant", warmup_ratio=0.0, max_length=32, seed=a.seed)
    settings = PPOSettings(prompts_per_step=a.prompts_per_step, num_generations=a.generations, ppo_epochs=a.ppo_epochs,
                           mini_batches=a.mini_batches, max_new_tokens=5, beta=beta, kl_target=kl_target,
                           kl_horizon=a.kl_horizon, eval_every_s=a.eval_every, max_train_s=budget, ptx_coef=ptx_coef,
                           ptx_batch_size=a.ptx_batch_size)
    record = run_ppo(name, out, rewards, model_dir=ARITH / "sft", train=train, held=held, evaluate=evaluate, args=args,
                     settings=settings, gold=[gold] if gold_watch and reward != "gold" else [], ptx=ptx)
    record.update(reward=reward, beta=beta, kl_target=kl_target, ptx_coef=ptx_coef)
    (out / "runs" / name / "record.json").write_text(json.dumps(record))
    c = record["curve"]
    print(f"{name}: accuracy {c[0]['accuracy']:.3f} → {c[-1]['accuracy']:.3f}, SFT-text NLL {c[0]['sft_nll']:.4f} → "
          f"{c[-1]['sft_nll']:.4f} in {record['train_wall_s']:.0f} s, {record['steps']} steps", flush=True)
    return record


def text_nll(model, tok, examples) -> float:
    """Mean negative log-likelihood per answer token (nats) of SFT examples given their prompts: the
    SFT-data likelihood whose drop under RL is the alignment tax PPO-ptx counters (Ouyang et al. 2022, §4.2)."""
    import torch

    from rlhfkit.language.logprobs import packed_logprobs, run_packed
    from rlhfkit.language.sft import encode_sft

    items = encode_sft(tok, examples, 32)
    was = model.training
    model.eval()
    with torch.no_grad():
        lp_n = run_packed(lambda pb: torch.stack([x.float() for x in packed_logprobs(model, pb)], -1),
                          [[e] for e in items], tok.pad_token_id, max_tokens=4096)
    model.train(was)
    return float(-lp_n[:, 0].sum() / lp_n[:, 1].sum())


def ppo(a: argparse.Namespace) -> None:
    """PPO on the learned reward model ("rm") and on the gold reward ("gold"), ``--budget`` s each. With
    ``--arms rm`` and ``--arms gold`` in two processes (``--threads 1`` each) the two run side by side
    under the same conditions; ``--arms report`` then compares their saved records."""
    arms = [x for x in a.arms.split(",") if x in ("rm", "gold")]
    for n in arms:
        ppo_run(a, f"{a.tag}{n}", reward=n, beta=a.beta, kl_target=a.kl_target, budget=a.budget)
    runs = Path(a.out) / "runs"
    if "report" not in a.arms and len(arms) < 2:
        return
    results = {n: json.loads((runs / f"{a.tag}{n}" / "record.json").read_text()) for n in ("rm", "gold")}
    start = results["gold"]["curve"][0]["accuracy"]
    gains = {n: r["curve"][-1]["accuracy"] - start for n, r in results.items()}
    ratio = gains["rm"] / gains["gold"] if gains["gold"] > 0 else float("nan")
    lines = [f"budget {a.budget:.0f} s each, {a.threads} torch thread(s) per run; lr {a.lr}, {a.prompts_per_step} "
             f"prompts × {a.generations} completions per step, {a.ppo_epochs} PPO epochs × {a.mini_batches} mini-batches, β {a.beta} → KL target "
             f"{a.kl_target}; start {start:.3f}",
             *(f"{n:5s} " + "  ".join(f"{c['train_s']:.0f}s:{c['accuracy']:.3f}" for c in r["curve"])
               for n, r in results.items()),
             *(f"{n:5s} final {r['curve'][-1]['accuracy']:.3f} (gain {gains[n]:+.3f}), {r['steps']} steps"
               for n, r in results.items()),
             f"{'PASS' if ratio >= 0.9 else 'FAIL'}  learned-reward gain / gold-reward gain = {ratio:.2f} (target ≥ 0.90)"]
    print("\n".join(lines))
    (Path(a.out) / f"{a.tag}ppo.txt").write_text("\n".join(lines) + "\n")
    _plot(results, Path(a.out) / f"{a.tag}ppo.png")


def online(a: argparse.Namespace) -> None:
    """Iterated online InstructGPT (Bai et al. 2022, §4.5; the Christiano et al. 2017 loop for text): the same
    ``--pairs`` labels in ``--rounds`` rounds. Round 0's pairs come from the SFT model (as ``pairs``); each
    later round's from the current policy, so that the reward model learns to rank what PPO now writes. After
    each round a fresh reward model (from the SFT backbone) is fitted on all labels so far, and PPO (reference:
    the SFT model, adaptive β) continues against it. The clock counts PPO training and every later round's
    sampling, labelling and reward-model fit (round 0's, like the ``rm`` arm's, precede the clock); each round
    gets an equal share of what is left of ``--budget``. Compare with ``ppo --arms gold`` run beside it."""
    _setup(a.threads)

    from rlhfkit.language.data import train_val_split
    from rlhfkit.language.models import load_causal_lm, load_reward_model, load_tokenizer, save_model
    from rlhfkit.language.online import evaluate_greedy
    from rlhfkit.language.ppo import PPOSettings, train_ppo
    from rlhfkit.language.prompts import load_prompts
    from rlhfkit.language.reward import train_reward_model
    from rlhfkit.language.rewards import RewardFunction, load_reward_function
    from rlhfkit.language.teacher import TextTeacher, label_sampled_pairs
    from rlhfkit.language.train import TrainArgs

    run = Path(a.out) / "runs" / f"{a.tag}online"
    run.mkdir(parents=True, exist_ok=True)
    tok, policy, ref = load_tokenizer(ARITH / "sft"), load_causal_lm(ARITH / "sft"), load_causal_lm(ARITH / "sft")
    ref.eval().requires_grad_(False)
    train, held = load_prompts(ARITH / "train.jsonl").examples, load_prompts(ARITH / "eval.jsonl").examples
    gold = RewardFunction("exact_match", exact_match)
    teacher = TextTeacher([RewardFunction(a.teacher_gold, GOLDS[a.teacher_gold])], "oracle", seed=0)
    examples, rounds, curve, clock = [], [], [], 0.0
    per_round = a.pairs // a.rounds
    for r in range(a.rounds):
        t0 = time.perf_counter()
        labelled = label_sampled_pairs(policy, tok, train, teacher, n_pairs=per_round, max_new_tokens=5, seed=100 + r)
        examples += labelled.examples
        tr, val = train_val_split(examples, 0.1, 0)
        rm_model = load_reward_model(ARITH / "sft", pad_token_id=tok.pad_token_id)
        rm_args = TrainArgs(lr=a.rm_lr, epochs=a.rm_epochs, batch_size=32, max_length=32, eval_every=10,
                            warmup_ratio=0.1, seed=r)
        fitted = train_reward_model(rm_model, tok, tr, val, rm_args, select=("val/loss", "min"))
        save_model(fitted.model, tok, run / f"rm{r}")
        label_s = time.perf_counter() - t0
        if r > 0:
            clock += label_s
        share = max(0.0, (a.budget - clock) / (a.rounds - r))
        args = TrainArgs(lr=a.lr, max_steps=10**9, schedule="constant", warmup_ratio=0.0, max_length=32,
                         seed=a.seed + r)
        settings = PPOSettings(prompts_per_step=a.prompts_per_step, num_generations=a.generations,
                               ppo_epochs=a.ppo_epochs, mini_batches=a.mini_batches, max_new_tokens=5, beta=a.beta,
                               kl_target=a.kl_target, kl_horizon=a.kl_horizon, eval_every_s=a.eval_every,
                               max_train_s=share)
        evaluate = lambda m: {"eval/accuracy": evaluate_greedy(m, tok, held, [gold], max_new_tokens=5)["eval/reward"]}  # noqa: E731
        res = train_ppo(policy, tok, train, [load_reward_function(str(run / f"rm{r}"))], args, settings,
                        ref_model=ref, gold=[gold], evaluate=evaluate, out=run / f"ppo{r}")
        evals = [h for h in res.history if "eval/accuracy" in h]
        curve += [{"train_s": round(clock + h["time/train_wall_s"], 1), "accuracy": h["eval/accuracy"]}
                  for h in (evals if r == 0 else evals[1:])]  # a later round's first evaluation repeats the last
        clock += res.wall_s
        acc = evals[-1]["eval/accuracy"]
        rounds.append({"round": r, "labels": len(examples), "ties": labelled.ties, "label_rm_s": round(label_s, 1),
                       "rm_val_accuracy": fitted.best.get("val/accuracy"), "rm_val_loss": fitted.best.get("val/loss"),
                       "ppo_s": round(res.wall_s, 1), "steps": res.steps, "accuracy": acc})
        print(json.dumps(rounds[-1]), flush=True)
    record = {"name": "online", "curve": curve, "rounds": rounds, "steps": sum(x["steps"] for x in rounds),
              "train_wall_s": clock, "teacher_gold": a.teacher_gold}
    (run / "record.json").write_text(json.dumps(record))
    print(f"online ({a.rounds} rounds of {per_round} labels, teacher gold {a.teacher_gold}): accuracy "
          f"{curve[0]['accuracy']:.3f} → {curve[-1]['accuracy']:.3f} in {clock:.0f} s", flush=True)


OVEROPT = ("beta0", "fixed", "adaptive")


def overopt(a: argparse.Namespace) -> None:
    """β = 0, a fixed β and the adaptive controller on the learned reward, gold watched: each run writes
    its overoptimisation.png; the summary reports where the proxy keeps rising after the gold peak and how
    closely the adaptive controller holds its KL target after warm-up. ``--arms`` picks runs (e.g.
    ``beta0,fixed`` in one process and ``adaptive`` in another); ``--arms report`` only summarises."""
    arms = OVEROPT if a.arms in ("rm,gold", "all") else [x for x in a.arms.split(",") if x in OVEROPT]
    settings = {"beta0": (0.0, None), "fixed": (a.beta, None), "adaptive": (a.beta, a.kl_target)}
    for name in arms:
        beta, target = settings[name]
        ppo_run(a, f"overopt_{name}", reward="rm", beta=beta, kl_target=target, budget=a.overopt_budget)
    lines = [f"over-optimisation on the learned reward, {a.overopt_budget:.0f} s each; β {a.beta}, KL target "
             f"{a.kl_target} nats (horizon {a.kl_horizon:.0f})"]
    for name in OVEROPT:
        metrics = Path(a.out) / "runs" / f"overopt_{name}" / "metrics.jsonl"
        if metrics.is_file():
            lines.append(overopt_summary(metrics, name, settings[name][1]))
    print("\n".join(lines))
    (Path(a.out) / "overopt.txt").write_text("\n".join(lines) + "\n")


def overopt_summary(metrics: Path, name: str, target: float | None, window: int = 10) -> str:
    """Gold and proxy at the gold's peak and at the end (means over ``window`` steps); for a KL target,
    the share of post-warm-up steps (the second half of the run) whose KL lies within ±50% of it."""
    import numpy as np

    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if "reward/mean" in r and "gold/mean" in r]
    smooth = lambda k: np.convolve([r[k] for r in rows], np.ones(window) / window, mode="valid")  # noqa: E731
    gold, proxy, kl = smooth("gold/mean"), smooth("reward/mean"), smooth("kl/sequence")
    peak = int(np.argmax(gold))
    text = (f"{name:9s} gold {gold[0]:.3f} → peak {gold[peak]:.3f} (step {peak + window}, KL {kl[peak]:.2f}) → end "
            f"{gold[-1]:.3f}; proxy {proxy[0]:.3f} → {proxy[peak]:.3f} at the gold peak → {proxy[-1]:.3f} at the end "
            f"(KL {kl[-1]:.2f}); proxy {'still rising' if proxy[-1] > proxy[peak] else 'not rising'} after the gold "
            f"peak, gold {'fell' if gold[-1] < gold[peak] - 0.01 else 'flat'}")
    if target is not None:
        raw = np.array([r["kl/sequence"] for r in rows[len(rows) // 2:]])
        share = float(np.mean(np.abs(raw - target) <= 0.5 * target))
        text += (f"; KL after warm-up {raw.mean():.2f} ± {raw.std():.2f} (target {target}), {100 * share:.0f}% of "
                 f"steps within ±50%, mean of {window}-step windows within ±50%: "
                 f"{bool(np.all(np.abs(kl[len(kl) // 2:] - target) <= 0.5 * target))}")
    return text


def ptx(a: argparse.Namespace) -> None:
    """PPO-ptx: the adaptive-β run on the learned reward (``overopt``'s, γ = 0) against the same run with
    γ > 0; the alignment tax is the rise of the NLL of held-out SFT answers (the 500 choosing problems)."""
    if a.arms != "report":
        ppo_run(a, f"ptx_{a.ptx_coef:g}", reward="rm", beta=a.beta, kl_target=a.kl_target, budget=a.overopt_budget,
                ptx_coef=a.ptx_coef)
    runs = Path(a.out) / "runs"
    names = {0.0: "overopt_adaptive", a.ptx_coef: f"ptx_{a.ptx_coef:g}"}
    if not all((runs / n / "record.json").is_file() for n in names.values()):
        return
    recs = {g: json.loads((runs / n / "record.json").read_text()) for g, n in names.items()}
    lines = [f"PPO-ptx, {a.overopt_budget:.0f} s each, adaptive β (target {a.kl_target}); ptx data: the 2,000 SFT "
             f"problems, {a.ptx_batch_size} per optimiser step; tax: NLL per answer token (nats) of the 500 choosing "
             "problems' answers"]
    tax = {}
    for g, r in recs.items():
        c = r["curve"]
        tax[g] = c[-1]["sft_nll"] - c[0]["sft_nll"]
        lines.append(f"γ = {g:<5g} accuracy {c[0]['accuracy']:.3f} → {c[-1]['accuracy']:.3f}; SFT NLL "
                     f"{c[0]['sft_nll']:.4f} → {c[-1]['sft_nll']:.4f} (tax {tax[g]:+.4f}), {r['steps']} steps")
    g = a.ptx_coef
    acc_gap = abs(recs[g]["curve"][-1]["accuracy"] - recs[0.0]["curve"][-1]["accuracy"])
    ok = tax[0.0] > 0 and tax[g] <= 0.5 * tax[0.0] and acc_gap <= 0.02
    lines.append(f"{'PASS' if ok else 'FAIL'}  tax with γ {g}: {tax[g]:+.4f} vs {tax[0.0]:+.4f} (≤ half), accuracy gap "
                 f"{100 * acc_gap:.1f} points (≤ 2)")
    print("\n".join(lines))
    (Path(a.out) / "ptx.txt").write_text("\n".join(lines) + "\n")


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
    p.add_argument("cmd", choices=["pairs", "rm", "ppo", "online", "overopt", "ptx", "all"])
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pairs", type=int, default=1000)
    p.add_argument("--rm-lr", type=float, default=1e-3)
    p.add_argument("--rm-epochs", type=float, default=10.0)
    p.add_argument("--budget", type=float, default=600.0)
    p.add_argument("--eval-every", type=float, default=60.0)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--prompts-per-step", type=int, default=16)
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--ppo-epochs", type=int, default=1)
    p.add_argument("--mini-batches", type=int, default=1)
    p.add_argument("--beta", type=float, default=0.05)
    p.add_argument("--kl-target", type=float, default=1.0)
    p.add_argument("--kl-horizon", type=float, default=10_000.0)
    p.add_argument("--arms", default="rm,gold", help="rm, gold, both (rm,gold) or report")
    p.add_argument("--tag", default="", help="prefix of the run names")
    p.add_argument("--overopt-budget", type=float, default=300.0)
    p.add_argument("--ptx-coef", type=float, default=1.0)
    p.add_argument("--ptx-batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=4, help="online: labelling rounds sharing --pairs")
    p.add_argument("--teacher-gold", choices=sorted(GOLDS), default="digit",
                   help="the synthetic teacher's gold: digit credit or numeric distance")
    a = p.parse_args(argv)
    steps = {"pairs": [pairs], "rm": [rm], "ppo": [ppo], "online": [online], "overopt": [overopt], "ptx": [ptx],
             "all": [pairs, rm, ppo, overopt, ptx]}
    for fn in steps[a.cmd]:
        fn(a)


if __name__ == "__main__":
    main()
