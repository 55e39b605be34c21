"""``rlhf lm grpo`` and ``rlhf lm ppo``: online RL from reward functions and reward models.

    rlhf lm grpo --model runs/sft --data prompts.jsonl --reward exact_match --out runs/grpo
    rlhf lm grpo --model runs/sft --data prompts.jsonl --reward my_rewards.py:correct \\
        --reward 'regex:<think>.*</think>.*' --reward-weight 1 --reward-weight 0.2 --out runs/grpo
    rlhf lm ppo  --model runs/sft --data prompts.jsonl --reward runs/rm --kl-target 6 --out runs/ppo
    rlhf lm ppo  --model runs/sft --data prompts.jsonl --reward runs/rm --cost runs/cm --cost-threshold 0 \
        --out runs/safe                                   # Safe RLHF: PPO-Lagrangian with a cost model
    rlhf lm ppo  --model runs/sft --data prompts.jsonl --segment-reward my_rewards.py:per_answer --out runs/fg
    rlhf lm ppo  --model runs/sft --data prompts.jsonl --judge runs/judge --judge-reference-column chosen \
        --out runs/rlaif                                  # an AI judge against a reference response
    rlhf lm grpo --out runs/grpo --resume

Writes to ``--out``: the model (safetensors, a normal HF directory), ``metrics.jsonl`` (+
TensorBoard under ``tb/``), ``curves.png``, ``completions.jsonl`` (sampled prompts, completions and
rewards every ``--log-completions-every`` steps, also printed as a table), ``checkpoint/`` (for
``--resume``), ``train_args.json`` and ``summary.json``; PPO adds ``value_head.safetensors`` and,
with ``--gold``, ``overoptimisation.png``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rlhfkit.cli.lm import DATA_HELP, THREADS, _fail, _is_main, app, console, loaded, option_names, run_directory

Opt = typer.Option

CURVES = {"grpo": ("reward/mean", "eval/reward", "policy/kl", "policy/clip_fraction", "completions/mean_length",
                   "reward/zero_std_fraction", "completions/clipped_ratio", "loss/policy", "train/grad_norm"),
          "ppo": ("reward/mean", "gold/mean", "eval/reward", "reward/segments/mean", "kl/sequence", "kl/beta",
                  "cost/mean", "lagrange/lambda", "loss/value", "loss/cost_value", "policy/clip_fraction",
                  "completions/mean_length", "loss/ptx", "value/mean")}

# options shared by the two commands (typer needs them spelled out per command)
MODEL = Opt(None, help="Policy to start from (usually the SFT model). Required unless --resume.")
DATA = Opt(None, help=DATA_HELP.replace("(TRL's preference formats)", "with a prompt column; other columns reach "
                                                                      "the reward functions"))
REWARD = Opt(None, help="Reward function, repeatable: module:function, path/file.py:function, a reward-model "
                        "directory, exact_match (the answer column) or regex:PATTERN. Signature "
                        "f(prompts, completions, **columns).")
REWARD_WEIGHT = Opt(None, help="Weight of each --reward, in order (default 1 each).")
OUT = Opt(..., help="Output directory.")
EVAL_DATA = Opt(None, help="Held-out prompts: mean reward of greedy completions at evaluations.")
PROMPT_COLUMN = Opt("prompt", help="The column holding the prompt.")
MAX_NEW = Opt(256, help="Longest completion in tokens.")
TEMPERATURE = Opt(1.0, help="Sampling temperature.")
TOP_P = Opt(1.0, help="Nucleus sampling (1: off).")
TOP_K = Opt(0, help="Top-k sampling (0: off).")
REF = Opt(None, help="Reference model directory (default: the starting policy).")
LOG_EVERY = Opt(10, help="Log (and print) the step's completions every N steps (0: never).")
SAVE_EVERY = Opt(50, help="Checkpoint every N steps (0: only at the end).")
EVAL_EVERY = Opt(0, help="Evaluate --eval-data every N steps (0: at the start and the end).")
MAX_TRAIN_S = Opt(0.0, help="Stop after this many seconds of training (0: no limit).")
EPOCHS = Opt(1.0, help="Passes over the prompts (when --max-steps is 0).")
MAX_STEPS = Opt(0, help="Rollout batches to train on (overrides --epochs).")
MAX_LENGTH = Opt(1024, help="Longest prompt + completion in tokens (prompts cut from the left).")
WARMUP = Opt(0.0, help="Warm-up fraction of the optimiser steps.")
SCHEDULE = Opt("constant", help="Learning-rate decay after the warm-up: constant, linear or cosine.")
WD = Opt(0.0, help="AdamW weight decay.")
GRAD_NORM = Opt(1.0, help="Gradient clipping (0: off).")
SEED = Opt(0, help="Seed of the prompt order and the sampling.")
LORA = Opt(0, help="LoRA rank via peft (0: full fine-tuning).")
GC = Opt(False, help="Gradient checkpointing.")
SKIP = Opt(False, help="Skip bad rows (and count them).")
RESUME = Opt(False, help="Continue the run in --out from its checkpoint, with its saved settings.")
OVERWRITE = Opt(False, help="Replace a finished or interrupted run in --out.")


def _table(step: int, rows: list[dict[str, Any]], n: int = 8) -> None:
    table = Table(title=f"completions at step {step} (first {min(n, len(rows))} of {len(rows)})", show_lines=False)
    extra = [k for k in ("advantage", "kl", "gold") if k in rows[0]]
    for col in ("prompt", "completion", "reward", *extra):
        table.add_column(col, overflow="fold", justify="left" if col in ("prompt", "completion") else "right")
    for r in rows[:n]:
        prompt = r["prompt"] if isinstance(r["prompt"], str) else r["prompt"][-1]["content"]
        completion = r["completion"] if isinstance(r["completion"], str) else r["completion"][-1]["content"]
        table.add_row(escape(prompt[-60:]), escape(completion[:80]), f"{r['reward']:.3f}",
                      *(f"{r[k]:+.2f}" for k in extra))
    console.print(table)


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    if resume:
        if not (out / "checkpoint" / "state.json").is_file() or not (out / "train_args.json").is_file():
            _fail(f"--resume: {out} holds no checkpoint to resume (no checkpoint/state.json)")
        return
    if out.exists() and any(out.iterdir()):
        if not (out / "train_args.json").is_file():
            _fail(f"--out {out} exists and is not an rlhfkit run directory; choose another")
        if not overwrite:
            _fail(f"--out {out} already holds a run; pass --resume to continue it or --overwrite to start over")
        shutil.rmtree(out)


def _prompts(path: Path, prompt_column: str, skip_bad: bool) -> Any:
    from rlhfkit.language.prompts import load_prompts

    return loaded(lambda: load_prompts(path, prompt_column=prompt_column, skip_bad=skip_bad), path, skip_bad)


def _rewards(specs: list[str], weights: list[float] | None, columns: list[str], what: str = "--reward",
             weight_option: str | None = None) -> list:
    from rlhfkit.language.rewards import RewardError, check_columns, load_reward_function

    weights = list(weights or [1.0] * len(specs))
    if len(weights) != len(specs):
        _fail(f"{len(specs)} {what} but {len(weights)} {weight_option or what + '-weight'}: give one weight per "
              f"{what}, in order")
    try:
        functions = [load_reward_function(spec, weight=w) for spec, w in zip(specs, weights)]
        check_columns(functions, columns)
    except RewardError as e:
        _fail(str(e))
    return functions


def _online(kind: str, *, settings_of: Callable[[], Any], settings_cls: type, model: Optional[Path],
            data: Optional[Path], reward: Optional[list[str]], reward_weight: Optional[list[float]], out: Path,
            eval_data: Optional[Path], prompt_column: str, ref: Optional[Path], train: dict[str, Any],
            skip_bad: bool, resume: bool, overwrite: bool, threads: int, extra: dict[str, Any],
            trainer: Callable[..., Any]) -> None:
    """The command both trainers share: settings (or the saved ones on --resume), data, rewards, models,
    the run with progress and completion tables, then the model, curves and summary."""
    from rlhfkit.language.models import apply_lora, load_causal_lm, load_tokenizer, save_model
    from rlhfkit.language.rewards import RewardError
    from rlhfkit.language.train import TrainArgs, plot_curves, save_args, set_threads

    _check_out(out, resume, overwrite)
    if resume:
        saved = json.loads((out / "train_args.json").read_text())
        for name, given, key in (("--model", model, "model"), ("--data", data, "data")):
            if given is not None and str(given) != saved[key]:
                _fail(f"{name} {given} differs from the run's {saved[key]}; --resume continues with the saved settings "
                      f"(in {out / 'train_args.json'})")
        if reward and list(reward) != saved["rewards"]:
            _fail(f"--reward {reward} differs from the run's {saved['rewards']}; --resume uses the saved settings")
        for name, value in extra.items():
            if value not in (None, [], ()) and value != saved.get("extra", {}).get(name):
                _fail(f"{name} {value} differs from the run's {saved.get('extra', {}).get(name)}; --resume continues "
                      f"with the saved settings (in {out / 'train_args.json'})")
        model, data, reward = Path(saved["model"]), Path(saved["data"]), saved["rewards"]
        reward_weight, eval_data = saved["reward_weights"], Path(saved["eval_data"]) if saved["eval_data"] else None
        ref, prompt_column, extra = (Path(saved["ref"]) if saved.get("ref") else None), saved["prompt_column"], \
            saved.get("extra", {})
        try:
            args, settings = TrainArgs(**saved["train"]), settings_cls(**saved[kind])
        except (TypeError, ValueError) as e:
            _fail(f"{out / 'train_args.json'} does not hold valid settings: {e}")
    else:
        if model is None or data is None or not (reward or extra.get("--segment-reward") or extra.get("--judge")):
            _fail("--model, --data and at least one --reward are required (or --resume with --out)"
                  + ("; PPO also takes --segment-reward or --judge in place of --reward" if kind == "ppo" else ""))
        try:
            settings = settings_of()
            args = TrainArgs(**train, val_fraction=0.0)
        except ValueError as e:
            _fail(option_names(str(e)))
    reward = list(reward or [])
    for name, path in (("--model", model), ("--ref", ref), *((k, Path(v)) for k, v in extra.items()
                                                             if k in ("--critic", "--judge") and v)):
        if path is not None and not (path / "config.json").is_file():
            _fail(f"{name} {path} is not a Hugging Face model directory (no config.json)")
    train_data = _prompts(data, prompt_column, skip_bad)
    held = _prompts(eval_data, prompt_column, skip_bad) if eval_data is not None else None
    functions = _rewards(reward, reward_weight, train_data.columns)
    _check_cost_models(reward, want_cost=False, what="--reward")
    options = _trainer_options(kind, extra, train_data, prompt_column, skip_bad)
    functions += options.pop("judge", [])
    set_threads(threads)
    tok, policy = load_tokenizer(model), load_causal_lm(model)
    ref_model = load_causal_lm(ref) if ref is not None and (kind == "ppo" or settings.beta > 0) else None
    if args.lora_r:
        policy = apply_lora(policy, args.lora_r, args.lora_alpha)
    done = [0]
    title = kind.upper()
    with run_directory(out), Progress(TextColumn(f"[bold]{title}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(title, total=None, info="")

        def update(step: int, total: int, record: dict[str, Any]) -> None:
            done[0] = step
            info = f"reward {record.get('reward/mean', float('nan')):.3f}  len {record.get('completions/mean_length', 0):.1f}"
            for key, label in (("reward/zero_std_fraction", "no-signal"), ("policy/kl", "kl"), ("kl/sequence", "kl"),
                               ("kl/beta", "β"), ("gold/mean", "gold"), ("cost/mean", "cost"),
                               ("lagrange/lambda", "λ")):
                if key in record:
                    info += f"  {label} {record[key]:.3g}"
            progress.update(task, completed=step, total=total, info=info)

        def show(step: int, rows: list[dict[str, Any]]) -> None:
            progress.stop()
            _table(step, rows)
            progress.start()

        if _is_main() and not resume:
            save_args(out, train=args, **{kind: settings}, model=str(model), data=str(data), rewards=reward,
                      reward_weights=list(reward_weight or [1.0] * len(reward)),
                      eval_data=str(eval_data) if eval_data else None, ref=str(ref) if ref else None,
                      prompt_column=prompt_column, extra=extra)
        try:
            result = trainer(policy, tok, train_data.examples, functions, args, settings, ref_model=ref_model,
                             eval_prompts=held.examples if held else (), out=out, resume=resume, progress=update,
                             on_completions=show, **options)
        except RewardError as e:  # _fail exits, and run_directory removes a run directory with nothing trained
            _fail(f"{e} (nothing was trained: the run stopped at the first batch)" if not done[0] else str(e))
    if not _is_main():
        return
    save_model(result.model, tok, out)
    plot_curves(out / "metrics.jsonl", out / "curves.png", keys=CURVES[kind])
    last_eval = next((h for h in reversed(result.history) if "eval/reward" in h), {})
    last = next((h for h in reversed(result.history) if "reward/mean" in h), {})
    summary = {"steps": result.steps, "train_wall_s": round(result.wall_s, 2), "generate_s": round(result.generate_s, 2),
               "reward_s": round(result.reward_s, 2), "train_s": round(result.train_s, 2),
               "completions_per_s": round(result.completions_per_s, 1),
               "trained_tokens_per_s": round(result.trained_tokens_per_s, 1),
               "final_reward_mean": last.get("reward/mean"),
               **{k: last[k] for k in ("gold/mean", "reward/segments/mean", "kl/sequence", "kl/beta", "cost/mean",
                                       "lagrange/lambda_next") if k in last},
               **{k: v for k, v in last_eval.items() if k.startswith("eval/")},
               "skipped_rows": train_data.skipped}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        table.add_row(escape(k), f"{v:.4f}" if isinstance(v, float) else escape(str(v)))
    console.print(table)
    console.print(f"model, metrics.jsonl, completions.jsonl and curves.png in {escape(str(out))}")


def _trainer_options(kind: str, extra: dict[str, Any], data: Any, prompt_column: str, skip_bad: bool) -> dict:
    """PPO's extra inputs: the critic, the watched gold rewards, the ptx text, the cost and segment
    rewards, and (under ``"judge"``, for the caller to add to the rewards) the AI judge's reward."""
    if kind != "ppo":
        return {}
    from rlhfkit.cli.lm import _load
    from rlhfkit.language.data import sft_from_preferences
    from rlhfkit.language.models import load_reward_model

    options: dict[str, Any] = {}
    if extra.get("--critic"):
        options["critic"] = load_reward_model(extra["--critic"])
    if extra.get("--gold"):
        options["gold"] = _rewards(extra["--gold"], None, data.columns, "--gold")
    if extra.get("--ptx-data"):
        loaded = _load(Path(extra["--ptx-data"]), "auto", skip_bad)
        if loaded.kind not in ("sft", "preference"):
            _fail(f"--ptx-data needs text, prompt/completion, messages or preference rows; it holds {loaded.kind}")
        options["ptx"] = sft_from_preferences(loaded.examples) if loaded.kind == "preference" else loaded.examples
    if extra.get("--cost") or extra.get("--cost-weight"):
        options["costs"] = _rewards(list(extra.get("--cost") or []), extra.get("--cost-weight"), data.columns, "--cost")
        _check_cost_models(extra.get("--cost") or [], want_cost=True, what="--cost")
    if extra.get("--segment-reward") or extra.get("--segment-weight"):
        options["segments"] = _rewards(list(extra.get("--segment-reward") or []), extra.get("--segment-weight"),
                                       data.columns, "--segment-reward", "--segment-weight")
    if extra.get("--judge"):
        options["judge"] = [_judge_reward(Path(extra["--judge"]), extra.get("--judge-principle"),
                                          extra.get("--judge-reference-column"), data.columns)]
    return options


