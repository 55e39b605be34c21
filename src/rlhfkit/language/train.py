"""The training loop shared by the language trainers (SFT, reward model, DPO).

A trainer supplies three functions and this loop does the rest: batching (grouped by length),
sharding over processes, the optimiser and schedule, gradient clipping, evaluation with early
stopping, metrics (JSONL, TensorBoard when installed, a PNG of the curves) and the saved model.

- ``collate(items) -> batch`` — tensors for a list of examples;
- ``loss_sum(model, batch) -> (loss, metrics)`` — the loss **summed** over the batch's units
  (examples or tokens) and metric sums (``{"name": (sum, count)}``);
- ``units(items) -> float`` — how many units a list of examples holds.

Exact under data parallelism: each optimiser step takes a global batch of ``batch_size``
examples, split evenly over the processes (``accelerate launch --multi_gpu --num_processes 2``
runs two CPU processes over gloo on a machine without GPUs; accelerate 1.15's ``--cpu`` flag
silently starts one). Every process
divides its summed loss by the units of the **global** batch and multiplies by the number of
processes, so that DDP's gradient average equals the gradient of the global mean — the same
update as one process with the whole batch, token-weighted losses included.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from rlhfkit.language.logprobs import CHUNK_TOKENS
from rlhfkit.metrics import MetricsLog

__all__ = ["Fitted", "TrainArgs", "chunk_budget", "fit", "length_grouped_batches", "plot_curves"]

Metrics = dict[str, tuple[float, float]]


@dataclass(frozen=True)
class TrainArgs:
    """Optimisation settings common to the language trainers."""

    lr: float = 3e-4
    """Peak learning rate of AdamW."""
    epochs: float = 1.0
    """Passes over the training examples (fractions allowed)."""
    max_steps: int = 0
    """Train for exactly this many optimiser steps, overriding ``epochs`` (0: use ``epochs``)."""
    batch_size: int = 16
    """Examples (pairs, for preference trainers) per optimiser step, over all processes."""
    micro_batch_size: int = 0
    """Examples per forward pass on one process (0: the whole per-process batch); gradients accumulate."""
    chunk_tokens: int = CHUNK_TOKENS
    """The sequences of a (micro-)batch run in length-sorted chunks of at most this many padded
    tokens: same loss and gradient, less padding (0: one padded forward; always one under DDP)."""
    share_prefix: bool = True
    """Run the responses to one prompt (a pair, a ranked list) as one row that computes their shared
    prompt prefix once (:func:`rlhfkit.language.logprobs.pack`): the same values, less compute.
    Used by the reward and DPO trainers when the model's attention takes custom masks (SDPA, eager)."""
    max_length: int = 512
    """Longest sequence in tokens (prompt truncated from the left first)."""
    warmup_ratio: float = 0.05
    """Fraction of the steps with a linear learning-rate warm-up."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate decay after the warm-up."""
    weight_decay: float = 0.0
    """AdamW weight decay (not applied to biases and norms)."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm (0: off)."""
    val_fraction: float = 0.1
    """Fraction of the examples held out for validation (a fixed, seeded split)."""
    eval_every: int = 0
    """Evaluate every this many steps (0: at the end of each epoch)."""
    patience: int = 0
    """Early stopping: stop after this many evaluations without improvement, keep the best (0: off)."""
    group_by_length: bool = True
    """Batch examples of similar length together (less padding); batch order stays random."""
    shuffle: bool = True
    """Shuffle the examples each epoch; False: batches in the data's order (``group_by_length`` ignored)."""
    seed: int = 0
    """Seed of the split, the batch order and any sampling."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% more time)."""
    lora_r: int = 0
    """LoRA rank via peft (0: train all weights)."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator."""
    log_every: int = 1
    """Write training metrics every this many steps."""

    def __post_init__(self) -> None:
        for name in ("lr", "epochs", "batch_size", "max_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("max_steps", "micro_batch_size", "chunk_tokens", "eval_every", "patience", "lora_r"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")
        if not 0 <= self.warmup_ratio <= 1:
            raise ValueError(f"warmup_ratio must be in [0, 1], got {self.warmup_ratio}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"schedule must be cosine, linear or constant, got {self.schedule!r}")


@dataclass
class Fitted:
    """What :func:`fit` returns: the trained model and the history."""

    model: Any
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    wall_s: float = 0.0
    """Training time in seconds (evaluation excluded)."""
    eval_s: float = 0.0
    """Time spent evaluating, in seconds."""
    tokens: int = 0

    @property
    def tokens_per_s(self) -> float:
        """Real (non-padding) tokens through the model in training forward passes per second."""
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator, *,
                           group: bool = True, shuffle: bool = True, mega: int = 32) -> list[list[int]]:
    """Shuffled batches of indices; with ``group``, each batch holds examples of similar length.

    Indices are shuffled, cut into mega-batches of ``mega × batch_size``, sorted by length
    inside each, cut into batches, and the batches shuffled again — little padding, random order.
    The last incomplete batch is dropped when there are at least ``batch_size`` examples.
    With ``shuffle=False`` the batches follow the data's order (no grouping).
    """
    if not shuffle:
        order, group = np.arange(len(lengths)), False
    else:
        order = rng.permutation(len(lengths))
    if group:
        chunks = [order[i:i + mega * batch_size] for i in range(0, len(order), mega * batch_size)]
        order = np.concatenate([c[np.argsort([-lengths[j] for j in c], kind="stable")] for c in chunks])
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()
    if group:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def chunk_budget(model: Any, args: TrainArgs) -> int:
    """``args.chunk_tokens``, or 0 for a DDP-wrapped model (its forward must run once per backward)."""
    return 0 if isinstance(model, torch.nn.parallel.DistributedDataParallel) else args.chunk_tokens


