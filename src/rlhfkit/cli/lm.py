"""``rlhf lm``: language-model RLHF — a tiny model, SFT, reward model, DPO.

    rlhf lm tiny --data prefs.jsonl --out runs/tiny
    rlhf lm sft  --model runs/tiny --data prefs.jsonl --out runs/sft
    rlhf lm rm   --model runs/sft  --data prefs.jsonl --out runs/rm
    rlhf lm rm   --model runs/sft  --data safety.jsonl --out runs/cm --cost   # chosen = the safer response
    rlhf lm dpo  --model runs/sft  --data prefs.jsonl --out runs/dpo

Each trainer holds out a fixed, seeded validation split (``--val-fraction``) that picks the best
weights, can score a separate held-out file (``--eval``), and writes to ``--out``: the model
(safetensors, a normal HF directory), ``metrics.jsonl`` (+ TensorBoard under ``tb/`` when
installed), ``curves.png``, ``train_args.json`` and ``summary.json``.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import typer
from contextlib import contextmanager
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
console = Console()

DATA_HELP = "Data file: JSONL, JSON, Parquet or a local `datasets` directory (TRL's preference formats)."


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {escape(msg)}")  # paths and data are text, never markup
    raise typer.Exit(2)


# settings fields → the options that set them, so that an error speaks the command line's words
_OPTION_NAMES = {"loss_type": "--loss", "label_smoothing": "--label-smoothing", "margin": "--margin", "batch_size": "--batch-size",
                 "micro_batch_size": "--micro-batch-size", "max_length": "--max-length", "max_steps": "--max-steps",
                 "val_fraction": "--val-fraction", "eval_every": "--eval-every", "warmup_ratio": "--warmup-ratio",
                 "weight_decay": "--weight-decay", "lora_r": "--lora-r", "num_generations": "--num-generations",
                 "prompts_per_step": "--prompts-per-step", "num_iterations": "--num-iterations",
                 "mini_batches": "--mini-batches", "max_new_tokens": "--max-new-tokens",
                 "aggregation": "--loss-aggregation", "clip_range_high": "--clip-range-high",
                 "clip_range": "--clip-range", "ratio_level": "--ratio-level", "kl_estimator": "--kl-estimator",
                 "top_p": "--top-p", "top_k": "--top-k", "max_train_s": "--max-train-s",
                 "log_completions_every": "--log-completions-every", "save_every": "--save-every",
                 "max_grad_norm": "--max-grad-norm", "cost_threshold": "--cost-threshold",
                 "lambda_init": "--lambda-init", "lambda_lr": "--lambda-lr", "lambda_max": "--lambda-max"}


def option_names(message: str) -> str:
    """A settings error in the words of the command line (``loss_type`` → ``--loss``)."""
    for field in sorted(_OPTION_NAMES, key=len, reverse=True):
        message = re.sub(rf"\b{field}\b", _OPTION_NAMES[field], message)
    return message


@contextmanager
def run_directory(out: Path):
    """Remove ``out`` again if this run created it and fails before its first training step: a run that
    fails at once leaves nothing half-made (one that fails later keeps its metrics and checkpoints)."""
    created = not out.exists()
    try:
        yield
    except BaseException:
        if created and _is_main() and not _trained(out):
            shutil.rmtree(out, ignore_errors=True)
        raise


def _trained(out: Path) -> bool:
    """Whether ``out/metrics.jsonl`` records a finished training step."""
    path = out / "metrics.jsonl"
    if not path.is_file():
        return False
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) >= 1:
                return True
        except ValueError:
            continue
    return False


def _load(path: Path, kind: str, skip_bad: bool) -> Any:
    from rlhfkit.language.data import load_data

    return loaded(lambda: load_data(path, kind=kind, skip_bad=skip_bad), path, skip_bad)


def loaded(read: Any, path: Path, skip_bad: bool) -> Any:
    """``read()`` a data file, turning a missing file or a bad row into a one-line error and
    reporting the rows ``--skip-bad`` skipped."""
    from rlhfkit.language.data import DataError

    try:
        data = read()
    except FileNotFoundError:
        _fail(f"no such data file: {path}")
    except DataError as e:
        _fail(f"{e}" + ("" if skip_bad else "\n(pass --skip-bad to skip bad rows and count them)"))
    if data.skipped:
        console.print(f"[yellow]skipped {data.skipped} bad rows of {escape(str(path))}[/]; the first: "
                      f"{escape(data.errors[0])}")
    return data


def _args(**kw: Any) -> Any:
    from rlhfkit.language.train import TrainArgs

    try:
        return TrainArgs(**kw)
    except ValueError as e:
        _fail(option_names(str(e)))


def _run(title: str, fn: Any) -> Any:
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(title, total=None, info="")

        def update(step: int, total: int, record: dict[str, Any]) -> None:
            loss = record.get("train/loss")
            progress.update(task, completed=step, total=total, info=f"loss {loss:.4f}" if loss is not None else "")

        return fn(update)


def _is_main() -> bool:
    """False in every process but the first under ``accelerate launch`` (only it writes files)."""
    from rlhfkit.language.train import distributed_state

    return distributed_state().is_main_process


def _finish(out: Path, fitted: Any, model: Any, tokenizer: Any, held_out: dict[str, float], title: str) -> None:
    from rlhfkit.language.models import save_model
    from rlhfkit.language.train import plot_curves

    if not _is_main():
        return
    save_model(model, tokenizer, out)
    plot_curves(out / "metrics.jsonl", out / "curves.png")
    summary = {"steps": fitted.steps, "train_wall_s": round(fitted.wall_s, 2), "eval_s": round(fitted.eval_s, 2),
               "tokens_per_s": round(fitted.tokens_per_s, 1), **fitted.best, **held_out}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        table.add_row(escape(k), f"{v:.4f}" if isinstance(v, float) else escape(str(v)))
    console.print(table)
    console.print(f"model, metrics.jsonl and curves.png in {escape(str(out))}")


def _held_out_counts(held_out: Any) -> dict[str, int]:
    """How many ``--eval-file`` rows were scored and how many were skipped as bad (``--skip-bad``)."""
    return {"held_out/rows_scored": len(held_out.examples), "held_out/rows_skipped": held_out.skipped}


def _common(model: Path, data: Path, out: Path) -> None:
    if not (model / "config.json").is_file():
        _fail(f"--model {model} is not a Hugging Face model directory (no config.json); "
              "make one with `rlhf lm tiny --data FILE --out DIR`")
    if out.exists() and any(out.iterdir()) and not (out / "train_args.json").is_file():
        _fail(f"--out {out} exists and is not an rlhfkit run directory; choose another")


Opt = typer.Option


@app.command("tiny")
def tiny_cmd(
    data: Path = Opt(..., help=DATA_HELP + " Its text trains the tokenizer."),
    out: Path = Opt(..., help="Directory for the model and tokenizer."),
    arch: str = Opt("llama", help="llama or gpt2."),
    layers: int = Opt(4, help="Transformer blocks."),
    d_model: int = Opt(256, help="Hidden size."),
    heads: int = Opt(4, help="Attention heads."),
    vocab: int = Opt(8000, help="BPE vocabulary size."),
    max_positions: int = Opt(1024, help="Longest sequence in tokens."),
    val_fraction: float = Opt(0.0, help="Leave this fraction of rows (the trainers' split, same --seed) out of the "
                                        "tokenizer's text."),
    seed: int = Opt(0, help="Seed of the initialisation and the split."),
    skip_bad: bool = Opt(False, help="Skip bad rows (and count them) instead of stopping at the first."),
) -> None:
    """Build a small GPT-2- or Llama-style model and a byte-level BPE tokenizer trained on --data."""
    from rlhfkit.language.data import train_val_split
    from rlhfkit.language.models import quiet_transformers
    from rlhfkit.language.tiny import TinySpec, build_tiny, texts_of

    quiet_transformers()
    loaded = _load(data, "auto", skip_bad)
    try:
        spec = TinySpec(arch=arch, vocab_size=vocab, n_layers=layers, d_model=d_model, n_heads=heads,  # type: ignore[arg-type]
                        max_positions=max_positions, seed=seed)
    except ValueError as e:
        _fail(str(e))
    examples = train_val_split(loaded.examples, val_fraction, seed)[0] if val_fraction else loaded.examples
    path = build_tiny(texts_of(examples), out, spec)
    info = json.loads((path / "tiny.json").read_text())
    console.print(f"{arch} model, {info['parameters']:,} parameters, vocabulary {vocab}, "
                  f"tokenizer trained on {info['n_texts']} texts → {path}")


def _train_options(lr: float, epochs: float, max_steps: int, batch_size: int, micro_batch_size: int, max_length: int,
                   val_fraction: float, eval_every: int, patience: int, weight_decay: float, warmup_ratio: float,
                   seed: int, lora_r: int, gradient_checkpointing: bool) -> Any:
    return _args(lr=lr, epochs=epochs, max_steps=max_steps, batch_size=batch_size, micro_batch_size=micro_batch_size,
                 max_length=max_length, val_fraction=val_fraction, eval_every=eval_every, patience=patience,
                 weight_decay=weight_decay, warmup_ratio=warmup_ratio, seed=seed, lora_r=lora_r,
                 gradient_checkpointing=gradient_checkpointing)


def _split(examples: list, args: Any) -> tuple[list, list]:
    from rlhfkit.language.data import train_val_split

    return train_val_split(examples, args.val_fraction, args.seed) if args.val_fraction else (list(examples), [])


# options shared by the trainers (typer needs them spelled out per command)
THREADS = Opt(0, help="Torch threads (0: every core, or OMP_NUM_THREADS when set).")
EPOCHS = Opt(1.0, help="Passes over the training split.")
MAX_STEPS = Opt(0, help="Exactly this many optimiser steps (overrides --epochs).")
BATCH = Opt(16, help="Examples (pairs) per optimiser step, over all processes.")
MICRO = Opt(0, help="Examples per forward pass (gradient accumulation; 0: the whole batch).")
MAXLEN = Opt(512, help="Longest sequence in tokens (the prompt is cut from the left first).")
VALF = Opt(0.1, help="Fraction held out (fixed, seeded) to pick the best weights.")
EVAL_EVERY = Opt(0, help="Evaluate every N steps (0: each epoch).")
PATIENCE = Opt(0, help="Stop after N evaluations without improvement (0: off).")
WD = Opt(0.0, help="AdamW weight decay.")
WARMUP = Opt(0.05, help="Warm-up fraction of the steps.")
SEED = Opt(0, help="Seed of the split, batch order and bootstrap.")
LORA = Opt(0, help="LoRA rank via peft (0: full fine-tuning).")
GC = Opt(False, help="Gradient checkpointing.")
EVAL_FILE = Opt(None, help="A separate held-out file to score at the end.")
SKIP = Opt(False, help="Skip bad rows (and count them).")


@app.command("sft")
def sft_cmd(model: Path = Opt(..., help="Model directory."), data: Path = Opt(..., help=DATA_HELP),
            out: Path = Opt(..., help="Output directory."), lr: float = Opt(3e-4, help="Peak learning rate."),
            epochs: float = EPOCHS,
            max_steps: int = MAX_STEPS, batch_size: int = BATCH, micro_batch_size: int = MICRO,
            max_length: int = MAXLEN, val_fraction: float = VALF, eval_every: int = EVAL_EVERY,
            patience: int = PATIENCE, weight_decay: float = WD, warmup_ratio: float = WARMUP, seed: int = SEED,
            lora_r: int = LORA, gradient_checkpointing: bool = GC, skip_bad: bool = SKIP,
            threads: int = THREADS) -> None:
    """Supervised fine-tuning on completions (preference data: on the chosen responses)."""
    from rlhfkit.language.data import sft_from_preferences
    from rlhfkit.language.models import apply_lora, load_causal_lm, load_tokenizer
    from rlhfkit.language.sft import train_sft
    from rlhfkit.language.train import save_args, set_threads

    _common(model, data, out)
    args = _train_options(lr, epochs, max_steps, batch_size, micro_batch_size, max_length, val_fraction,
                          eval_every, patience, weight_decay, warmup_ratio, seed, lora_r, gradient_checkpointing)
    loaded = _load(data, "auto", skip_bad)
    examples = sft_from_preferences(loaded.examples) if loaded.kind == "preference" else loaded.examples
    if loaded.kind not in ("preference", "sft"):
        _fail(f"SFT needs prompt/completion, text, messages or preference rows; {data} holds {loaded.kind} data")
    set_threads(threads)
    tok, lm = load_tokenizer(model), load_causal_lm(model)
    if args.lora_r:
        lm = apply_lora(lm, args.lora_r, args.lora_alpha)
    train, val = _split(examples, args)
    with run_directory(out):
        if _is_main():
            save_args(out, train=args, model=str(model), data=str(data))
        fitted = _run("SFT", lambda p: train_sft(lm, tok, train, val, args, out=out, progress=p))
    _finish(out, fitted, fitted.model, tok, {"skipped_rows": loaded.skipped}, "SFT")


@app.command("rm")
def rm_cmd(model: Path = Opt(..., help="Model directory (the SFT model, or any causal LM)."),
           data: Path = Opt(..., help=DATA_HELP), out: Path = Opt(..., help="Output directory."),
           heads: int = Opt(1, help="Ensemble: score heads on one backbone, each on its own bootstrap resample."),
           pooling: str = Opt("last", help="last: the head at the EOS (what HF loaders do); mean: the mean of "
                                           "per-token head outputs over the response; sum: their sum "
                                           "(length-aware)."),
           cost: bool = Opt(False, help="Fit a Safe RLHF cost model (Dai et al. 2023, Eq. 6) instead: `chosen` is the "
                                        "SAFER response and must cost less; rows with chosen_safe / rejected_safe "
                                        "(true/false) add -log σ(s·C), s = +1 unsafe, -1 safe, so C > 0 means "
                                        "unsafe. Use the directory as `rlhf lm ppo --cost DIR`."),
           eval_file: Optional[Path] = EVAL_FILE, lr: float = Opt(1e-4, help="Peak learning rate."),
           epochs: float = EPOCHS,
           max_steps: int = MAX_STEPS, batch_size: int = BATCH, micro_batch_size: int = MICRO,
           max_length: int = MAXLEN, val_fraction: float = VALF, eval_every: int = EVAL_EVERY,
           patience: int = PATIENCE, weight_decay: float = WD, warmup_ratio: float = WARMUP, seed: int = SEED,
           lora_r: int = LORA, gradient_checkpointing: bool = GC, skip_bad: bool = SKIP,
           threads: int = THREADS) -> None:
    """Fit a reward model (Bradley-Terry on pairs, ties ½, Plackett-Luce on ranked lists), or with --cost a
    cost model."""
    from rlhfkit.language.models import apply_lora, load_reward_model, load_tokenizer
    from rlhfkit.language.reward import encode_preferences, evaluate_reward_model, train_reward_model
    from rlhfkit.language.train import save_args, set_threads

    _common(model, data, out)
    if heads < 1:
        _fail(f"--heads must be at least 1, got {heads}")
    if pooling not in ("last", "mean", "sum"):
        _fail(f"--pooling must be last, mean or sum, got {pooling!r}")
    args = _train_options(lr, epochs, max_steps, batch_size, micro_batch_size, max_length, val_fraction,
                          eval_every, patience, weight_decay, warmup_ratio, seed, lora_r, gradient_checkpointing)
    loaded = _load(data, "auto", skip_bad)
    if loaded.kind not in ("preference", "ranked"):
        _fail(f"a reward model needs preference pairs or ranked lists; {data} holds {loaded.kind} data")
    held_out = _load(eval_file, "auto", skip_bad) if eval_file else None
    set_threads(threads)
    tok = load_tokenizer(model)
    try:
        rm = load_reward_model(model, num_heads=heads, pad_token_id=tok.pad_token_id, pooling=pooling)
    except ValueError as e:
        _fail(f"--pooling: {e}")
    rm.config.cost_model = cost  # saved: `rlhf lm ppo` warns when a cost model is given as a reward, or back
    if args.lora_r:
        rm = apply_lora(rm, args.lora_r, args.lora_alpha, task="SEQ_CLS")
    train, val = _split(loaded.examples, args)
    title = "cost model" if cost else "reward model"
    with run_directory(out):
        if _is_main():
            save_args(out, train=args, model=str(model), data=str(data), heads=heads, cost=cost)
        fitted = _run(title, lambda p: train_reward_model(rm, tok, train, val, args, out=out, progress=p, cost=cost))
    held = {}
    if held_out is not None:
        fitted.model.eval()
        ev = evaluate_reward_model(fitted.model, tok.pad_token_id,
                                   encode_preferences(tok, held_out.examples, args.max_length), cost=cost)
        held = {**{k.replace("val/", "held_out/"): v for k, v in ev.items()}, **_held_out_counts(held_out)}
    _finish(out, fitted, fitted.model, tok, {"skipped_rows": loaded.skipped, **held}, title)


@app.command("dpo")
def dpo_cmd(model: Path = Opt(..., help="Policy to start from (usually the SFT model)."),
            data: Path = Opt(..., help=DATA_HELP), out: Path = Opt(..., help="Output directory."),
            ref: Optional[Path] = Opt(None, help="Reference model directory (default: the starting policy)."),
            beta: float = Opt(0.1, help="β: KL strength / implicit reward scale."),
            loss: str = Opt("sigmoid", help="sigmoid (DPO), cdpo (conservative DPO), ipo, or simpo (SimPO: "
                            "length-normalised, no reference)."),
            label_smoothing: float = Opt(0.0, help="cDPO's label-flip probability ε."),
            margin: float = Opt(0.0, help="SimPO's target reward margin γ (reward units)."),
            eval_file: Optional[Path] = EVAL_FILE, lr: float = Opt(5e-5, help="Peak learning rate."),
            epochs: float = EPOCHS,
            max_steps: int = MAX_STEPS, batch_size: int = BATCH, micro_batch_size: int = MICRO,
            max_length: int = MAXLEN, val_fraction: float = VALF, eval_every: int = EVAL_EVERY,
            patience: int = PATIENCE, weight_decay: float = WD, warmup_ratio: float = WARMUP, seed: int = SEED,
            lora_r: int = LORA, gradient_checkpointing: bool = GC, skip_bad: bool = SKIP,
            threads: int = THREADS) -> None:
    """Direct preference optimisation (DPO, cDPO or IPO) against a frozen reference, or SimPO without one."""
    from rlhfkit.language.dpo import DPOSettings, evaluate_dpo, train_dpo
    from rlhfkit.language.models import apply_lora, load_causal_lm, load_tokenizer
    from rlhfkit.language.train import save_args, set_threads

    _common(model, data, out)
    if ref is not None and not (ref / "config.json").is_file():
        _fail(f"--ref {ref} is not a Hugging Face model directory")
    try:
        settings = DPOSettings(beta=beta, loss_type=loss, label_smoothing=label_smoothing,  # type: ignore[arg-type]
                               margin=margin)
    except ValueError as e:
        _fail(option_names(str(e)))
    if loss == "cdpo" and label_smoothing == 0:
        settings = replace(settings, label_smoothing=0.1)
    args = _train_options(lr, epochs, max_steps, batch_size, micro_batch_size, max_length, val_fraction,
                          eval_every, patience, weight_decay, warmup_ratio, seed, lora_r, gradient_checkpointing)
    loaded = _load(data, "preference", skip_bad)
    held_out = _load(eval_file, "preference", skip_bad) if eval_file else None
    set_threads(threads)
    tok, policy = load_tokenizer(model), load_causal_lm(model)
    ref_model = load_causal_lm(ref) if ref is not None else None
    if args.lora_r:
        policy = apply_lora(policy, args.lora_r, args.lora_alpha)
    train, val = _split(loaded.examples, args)
    # a separate reference copy is needed only to score --eval-file after training; without one,
    # train_dpo takes the reference log-probs from the policy before its first update
    reference = ref_model if ref_model is not None or held_out is None else load_causal_lm(model)
    with run_directory(out):
        if _is_main():
            save_args(out, train=args, dpo=settings, model=str(model), ref=str(ref or model), data=str(data))
        fitted = _run("DPO", lambda p: train_dpo(policy, tok, train, val, args, settings, ref_model=reference,
                                                 out=out, progress=p))
    held = {}
    if held_out is not None:
        ev = evaluate_dpo(fitted.model, reference, tok, held_out.examples, settings, args.max_length)
        held = {**{k.replace("val/", "held_out/"): v for k, v in ev.items()}, **_held_out_counts(held_out)}
    _finish(out, fitted, fitted.model, tok, {"skipped_rows": loaded.skipped, **held}, "DPO")
