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


SIMPO_BETA, SIMPO_MARGIN = 2.0, 1.0
"""SimPO's β and target margin γ for ``rm --rm-kind simpo`` (Meng et al. 2024 use β 2-2.5, γ/β ≈ 0.5)."""


def rm(a: argparse.Namespace) -> None:
    """The reward model on the labelled pairs: a scalar head on ``--rm-init`` (default the SFT model),
    Bradley-Terry with ties as ½ (``--rm-kind scalar``), or ``--rm-kind dpo``: the backbone fitted with
    DPO (β 0.1, ties dropped) and used through its implicit reward against the backbone
    (:class:`rlhfkit.language.rewards.ImplicitReward`). The best weights on a 10% validation split."""
    _setup(a.threads)
    from rlhfkit.language.data import load_data, train_val_split
    from rlhfkit.language.models import load_causal_lm, load_reward_model, load_tokenizer, save_model
    from rlhfkit.language.reward import train_reward_model
    from rlhfkit.language.train import TrainArgs

    out = Path(a.out)
    init = Path(a.rm_init) if a.rm_init else ARITH / "sft"
    tok = load_tokenizer(ARITH / "sft")
    examples = load_data(out / "pairs.jsonl").examples
    train, val = train_val_split(examples, 0.1, 0)
    args = TrainArgs(lr=a.rm_lr, epochs=a.rm_epochs, batch_size=32, max_length=32, eval_every=10, warmup_ratio=0.1,
                     seed=0)
    if a.rm_kind in ("dpo", "simpo"):
        from rlhfkit.language.dpo import DPOSettings, train_dpo

        settings = (DPOSettings(beta=0.1) if a.rm_kind == "dpo"
                    else DPOSettings(beta=SIMPO_BETA, loss_type="simpo", margin=SIMPO_MARGIN))
        fitted = train_dpo(load_causal_lm(init), tok, train, val, args, settings)
    else:
        model = load_reward_model(init, pad_token_id=tok.pad_token_id)
        fitted = train_reward_model(model, tok, train, val, args, select=("val/loss", "min"))
    name = a.rm_name or "rm"
    save_model(fitted.model, tok, out / name)
    info = {"rm_init": str(init), "kind": a.rm_kind, "dpo_ref": str(init.resolve()) if a.rm_kind == "dpo" else None,
            "beta": {"dpo": 0.1, "simpo": SIMPO_BETA}.get(a.rm_kind),
            "train_pairs": len(train), "val_pairs": len(val), **fitted.best, "train_s": round(fitted.wall_s, 1)}
    (out / f"{name}.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))


def reward_model_function(out: Path, name: str):
    """The reward function of the reward model ``out / name`` written by ``rm`` (scalar head or DPO)."""
    from rlhfkit.language.rewards import load_reward_function

    info_path = out / f"{name}.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if info.get("dpo_ref"):
        return load_reward_function(f"implicit:{out / name},{info['dpo_ref']},0.1")
    if info.get("kind") == "simpo":
        return load_reward_function(f"simpo:{out / name},{info['beta']}")
    return load_reward_function(str(out / name))


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


def ppo_recipe(a: argparse.Namespace, *, budget: float, seed_offset: int = 0, **settings):
    """The benchmark's PPO recipe from the command line: ``(TrainArgs, PPOSettings)`` for a run of ``budget``
    training seconds; ``settings`` override ``PPOSettings`` fields (``beta``, ``kl_target``, ``ptx_coef``)."""
    from rlhfkit.language.ppo import PPOSettings
    from rlhfkit.language.train import TrainArgs

    args = TrainArgs(lr=a.lr, max_steps=10**9, schedule="constant", warmup_ratio=0.0, max_length=32,
                     seed=a.seed + seed_offset)
    base = {"beta": a.beta, "kl_target": a.kl_target, "ptx_batch_size": a.ptx_batch_size, **settings}
    return args, PPOSettings(prompts_per_step=a.prompts_per_step, num_generations=a.generations,
                             ppo_epochs=a.ppo_epochs, mini_batches=a.mini_batches, max_new_tokens=5,
                             kl_horizon=a.kl_horizon, eval_every_s=a.eval_every, max_train_s=budget, **base)


def ppo_run(a: argparse.Namespace, name: str, *, reward: str, beta: float, kl_target: float | None,
            budget: float, gold_watch: bool = True, ptx_coef: float = 0.0) -> dict:
    _setup(a.threads)
    from rlhfkit.language.data import SFTExample
    from rlhfkit.language.models import load_tokenizer
    from rlhfkit.language.online import evaluate_greedy
    from rlhfkit.language.prompts import load_prompts
    from rlhfkit.language.rewards import RewardFunction

    out = Path(a.out)
    tok = load_tokenizer(ARITH / "sft")
    train, held = load_prompts(ARITH / "train.jsonl").examples, load_prompts(ARITH / "eval.jsonl").examples
    gold = RewardFunction("exact_match", exact_match)
    rewards = [gold] if reward == "gold" else [reward_model_function(out, a.rm_name or "rm")]
    ptx = [SFTExample(prompt=prompt(x, y), completion=f" {x + y}") for x, y in problems()["sft"]] if ptx_coef > 0 else []
    held_text = [SFTExample(prompt=p.prompt, completion=p.columns["answer"]) for p in load_prompts(ARITH / "choose.jsonl").examples]

    def evaluate(m) -> dict[str, float]:
        return {"eval/accuracy": evaluate_greedy(m, tok, held, [gold], max_new_tokens=5)["eval/reward"],
                "eval/sft_nll": text_nll(m, tok, held_text)}

    args, settings = ppo_recipe(a, budget=budget, beta=beta, kl_target=kl_target, ptx_coef=ptx_coef)
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


def rmbackbone(a: argparse.Namespace) -> None:
    """A stronger backbone for the reward model: the SFT run of ``grpo_arith.py prepare`` (same base model,
    data, lr and batch) carried on for ``--sft-steps`` steps, keeping its best checkpoint on the choosing
    problems. The policy still starts from the early, weak checkpoint (room to learn); only the reward
    model reads with the stronger one, as InstructGPT's reward models came from larger SFT models than
    some of its policies (Ouyang et al. 2022, §3.5)."""
    _setup(a.threads)
    from rlhfkit.language.data import SFTExample
    from rlhfkit.language.models import load_causal_lm, load_tokenizer, save_model
    from rlhfkit.language.online import evaluate_greedy
    from rlhfkit.language.prompts import PromptExample
    from rlhfkit.language.rewards import RewardFunction
    from rlhfkit.language.sft import train_sft
    from rlhfkit.language.train import TrainArgs

    ps = problems()
    tok, model = load_tokenizer(ARITH / "base"), load_causal_lm(ARITH / "base")
    choose = [PromptExample(prompt(x, y), {"answer": f" {x + y}"}) for x, y in ps["choose"]]
    gold = [RewardFunction("exact_match", exact_match)]
    train = [SFTExample(prompt=prompt(x, y), completion=f" {x + y}") for x, y in ps["sft"]]
    args = TrainArgs(lr=1e-3, max_steps=a.sft_steps, batch_size=64, schedule="constant", warmup_ratio=0.0,
                     val_fraction=0.0, eval_every=50, max_length=32, seed=0)
    fitted = train_sft(model, tok, train, [], args, select=("val/accuracy", "max"),
                       evaluate=lambda m: {"val/accuracy": evaluate_greedy(m, tok, choose, gold,
                                                                           max_new_tokens=5)["eval/reward"]})
    save_model(fitted.model, tok, OUT / "rm_backbone")
    info = {"sft_steps": a.sft_steps, "best_step": fitted.best.get("step"), "choose_accuracy": fitted.best.get("val/accuracy"),
            "sft_s": round(fitted.wall_s, 1)}
    (OUT / "rm_backbone.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info), flush=True)


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
    from rlhfkit.language.ppo import train_ppo
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
        args, settings = ppo_recipe(a, budget=share, seed_offset=r)
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


def rmcurve(a: argparse.Namespace) -> None:
    """How many labels the reward model needs: ``--curve`` sizes of training pairs (from one pool the SFT
    model samples and the teacher labels), each fitted as ``rm`` does, scored on the same 500 held-out
    labelled pairs (sampled with another seed; accuracy on the decided pairs)."""
    _setup(a.threads)
    from rlhfkit.language.models import load_causal_lm, load_reward_model, load_tokenizer, save_model
    from rlhfkit.language.prompts import load_prompts
    from rlhfkit.language.reward import train_reward_model
    from rlhfkit.language.rewards import RewardFunction
    from rlhfkit.language.teacher import TextTeacher, label_sampled_pairs
    from rlhfkit.language.train import TrainArgs

    out = Path(a.out) / f"rmcurve_{a.teacher_gold}"
    out.mkdir(parents=True, exist_ok=True)
    tok, model = load_tokenizer(ARITH / "sft"), load_causal_lm(ARITH / "sft")
    prompts = load_prompts(ARITH / "train.jsonl").examples
    teacher = TextTeacher([RewardFunction(a.teacher_gold, GOLDS[a.teacher_gold])], "oracle", seed=0)
    sizes = [int(x) for x in a.curve.split(",")]
    pool = label_sampled_pairs(model, tok, prompts, teacher, n_pairs=max(sizes), max_new_tokens=5, seed=0).examples
    held = label_sampled_pairs(model, tok, prompts, teacher, n_pairs=500, max_new_tokens=5, seed=7).examples
    lines = [f"reward-model accuracy against labels (teacher gold {a.teacher_gold}; lr {a.rm_lr}, {a.rm_epochs} "
             f"epochs; the best epoch by held-out loss, so an upper bound; {len(held)} held-out pairs, {sum(not x.tie for x in held)} decided)"]
    for n in sizes:
        asked = round(n * len(pool) / max(sizes))  # the kept share of n asked pairs
        rm_model = load_reward_model(a.rm_init or ARITH / "sft", pad_token_id=tok.pad_token_id)
        args = TrainArgs(lr=a.rm_lr, epochs=a.rm_epochs, batch_size=32, max_length=32, eval_every=10,
                         warmup_ratio=0.1, seed=0)
        t0 = time.perf_counter()
        fitted = train_reward_model(rm_model, tok, pool[:asked], held, args, select=("val/loss", "min"))
        if n == 1000:
            save_model(fitted.model, tok, out / "rm1000")
        lines.append(f"{n:6d} pairs asked ({asked} kept): held-out accuracy {fitted.best['val/accuracy']:.3f}, "
                     f"loss {fitted.best['val/loss']:.3f}, fit {time.perf_counter() - t0:.0f} s")
        print(lines[-1], flush=True)
    (out / "curve.txt").write_text("\n".join(lines) + "\n")


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


PTX = OUT / "ptx_mixed"


def reversal(n: int, seed: int) -> list[tuple[str, str]]:
    """The second SFT task of the alignment-tax experiment: ``("R: 4821 A:", " 1284")``, 3-5 digits."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        digits = "".join(str(d) for d in rng.integers(0, 10, size=int(rng.integers(3, 6))))
        out.append((f"R: {digits} A:", " " + digits[::-1]))
    return out


def ptxprep(a: argparse.Namespace) -> None:
    """An SFT model of two tasks, for an alignment tax that RL on one of them can cost: the 2,000 addition
    SFT problems and 2,000 digit reversals (``reversal``) mixed, the same char-level Llama and schedule as
    ``grpo_arith.py prepare``, the checkpoint whose addition accuracy on the choosing problems is nearest
    its 9% kept (room to learn)."""
    _setup(a.threads)

    from grpo_arith import TARGET_START

    from rlhfkit.language.data import SFTExample
    from rlhfkit.language.models import load_causal_lm, load_tokenizer, save_model
    from rlhfkit.language.online import evaluate_greedy
    from rlhfkit.language.prompts import PromptExample
    from rlhfkit.language.rewards import RewardFunction
    from rlhfkit.language.sft import train_sft
    from rlhfkit.language.tiny import TinySpec, build_tiny
    from rlhfkit.language.train import TrainArgs

    PTX.mkdir(parents=True, exist_ok=True)
    ps = problems()
    add = [SFTExample(prompt=prompt(x, y), completion=f" {x + y}") for x, y in ps["sft"]]
    rev = [SFTExample(prompt=p_, completion=c) for p_, c in reversal(2000, 1)]
    mixed = [add[i // 2] if i % 2 == 0 else rev[i // 2] for i in range(len(add) + len(rev))]
    spec = TinySpec(arch="llama", vocab_size=262, n_layers=4, d_model=128, n_heads=4, mlp_size=512,
                    max_positions=64, seed=0)
    base = build_tiny([e.prompt + e.completion for e in mixed], PTX / "base", spec)
    tok, model = load_tokenizer(base), load_causal_lm(base)
    choose = [PromptExample(prompt(x, y), {"answer": f" {x + y}"}) for x, y in ps["choose"]]
    gold = [RewardFunction("exact_match", exact_match)]

    def nearest(m) -> dict[str, float]:
        acc = evaluate_greedy(m, tok, choose, gold, max_new_tokens=5)["eval/reward"]
        return {"val/accuracy": acc, "val/closeness": -abs(acc - TARGET_START)}

    args = TrainArgs(lr=1e-3, max_steps=a.sft_steps, batch_size=64, schedule="constant", warmup_ratio=0.0,
                     val_fraction=0.0, eval_every=25, max_length=32, seed=0)
    fitted = train_sft(model, tok, mixed, [], args, evaluate=nearest, select=("val/closeness", "max"))
    save_model(fitted.model, tok, PTX / "sft")
    held = [SFTExample(prompt=p_, completion=c) for p_, c in reversal(500, 2)]
    info = {"chosen_step": fitted.best.get("step"), "choose_accuracy": fitted.best.get("val/accuracy"),
            "reversal_nll": text_nll(fitted.model, tok, held)}
    (PTX / "sft.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info), flush=True)


def ptxrun(a: argparse.Namespace) -> None:
    """PPO-ptx on the two-task SFT model (``ptxprep``): PPO on the addition gold reward (adaptive β) with
    γ = 0 and with ``--ptx-coef`` γ > 0, the ptx data the 2,000 SFT reversals; the tax is the rise of the
    NLL of 500 held-out reversals, the task RL does not train. ``--arms 0`` / ``--arms G`` in two processes
    run them side by side; ``--arms report`` compares."""
    _setup(a.threads)
    from rlhfkit.language.data import SFTExample
    from rlhfkit.language.models import load_tokenizer
    from rlhfkit.language.online import evaluate_greedy
    from rlhfkit.language.prompts import load_prompts
    from rlhfkit.language.rewards import RewardFunction

    tok = load_tokenizer(PTX / "sft")
    train, held = load_prompts(ARITH / "train.jsonl").examples, load_prompts(ARITH / "eval.jsonl").examples
    gold = RewardFunction("exact_match", exact_match)
    held_rev = [SFTExample(prompt=p_, completion=c) for p_, c in reversal(500, 2)]
    ptx_data = [SFTExample(prompt=p_, completion=c) for p_, c in reversal(2000, 1)]

    def evaluate(m) -> dict[str, float]:
        return {"eval/accuracy": evaluate_greedy(m, tok, held, [gold], max_new_tokens=5)["eval/reward"],
                "eval/sft_nll": text_nll(m, tok, held_rev)}

    coefs = [] if a.arms == "report" else [float(x) for x in a.arms.split(",")]
    for g in coefs:
        args, settings = ppo_recipe(a, budget=a.overopt_budget, ptx_coef=g)
        r = run_ppo(f"ptxmix_{g:g}", PTX, [gold], model_dir=PTX / "sft", train=train, held=held, evaluate=evaluate,
                    args=args, settings=settings, ptx=ptx_data if g > 0 else [])
        c = r["curve"]
        print(f"γ {g:g}: accuracy {c[0]['accuracy']:.3f} → {c[-1]['accuracy']:.3f}, reversal NLL {c[0]['sft_nll']:.4f} → "
              f"{c[-1]['sft_nll']:.4f}, {r['steps']} steps", flush=True)
    recs = {}
    for d in sorted((PTX / "runs").glob("ptxmix_*")):
        if (d / "record.json").is_file():
            recs[float(d.name.split("_")[1])] = json.loads((d / "record.json").read_text())
    if 0.0 not in recs or len(recs) < 2:
        return
    lines = [f"PPO-ptx on a two-task SFT model (addition + digit reversal), PPO on the addition gold reward, "
             f"{a.overopt_budget:.0f} s each, adaptive β (target {a.kl_target}, horizon {a.kl_horizon:.0f}); ptx data: "
             f"2,000 SFT reversals, {a.ptx_batch_size} per optimiser step; tax: NLL per answer token (nats) of 500 "
             "held-out reversals"]
    tax = {g: r["curve"][-1]["sft_nll"] - r["curve"][0]["sft_nll"] for g, r in recs.items()}
    for g, r in recs.items():
        c = r["curve"]
        lines.append(f"γ = {g:<5g} accuracy {c[0]['accuracy']:.3f} → {c[-1]['accuracy']:.3f}; reversal NLL "
                     f"{c[0]['sft_nll']:.4f} → {c[-1]['sft_nll']:.4f} (tax {tax[g]:+.4f}), {r['steps']} steps")
    for g in (x for x in recs if x > 0):
        gap = recs[0.0]["curve"][-1]["accuracy"] - recs[g]["curve"][-1]["accuracy"]
        ok = tax[0.0] > 0 and tax[g] <= 0.5 * tax[0.0] and abs(gap) <= 0.02
        lines.append(f"{'PASS' if ok else 'FAIL'}  γ {g:g}: tax {tax[g]:+.4f} vs {tax[0.0]:+.4f} (≤ half), accuracy "
                     f"{100 * -gap:+.1f} points vs γ = 0 (within 2)")
    print("\n".join(lines))
    (PTX / "ptx.txt").write_text("\n".join(lines) + "\n")


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
    p.add_argument("cmd", choices=["pairs", "rm", "rmbackbone", "rmcurve", "ppo", "online", "ptxprep", "ptxrun", "overopt", "ptx", "all"])
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
    p.add_argument("--sft-steps", type=int, default=900, help="ptxprep: SFT steps")
    p.add_argument("--rm-init", default=None, help="rm, rmcurve: the reward model's backbone (default the SFT model; "
                   "see rmbackbone)")
    p.add_argument("--rm-kind", choices=["scalar", "dpo", "simpo"], default="scalar",
                   help="rm: a scalar-head reward model, a DPO-fitted model used through its implicit reward, or a "
                   "SimPO-fitted one used through its length-normalised log-likelihood (no reference)")
    p.add_argument("--rm-name", default=None, help="rm: the reward model's directory name under --out (default rm); "
                   "ppo reads it too")
    p.add_argument("--curve", default="250,500,1000,2000,4000", help="rmcurve: training-pair counts")
    p.add_argument("--rounds", type=int, default=4, help="online: labelling rounds sharing --pairs")
    p.add_argument("--teacher-gold", choices=sorted(GOLDS), default="digit",
                   help="the synthetic teacher's gold: digit credit or numeric distance")
    a = p.parse_args(argv)
    steps = {"pairs": [pairs], "rm": [rm], "ppo": [ppo], "online": [online], "rmcurve": [rmcurve], "rmbackbone": [rmbackbone], "ptxprep": [ptxprep], "ptxrun": [ptxrun], "overopt": [overopt], "ptx": [ptx],
             "all": [pairs, rm, ppo, overopt, ptx]}
    for fn in steps[a.cmd]:
        fn(a)


if __name__ == "__main__":
    main()