def lr_schedule(args: TrainArgs, total: int) -> Callable[[int], float]:
    warm = int(args.warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        if args.schedule == "constant":
            return 1.0
        frac = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * frac)) if args.schedule == "cosine" else max(0.0, 1 - frac)

    return factor


def make_optimizer(model: torch.nn.Module, args: TrainArgs) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-8)


def _reduce(metrics: Metrics, accelerator: Any) -> dict[str, float]:
    if not metrics:
        return {}
    keys = sorted(metrics)
    t = torch.tensor([[metrics[k][0], metrics[k][1]] for k in keys], dtype=torch.float64)
    if accelerator.num_processes > 1:
        t = accelerator.reduce(t, reduction="sum")
    return {k: float(t[i, 0] / t[i, 1]) if t[i, 1] > 0 else float("nan") for i, k in enumerate(keys)}


def _add(into: Metrics, new: Metrics) -> None:
    for k, (s, n) in new.items():
        a, b = into.get(k, (0.0, 0.0))
        into[k] = (a + float(s), b + float(n))


class _Log:
    """The run's :class:`~rlhfkit.metrics.MetricsLog`, written by the main process only."""

    def __init__(self, out: Path | None, enabled: bool) -> None:
        self._log = MetricsLog(out, fresh=True) if enabled and out is not None else None

    def write(self, record: dict[str, Any]) -> None:
        if self._log is not None:
            self._log.write(record)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()