def _judge_reward(model_dir: Path, principle: Optional[str], column: Optional[str], columns: list[str]) -> Any:
    """``--judge DIR``: the AI judge as a reward function against the reference responses in ``column``."""
    from rlhfkit.language.judge import DEFAULT_PRINCIPLE, JudgeReward, load_judge
    from rlhfkit.language.rewards import RewardFunction

    if column not in columns:
        _fail(f"--judge-reference-column {column!r} is not a column of the prompt data; it has: "
              f"{', '.join(sorted(columns)) or 'no columns besides the prompt'}")
    try:
        judge = load_judge(model_dir, principle=principle or DEFAULT_PRINCIPLE, swap=True)
    except ValueError as e:
        _fail(f"--judge {model_dir}: {e}")
    reward = JudgeReward(judge, column)
    return RewardFunction(reward.__name__, reward, 1.0)


def _check_cost_models(specs: list[str], *, want_cost: bool, what: str) -> None:
    """Warn when a model directory given as ``--cost`` is a reward model, or one given as ``--reward`` a
    cost model (``rlhf lm rm --cost`` records ``cost_model: true`` in its config): their signs are opposite."""
    for spec in specs:
        config = Path(spec) / "config.json"
        if config.is_file():
            is_cost = bool(json.loads(config.read_text()).get("cost_model", False))
            if is_cost != want_cost:
                console.print(f"[yellow]warning:[/] {what} {escape(spec)} is a "
                              f"{'cost' if is_cost else 'reward'} model (higher = "
                              f"{'less safe' if is_cost else 'better'}); "
                              f"{'--cost takes cost models (rlhf lm rm --cost)' if want_cost else 'give it as --cost'}")


