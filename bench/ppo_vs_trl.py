"""Benchmark: PPO on a learned reward model, rlhfkit against TRL's experimental PPOTrainer (issue 14).

The InstructGPT step-3 setting of ``bench/instructgpt_arith.py``: the SFT'd char-level addition model of
``bench/grpo_arith.py`` (``bench/out/grpo_arith/sft``, its ``train.jsonl`` prompts and 500 held-out problems in
``eval.jsonl``) is optimised with PPO against the learned reward model ``bench/out/instructgpt_arith/rm`` (a
sequence-classification head on the same backbone). Both libraries get the same policy, reference (a copy of the
policy), reward model, prompts and batch: 32 prompts × 1 completion per PPO step, 2 PPO epochs × 2 mini-batches
(4 optimiser steps per rollout), lr 1e-4 constant, β 0.05 (k1 per-token KL in the reward), γ 1, GAE λ 0.95,
clip 0.2, value clip 0.2, value-loss weight 0.1, advantages whitened, 5 new tokens at temperature 1 stopping at
EOS, fp32, gradient checkpointing off. TRL is 1.12.0 (the last release with ``trl.experimental.ppo``, in
``bench/.venv-trl-ppo``, run by ``bench/peers/trl_ppo.py``); rlhfkit calls ``rlhfkit.language.ppo.train_ppo`` as
``instructgpt_arith.py``'s ``ppo_run`` does.

Where the two differ by design (each library's own recipe, see bench/peers/README.md):

- KL controller: TRL has only a fixed ``kl_coef``; rlhfkit runs fixed β too by default (``--ours-kl-target T``
  runs its adaptive controller instead, as ``instructgpt_arith.py ppo`` does).
- Value function: TRL trains a separate value model initialised from the reward model (its recipe); rlhfkit
  defaults to a value head on the policy (``ppo_run``'s default; ``--ours-critic rm`` uses a separate critic from
  the reward model like TRL).
- Gradient clipping: rlhfkit clips at norm 1.0 (TrainArgs' default); TRL 1.12's PPOTrainer never clips.

The reward (``--rm-kind``): ``seqcls`` (the default) is the scalar reward model above, which gives PPO no signal on
this task; ``simpo`` makes ``--rm`` a SimPO-trained causal LM (``bench/out/instructgpt_arith/simpo_strong``) scored
by its implicit reward ``(β/|y|) log π(y | x)`` with ``--simpo-beta`` (2, as it was trained): rlhfkit through the
``simpo:DIR,BETA`` reward spec, TRL through ``trl_ppo.py --reward-kind simpo``, whose wrapper gives the same value
for the same sample (``check-simpo`` measures that). TRL's value model (and rlhfkit's critic with
``--ours-critic rm``) then starts from ``--value-model``, default the scalar RM ``bench/out/instructgpt_arith/rm``:
a causal LM has no score head to start a critic from.

1. ``throughput``: both libraries for ``--steps`` PPO steps at that batch, each a fresh process with
   ``--threads`` torch threads, no evaluation: completions/s, trained tokens/s (prompt + completion tokens of
   every sequence through the training forward, once per PPO epoch, per second of training wall time) and the
   generation/reward/training split. Target: rlhfkit ≥ 1.5× TRL's trained tokens/s.
2. ``race``: for each seed, each library trains on the learned RM for ``--budget`` seconds of training wall
   time (evaluation excluded: the clock pauses), scoring held-out greedy exact match (the gold reward) every
   ``--eval-every`` seconds. Target: rlhfkit's accuracy ≥ TRL's at equal wall time (at the end of the budget;
   the table also compares every ``--eval-every`` mark). Writes a PNG of the curves.
3. ``check-simpo``: ``--n`` prompt + completion samples (from ``pairs.jsonl``: completions ending at EOS with junk
   sampled after it, cut at the length limit without EOS, and empty; prompts of two widths so TRL left-pads)
   scored by rlhfkit's ``simpo:`` reward and by ``trl_ppo.py check-simpo`` (TRL's own ``truncate_response`` and
   ``get_reward``); prints both and the largest difference, and fails above ``--tol``.

Each command appends its table, under a header line (date, machine, load average, versions), to
``--results`` (default ``bench/results/ppo_vs_trl.txt``) and keeps the raw JSON records in ``--out``.

    bash bench/peers/setup_trl.sh ppo                               # bench/.venv-trl-ppo (TRL 1.12.0)
    .venv/bin/python bench/ppo_vs_trl.py throughput --steps 30
    .venv/bin/python bench/ppo_vs_trl.py race --budget 600 --eval-every 60 --seeds 0
    .venv/bin/python bench/ppo_vs_trl.py check-simpo --threads 1
    .venv/bin/python bench/ppo_vs_trl.py race --rm-kind simpo --rm bench/out/instructgpt_arith/simpo_strong

Timings compare only from a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRL_PY = HERE / ".venv-trl-ppo" / "bin" / "python"
TRL_PPO = HERE / "peers" / "trl_ppo.py"
ARITH = HERE / "out" / "grpo_arith"
RM = HERE / "out" / "instructgpt_arith" / "rm"
SIMPO = HERE / "out" / "instructgpt_arith" / "simpo_strong"
PAIRS = HERE / "out" / "instructgpt_arith" / "pairs.jsonl"
OUT = HERE / "out" / "ppo_vs_trl"
RESULTS = HERE / "results" / "ppo_vs_trl.txt"
PNG = HERE / "results" / "ppo_vs_trl_race.png"
TARGET_SPEEDUP = 1.5
EPS = 1e-6  # rlhfkit's accuracy is a float32 mean (0.0199999996 for 10/500)

# instructgpt_arith.py's PPO settings (its argparse defaults, passed to PPOSettings/TrainArgs by ppo_run)
SETTINGS = {"prompts_per_step": 32, "generations": 1, "ppo_epochs": 2, "mini_batches": 2, "beta": 0.05,
            "lr": 1e-4, "kl_horizon": 10_000.0, "max_new_tokens": 5, "temperature": 1.0}


# ----------------------------------------------------------------------------------------------
# rlhfkit worker: one run in a fresh process, the same JSON as the TRL peer
# ----------------------------------------------------------------------------------------------


def worker_ours(a: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(a.threads)
    import transformers

    import rlhfkit
    from rlhfkit.language.models import (
        load_causal_lm,
        load_reward_model,
        load_tokenizer,
    )
    from rlhfkit.language.online import evaluate_greedy
    from rlhfkit.language.ppo import PPOSettings, train_ppo
    from rlhfkit.language.prompts import load_prompts
    from rlhfkit.language.rewards import RewardFunction, load_reward_function
    from rlhfkit.language.train import TrainArgs

    sys.path.insert(0, str(HERE))  # the gold reward of the InstructGPT benchmark
    from instructgpt_arith import exact_match

    race = a.mode == "race"
    tok, model = load_tokenizer(a.model), load_causal_lm(a.model)
    train, held = load_prompts(a.prompts).examples, load_prompts(a.eval).examples if a.eval else []
    gold = RewardFunction("exact_match", exact_match)
    rewards = [load_reward_function(reward_spec(a.rm_kind, a.rm, a.simpo_beta))]
    critic = load_reward_model(a.critic_model or a.rm, pad_token_id=tok.pad_token_id) if a.critic == "rm" else None

    def evaluate(m) -> dict[str, float]:
        acc = evaluate_greedy(m, tok, held, [gold], max_new_tokens=a.max_new_tokens)["eval/reward"]
        return {"eval/accuracy": round(acc * len(held)) / len(held)}  # exact k/n (the mean is a float32)

    # as instructgpt_arith.ppo_run: constant lr, no warm-up, max_length 32, the rest TrainArgs' defaults
    # (max_grad_norm 1.0, weight decay 0, no gradient checkpointing)
    max_steps = (a.steps if not race else a.max_steps) or 10**9
    args = TrainArgs(lr=a.lr, max_steps=max_steps, schedule="constant", warmup_ratio=0.0, max_length=32, seed=a.seed)
    settings = PPOSettings(prompts_per_step=a.prompts_per_step, num_generations=a.generations,
                           ppo_epochs=a.ppo_epochs, mini_batches=a.mini_batches, max_new_tokens=a.max_new_tokens,
                           temperature=a.temperature, beta=a.beta, kl_target=a.kl_target, kl_horizon=a.kl_horizon,
                           eval_every_s=a.eval_every if race else 0.0, max_train_s=(a.budget or 0.0) if race else 0.0)
    t0 = time.perf_counter()
    r = train_ppo(model, tok, train, rewards, args, settings, critic=critic, gold=[gold],
                  evaluate=evaluate if race else None, out=a.out)
    call_s = time.perf_counter() - t0
    steps = [h for h in r.history if "reward/mean" in h]
    curve = [{"train_s": round(h["time/train_wall_s"], 3), "step": h["step"], "accuracy": h["eval/accuracy"]}
             for h in r.history if "eval/accuracy" in h]

    def mean(key):
        xs = [h[key] for h in steps if key in h]
        return sum(xs) / len(xs) if xs else None

    return {"library": "rlhfkit", "mode": a.mode,
            "versions": {"rlhfkit": rlhfkit.__version__, "torch": torch.__version__,
                         "transformers": transformers.__version__, "python": platform.python_version()},
            "config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
                       "torch_threads": torch.get_num_threads(), "max_grad_norm": args.max_grad_norm,
                       "kl_controller": "fixed" if a.kl_target is None else f"adaptive (target {a.kl_target})",
                       "reward": rewards[0].name,
                       "value": ("value head on the policy" if critic is None
                                 else f"separate critic from {a.critic_model or a.rm}")},
            "curve": curve, "initial_accuracy": curve[0]["accuracy"] if curve else None,
            "final_accuracy": curve[-1]["accuracy"] if curve else None, "steps": r.steps,
            "steps_per_s": r.steps / r.wall_s if r.wall_s else None,
            "train_wall_s": r.wall_s, "eval_s": r.eval_s, "train_call_s": call_s,
            "gen_s": r.generate_s + r.reward_s, "generate_s": r.generate_s, "reward_s": r.reward_s,
            "train_s": r.train_s, "completions": r.completions, "completion_tokens": r.completion_tokens,
            "trained_tokens": r.trained_tokens, "computed_tokens": r.computed_tokens,
            "completions_per_s": r.completions_per_s, "trained_tokens_per_s": r.trained_tokens_per_s,
            "clipped_ratio": mean("completions/clipped_ratio"), "mean_train_score": mean("reward/mean"),
            "mean_train_gold": mean("gold/mean"), "mean_kl": mean("kl/sequence"),
            "final_kl": steps[-1].get("kl/sequence") if steps else None}


def reward_spec(kind: str, rm: str | Path, beta: float) -> str:
    """rlhfkit's reward spec for ``--rm-kind``: the RM directory, or ``simpo:DIR,BETA`` (as
    ``instructgpt_arith.reward_model_function`` builds it for a SimPO reward model)."""
    return f"simpo:{rm},{beta}" if kind == "simpo" else str(rm)


# ----------------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------------


def _last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("no JSON line in the output:\n" + text[-3000:])


def _value_model(a: argparse.Namespace) -> Path:
    """The value model's starting point: ``--value-model``, else the RM itself (seqcls) or the scalar RM (simpo)."""
    return Path(a.value_model or (RM if a.rm_kind == "simpo" else a.rm))


