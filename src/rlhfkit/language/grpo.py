"""Online RL with group-relative advantages: GRPO, Dr. GRPO, RLOO, REINFORCE++ (and DAPO's, GSPO's losses).

Each step follows the GRPO algorithm (Shao et al. 2024, "DeepSeekMath", Algorithm 1):

1. take ``P`` prompts and sample ``G`` completions of each from the current policy
   (:mod:`rlhfkit.language.generation`);
2. score every completion with the reward functions (:mod:`rlhfkit.language.rewards`);
3. turn rewards into advantages within each group (:func:`rlhfkit.rl.group_advantages`);
4. take ``μ`` passes over the batch (each in ``mini_batches`` optimiser steps), minimising the
   clipped per-token loss with an optional KL penalty to a frozen reference
   (:func:`rlhfkit.rl.grpo_token_loss`, :func:`rlhfkit.rl.aggregate_loss`).

The ``G`` completions of a prompt are scored as one packed row that computes the prompt once
(:func:`rlhfkit.language.logprobs.pack`), and only completion positions are projected onto the
vocabulary. The reference model is not loaded when ``β = 0``; old log-probs are not computed
when every batch is used for exactly one optimiser step (μ = 1, one mini-batch: the ratio is 1).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from rlhfkit.checkpoints import load_training_state, save_training_state
from rlhfkit.language.generation import Generator, HFGenerator, SamplingParams
from rlhfkit.language.logprobs import Encoded
from rlhfkit.language.online import (
    OnlineResult,
    PromptStream,
    completion_logprobs,
    evaluate_greedy,
    reduce_metrics,
    reward_stats,
    rollout_groups,
    score_rollout,
)
from rlhfkit.language.prompts import PromptExample, encode_prompts
from rlhfkit.language.rewards import RewardFunction, check_columns
from rlhfkit.language.train import TrainArgs, chunk_budget, lr_schedule, make_accelerator, make_optimizer
from rlhfkit.metrics import MetricsLog
from rlhfkit.rl import GROUP_ESTIMATORS, LOSS_AGGREGATIONS, aggregate_loss, group_advantages, grpo_token_loss

__all__ = ["GRPOResult", "GRPOSettings", "evaluate_greedy", "train_grpo"]


@dataclass(frozen=True)
class GRPOSettings:
    """The online part of GRPO and its variants (optimiser settings are in :class:`TrainArgs`)."""

    num_generations: int = 8
    """``G``: completions sampled per prompt (at least 2: the baseline is the group)."""
    prompts_per_step: int = 4
    """``P``: prompts per generation batch; a batch holds ``P × G`` completions."""
    num_iterations: int = 1
    """``μ``: passes over each generation batch (the clip only acts when μ > 1)."""
    mini_batches: int = 1
    """Optimiser steps per pass over a generation batch (whole groups per mini-batch)."""
    max_new_tokens: int = 256
    """Longest completion in tokens; a completion cut here has no EOS (``completions/clipped_ratio``)."""
    temperature: float = 1.0
    """Sampling temperature; the trained log-probs use the same tempered policy."""
    top_p: float = 1.0
    """Nucleus sampling (1: off)."""
    top_k: int = 0
    """Top-k sampling (0: off)."""
    estimator: Literal["grpo", "dr_grpo", "rloo", "reinforce_pp"] = "grpo"
    """Group baseline: GRPO, Dr. GRPO (no std), RLOO (leave-one-out), REINFORCE++ (batch-normalised)."""
    scale: Literal["group", "batch", "none"] | None = None
    """Advantage scaling by the reward std per group, per batch, or off (None: the estimator's own)."""
    aggregation: Literal["token_mean", "sequence_mean", "constant"] = "token_mean"
    """Loss over tokens: DAPO's token mean, the GRPO paper's sequence mean, Dr. GRPO's constant."""
    clip_range: float = 0.2
    """``ε_low`` of the ratio clip."""
    clip_range_high: float | None = None
    """``ε_high`` (DAPO's clip-higher, e.g. 0.28); None: ``ε_low``."""
    ratio_level: Literal["token", "sequence"] = "token"
    """Importance ratios per token (GRPO) or per sequence (GSPO)."""
    beta: float = 0.0
    """KL coefficient to the frozen reference (0: no reference model is loaded)."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """Per-token KL estimator; k3 as in GRPO."""
    mask_truncated: bool = False
    """Leave completions without EOS (cut at ``max_new_tokens``) out of the loss (DAPO's overlong filtering)."""
    share_prompt: bool = True
    """Compute each prompt once per group in generation (a repeated KV cache)."""
    log_completions_every: int = 0
    """Write the step's prompts, completions and rewards to ``completions.jsonl`` every N steps (0: never)."""
    save_every: int = 0
    """Checkpoint every N steps (0: only at the end)."""
    eval_every: int = 0
    """Evaluate every N steps (0: only at the start and the end, when there is something to evaluate)."""
    eval_every_s: float = 0.0
    """Also evaluate whenever this much training time has passed since the last evaluation (0: off)."""
    max_train_s: float = 0.0
    """Stop after this much training wall time in seconds, evaluation excluded (0: no limit)."""

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ValueError(f"num_generations (G) must be >= 2: the group is the baseline, got {self.num_generations}")
        for name in ("prompts_per_step", "num_iterations", "mini_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.mini_batches > self.prompts_per_step:
            raise ValueError(f"mini_batches ({self.mini_batches}) cannot exceed prompts_per_step "
                             f"({self.prompts_per_step}): a mini-batch holds whole groups")
        SamplingParams(self.num_generations, self.max_new_tokens, self.temperature, self.top_p, self.top_k)
        if self.temperature == 0:
            raise ValueError("temperature must be > 0: G greedy completions would all be the same")
        if self.estimator not in GROUP_ESTIMATORS:
            raise ValueError(f"estimator must be one of {sorted(GROUP_ESTIMATORS)}, got {self.estimator!r}")
        if self.scale not in (None, "group", "batch", "none"):
            raise ValueError(f"scale must be group, batch or none, got {self.scale!r}")
        if self.aggregation not in LOSS_AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {LOSS_AGGREGATIONS}, got {self.aggregation!r}")
        if self.ratio_level not in ("token", "sequence"):
            raise ValueError(f"ratio_level must be token or sequence, got {self.ratio_level!r}")
        if self.kl_estimator not in ("k1", "k2", "k3"):
            raise ValueError(f"kl_estimator must be k1, k2 or k3, got {self.kl_estimator!r}")
        if self.beta < 0 or self.clip_range <= 0 or (self.clip_range_high is not None and self.clip_range_high <= 0):
            raise ValueError("beta must be >= 0 and the clip ranges > 0")
        for name in ("log_completions_every", "save_every", "eval_every", "eval_every_s", "max_train_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def sampling(self) -> SamplingParams:
        """The :class:`SamplingParams` of the rollouts."""
        return SamplingParams(self.num_generations, self.max_new_tokens, self.temperature, self.top_p, self.top_k)


GRPOResult = OnlineResult
"""What :func:`train_grpo` returns (:class:`rlhfkit.language.online.OnlineResult`)."""


def train_grpo(model: Any, tokenizer: Any, prompts: Sequence[PromptExample], rewards: Sequence[RewardFunction],
               args: TrainArgs, settings: GRPOSettings = GRPOSettings(), *, ref_model: Any = None,
               generator: Generator | None = None, eval_prompts: Sequence[PromptExample] = (),
               evaluate: Callable[[Any], dict[str, float]] | None = None, out: str | Path | None = None,
               resume: bool = False, accelerator: Any = None,
               progress: Callable[[int, int, dict[str, Any]], None] | None = None,
               on_completions: Callable[[int, list[dict[str, Any]]], None] | None = None) -> GRPOResult:
    """Train ``model`` with GRPO (or a variant, per ``settings``) on ``prompts`` and ``rewards``.

    Args:
        model: the policy, a causal LM (possibly with LoRA adapters), trained in place.
        tokenizer: its tokenizer (pad and EOS tokens required).
        prompts: the training prompts with their columns (:func:`rlhfkit.language.prompts.load_prompts`).
        rewards: the weighted reward functions.
        args: optimiser settings: ``lr``, ``max_steps`` (generation batches; 0: ``epochs`` over
            the prompts), ``warmup_ratio``, ``schedule``, ``weight_decay``, ``max_grad_norm``,
            ``seed``, ``micro_batch_size`` (completions per forward, rounded to whole groups; 0: a
            mini-batch at once), ``chunk_tokens``, ``share_prefix``, ``max_length`` (prompt +
            completion), ``gradient_checkpointing``, ``log_every``.
        settings: the GRPO settings.
        ref_model: the frozen reference for ``β > 0`` (default: a copy of the initial policy, or
            the base model with adapters off for LoRA).
        generator: the rollout engine (default :class:`HFGenerator` on the policy).
        eval_prompts: held-out prompts scored by :func:`evaluate_greedy` at evaluations.
        evaluate: ``evaluate(model) -> {"eval/...": value}``, called at evaluations instead.
        out: the run directory: ``metrics.jsonl``, ``completions.jsonl``, ``checkpoint/``.
        resume: continue from ``out/checkpoint`` (model, optimiser, prompt stream, step).
        progress: ``progress(step, total, record)`` after every step.
        on_completions: ``on_completions(step, rows)`` whenever completions are logged.

    Returns:
        :class:`GRPOResult`. Metrics per step: ``reward/mean``, ``reward/std``, ``reward/<f>/mean``
        and ``/std`` per function, ``reward/zero_std_fraction`` (groups with no learning
        signal), ``completions/mean_length``, ``completions/clipped_ratio``, ``loss/policy``,
        ``policy/clip_fraction``, ``policy/approx_kl``, ``policy/kl`` (with a reference),
        ``train/grad_norm``, ``train/lr``, ``time/generate_s``, ``time/reward_s``, ``time/train_s``.

    Raises:
        ValueError: no prompts, no reward functions, a tokenizer without pad or EOS,
            ``max_length <= max_new_tokens`` (prompts are cut from the left to
            ``max_length - max_new_tokens`` tokens), ``prompts_per_step`` not divisible by the
            processes, ``resume`` without a checkpoint (or one that does not fit the model).
        RewardError: a reward function fails or returns a wrong value (at the first step).
    """
    if not prompts:
        raise ValueError("no prompts to train on")
    if not rewards:
        raise ValueError("no reward functions: pass at least one")
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer needs a pad and an EOS token")
    check_columns(rewards, list(prompts[0].columns))
    s, G, P = settings, settings.num_generations, settings.prompts_per_step
    acc = accelerator or make_accelerator()
    world, rank = acc.num_processes, acc.process_index
    if P % world:
        raise ValueError(f"prompts_per_step {P} must be divisible by the number of processes ({world})")
    max_prompt = args.max_length - s.max_new_tokens
    if max_prompt < 1:
        raise ValueError(f"max_length ({args.max_length}) must exceed max_new_tokens ({s.max_new_tokens})")
    pad_id = tokenizer.pad_token_id
    prompt_ids = encode_prompts(tokenizer, [p.prompt for p in prompts], max_prompt)
    total = args.max_steps or math.ceil(args.epochs * len(prompts) / P)
    opt_steps_total = total * s.num_iterations * s.mini_batches
    run = Path(out) if out is not None else None

    if args.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable()
    reference = None
    if s.beta > 0:
        reference = ref_model if ref_model is not None else (None if hasattr(model, "disable_adapter")
                                                             else copy.deepcopy(model).eval())
        if reference is not None:
            reference.requires_grad_(False)
    model.train()
    opt = make_optimizer(model, args)
    lr_factor = lr_schedule(args, opt_steps_total)
    stream, step, opt_step, result_wall = PromptStream(len(prompts), args.seed), 0, 0, 0.0
    if resume:
        if run is None or not (run / "checkpoint" / "state.json").is_file():
            raise ValueError(f"cannot resume: no checkpoint in {run}/checkpoint")
        state = load_training_state(run / "checkpoint", model, opt)
        step, opt_step, result_wall = state["step"], state["opt_step"], state.get("train_wall_s", 0.0)
        stream = PromptStream(len(prompts), args.seed, state["epoch"], state["position"])
    model, opt = acc.prepare(model, opt)
    policy = acc.unwrap_model(model)
    gen = generator or HFGenerator(policy, pad_id=pad_id, eos_id=tokenizer.eos_token_id, share_prompt=s.share_prompt)
    log = MetricsLog(run, fresh=not resume) if run is not None and acc.is_main_process else None
    result = GRPOResult(policy)
    max_tokens = chunk_budget(model, args)
    micro_groups = max(1, args.micro_batch_size // G) if args.micro_batch_size else 0

    def run_eval() -> None:
        if evaluate is None and not eval_prompts:
            return
        t0 = time.perf_counter()
        policy.eval()
        with torch.no_grad():
            record = evaluate(policy) if evaluate is not None else evaluate_greedy(
                policy, tokenizer, eval_prompts, rewards, max_new_tokens=s.max_new_tokens, max_length=max_prompt)
        policy.train()
        result.eval_s += time.perf_counter() - t0
        record = {"step": step, "time/train_wall_s": result.wall_s, **record}
        result.history.append(record)
        if log is not None:
            log.write(record)

    if not resume:
        run_eval()
    # training wall time = now - clock - eval_s: evaluations before the loop and time before a resume included
    clock = time.perf_counter() - result.eval_s - result_wall
    last_eval = result_wall
    while step < total:
        t0 = time.perf_counter()
        batch = stream.take(P)[rank * (P // world):(rank + 1) * (P // world)]  # this process's prompts
        gen.sync(policy)
        rollout = gen.generate([prompt_ids[i] for i in batch], s.sampling, seed=args.seed * 1_000_003 + step)
        t1 = time.perf_counter()
        scored = score_rollout(tokenizer, rollout, batch, prompts, rewards)
        texts, rep, reward, per_func = scored.texts, scored.prompts, scored.rewards, scored.per_function  # (n,), (n, F)
        all_rewards = acc.gather(reward) if world > 1 else reward  # (P·G,): the batch scale needs every group
        all_per_func = acc.gather(per_func) if world > 1 else per_func  # (P·G, F), for the metrics
        advantages = group_advantages(all_rewards.view(-1, G).double(), s.estimator, scale=s.scale).float()
        advantages = advantages.view(-1)[rank * len(reward):(rank + 1) * len(reward)]  # (n,)
        t2 = time.perf_counter()

        mask = rollout.completion_mask & (rollout.finished[:, None] if s.mask_truncated else True)  # (n, T)
        T = mask.shape[1]
        groups = rollout_groups(rollout)
        score = dict(temperature=s.temperature, max_tokens=max_tokens, share_prefix=args.share_prefix)
        old = ref = None
        with torch.no_grad():
            if s.num_iterations > 1 or s.mini_batches > 1:
                old = completion_logprobs(model, groups, pad_id, T, **score)[0]
            if s.beta > 0:
                if reference is not None:
                    ref = completion_logprobs(reference, groups, pad_id, T, **score)[0]
                else:
                    with policy.disable_adapter():
                        ref = completion_logprobs(model, groups, pad_id, T, **score)[0]
        # without a KL term a group whose advantages are all 0 (equal rewards) adds nothing to the loss or its
        # gradient: it stays out of the forward pass, its tokens stay in the normalisers (the same update)
        idle = (advantages.view(-1, G) == 0).all(-1).tolist() if s.beta == 0 else [False] * len(batch)
        metrics, computed, updates = _update(model, opt, acc, groups, mask, advantages, old, ref, idle, s, args,
                                            lambda k: args.lr * lr_factor(opt_step + k), micro_groups, score, pad_id)
        opt_step += updates
        result.computed_tokens += computed
        result.trained_tokens += s.num_iterations * sum(len(e) for g in groups for e in g)
        step_metrics = reduce_metrics(metrics, acc, _STEP_METRICS, summed=("loss/policy",))
        t3 = time.perf_counter()
        step += 1
        result.generate_s += t1 - t0
        result.reward_s += t2 - t1
        result.train_s += t3 - t2
        result.completions += rollout.n_completions
        result.completion_tokens += int(rollout.lengths.sum())
        grouped = all_rewards.view(-1, G)
        record: dict[str, Any] = {
            "step": step, **reward_stats("reward", all_rewards),
            "reward/zero_std_fraction": float((grouped.amax(-1) == grouped.amin(-1)).float().mean()),
            **{k: v for f, rf in enumerate(rewards) for k, v in reward_stats(f"reward/{rf.name}", all_per_func[:, f]).items()},
            "completions/mean_length": float(rollout.lengths.float().mean()),
            "completions/clipped_ratio": float((~rollout.finished).float().mean()),
            **step_metrics,
            "train/lr": args.lr * lr_factor(max(opt_step - 1, 0)),
            "time/generate_s": t1 - t0, "time/reward_s": t2 - t1, "time/train_s": t3 - t2,
        }
        result.wall_s = time.perf_counter() - clock - result.eval_s
        record["time/train_wall_s"] = result.wall_s
        result.history.append(record)
        if log is not None and (step % args.log_every == 0 or step == total):
            log.write(record)
        if s.log_completions_every and step % s.log_completions_every == 0 and acc.is_main_process:
            rows = [{"step": step, "prompt": prompts[rep[j]].prompt, "completion": texts[j],
                     "reward": float(reward[j]), "advantage": float(advantages[j]),
                     **{rf.name: (None if math.isnan(per_func[j, f]) else float(per_func[j, f]))
                        for f, rf in enumerate(rewards)}} for j in range(len(texts))]
            if run is not None:
                with (run / "completions.jsonl").open("a") as fh:
                    fh.writelines(json.dumps(r, default=str) + "\n" for r in rows)
            if on_completions is not None:
                on_completions(step, rows)
        if progress is not None and acc.is_main_process:
            progress(step, total, record)
        out_of_time = bool(s.max_train_s) and result.wall_s >= s.max_train_s
        if (s.eval_every and step % s.eval_every == 0) or (s.eval_every_s and result.wall_s - last_eval >= s.eval_every_s) \
                or step == total or out_of_time:
            last_eval = result.wall_s
            run_eval()
        if run is not None and acc.is_main_process and ((s.save_every and step % s.save_every == 0) or step == total
                                                        or out_of_time):
            save_training_state(run / "checkpoint", policy, opt, {"step": step, "opt_step": opt_step,
                                                                "epoch": stream.epoch, "position": stream.position,
                                                                "train_wall_s": result.wall_s, "settings": asdict(s)})
        if out_of_time:
            break
    result.steps = step
    if log is not None:
        log.write({"step": step, "summary/wall_s": result.wall_s, "summary/generate_s": result.generate_s,
                   "summary/reward_s": result.reward_s, "summary/train_s": result.train_s,
                   "summary/completions_per_s": result.completions_per_s,
                   "summary/trained_tokens_per_s": result.trained_tokens_per_s})
        log.close()
    return result


def _update(model: Any, opt: torch.optim.Optimizer, acc: Any, groups: list[list[Encoded]], mask: Tensor,
            advantages: Tensor, old: Tensor | None, ref: Tensor | None, idle: list[bool], s: GRPOSettings,
            args: TrainArgs, lr_at: Callable[[int], float], micro_groups: int, score: dict[str, Any],
            pad_id: int) -> tuple[dict[str, list[float]], int, int]:
    """μ passes over one generation batch, each in ``mini_batches`` optimiser steps of whole groups;
    returns the metrics of every update, the tokens through the forward passes and the number of updates.

    Mini-batch ``j`` holds the groups whose index in the whole batch (over all processes) is ``j``
    modulo ``mini_batches``, so that the updates do not depend on the number of processes.
    """
    G, world, T = s.num_generations, acc.num_processes, mask.shape[1]
    first = acc.process_index * len(groups)  # the batch index of this process's first group
    n_mb = min(s.mini_batches, len(groups) * world)
    metrics: dict[str, list[float]] = {}
    trained, k_step = 0, 0
    for _ in range(s.num_iterations):
        for j in range(n_mb):
            mb = [g for g in range(len(groups)) if (first + g) % n_mb == j]
            seqs = [i for g in mb for i in range(g * G, (g + 1) * G)]
            norm = torch.tensor([float(mask[seqs].sum()), float(len(seqs))])  # the mini-batch's tokens, sequences
            if world > 1:
                norm = acc.reduce(norm, reduction="sum")
            active = [g for g in mb if not idle[g]]
            micro = [active[i:i + micro_groups] for i in range(0, len(active), micro_groups)] if micro_groups \
                else [active] if active else []
            dummy = world > 1 and not micro  # DDP: every process runs a backward; this one adds 0
            if dummy:
                micro = [[0]]
            step_loss = 0.0
            for k, part in enumerate(micro):
                idx = torch.from_numpy(np.concatenate([np.arange(g * G, (g + 1) * G) for g in part]))
                lp = completion_logprobs(model, [groups[g] for g in part], pad_id, T, **score)[0]  # (m, T)
                loss_t, m = grpo_token_loss(
                    lp, old[idx] if old is not None else lp.detach(), advantages[idx], mask[idx],
                    clip_range=s.clip_range, clip_range_high=s.clip_range_high, ratio_level=s.ratio_level,
                    ref_logprobs=ref[idx] if ref is not None else None, beta=s.beta, kl_estimator=s.kl_estimator)
                loss = aggregate_loss(loss_t, mask[idx], s.aggregation, n_tokens=float(norm[0]),
                                      n_sequences=float(norm[1]), max_completion_length=s.max_new_tokens)
                with acc.no_sync(model) if k < len(micro) - 1 else nullcontext():
                    acc.backward(loss * (0.0 if dummy else world))  # DDP averages gradients over processes
                if dummy:
                    break
                step_loss += loss.item()  # this process's share of the mini-batch loss
                for key, v in m.items():
                    metrics.setdefault(key, []).append(float(v))
                trained += sum(len(e) for g in part for e in groups[g])
            metrics.setdefault("loss/policy", []).append(step_loss)
            if not micro:  # an all-idle mini-batch: loss 0, zero gradients, and the optimiser steps as usual
                for p in model.parameters():
                    if p.requires_grad and p.grad is None:
                        p.grad = torch.zeros_like(p)
            for group in opt.param_groups:
                group["lr"] = lr_at(k_step)
            if args.max_grad_norm > 0:
                metrics.setdefault("train/grad_norm", []).append(
                    float(acc.clip_grad_norm_(model.parameters(), args.max_grad_norm)))
            opt.step()
            opt.zero_grad(set_to_none=True)
            k_step += 1
    return metrics, trained, k_step


_STEP_METRICS = ("loss/policy", "train/grad_norm", "policy/clip_fraction", "policy/approx_kl",
                 "policy/clip_low_fraction", "policy/clip_high_fraction", "policy/kl")