def _train_dict(lr: float, epochs: float, max_steps: int, max_length: int, warmup_ratio: float, schedule: str,
                weight_decay: float, max_grad_norm: float, seed: int, lora_r: int, gradient_checkpointing: bool,
                micro_batch_size: int = 0) -> dict[str, Any]:
    return dict(lr=lr, epochs=epochs, max_steps=max_steps, micro_batch_size=micro_batch_size, max_length=max_length,
                warmup_ratio=warmup_ratio, schedule=schedule, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                seed=seed, lora_r=lora_r, gradient_checkpointing=gradient_checkpointing)


@app.command("grpo")
def grpo_cmd(
    model: Optional[Path] = MODEL, data: Optional[Path] = DATA, reward: Optional[list[str]] = REWARD,
    reward_weight: Optional[list[float]] = REWARD_WEIGHT, out: Path = OUT, eval_data: Optional[Path] = EVAL_DATA,
    prompt_column: str = PROMPT_COLUMN,
    num_generations: int = Opt(8, "--num-generations", "-G", help="G: completions per prompt (>= 2)."),
    prompts_per_step: int = Opt(4, help="Prompts per generation batch (P × G completions)."),
    num_iterations: int = Opt(1, help="μ: optimisation passes over each generation batch."),
    mini_batches: int = Opt(1, help="Optimiser steps per pass over a generation batch."),
    max_new_tokens: int = MAX_NEW, temperature: float = TEMPERATURE, top_p: float = TOP_P, top_k: int = TOP_K,
    estimator: str = Opt("grpo", help="Advantage baseline: grpo, dr_grpo, rloo or reinforce_pp."),
    scale: Optional[str] = Opt(None, help="Advantage scaling: group, batch or none (default: the estimator's)."),
    loss_aggregation: str = Opt("token_mean", help="token_mean (DAPO), sequence_mean (GRPO paper) or constant "
                                                   "(Dr. GRPO)."),
    clip_range: float = Opt(0.2, help="ε_low of the ratio clip."),
    clip_range_high: Optional[float] = Opt(None, help="ε_high (DAPO's clip-higher, e.g. 0.28; default ε_low)."),
    ratio_level: str = Opt("token", help="token (GRPO) or sequence (GSPO) importance ratios."),
    beta: float = Opt(0.0, help="KL coefficient to the reference (0: no reference model is loaded)."),
    kl_estimator: str = Opt("k3", help="k1, k2 or k3."),
    ref: Optional[Path] = REF,
    mask_truncated: bool = Opt(False, help="Leave completions cut at --max-new-tokens out of the loss."),
    log_completions_every: int = LOG_EVERY, save_every: int = SAVE_EVERY, eval_every: int = EVAL_EVERY,
    max_train_s: float = MAX_TRAIN_S,
    lr: float = Opt(1e-6, help="Learning rate (constant after the warm-up by default, as TRL's GRPO recipes)."),
    epochs: float = EPOCHS, max_steps: int = MAX_STEPS,
    micro_batch_size: int = Opt(0, help="Completions per forward pass (gradient accumulation; 0: a mini-batch)."),
    max_length: int = MAX_LENGTH, warmup_ratio: float = WARMUP, schedule: str = SCHEDULE, weight_decay: float = WD,
    max_grad_norm: float = GRAD_NORM, seed: int = SEED, lora_r: int = LORA, gradient_checkpointing: bool = GC,
    skip_bad: bool = SKIP, resume: bool = RESUME, overwrite: bool = OVERWRITE, threads: int = THREADS,
) -> None:
    """Online RL with group-relative advantages: sample G completions per prompt, score them with reward
    functions, update the policy (GRPO and its variants)."""
    from rlhfkit.language.grpo import GRPOSettings, train_grpo

    def settings() -> Any:
        return GRPOSettings(
            num_generations=num_generations, prompts_per_step=prompts_per_step, num_iterations=num_iterations,
            mini_batches=mini_batches, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            top_k=top_k, estimator=estimator, scale=scale, aggregation=loss_aggregation,  # type: ignore[arg-type]
            clip_range=clip_range, clip_range_high=clip_range_high, ratio_level=ratio_level,  # type: ignore[arg-type]
            beta=beta, kl_estimator=kl_estimator, mask_truncated=mask_truncated,  # type: ignore[arg-type]
            log_completions_every=log_completions_every, save_every=save_every, eval_every=eval_every,
            max_train_s=max_train_s)

    _online("grpo", settings_of=settings, settings_cls=GRPOSettings, model=model, data=data, reward=reward,
            reward_weight=reward_weight, out=out, eval_data=eval_data, prompt_column=prompt_column, ref=ref,
            train=_train_dict(lr, epochs, max_steps, max_length, warmup_ratio, schedule, weight_decay, max_grad_norm,
                              seed, lora_r, gradient_checkpointing, micro_batch_size),
            skip_bad=skip_bad, resume=resume, overwrite=overwrite, threads=threads, extra={}, trainer=train_grpo)