def run_side(side: str, a: argparse.Namespace, mode: str, seed: int, extra: list[str] = ()) -> dict:
    s = SETTINGS
    model, prompts, evalf = Path(a.model or Path(a.arith) / "sft"), Path(a.arith) / "train.jsonl", \
        Path(a.arith) / "eval.jsonl"
    work = Path(a.out)
    if mode == "throughput":
        when = ["--steps", str(a.steps)]
    else:
        when = ["--budget", str(a.budget), "--eval-every", str(a.eval_every)]
    if side == "trl":
        if not TRL_PY.is_file():
            raise SystemExit(f"no {TRL_PY}: run `bash bench/peers/setup_trl.sh ppo` first")
        when = [w.replace("--budget", "--budget-s").replace("--eval-every", "--eval-every-s") for w in when]
        cmd = [str(TRL_PY), str(TRL_PPO), mode, *when, "--model", str(model), "--reward-model", str(a.rm),
               "--reward-kind", a.rm_kind, "--simpo-beta", str(a.simpo_beta), "--value-model", str(_value_model(a)),
               "--prompts", str(prompts), *(["--eval", str(evalf)] if mode == "race" else []),
               "--prompts-per-step", str(s["prompts_per_step"]), "--ppo-epochs", str(s["ppo_epochs"]),
               "--mini-batches", str(s["mini_batches"]), "--lr", str(s["lr"]), "--lr-scheduler", "constant",
               "--kl-coef", str(s["beta"]), "--max-new-tokens", str(s["max_new_tokens"]),
               "--temperature", str(s["temperature"]), "--no-gradient-checkpointing",
               "--seed", str(seed), "--torch-threads", str(a.threads), "--out", str(work / "trl_tmp"), *extra]
    else:
        cmd = [sys.executable, __file__, "ours", mode, *when, "--model", str(model), "--rm", str(a.rm),
               "--rm-kind", a.rm_kind, "--simpo-beta", str(a.simpo_beta), "--critic-model", str(_value_model(a)),
               "--prompts", str(prompts), *(["--eval", str(evalf)] if mode == "race" else []),
               "--prompts-per-step", str(s["prompts_per_step"]), "--generations", str(s["generations"]),
               "--ppo-epochs", str(s["ppo_epochs"]), "--mini-batches", str(s["mini_batches"]), "--lr", str(s["lr"]),
               "--beta", str(s["beta"]), "--kl-horizon", str(s["kl_horizon"]),
               "--max-new-tokens", str(s["max_new_tokens"]), "--temperature", str(s["temperature"]),
               "--seed", str(seed), "--threads", str(a.threads), "--critic", a.ours_critic,
               *(["--kl-target", str(a.ours_kl_target)] if a.ours_kl_target else []), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise RuntimeError(f"{side} failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    record = _last_json(proc.stdout)
    record["process_s"] = round(time.perf_counter() - t0, 1)
    record["command"] = cmd
    return record


def _header(title: str, records: list[dict], load_start: tuple[float, ...]) -> str:
    load = os.getloadavg()
    ours = next((r for r in records if r["library"] == "rlhfkit"), None)
    peer = next((r for r in records if r["library"] == "trl"), None)
    v = []
    if ours:
        vo = ours["versions"]
        v.append(f"rlhfkit {vo['rlhfkit']} (torch {vo['torch']}, transformers {vo['transformers']})")
    if peer:
        vp = peer["versions"]
        v.append(f"TRL {vp['trl']} (torch {vp['torch']}, transformers {vp['transformers']}, "
                 f"accelerate {vp['accelerate']})")
    threads = (ours or peer or {}).get("config", {}).get("torch_threads")
    return (f"# {title} — {time.strftime('%Y-%m-%d %H:%M')}, {platform.node()} {platform.machine()} "
            f"{os.cpu_count()} CPUs, load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} at "
            f"the start, {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end; {' vs '.join(v)}; "
            f"{threads} torch thread(s) per run")


def _write(text: str, a: argparse.Namespace) -> None:
    print(text)
    path = Path(a.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(text + "\n\n")
    print(f"(appended to {path})")


def _settings_line(a: argparse.Namespace) -> str:
    s = SETTINGS
    kl = "fixed β" if not a.ours_kl_target else f"rlhfkit adaptive KL (target {a.ours_kl_target}), TRL fixed β"
    reward = (f"the learned RM {a.rm}" if a.rm_kind == "seqcls" else
              f"the SimPO implicit reward (β/|y|) log π(y|x) of {a.rm}, β {a.simpo_beta} (|y| counts EOS; rlhfkit "
              f"{reward_spec(a.rm_kind, a.rm, a.simpo_beta)}, TRL --reward-kind simpo)")
    value = "the RM" if _value_model(a) == Path(a.rm) else _value_model(a)
    return (f"PPO on {reward}: {s['prompts_per_step']} prompts × {s['generations']} completion per step, "
            f"{s['ppo_epochs']} epochs × {s['mini_batches']} mini-batches, lr {s['lr']} constant, β {s['beta']} "
            f"({kl}), {s['max_new_tokens']} new tokens at temperature {s['temperature']}, fp32, no gradient "
            f"checkpointing; rlhfkit value: {'value head' if a.ours_critic == 'head' else f'critic from {value}'}, "
            f"TRL value: value model from {value}")


def throughput(a: argparse.Namespace) -> None:
    load0 = os.getloadavg()
    work = Path(a.out)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, side in (("rlhfkit", "rlhfkit"), ("TRL PPOTrainer", "trl")):
        print(f"[{time.strftime('%H:%M:%S')}] throughput: {name}, {a.steps} steps ...", flush=True)
        rows.append((name, run_side(side, a, "throughput", a.seed)))
    (work / "throughput.json").write_text(json.dumps({n: r for n, r in rows}, indent=1))
    ours, peer = rows[0][1], rows[1][1]
    lines = [_header("bench/ppo_vs_trl.py throughput", [ours, peer], load0), _settings_line(a),
             f"{a.steps} PPO steps per library, no evaluation; rates per second of training wall time", "",
             (f"{'library':<16} {'steps':>5} {'wall s':>7} {'compl/s':>8} {'tok/s':>8} {'gen s':>7} {'rm s':>6} "
             f"{'train s':>8} {'gen+rm %':>8} {'clipped':>7} {'KL':>6}")]
    for name, r in rows:
        lines.append(f"{name:<16} {r['steps']:>5} {r['train_wall_s']:>7.1f} {r['completions_per_s']:>8.1f} "
                     f"{r['trained_tokens_per_s']:>8.0f} {r['generate_s']:>7.1f} {r['reward_s']:>6.1f} "
                     f"{r['train_s']:>8.1f} {100 * r['gen_s'] / r['train_wall_s']:>8.1f} "
                     f"{r['clipped_ratio'] or 0:>7.3f} {r['mean_kl'] or 0:>6.3f}")
    ratio = ours["trained_tokens_per_s"] / peer["trained_tokens_per_s"]
    cratio = ours["completions_per_s"] / peer["completions_per_s"]
    lines += ["", (f"{'PASS' if ratio >= TARGET_SPEEDUP else 'FAIL'}  trained tokens/s rlhfkit / TRL = {ratio:.2f}× "
                  f"(target ≥ {TARGET_SPEEDUP}×); completions/s {cratio:.2f}×"),
              (f"trained tokens (prompt + completion of every sequence through the training forward, once per PPO "
              f"epoch): rlhfkit {ours['trained_tokens']}, TRL {peer['trained_tokens']} (TRL's padded positions "
              f"{peer['trained_positions']}; the samples differ, so the counts differ a little)"),
              (f"TRL's train s holds: no-grad reference + value forwards {peer['rollout_fwd_s']:.1f} s, training "
              f"forwards {peer['fwd_s']:.1f} s (backward excluded), its own gc.collect() {peer['gc_s']:.1f} s")]
    _write("\n".join(lines), a)


def _acc_at(curve: list[dict], t: float) -> float | None:
    """The accuracy of the last evaluation at or before training time ``t``."""
    acc = None
    for c in curve:
        if c["train_s"] <= t + 1e-6:
            acc = c["accuracy"]
    return acc


def race(a: argparse.Namespace) -> None:
    load0 = os.getloadavg()
    work = Path(a.out)
    work.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in str(a.seeds).split(",")]
    path = work / "race.json"
    results = json.loads(path.read_text()) if a.keep and path.is_file() else {}
    for seed in seeds:
        for side in ("trl", "rlhfkit"):
            key = f"{side}/{seed}"
            if key in results:
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {key}: {a.budget:.0f} s budget ...", flush=True)
            results[key] = r = run_side(side, a, "race", seed)
            print(f"    {r['initial_accuracy']:.3f} → {r['final_accuracy']:.3f} in {r['train_wall_s']:.0f} s, "
                  f"{r['steps']} steps", flush=True)
            path.write_text(json.dumps(results))
    _plot(results, seeds, a)
    recs = [results[k] for k in results]
    lines = [_header("bench/ppo_vs_trl.py race", recs, load0), _settings_line(a),
             (f"budget {a.budget:.0f} s of training wall time per run (evaluation excluded), held-out greedy exact "
             f"match (the gold reward) on {Path(a.arith) / 'eval.jsonl'}, every {a.eval_every:.0f} s"), "",
             (f"{'seed':>4} {'library':<8} {'start':>6} {'final':>6} {'steps':>6} {'wall s':>7} {'score':>7} "
             f"{'gold':>6} {'KL':>6}")]
    finals: dict[str, list[float]] = {"trl": [], "rlhfkit": []}
    marks_ok = []
    for seed in seeds:
        for side in ("trl", "rlhfkit"):
            r = results.get(f"{side}/{seed}")
            if r is None:
                continue
            finals[side].append(r["final_accuracy"])
            lines.append(f"{seed:>4} {side:<8} {r['initial_accuracy']:>6.3f} {r['final_accuracy']:>6.3f} "
                         f"{r['steps']:>6} {r['train_wall_s']:>7.0f} {r['mean_train_score'] or 0:>7.3f} "
                         f"{r['mean_train_gold'] or 0:>6.3f} {r['final_kl'] or 0:>6.3f}")
        trl, ours = results.get(f"trl/{seed}"), results.get(f"rlhfkit/{seed}")
        if trl and ours:
            marks = [a.eval_every * k for k in range(1, int(a.budget // a.eval_every) + 1)]
            row = []
            for t in marks:
                x, y = _acc_at(ours["curve"], t), _acc_at(trl["curve"], t)
                if x is not None and y is not None:
                    row.append(f"{t:.0f}s {x:.3f}/{y:.3f}")
                    marks_ok.append(x >= y - EPS)
            lines.append(f"     seed {seed}, accuracy rlhfkit/TRL at each mark (last evaluation at or before it): "
                         + ", ".join(row))
    mean = {k: sum(v) / len(v) for k, v in finals.items() if v}
    lines.append("")
    lines.append("mean final accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in mean.items()))
    if len(mean) == 2:
        ok = mean["rlhfkit"] >= mean["trl"] - EPS
        lines.append(f"{'PASS' if ok else 'FAIL'}  target: rlhfkit's gold accuracy ≥ TRL's at equal wall time (end "
                     f"of the budget, mean over seeds): {mean['rlhfkit']:.3f} vs {mean['trl']:.3f}; rlhfkit ≥ TRL at "
                     f"{sum(marks_ok)} of {len(marks_ok)} marks")
    lines.append(f"plot: {a.png}; records: {path}")
    _write("\n".join(lines), a)


def check_simpo(a: argparse.Namespace) -> None:
    """rlhfkit's and TRL's SimPO reward of the same samples: they must agree to ``--tol``.

    Each case is what a PPO rollout hands both libraries: a prompt and ``R`` sampled token ids. rlhfkit scores the
    completion cut after its first EOS and decoded (``score_rollout``) with the ``simpo:`` spec; TRL gets the
    prompts left-padded to one width and the raw ids, truncated after the first EOS and padded by TRL's own
    ``truncate_response``, through its ``get_reward`` (``trl_ppo.py check-simpo``).
    """
    import random
    import re

    import torch

    torch.set_num_threads(a.threads)
    from rlhfkit.language.models import load_tokenizer
    from rlhfkit.language.rewards import load_reward_function, score_completions

    tok = load_tokenizer(a.model or Path(a.arith) / "sft")
    eos, R = tok.eos_token_id, 8
    rng = random.Random(0)
    ordinary = [i for i in range(len(tok)) if i not in tok.all_special_ids]
    rows = [json.loads(line) for line in Path(a.pairs).read_text().splitlines()[: (a.n + 1) // 2]]
    prompts, responses = [], []
    for k in range(a.n):
        row = rows[k // 2]
        prompt = row["prompt"] if k % 4 < 2 else re.sub(r"Q: \d(\d)\+", r"Q: \1+", row["prompt"])  # 2 widths
        ids = tok(row["chosen" if k % 2 == 0 else "rejected"], add_special_tokens=False)["input_ids"][: R - 1]
        kind = k % 3  # 0: ends at EOS, then what a sampler may emit after it (TRL pads it, rlhfkit cuts it);
        # 1: cut at the length limit without EOS; 2: empty (EOS first)
        ids = ids + [eos] if kind == 0 else [eos] if kind == 2 else ids
        fill = ordinary if kind == 1 else ordinary + [eos]
        prompts.append(prompt)
        responses.append((ids + [rng.choice(fill) for _ in range(R)])[:R])
    cut = [r[: r.index(eos) + 1] if eos in r else r for r in responses]
    texts = tok.batch_decode(cut, skip_special_tokens=True)  # as score_rollout decodes a rollout
    spec = reward_spec("simpo", a.rm, a.simpo_beta)
    ours = score_completions([load_reward_function(spec)], prompts, texts, {"completion_ids": cut})[1][:, 0].tolist()

    if not TRL_PY.is_file():
        raise SystemExit(f"no {TRL_PY}: run `bash bench/peers/setup_trl.sh ppo` first")
    work = Path(a.out)
    work.mkdir(parents=True, exist_ok=True)
    cases = work / "simpo_check_cases.json"
    cases.write_text(json.dumps({"prompts": prompts, "responses": responses}))
    cmd = [str(TRL_PY), str(TRL_PPO), "check-simpo", "--reward-model", str(a.rm), "--simpo-beta", str(a.simpo_beta),
           "--cases", str(cases), "--torch-threads", str(a.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
    if proc.returncode:
        raise RuntimeError(f"trl check-simpo failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    peer = _last_json(proc.stdout)
    diffs = [abs(x - y) for x, y in zip(ours, peer["rewards"])]
    lines = [(f"{'prompt':<14} {'response ids (as sampled)':<40} {'rlhfkit text':<24} {'rlhfkit':>10} {'TRL':>10} "
              f"{'|diff|':>9}")]
    for p_, r, t, x, y, d in zip(prompts, responses, texts, ours, peer["rewards"], diffs):
        lines.append(f"{p_:<14} {r!s:<40} {t!a:<24} {x:>10.5f} {y:>10.5f} {d:>9.2e}")
    worst = max(diffs)
    ok = worst <= a.tol
    lines.append(f"{'PASS' if ok else 'FAIL'}  SimPO reward {spec}: rlhfkit vs TRL get_reward on {len(diffs)} samples, "
                 f"max |diff| {worst:.2e} (tolerance {a.tol:g})")
    print("\n".join(lines))
    (work / "simpo_check.json").write_text(json.dumps({"spec": spec, "prompts": prompts, "responses": responses,
                                                       "texts": texts, "rlhfkit": ours, "trl": peer["rewards"],
                                                       "max_abs_diff": worst}, indent=1))
    if not ok:
        raise SystemExit(1)


def _plot(results: dict, seeds: list[int], a: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colors = {"trl": "tab:orange", "rlhfkit": "tab:blue"}
    for i, seed in enumerate(seeds):
        for side in ("trl", "rlhfkit"):
            r = results.get(f"{side}/{seed}")
            if r is None:
                continue
            label = (f"TRL {r['versions']['trl']} PPOTrainer" if side == "trl" else "rlhfkit train_ppo") \
                if i == 0 else None
            ax.plot([c["train_s"] / 60 for c in r["curve"]], [100 * c["accuracy"] for c in r["curve"]],
                    color=colors[side], alpha=0.85, marker="o", ms=2.5, label=label)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("training wall time (minutes, evaluation excluded)")
    ax.set_ylabel("held-out exact match (%)")
    ax.set_title("PPO on a learned reward model (two-digit addition): rlhfkit vs TRL")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(a.png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.png, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("throughput", "race"):
        q = sub.add_parser(name)
        q.add_argument("--arith", default=str(ARITH), help="grpo_arith's directory: sft/, train.jsonl, eval.jsonl")
        q.add_argument("--model", default=None, help="the SFT policy (default: ARITH/sft)")
        q.add_argument("--rm", default=str(RM),
                       help="the learned reward model: a sequence-classification directory (seqcls) or a SimPO-trained "
                            "causal LM (simpo)")
        q.add_argument("--rm-kind", choices=["seqcls", "simpo"], default="seqcls",
                       help="how --rm scores: its scalar head, or SimPO's implicit reward (β/|y|) log π(y|x)")
        q.add_argument("--simpo-beta", type=float, default=2.0, help="simpo: β (SimPO's, as simpo_strong was trained)")
        q.add_argument("--value-model", default=None,
                       help="TRL's value model and rlhfkit's --ours-critic rm start from this sequence-classification "
                            f"directory (default: --rm for seqcls, {RM} for simpo)")
        q.add_argument("--out", default=str(OUT), help="raw JSON records and TRL's scratch output_dir")
        q.add_argument("--results", default=str(RESULTS), help="results text, appended to")
        q.add_argument("--png", default=str(PNG), help="race: the accuracy-curve PNG")
        q.add_argument("--threads", type=int, default=2)
        q.add_argument("--seed", type=int, default=0, help="throughput: the seed")
        q.add_argument("--seeds", default="0", help="race: comma-separated seeds")
        q.add_argument("--steps", type=int, default=30, help="throughput: PPO steps per library")
        q.add_argument("--budget", type=float, default=600.0, help="race: training seconds per run")
        q.add_argument("--eval-every", type=float, default=60.0, help="race: training seconds between evaluations")
        q.add_argument("--keep", action="store_true", help="race: keep finished runs of OUT/race.json")
        q.add_argument("--ours-kl-target", type=float, default=None,
                       help="rlhfkit: adaptive KL controller with this target (default: fixed β, like TRL)")
        q.add_argument("--set", dest="sets", action="append", default=[],
                       help="change a shared setting for both libraries, KEY=VALUE (keys of SETTINGS), e.g. lr=3e-4")
        q.add_argument("--ours-critic", choices=["head", "rm"], default="head",
                       help="rlhfkit's value function: a head on the policy (ppo_run's default) or a critic from "
                            "the RM (TRL's recipe)")
    c = sub.add_parser("check-simpo", help="rlhfkit's and TRL's SimPO reward of the same samples")
    c.add_argument("--rm", default=str(SIMPO), help="the SimPO-trained causal LM")
    c.add_argument("--simpo-beta", type=float, default=2.0)
    c.add_argument("--arith", default=str(ARITH), help="grpo_arith's directory (its sft/ tokenizer)")
    c.add_argument("--model", default=None, help="the policy whose tokenizer decodes the samples (default: ARITH/sft)")
    c.add_argument("--pairs", default=str(PAIRS), help="prompt/chosen/rejected JSONL the samples come from")
    c.add_argument("--n", type=int, default=16, help="samples")
    c.add_argument("--tol", type=float, default=1e-4, help="largest allowed |rlhfkit - TRL|")
    c.add_argument("--out", default=str(OUT), help="the cases and both libraries' values (simpo_check.json)")
    c.add_argument("--threads", type=int, default=1)
    w = sub.add_parser("ours", help="one rlhfkit run (worker; prints a JSON line)")
    w.add_argument("mode", choices=["throughput", "race"])
    w.add_argument("--model", required=True)
    w.add_argument("--rm", required=True)
    w.add_argument("--rm-kind", choices=["seqcls", "simpo"], default="seqcls")
    w.add_argument("--simpo-beta", type=float, default=2.0)
    w.add_argument("--critic-model", default=None, help="--critic rm starts from this directory (default: --rm)")
    w.add_argument("--prompts", required=True)
    w.add_argument("--eval", default=None)
    w.add_argument("--steps", type=int, default=None, help="throughput: PPO steps")
    w.add_argument("--budget", type=float, default=None, help="race: training seconds")
    w.add_argument("--max-steps", type=int, default=None, help="race: also stop after this many PPO steps")
    w.add_argument("--eval-every", type=float, default=60.0)
    w.add_argument("--prompts-per-step", type=int, default=SETTINGS["prompts_per_step"])
    w.add_argument("--generations", type=int, default=SETTINGS["generations"])
    w.add_argument("--ppo-epochs", type=int, default=SETTINGS["ppo_epochs"])
    w.add_argument("--mini-batches", type=int, default=SETTINGS["mini_batches"])
    w.add_argument("--lr", type=float, default=SETTINGS["lr"])
    w.add_argument("--beta", type=float, default=SETTINGS["beta"])
    w.add_argument("--kl-target", type=float, default=None)
    w.add_argument("--kl-horizon", type=float, default=SETTINGS["kl_horizon"])
    w.add_argument("--max-new-tokens", type=int, default=SETTINGS["max_new_tokens"])
    w.add_argument("--temperature", type=float, default=SETTINGS["temperature"])
    w.add_argument("--critic", choices=["head", "rm"], default="head")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--threads", type=int, default=2)
    w.add_argument("--out", default=None, help="a run directory for metrics.jsonl (default: none)")
    a = p.parse_args(argv)
    if a.cmd == "ours":
        if a.mode == "throughput" and not a.steps:
            p.error("ours throughput needs --steps")
        if a.mode == "race" and (not a.eval or (a.budget is None and a.max_steps is None)):
            p.error("ours race needs --eval and --budget and/or --max-steps")
        print(json.dumps(worker_ours(a)))
        return
    for kv in getattr(a, "sets", []):
        k, _, v = kv.partition("=")
        if k not in SETTINGS or k == "generations":
            p.error(f"--set {kv}: the shared settings are {', '.join(x for x in SETTINGS if x != 'generations')}")
        SETTINGS[k] = type(SETTINGS[k])(float(v)) if isinstance(SETTINGS[k], int) else type(SETTINGS[k])(v)
    if a.cmd == "check-simpo":
        check_simpo(a)
    elif a.cmd == "throughput":
        throughput(a)
    else:
        race(a)


if __name__ == "__main__":
    main()
