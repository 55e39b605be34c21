"""``rlhf lm grpo``: online RL from reward functions (GRPO, Dr. GRPO, RLOO, REINFORCE++; DAPO and GSPO losses).

    rlhf lm grpo --model runs/sft --data prompts.jsonl --reward exact_match --out runs/grpo
    rlhf lm grpo --model runs/sft --data prompts.jsonl --reward my_rewards.py:correct \\
        --reward 'regex:<think>.*</think>.*' --reward-weight 1 --reward-weight 0.2 --out runs/grpo
    rlhf lm grpo --out runs/grpo --resume

Writes to ``--out``: the model (safetensors, a normal HF directory), ``metrics.jsonl`` (+
TensorBoard under ``tb/``), ``curves.png``, ``completions.jsonl`` (sampled prompts, completions and
rewards every ``--log-completions-every`` steps, also printed as a table), ``checkpoint/`` (for
``--resume``), ``train_args.json`` and ``summary.json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rlhfkit.cli.lm import DATA_HELP, _fail, _is_main, app, console

Opt = typer.Option

CURVE_KEYS = ("reward/mean", "eval/reward", "policy/kl", "policy/clip_fraction", "completions/mean_length",
              "reward/zero_std_fraction", "completions/clipped_ratio", "loss/policy", "train/grad_norm")


def _table(step: int, rows: list[dict[str, Any]], n: int = 8) -> None:
    table = Table(title=f"completions at step {step} (first {min(n, len(rows))} of {len(rows)})", show_lines=False)
    for col in ("prompt", "completion", "reward", "advantage"):
        table.add_column(col, overflow="fold", justify="right" if col in ("reward", "advantage") else "left")
    for r in rows[:n]:
        prompt = r["prompt"] if isinstance(r["prompt"], str) else r["prompt"][-1]["content"]
        completion = r["completion"] if isinstance(r["completion"], str) else r["completion"][-1]["content"]
        table.add_row(escape(prompt[-60:]), escape(completion[:80]), f"{r['reward']:.3f}", f"{r['advantage']:+.2f}")
    console.print(table)


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    has_run = (out / "train_args.json").is_file()
    if resume:
        if not (out / "checkpoint" / "state.json").is_file():
            _fail(f"--resume: {out} holds no checkpoint to resume (no checkpoint/state.json)")
        return
    if out.exists() and any(out.iterdir()):
        if not has_run:
            _fail(f"--out {out} exists and is not an rlhfkit run directory; choose another")
        if not overwrite:
            _fail(f"--out {out} already holds a run; pass --resume to continue it or --overwrite to start over")
        shutil.rmtree(out)


@app.command("grpo")
def grpo_cmd(
    model: Optional[Path] = Opt(None, help="Policy to start from (usually the SFT model). Required unless --resume."),
    data: Optional[Path] = Opt(None, help=DATA_HELP.replace("(TRL's preference formats)", "with a prompt column; "
                                                                 "other columns reach the reward functions")),
    reward: Optional[list[str]] = Opt(None, help="Reward function, repeatable: module:function, path/file.py:function, "
                                                 "a reward-model directory, exact_match (the answer column) or "
                                                 "regex:PATTERN. Signature f(prompts, completions, **columns)."),
    reward_weight: Optional[list[float]] = Opt(None, help="Weight of each --reward, in order (default 1 each)."),
    out: Path = Opt(..., help="Output directory."),
    eval_data: Optional[Path] = Opt(None, help="Held-out prompts: mean reward of greedy completions at evaluations."),
    prompt_column: str = Opt("prompt", help="The column holding the prompt."),
    num_generations: int = Opt(8, "--num-generations", "-G", help="G: completions per prompt (>= 2)."),
    prompts_per_step: int = Opt(4, help="Prompts per generation batch (P × G completions)."),
    num_iterations: int = Opt(1, help="μ: optimisation passes over each generation batch."),
    mini_batches: int = Opt(1, help="Optimiser steps per pass over a generation batch."),
    max_new_tokens: int = Opt(256, help="Longest completion in tokens."),
    temperature: float = Opt(1.0, help="Sampling temperature."),
    top_p: float = Opt(1.0, help="Nucleus sampling (1: off)."),
    top_k: int = Opt(0, help="Top-k sampling (0: off)."),
    estimator: str = Opt("grpo", help="Advantage baseline: grpo, dr_grpo, rloo or reinforce_pp."),
    scale: Optional[str] = Opt(None, help="Advantage scaling: group, batch or none (default: the estimator's)."),
    loss_aggregation: str = Opt("token_mean", help="token_mean (DAPO), sequence_mean (GRPO paper) or constant "
                                                   "(Dr. GRPO)."),
    clip_range: float = Opt(0.2, help="ε_low of the ratio clip."),
    clip_range_high: Optional[float] = Opt(None, help="ε_high (DAPO's clip-higher, e.g. 0.28; default ε_low)."),
    ratio_level: str = Opt("token", help="token (GRPO) or sequence (GSPO) importance ratios."),
    beta: float = Opt(0.0, help="KL coefficient to the reference (0: no reference model is loaded)."),
    kl_estimator: str = Opt("k3", help="k1, k2 or k3."),
    ref: Optional[Path] = Opt(None, help="Reference model directory (default: the starting policy)."),
    mask_truncated: bool = Opt(False, help="Leave completions cut at --max-new-tokens out of the loss."),
    log_completions_every: int = Opt(10, help="Log (and print) the step's completions every N steps (0: never)."),
    save_every: int = Opt(50, help="Checkpoint every N steps (0: only at the end)."),
    eval_every: int = Opt(0, help="Evaluate --eval-data every N steps (0: at the start and the end)."),
    max_train_s: float = Opt(0.0, help="Stop after this many seconds of training (0: no limit)."),
    lr: float = Opt(1e-6, help="Learning rate (constant after the warm-up by default, as TRL's GRPO recipes)."),
    epochs: float = Opt(1.0, help="Passes over the prompts (when --max-steps is 0)."),
    max_steps: int = Opt(0, help="Generation batches to train on (overrides --epochs)."),
    micro_batch_size: int = Opt(0, help="Completions per forward pass (gradient accumulation; 0: a mini-batch)."),
    max_length: int = Opt(1024, help="Longest prompt + completion in tokens (prompts cut from the left)."),
    warmup_ratio: float = Opt(0.0, help="Warm-up fraction of the optimiser steps."),
    schedule: str = Opt("constant", help="Learning-rate decay after the warm-up: constant, linear or cosine."),
    weight_decay: float = Opt(0.0, help="AdamW weight decay."),
    max_grad_norm: float = Opt(1.0, help="Gradient clipping (0: off)."),
    seed: int = Opt(0, help="Seed of the prompt order and the sampling."),
    lora_r: int = Opt(0, help="LoRA rank via peft (0: full fine-tuning)."),
    gradient_checkpointing: bool = Opt(False, help="Gradient checkpointing."),
    skip_bad: bool = Opt(False, help="Skip bad rows (and count them)."),
    resume: bool = Opt(False, help="Continue the run in --out from its checkpoint, with its saved settings."),
    overwrite: bool = Opt(False, help="Replace a finished or interrupted run in --out."),
) -> None:
    """Online RL with group-relative advantages: sample G completions per prompt, score them with reward
    functions, update the policy (GRPO and its variants)."""
    from rlhfkit.language.grpo import GRPOSettings, train_grpo
    from rlhfkit.language.models import apply_lora, load_causal_lm, load_tokenizer, save_model
    from rlhfkit.language.prompts import load_prompts
    from rlhfkit.language.rewards import RewardError, check_columns, load_reward_function
    from rlhfkit.language.train import TrainArgs, plot_curves, save_args, set_threads
    from rlhfkit.language.data import DataError

    _check_out(out, resume, overwrite)
    if resume:
        saved = json.loads((out / "train_args.json").read_text())
        for name, given, key in (("--model", model, "model"), ("--data", data, "data")):
            if given is not None and str(given) != saved[key]:
                _fail(f"{name} {given} differs from the run's {saved[key]}; --resume continues with the saved settings "
                      f"(in {out / 'train_args.json'})")
        if reward and list(reward) != saved["rewards"]:
            _fail(f"--reward {reward} differs from the run's {saved['rewards']}; --resume uses the saved settings")
        model, data, reward = Path(saved["model"]), Path(saved["data"]), saved["rewards"]
        reward_weight, eval_data = saved["reward_weights"], Path(saved["eval_data"]) if saved["eval_data"] else None
        ref = Path(saved["ref"]) if saved.get("ref") else None
        try:
            args, settings = TrainArgs(**saved["train"]), GRPOSettings(**saved["grpo"])
        except (TypeError, ValueError) as e:
            _fail(f"{out / 'train_args.json'} does not hold valid settings: {e}")
        prompt_column = saved.get("prompt_column", "prompt")
    else:
        if model is None or data is None or not reward:
            _fail("--model, --data and at least one --reward are required (or --resume with --out)")
        try:
            settings = GRPOSettings(
                num_generations=num_generations, prompts_per_step=prompts_per_step, num_iterations=num_iterations,
                mini_batches=mini_batches, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                top_k=top_k, estimator=estimator, scale=scale, aggregation=loss_aggregation,  # type: ignore[arg-type]
                clip_range=clip_range, clip_range_high=clip_range_high, ratio_level=ratio_level,  # type: ignore[arg-type]
                beta=beta, kl_estimator=kl_estimator, mask_truncated=mask_truncated,  # type: ignore[arg-type]
                log_completions_every=log_completions_every, save_every=save_every, eval_every=eval_every,
                max_train_s=max_train_s)
            args = TrainArgs(lr=lr, epochs=epochs, max_steps=max_steps, micro_batch_size=micro_batch_size,
                             max_length=max_length, warmup_ratio=warmup_ratio, schedule=schedule,  # type: ignore[arg-type]
                             weight_decay=weight_decay, max_grad_norm=max_grad_norm, seed=seed, lora_r=lora_r,
                             gradient_checkpointing=gradient_checkpointing, val_fraction=0.0)
        except ValueError as e:
            _fail(_option_names(str(e)))
    if not (model / "config.json").is_file():
        _fail(f"--model {model} is not a Hugging Face model directory (no config.json)")
    if ref is not None and not (ref / "config.json").is_file():
        _fail(f"--ref {ref} is not a Hugging Face model directory (no config.json)")
    weights = list(reward_weight or [1.0] * len(reward))
    if len(weights) != len(reward):
        _fail(f"{len(reward)} --reward but {len(weights)} --reward-weight: give one weight per reward, in order")

    def prompts_of(path: Path) -> Any:
        try:
            loaded = load_prompts(path, prompt_column=prompt_column, skip_bad=skip_bad)
        except FileNotFoundError:
            _fail(f"no such data file: {path}")
        except DataError as e:
            _fail(f"{e}" + ("" if skip_bad else "\n(pass --skip-bad to skip bad rows and count them)"))
        if loaded.skipped:
            console.print(f"[yellow]skipped {loaded.skipped} bad rows of {escape(str(path))}[/]; the first: "
                          f"{escape(loaded.errors[0])}")
        return loaded

    train = prompts_of(data)
    held = prompts_of(eval_data) if eval_data is not None else None
    try:
        functions = [load_reward_function(spec, weight=w) for spec, w in zip(reward, weights)]
        check_columns(functions, train.columns)
    except RewardError as e:
        _fail(str(e))
    set_threads()
    tok, policy = load_tokenizer(model), load_causal_lm(model)
    ref_model = load_causal_lm(ref) if ref is not None and settings.beta > 0 else None
    if args.lora_r:
        policy = apply_lora(policy, args.lora_r, args.lora_alpha)
    created = not out.exists()
    done = [0]

    def save_settings() -> None:  # after the first step: a run that fails at once leaves no run directory
        if _is_main() and not resume:
            save_args(out, train=args, grpo=settings, model=str(model), data=str(data), rewards=list(reward),
                      reward_weights=weights, eval_data=str(eval_data) if eval_data else None,
                      ref=str(ref) if ref else None, prompt_column=prompt_column)

    with Progress(TextColumn("[bold]GRPO"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("GRPO", total=None, info="")

        def update(step: int, total: int, record: dict[str, Any]) -> None:
            if not done[0]:
                save_settings()
            done[0] = step
            info = (f"reward {record.get('reward/mean', float('nan')):.3f}  "
                    f"len {record.get('completions/mean_length', 0):.1f}  "
                    f"no-signal {record.get('reward/zero_std_fraction', 0):.2f}")
            if "policy/kl" in record:
                info += f"  kl {record['policy/kl']:.4f}"
            progress.update(task, completed=step, total=total, info=info)

        def show(step: int, rows: list[dict[str, Any]]) -> None:
            progress.stop()
            _table(step, rows)
            progress.start()

        try:
            result = train_grpo(policy, tok, train.examples, functions, args, settings, ref_model=ref_model,
                                eval_prompts=held.examples if held else (), out=out, resume=resume,
                                progress=update, on_completions=show)
        except BaseException as e:
            if created and not done[0] and _is_main():
                shutil.rmtree(out, ignore_errors=True)  # nothing trained: leave no half-made run behind
            if isinstance(e, RewardError):
                _fail(f"{e} (nothing was trained: the run stopped at the first batch)" if not done[0] else str(e))
            raise
    if not _is_main():
        return
    save_model(result.model, tok, out)
    plot_curves(out / "metrics.jsonl", out / "curves.png", keys=CURVE_KEYS)
    last_eval = next((h for h in reversed(result.history) if "eval/reward" in h), {})
    summary = {"steps": result.steps, "train_wall_s": round(result.wall_s, 2), "generate_s": round(result.generate_s, 2),
               "reward_s": round(result.reward_s, 2), "train_s": round(result.train_s, 2),
               "completions_per_s": round(result.completions_per_s, 1),
               "trained_tokens_per_s": round(result.trained_tokens_per_s, 1),
               "final_reward_mean": next((h["reward/mean"] for h in reversed(result.history) if "reward/mean" in h),
                                         None),
               **{k: v for k, v in last_eval.items() if k.startswith("eval/")},
               "skipped_rows": train.skipped}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    table = Table(title="GRPO")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        table.add_row(escape(k), f"{v:.4f}" if isinstance(v, float) else escape(str(v)))
    console.print(table)
    console.print(f"model, metrics.jsonl, completions.jsonl and curves.png in {escape(str(out))}")


_OPTION_NAMES = {"num_generations": "--num-generations", "prompts_per_step": "--prompts-per-step",
                 "num_iterations": "--num-iterations", "mini_batches": "--mini-batches",
                 "max_new_tokens": "--max-new-tokens", "aggregation": "--loss-aggregation",
                 "clip_range_high": "--clip-range-high", "clip_range": "--clip-range", "ratio_level": "--ratio-level",
                 "kl_estimator": "--kl-estimator", "max_length": "--max-length", "warmup_ratio": "--warmup-ratio",
                 "max_steps": "--max-steps", "micro_batch_size": "--micro-batch-size", "top_p": "--top-p",
                 "top_k": "--top-k", "max_train_s": "--max-train-s", "eval_every": "--eval-every",
                 "save_every": "--save-every", "log_completions_every": "--log-completions-every"}


def _option_names(message: str) -> str:
    """A settings error in the words of the command line (``num_generations`` → ``--num-generations``)."""
    for field, option in _OPTION_NAMES.items():
        message = message.replace(field, option)
    return message