@app.command("ppo")
def ppo_cmd(
    model: Optional[Path] = MODEL, data: Optional[Path] = DATA, reward: Optional[list[str]] = REWARD,
    reward_weight: Optional[list[float]] = REWARD_WEIGHT, out: Path = OUT, eval_data: Optional[Path] = EVAL_DATA,
    prompt_column: str = PROMPT_COLUMN,
    gold: Optional[list[str]] = Opt(None, help="Reward functions to watch but never optimise (repeatable): the gold "
                                               "reward of the over-optimisation curve (overoptimisation.png)."),
    critic: Optional[Path] = Opt(None, help="A reward-model directory as a separate value model (default: a value "
                                            "head on the policy)."),
    prompts_per_step: int = Opt(16, help="Prompts per rollout batch."),
    num_generations: int = Opt(1, "--num-generations", "-G", help="Completions per prompt."),
    ppo_epochs: int = Opt(4, help="PPO passes over each rollout batch."),
    mini_batches: int = Opt(1, help="Optimiser steps per pass."),
    max_new_tokens: int = MAX_NEW, temperature: float = TEMPERATURE, top_p: float = TOP_P, top_k: int = TOP_K,
    beta: float = Opt(0.05, help="KL coefficient β (the start value with --kl-target)."),
    kl_target: Optional[float] = Opt(None, help="Target KL per completion (nats): β follows Ziegler et al.'s "
                                                "proportional controller (default: fixed β)."),
    kl_horizon: float = Opt(10_000.0, help="The KL controller's horizon, in completions."),
    kl_estimator: str = Opt("k1", help="Per-token KL estimator in the reward: k1, k2 or k3."),
    missing_eos_penalty: Optional[float] = Opt(None, help="Subtracted from the score of completions without EOS."),
    whiten_rewards: bool = Opt(False, help="Whiten the per-token rewards of each batch before GAE."),
    gamma: float = Opt(1.0, help="Discount over tokens."),
    gae_lambda: float = Opt(0.95, help="GAE's λ."),
    clip_range: float = Opt(0.2, help="PPO's ratio clip ε."),
    clip_range_value: float = Opt(0.2, help="Value clip around the rollout's values."),
    vf_coef: float = Opt(0.1, help="Weight of the value loss."),
    ptx_data: Optional[Path] = Opt(None, help="PPO-ptx: SFT or pretraining text (text, prompt/completion, messages or "
                                              "preference rows: their chosen responses)."),
    ptx_coef: float = Opt(0.0, help="PPO-ptx's γ: weight of the text's log-likelihood (0: off)."),
    ptx_batch_size: int = Opt(8, help="Text examples per optimiser step in the ptx term."),
    cost: Optional[list[str]] = Opt(None, help="Safe RLHF: a cost, repeatable, as --reward (module:function, "
                                               "path/file.py:function, ...) or a cost-model directory (rlhf lm rm "
                                               "--cost); higher = less safe. Their weighted sum is kept under "
                                               "--cost-threshold by a Lagrange multiplier λ."),
    cost_weight: Optional[list[float]] = Opt(None, help="Weight of each --cost, in order (default 1 each)."),
    cost_threshold: float = Opt(0.0, help="Safe RLHF's d: the mean cost per completion to stay under."),
    lambda_init: float = Opt(1.0, help="Start value of the Lagrange multiplier λ (> 0)."),
    lambda_lr: float = Opt(0.05, help="Step size of λ's gradient ascent on log λ: log λ += lr · (mean cost - d)."),
    lambda_max: Optional[float] = Opt(None, help="Upper clamp of λ (default: none)."),
    segment_reward: Optional[list[str]] = Opt(None, help="Fine-grained reward (Wu et al. 2023), repeatable: "
                                                         "module:function or path/file.py:function returning, per "
                                                         "completion, a list of (end, score) segments (end: a "
                                                         "character offset of the completion); each score lands on "
                                                         "its segment's last token."),
    segment_weight: Optional[list[float]] = Opt(None, help="Weight of each --segment-reward, in order (default 1)."),
    judge: Optional[Path] = Opt(None, help="A causal-LM directory as an AI judge reward (RLAIF): 2·P(completion ≻ "
                                           "reference) - 1, both orders asked; needs --judge-reference-column."),
    judge_principle: Optional[str] = Opt(None, help="--judge: the written principle it judges by (default: "
                                                    "correct, helpful and honest)."),
    judge_reference_column: Optional[str] = Opt(None, help="--judge: the prompt-data column holding each prompt's "
                                                           "reference response."),
    ref: Optional[Path] = REF,
    log_completions_every: int = LOG_EVERY, save_every: int = SAVE_EVERY, eval_every: int = EVAL_EVERY,
    max_train_s: float = MAX_TRAIN_S,
    lr: float = Opt(1e-6, help="Learning rate."),
    epochs: float = EPOCHS, max_steps: int = MAX_STEPS,
    max_length: int = MAX_LENGTH, warmup_ratio: float = WARMUP, schedule: str = SCHEDULE, weight_decay: float = WD,
    max_grad_norm: float = GRAD_NORM, seed: int = SEED, lora_r: int = LORA, gradient_checkpointing: bool = GC,
    skip_bad: bool = SKIP, resume: bool = RESUME, overwrite: bool = OVERWRITE, threads: int = THREADS,
) -> None:
    """RLHF PPO (InstructGPT step 3): per-token KL penalty to the reference, value model, GAE, fixed or
    adaptive β, PPO-ptx; fine-grained segment rewards, Safe RLHF's cost and λ, an AI judge as reward."""
    from rlhfkit.language.ppo import PPOSettings, train_ppo

    if ptx_coef > 0 and ptx_data is None and not resume:
        _fail("--ptx-coef > 0 needs --ptx-data")
    if not resume and (judge is None) != (judge_reference_column is None):
        _fail("--judge and --judge-reference-column go together: the judge compares each completion with the "
              "reference response in that column")
    if not resume and judge_principle is not None and judge is None:
        _fail("--judge-principle needs --judge DIR")

    def settings() -> Any:
        return PPOSettings(
            prompts_per_step=prompts_per_step, num_generations=num_generations, ppo_epochs=ppo_epochs,
            mini_batches=mini_batches, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            top_k=top_k, beta=beta, kl_target=kl_target, kl_horizon=kl_horizon,
            kl_estimator=kl_estimator, missing_eos_penalty=missing_eos_penalty,  # type: ignore[arg-type]
            whiten_rewards=whiten_rewards, gamma=gamma, gae_lambda=gae_lambda, clip_range=clip_range,
            clip_range_value=clip_range_value, vf_coef=vf_coef, ptx_coef=ptx_coef, ptx_batch_size=ptx_batch_size,
            cost_threshold=cost_threshold, lambda_init=lambda_init, lambda_lr=lambda_lr, lambda_max=lambda_max,
            log_completions_every=log_completions_every, save_every=save_every, eval_every=eval_every,
            max_train_s=max_train_s)

    extra = {"--critic": str(critic) if critic else None, "--gold": list(gold or []),
             "--ptx-data": str(ptx_data) if ptx_data else None,
             "--cost": list(cost or []), "--cost-weight": list(cost_weight) if cost_weight else None,
             "--segment-reward": list(segment_reward or []),
             "--segment-weight": list(segment_weight) if segment_weight else None,
             "--judge": str(judge) if judge else None, "--judge-principle": judge_principle,
             "--judge-reference-column": judge_reference_column}
    _online("ppo", settings_of=settings, settings_cls=PPOSettings, model=model, data=data, reward=reward,
            reward_weight=reward_weight, out=out, eval_data=eval_data, prompt_column=prompt_column, ref=ref,
            train=_train_dict(lr, epochs, max_steps, max_length, warmup_ratio, schedule, weight_decay, max_grad_norm,
                              seed, lora_r, gradient_checkpointing),
            skip_bad=skip_bad, resume=resume, overwrite=overwrite, threads=threads, extra=extra, trainer=train_ppo)