def make_accelerator() -> Any:
    """The ``accelerate.Accelerator`` the trainers use: the GPU when there is one, else the CPU —
    several gloo processes under ``accelerate launch --multi_gpu --num_processes N``.

    Anything that asks ``accelerate`` about the processes before training (e.g. "am I the main
    process?") must go through :func:`distributed_state`: accelerate's state is set up once per
    process, and a plain ``PartialState()`` on a machine without a GPU sets it up as ONE process,
    so every process would train alone on the whole data.
    """
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def distributed_state() -> Any:
    """``accelerate.PartialState`` set up as :func:`make_accelerator` does (process index, count, main)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def fit(model: Any, train_items: Sequence[Any], val_items: Sequence[Any], *,
        collate: Callable[[list[Any]], Any], loss_sum: Callable[[Any, Any], tuple[torch.Tensor, Metrics]],
        units: Callable[[list[Any]], float], lengths: Sequence[int], args: TrainArgs,
        evaluate: Callable[[Any, Sequence[Any]], dict[str, float]] | None = None,
        select: tuple[str, Literal["min", "max"]] = ("val/loss", "min"), out: str | Path | None = None,
        accelerator: Any = None, progress: Callable[[int, int, dict[str, float]], None] | None = None,
        n_tokens: Callable[[Any], int] | None = None) -> Fitted:
    """Train ``model`` on ``train_items``; evaluate on ``val_items``; keep the best weights.

    Args:
        model: a torch module (a transformers model, possibly wrapped by peft).
        train_items, val_items: examples (any objects ``collate`` understands).
        collate, loss_sum, units: see the module docstring.
        lengths: the token length of each training item (for length grouping).
        args: optimisation settings.
        evaluate: ``evaluate(model, val_items) -> {"val/...": value}``; None: no evaluation.
        select: the validation metric that picks the best weights and drives early stopping.
        out: where metrics are written (``metrics.jsonl``); None: nowhere.
        accelerator: an ``accelerate.Accelerator`` (one is created when None).
        progress: ``progress(step, total_steps, metrics)`` after each step (main process).
        n_tokens: real tokens of a batch (for throughput); default ``batch.n_tokens``.

    Returns:
        :class:`Fitted` with the model holding the best weights (the last ones without evaluation).

    Raises:
        ValueError: if the global batch does not split evenly over the processes, or there are
            fewer training items than one batch.
    """
    acc = accelerator or make_accelerator()
    world, rank = acc.num_processes, acc.process_index
    if args.batch_size % world:
        raise ValueError(f"batch_size {args.batch_size} must be divisible by the number of processes ({world})")
    if len(train_items) < args.batch_size:
        raise ValueError(f"{len(train_items)} training examples: fewer than one batch of {args.batch_size}")
    rng = np.random.default_rng(args.seed)
    per_epoch = len(train_items) // args.batch_size  # full batches (the incomplete last one is dropped)
    total = args.max_steps or math.ceil(args.epochs * per_epoch)  # max_steps, when given, overrides epochs
    if args.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable()
    model.train()
    opt = make_optimizer(model, args)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(args, total))
    model, opt = acc.prepare(model, opt)
    log = _Log(Path(out) if out is not None else None, acc.is_main_process)
    eval_every = args.eval_every or per_epoch
    sign = 1.0 if select[1] == "min" else -1.0
    best_score, best_state, best_record, bad_evals = math.inf, None, {}, 0
    result = Fitted(model)
    count_tokens = n_tokens or (lambda b: b.n_tokens)
    start, step, stop = time.perf_counter(), 0, False
    local_size = args.batch_size // world
    micro = args.micro_batch_size or local_size

    eval_s = 0.0

    def run_eval() -> dict[str, float]:
        nonlocal eval_s
        if evaluate is None or not val_items:
            return {}
        t0 = time.perf_counter()
        model.eval()
        with torch.no_grad():
            record = evaluate(acc.unwrap_model(model), val_items)
        model.train()
        eval_s += time.perf_counter() - t0
        return record

    while step < total and not stop:
        for batch_idx in length_grouped_batches(lengths, args.batch_size, rng, group=args.group_by_length,
                                                shuffle=args.shuffle):
            items = [train_items[i] for i in batch_idx]
            norm = units(items) / world  # DDP averages over processes: see the module docstring
            mine = items[rank * local_size:(rank + 1) * local_size]
            metrics: Metrics = {}
            chunks = [mine[i:i + micro] for i in range(0, len(mine), micro)]
            for j, chunk in enumerate(chunks):
                batch = collate(chunk)
                result.tokens += count_tokens(batch)  # this process's; summed over processes at the end
                ctx = acc.no_sync(model) if j < len(chunks) - 1 else _null()
                with ctx:
                    loss, m = loss_sum(model, batch)
                    acc.backward(loss / norm)
                _add(metrics, m)
            if args.max_grad_norm > 0:
                grad_norm = acc.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                _add(metrics, {"train/grad_norm": (float(grad_norm), 1.0)})
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            record = {"step": step, **_reduce(metrics, acc), "train/lr": sched.get_last_lr()[0]}
            if step % args.log_every == 0 or step == total:
                log.write(record)
            result.history.append(record)
            if progress is not None and acc.is_main_process:
                progress(step, total, record)
            if step % eval_every == 0 or step == total:
                ev = run_eval()
                if ev:
                    ev_record = {"step": step, **ev}
                    log.write(ev_record)
                    result.history.append(ev_record)
                    score = sign * ev[select[0]]
                    if score <= best_score:  # a tie keeps the later, longer-trained weights
                        best_score, best_record, bad_evals = score, ev_record, 0
                        best_state = copy.deepcopy(acc.unwrap_model(model).state_dict())
                    else:
                        bad_evals += 1
                        if args.patience and bad_evals >= args.patience:
                            stop = True
                            break
            if step >= total:
                break
    if world > 1:
        result.tokens = int(acc.reduce(torch.tensor(result.tokens), reduction="sum"))
    result.wall_s = time.perf_counter() - start - eval_s
    result.eval_s = eval_s
    result.steps = step
    unwrapped = acc.unwrap_model(model)
    if best_state is not None:
        unwrapped.load_state_dict(best_state)
    result.model = unwrapped
    result.best = best_record
    log.write({"step": step, "summary/wall_s": result.wall_s, "summary/eval_s": eval_s,
               "summary/tokens_per_s": result.tokens_per_s,
               **{f"best/{k}": v for k, v in best_record.items()}})
    log.close()
    return result


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def plot_curves(metrics_path: str | Path, out_png: str | Path, *, keys: Sequence[str] = ()) -> Path:
    """Plot training and validation curves from ``metrics.jsonl`` into a PNG (one panel per metric).

    Args:
        metrics_path: the JSONL file :func:`fit` wrote.
        out_png: the image to write.
        keys: the metrics to plot; default every ``train/loss``-like and ``val/`` metric.

    Raises:
        FileNotFoundError: if ``metrics_path`` does not exist.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    series: dict[str, tuple[list[int], list[float]]] = {}
    for r in rows:
        for k, v in r.items():
            if k == "step" or not isinstance(v, (int, float)) or k.startswith(("summary/", "best/")):
                continue
            xs, ys = series.setdefault(k, ([], []))
            xs.append(r["step"])
            ys.append(v)
    names = list(keys) or [k for k in series if k not in ("train/lr", "train/grad_norm")]
    names = [k for k in names if k in series]
    n = max(1, len(names))
    cols = min(3, n)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(4.5 * cols, 3.2 * math.ceil(n / cols)),
                             squeeze=False)
    for ax, k in zip(axes.flat, names):
        xs, ys = series[k]
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3)
        ax.set_title(k)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def save_args(out: str | Path, **sections: Any) -> None:
    """Write the run's settings (dataclasses or dicts) to ``OUT/train_args.json``."""
    def plain(v: Any) -> Any:
        return asdict(v) if hasattr(v, "__dataclass_fields__") else v

    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "train_args.json").write_text(json.dumps({k: plain(v) for k, v in sections.items()}, indent=2,
                                                          default=str))


def set_threads(threads: int = 0) -> None:
    """Intra-op threads: ``threads`` when given, else every core unless ``OMP_NUM_THREADS`` says otherwise."""
    if threads > 0:
        torch.set_num_threads(threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)
