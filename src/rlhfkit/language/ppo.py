"""PPO for language models with a per-token KL penalty to the reference: InstructGPT's step 3.

Each step (Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al. 2022, §3.5):

1. sample completions of ``P`` prompts from the policy (:mod:`rlhfkit.language.generation`);
2. score them with the reward functions — a reward model directory from ``rlhf lm rm``, verifiable
   checks, or both (:mod:`rlhfkit.language.rewards`);
3. under no gradient, the policy's log-probs and values and the reference's log-probs; per-token
   rewards ``r_t = -β KL_t`` plus the score on the last token (:func:`rlhfkit.rl.token_rewards`);
   advantages by GAE over the tokens (:func:`rlhfkit.rl.token_advantages`), whitened;
4. ``ppo_epochs`` passes of PPO's clipped loss (:func:`rlhfkit.rl.ppo_clip_loss`) plus the clipped
   value loss (:func:`rlhfkit.rl.value_loss`) and, for PPO-ptx, ``γ`` times the negative
   log-likelihood of SFT/pretraining text (Ouyang et al. 2022, Eq. 2);
5. ``β`` follows a fixed or a proportional controller towards a target KL (Ziegler et al. 2019).

The value function is a linear head on the policy's final hidden states (its gradient reaches the
shared backbone) or a separate critic from a reward-model directory (InstructGPT initialises its
value function from the reward model). "Gold" reward functions can be given to watch, never to
optimise: with them every run records the gold reward next to the proxy it optimises and the KL
it spent — the over-optimisation curve of Gao et al. (2022).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from rlhfkit.checkpoints import load_training_state, save_training_state
from rlhfkit.language.generation import Generator, HFGenerator, SamplingParams
from rlhfkit.language.logprobs import Encoded, forward, run_packed, unflatten_tokens
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
from rlhfkit.language.rewards import RewardFunction, check_columns, segment_scores
from rlhfkit.language.train import TrainArgs, lr_schedule, make_optimizer
from rlhfkit.metrics import MetricsLog
from rlhfkit.rl import (
    FixedKLController,
    ProportionalKLController,
    kl_estimate,
    lagrange_update,
    safe_advantages,
    ppo_clip_loss,
    token_advantages,
    token_rewards,
    value_loss,
    whiten,
)

__all__ = ["PPOSettings", "ValueHead", "plot_overoptimisation", "train_ppo"]


@dataclass(frozen=True)
class PPOSettings:
    """RLHF PPO settings (optimiser settings are in :class:`TrainArgs`)."""

    prompts_per_step: int = 16
    """Prompts per rollout batch."""
    num_generations: int = 1
    """Completions per prompt (1 in InstructGPT; more share the prompt's computation)."""
    ppo_epochs: int = 4
    """Passes over each rollout batch."""
    mini_batches: int = 1
    """Optimiser steps per pass (whole prompts per mini-batch)."""
    max_new_tokens: int = 256
    """Longest completion in tokens."""
    temperature: float = 1.0
    """Sampling temperature (the trained log-probs use the same tempered policy)."""
    top_p: float = 1.0
    """Nucleus sampling (1: off)."""
    top_k: int = 0
    """Top-k sampling (0: off)."""
    beta: float = 0.05
    """KL coefficient ``β`` (the start value with a target)."""
    kl_target: float | None = None
    """Target KL per completion in nats: ``β`` follows Ziegler et al.'s proportional controller (None: fixed ``β``)."""
    kl_horizon: float = 10_000.0
    """The controller's horizon in completions."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"
    """Per-token KL estimator in the reward (k1: ``log π/π_ref``, as InstructGPT)."""
    missing_eos_penalty: float | None = None
    """Subtracted from the score of completions cut at ``max_new_tokens`` without EOS."""
    whiten_rewards: bool = False
    """Whiten the per-token rewards of each batch (keeping their mean) before GAE."""
    gamma: float = 1.0
    """Discount over tokens."""
    gae_lambda: float = 0.95
    """GAE's ``λ``."""
    clip_range: float = 0.2
    """PPO's ratio clip ``ε``."""
    clip_range_value: float | None = 0.2
    """Value clip around the rollout's values (None: no clipping)."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    ptx_coef: float = 0.0
    """``γ`` of PPO-ptx: weight of the SFT/pretraining log-likelihood term (0: off)."""
    ptx_batch_size: int = 8
    """Text examples per optimiser step in the ptx term."""
    cost_threshold: float = 0.0
    """Safe RLHF's ``d``: the mean cost per completion the policy must stay under (with cost functions)."""
    lambda_init: float = 1.0
    """The Lagrange multiplier's start value ``λ_0 > 0``."""
    lambda_lr: float = 0.05
    """Step size of the gradient ascent on ``log λ``."""
    lambda_max: float | None = None
    """Upper clamp of ``λ`` (None: none)."""
    log_completions_every: int = 0
    """Write the step's completions to ``completions.jsonl`` every N steps (0: never)."""
    save_every: int = 0
    """Checkpoint every N steps (0: only at the end)."""
    eval_every: int = 0
    """Evaluate every N steps (0: at the start and the end)."""
    eval_every_s: float = 0.0
    """Also evaluate whenever this much training time has passed (0: off)."""
    max_train_s: float = 0.0
    """Stop after this much training time in seconds (0: no limit)."""

    def __post_init__(self) -> None:
        for name in ("prompts_per_step", "num_generations", "ppo_epochs", "mini_batches", "ptx_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.mini_batches > self.prompts_per_step:
            raise ValueError(f"mini_batches ({self.mini_batches}) cannot exceed prompts_per_step "
                             f"({self.prompts_per_step})")
        SamplingParams(self.num_generations, self.max_new_tokens, self.temperature, self.top_p, self.top_k)
        if self.temperature == 0:
            raise ValueError("temperature must be > 0 for sampling")
        if self.beta < 0 or self.ptx_coef < 0 or self.vf_coef < 0:
            raise ValueError("beta, ptx_coef and vf_coef must be >= 0")
        if self.lambda_init <= 0 or self.lambda_lr <= 0 or (self.lambda_max is not None and self.lambda_max <= 0):
            raise ValueError("lambda_init, lambda_lr and lambda_max must be > 0")
        if self.kl_target is not None and self.kl_target <= 0:
            raise ValueError(f"kl_target must be > 0, got {self.kl_target}")
        if self.kl_estimator not in ("k1", "k2", "k3"):
            raise ValueError(f"kl_estimator must be k1, k2 or k3, got {self.kl_estimator!r}")
        if not (0 <= self.gamma <= 1 and 0 <= self.gae_lambda <= 1) or self.clip_range <= 0:
            raise ValueError("gamma and gae_lambda must lie in [0, 1] and clip_range be > 0")
        for name in ("log_completions_every", "save_every", "eval_every", "eval_every_s", "max_train_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def sampling(self) -> SamplingParams:
        """The :class:`SamplingParams` of the rollouts."""
        return SamplingParams(self.num_generations, self.max_new_tokens, self.temperature, self.top_p, self.top_k)

    def kl_controller(self) -> FixedKLController | ProportionalKLController:
        """A fresh controller: fixed ``β``, or proportional towards ``kl_target``."""
        if self.kl_target is None:
            return FixedKLController(self.beta)
        return ProportionalKLController(self.beta, self.kl_target, self.kl_horizon)


class ValueHead(torch.nn.Module):
    """``V(s_t) = w · h_t + b`` on the policy's final hidden state ``h_t`` (``D`` → 1), zero-initialised
    so that the first values are 0."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: Tensor) -> Tensor:
        """``(M, D)`` hidden states → ``(M, 1)`` values."""
        return self.linear(hidden.float())


class _Critic(torch.nn.Module):
    """A separate value model: a reward model's backbone and score head, read at every position."""

    def __init__(self, reward_model: Any):
        super().__init__()
        self.model = reward_model
        head = getattr(reward_model, "score", None)
        if head is None:
            raise ValueError("the critic must be a causal-LM-based reward model with a `score` head (rlhf lm rm)")
        self.head = head

    def values(self, groups: Sequence[Sequence[Encoded]], pad_id: int, T: int, max_tokens: int) -> Tensor:
        def fn(pb: Any) -> Tensor:
            hidden = forward(self.model, pb, output_hidden_states=True).hidden_states[-1]  # (R, L, D)
            v = self.head(hidden.flatten(0, 1)[pb.completion - 1])[:, :1].squeeze(-1).float()  # (M,)
            return unflatten_tokens(v, pb, T)

        return run_packed(fn, groups, pad_id, max_tokens=max_tokens, share_prefix=True)


_STEP_METRICS = ("loss/policy", "loss/value", "loss/cost_value", "loss/ptx", "train/grad_norm",
                 "policy/clip_fraction", "policy/approx_kl", "value/clip_fraction")


class _stack(torch.nn.Module):
    """Several value heads read from one hidden state: ``(M, D)`` → ``(M, H)``."""

    def __init__(self, heads: Sequence[torch.nn.Module]):
        super().__init__()
        self.heads = list(heads)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.cat([h(hidden) for h in self.heads], -1)


def train_ppo(model: Any, tokenizer: Any, prompts: Sequence[PromptExample], rewards: Sequence[RewardFunction],
              args: TrainArgs, settings: PPOSettings = PPOSettings(), *, ref_model: Any = None, critic: Any = None,
              gold: Sequence[RewardFunction] = (), segments: Sequence[RewardFunction] = (),
              costs: Sequence[RewardFunction] = (), ptx: Sequence[Any] = (),
              generator: Generator | None = None,
              eval_prompts: Sequence[PromptExample] = (), evaluate: Callable[[Any], dict[str, float]] | None = None,
              out: str | Path | None = None, resume: bool = False,
              progress: Callable[[int, int, dict[str, Any]], None] | None = None,
              on_completions: Callable[[int, list[dict[str, Any]]], None] | None = None) -> OnlineResult:
    """Train ``model`` with RLHF PPO against ``rewards`` (see the module docstring).

    Args:
        model: the policy (usually the SFT model), a causal LM, trained in place (LoRA allowed).
        tokenizer: its tokenizer (pad and EOS tokens required).
        prompts: training prompts with their columns.
        rewards: the weighted reward functions whose sum is the optimised (proxy) score.
        args: optimiser settings (``lr``, ``max_steps`` in rollout batches, ``warmup_ratio``,
            ``schedule``, ``weight_decay``, ``max_grad_norm``, ``seed``, ``max_length``,
            ``chunk_tokens``, ``share_prefix``, ``log_every``).
        settings: the PPO settings.
        ref_model: the frozen reference (default: a copy of the initial policy; with LoRA, the base
            model with adapters off).
        critic: a reward model (``load_reward_model``) to use as a separate value model; None: a
            :class:`ValueHead` on the policy.
        gold: reward functions recorded as ``gold/...`` but never optimised (the over-optimisation curve).
        segments: fine-grained reward functions returning ``(end, score)`` segments per completion
            (:func:`rlhfkit.language.rewards.segment_scores`): dense rewards on each segment's last
            token, added to the per-token rewards before GAE (Wu et al. 2023).
        costs: cost functions (or a cost-model directory) for Safe RLHF (Dai et al. 2023): a second value
            head learns the cost's value, the advantage is ``(A_r - λ A_c) / (1 + λ)``
            (:func:`rlhfkit.rl.safe_advantages`) and ``λ`` rises while the batch's mean cost is above
            ``cost_threshold`` (:func:`rlhfkit.rl.lagrange_update`).
        ptx: ``SFTExample``-like records for PPO-ptx (needed when ``ptx_coef > 0``).
        generator, eval_prompts, evaluate, out, resume, progress, on_completions: as
            :func:`rlhfkit.language.grpo.train_grpo`.

    Returns:
        :class:`~rlhfkit.language.online.OnlineResult` (``model`` is the policy; the value head is
        saved as ``value_head.safetensors`` in ``out``). Metrics per step: ``reward/mean``,
        ``reward/<f>/mean``, ``gold/mean``, ``kl/sequence`` (mean ``Σ_t log π/π_ref`` per
        completion, nats), ``kl/beta``, ``loss/policy``, ``loss/value``, ``loss/ptx``,
        ``policy/clip_fraction``, ``policy/approx_kl``, ``value/clip_fraction``, ``value/mean``,
        ``completions/mean_length``, ``completions/clipped_ratio``, and the time split.

    Raises:
        ValueError: no prompts or rewards, a tokenizer without pad/EOS, ``ptx_coef > 0`` without
            ``ptx`` data, ``max_length <= max_new_tokens``, ``resume`` without a checkpoint.
        RewardError: a reward function fails or returns a wrong value (at the first batch).
    """
    if not prompts or not (rewards or segments):
        raise ValueError("PPO needs prompts and at least one reward (or segment reward) function")
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer needs a pad and an EOS token")
    s = settings
    if s.ptx_coef > 0 and not ptx:
        raise ValueError("ptx_coef > 0 needs ptx data (SFT or pretraining text)")
    check_columns([*rewards, *gold, *segments, *costs], list(prompts[0].columns))
    max_prompt = args.max_length - s.max_new_tokens
    if max_prompt < 1:
        raise ValueError(f"max_length ({args.max_length}) must exceed max_new_tokens ({s.max_new_tokens})")
    pad_id, P, G = tokenizer.pad_token_id, s.prompts_per_step, s.num_generations
    prompt_ids = encode_prompts(tokenizer, [p.prompt for p in prompts], max_prompt)
    total = args.max_steps or math.ceil(args.epochs * len(prompts) / P)
    updates_per_step = s.ppo_epochs * s.mini_batches
    run = Path(out) if out is not None else None

    if args.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable()
    reference = ref_model if ref_model is not None else (None if hasattr(model, "disable_adapter")
                                                         else copy.deepcopy(model).eval())
    if reference is not None:
        reference.requires_grad_(False)
    hidden_size = model.get_input_embeddings().weight.shape[1]
    head = ValueHead(hidden_size) if critic is None else None
    cost_head = ValueHead(hidden_size) if costs else None
    value_model = _Critic(critic) if critic is not None else None
    trained = torch.nn.ModuleDict({"policy": model, **({"value_head": head} if head is not None else {}),
                                   **({"cost_head": cost_head} if cost_head is not None else {}),
                                   **({"critic": value_model} if value_model is not None else {})})
    trained.train()
    opt = make_optimizer(trained, args)
    lr_factor = lr_schedule(args, total * updates_per_step)
    controller = s.kl_controller()
    log_lambda = math.log(s.lambda_init)
    stream, step, opt_step, previous_wall = PromptStream(len(prompts), args.seed), 0, 0, 0.0
    if resume:
        if run is None or not (run / "checkpoint" / "state.json").is_file():
            raise ValueError(f"cannot resume: no checkpoint in {run}/checkpoint")
        state = load_training_state(run / "checkpoint", trained, opt)
        step, opt_step, previous_wall = state["step"], state["opt_step"], state.get("train_wall_s", 0.0)
        stream = PromptStream(len(prompts), args.seed, state["epoch"], state["position"])
        controller.beta = state["beta"]
        log_lambda = state.get("log_lambda", log_lambda)
    gen = generator or HFGenerator(model, pad_id=pad_id, eos_id=tokenizer.eos_token_id)
    log = MetricsLog(run, fresh=not resume) if run is not None else None
    result = OnlineResult(model)
    max_tokens = args.chunk_tokens
    score = dict(temperature=s.temperature, max_tokens=max_tokens, share_prefix=args.share_prefix)
    ptx_items = _encode_ptx(tokenizer, ptx, args.max_length) if s.ptx_coef > 0 else []
    ptx_rng = np.random.default_rng([args.seed, 7])

    def policy_outputs(groups: Sequence[Sequence[Encoded]], T: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """Log-probs, values and cost values ``(m, T)`` of the completions of ``groups``."""
        heads = [h for h in (head, cost_head) if h is not None]
        lp, v = completion_logprobs(model, groups, pad_id, T, value_head=_stack(heads) if heads else None, **score)
        if value_model is not None:
            vc = v
            v = value_model.values(groups, pad_id, T, max_tokens)
            return lp, v, vc
        if cost_head is not None:
            return lp, v[..., 0], v[..., 1]
        return lp, v, None

    def run_eval() -> None:
        if evaluate is None and not eval_prompts:
            return
        t0 = time.perf_counter()
        model.eval()
        with torch.no_grad():
            record = evaluate(model) if evaluate is not None else evaluate_greedy(
                model, tokenizer, eval_prompts, [*rewards, *gold], max_new_tokens=s.max_new_tokens,
                max_length=max_prompt)
        model.train()
        result.eval_s += time.perf_counter() - t0
        record = {"step": step, "time/train_wall_s": result.wall_s, **record}
        result.history.append(record)
        if log is not None:
            log.write(record)

    if not resume:
        run_eval()
    clock = time.perf_counter() - result.eval_s - previous_wall  # training time = now - clock - eval_s
    last_eval = previous_wall
    while step < total:
        t0 = time.perf_counter()
        batch = stream.take(P)
        gen.sync(model)
        rollout = gen.generate([prompt_ids[i] for i in batch], s.sampling, seed=args.seed * 1_000_003 + step)
        t1 = time.perf_counter()
        scored = score_rollout(tokenizer, rollout, batch, prompts, rewards)
        watched = score_rollout(tokenizer, rollout, batch, prompts, gold) if gold else None
        t2 = time.perf_counter()

        mask, groups = rollout.completion_mask, rollout_groups(rollout)
        T = mask.shape[1]
        model.eval()
        with torch.no_grad():
            old_lp, old_v, old_c = policy_outputs(groups, T)  # (n, T) each
            if reference is not None:
                ref_lp = completion_logprobs(reference, groups, pad_id, T, **score)[0]
            else:
                with model.disable_adapter():
                    ref_lp = completion_logprobs(model, groups, pad_id, T, **score)[0]
        model.train()
        m = mask.to(old_lp.dtype)
        kl = kl_estimate(old_lp, ref_lp, s.kl_estimator) * m  # (n, T) in the reward
        seq_kl = ((old_lp - ref_lp) * m).sum(-1)  # (n,): log π(y)/π_ref(y), the KL spent
        beta = controller.beta
        dense = None
        if segments:
            dense = segment_scores(segments, tokenizer, [prompts[i].prompt for i in scored.prompts], scored.texts,
                                   [list(rollout.completion(j)) for j in range(rollout.n_completions)],
                                   {k: [prompts[i].columns.get(k) for i in scored.prompts] for k in prompts[0].columns},
                                   T).to(kl.dtype)
        token_r = token_rewards(scored.rewards, kl, mask, beta=beta, finished=rollout.finished,
                                missing_eos_penalty=s.missing_eos_penalty, dense=dense)
        if s.whiten_rewards:
            token_r = whiten(token_r, mask, shift_mean=False)
        advantages, returns = token_advantages(token_r, old_v * m, mask, gamma=s.gamma, gae_lambda=s.gae_lambda)
        cost_returns = None
        if costs:
            cost_scored = score_rollout(tokenizer, rollout, batch, prompts, costs)
            cost_r = token_rewards(cost_scored.rewards, torch.zeros_like(kl), mask, beta=0.0)  # the cost at the end
            cost_adv, cost_returns = token_advantages(cost_r, old_c * m, mask, gamma=s.gamma, gae_lambda=s.gae_lambda)
            advantages = safe_advantages(advantages, cost_adv, math.exp(log_lambda))
        advantages = whiten(advantages, mask)

        metrics: dict[str, list[float]] = {}
        for _ in range(s.ppo_epochs):
            for mb in np.array_split(np.random.default_rng([args.seed, step, opt_step]).permutation(len(groups)),
                                     s.mini_batches):
                idx = torch.from_numpy(np.concatenate([np.arange(g * G, (g + 1) * G) for g in mb]))
                lp, v, vc = policy_outputs([groups[g] for g in mb], T)
                mk = mask[idx]
                n_tok = mk.sum().clamp_min(1)
                pg, pm = ppo_clip_loss(lp, old_lp[idx], advantages[idx], clip_range=s.clip_range, mask=mk)
                vl = value_loss(v, old_v[idx], returns[idx], clip_range_vf=s.clip_range_value)
                policy_loss = (pg * mk).sum() / n_tok
                v_loss = (vl * mk).sum() / n_tok
                loss = policy_loss + s.vf_coef * v_loss
                if cost_returns is not None:
                    cvl = value_loss(vc, old_c[idx], cost_returns[idx], clip_range_vf=s.clip_range_value)
                    c_loss = (cvl * mk).sum() / n_tok
                    loss = loss + s.vf_coef * c_loss
                    metrics.setdefault("loss/cost_value", []).append(c_loss.item())
                if s.ptx_coef > 0:
                    ptx_loss = _ptx_nll(model, [ptx_items[i] for i in ptx_rng.integers(0, len(ptx_items),
                                                                                           s.ptx_batch_size)],
                                        pad_id, max_tokens)
                    loss = loss + s.ptx_coef * ptx_loss
                    metrics.setdefault("loss/ptx", []).append(ptx_loss.item())
                loss.backward()
                with torch.no_grad():
                    clipped_v = ((v - old_v[idx]).abs() > (s.clip_range_value or math.inf)).float()
                for key, val in {"loss/policy": policy_loss.item(), "loss/value": v_loss.item(),
                                 "value/clip_fraction": float((clipped_v * mk).sum() / n_tok),
                                 **{k: float(x) for k, x in pm.items()}}.items():
                    metrics.setdefault(key, []).append(val)
                result.trained_tokens += sum(len(groups[g][k]) for g in mb for k in range(G))
                for group in opt.param_groups:
                    group["lr"] = args.lr * lr_factor(opt_step)
                if args.max_grad_norm > 0:
                    metrics.setdefault("train/grad_norm", []).append(
                        float(torch.nn.utils.clip_grad_norm_(trained.parameters(), args.max_grad_norm)))
                opt.step()
                opt.zero_grad(set_to_none=True)
                opt_step += 1
        result.computed_tokens = result.trained_tokens
        new_beta = controller.update(float(seq_kl.mean()), n_steps=rollout.n_completions)
        lam = math.exp(log_lambda)
        if costs:
            log_lambda = lagrange_update(log_lambda, float(cost_scored.rewards.mean()), s.cost_threshold,
                                         lr=s.lambda_lr, max_lambda=s.lambda_max)
        t3 = time.perf_counter()
        step += 1
        result.generate_s += t1 - t0
        result.reward_s += t2 - t1
        result.train_s += t3 - t2
        result.completions += rollout.n_completions
        result.completion_tokens += int(rollout.lengths.sum())
        record: dict[str, Any] = {
            "step": step, **reward_stats("reward", scored.rewards + (dense.sum(-1).float() if dense is not None else 0)),
            **({"reward/segments/mean": float(dense.sum(-1).mean())} if dense is not None else {}),
            **{k: v for f, rf in enumerate(rewards) for k, v in
               reward_stats(f"reward/{rf.name}", scored.per_function[:, f]).items()},
            **(reward_stats("gold", watched.rewards) if watched is not None else {}),
            "kl/sequence": float(seq_kl.mean()), "kl/token": float((kl.sum() / m.sum().clamp_min(1))),
            "kl/beta": beta, "kl/beta_next": new_beta,
            **({"cost/mean": float(cost_scored.rewards.mean()), "lagrange/lambda": lam,
                "lagrange/lambda_next": math.exp(log_lambda)} if costs else {}),
            "value/mean": float((old_v * m).sum() / m.sum().clamp_min(1)),
            "completions/mean_length": float(rollout.lengths.float().mean()),
            "completions/clipped_ratio": float((~rollout.finished).float().mean()),
            **reduce_metrics(metrics, _one, _STEP_METRICS),
            "train/lr": args.lr * lr_factor(max(opt_step - 1, 0)),
            "time/generate_s": t1 - t0, "time/reward_s": t2 - t1, "time/train_s": t3 - t2,
        }
        result.wall_s = time.perf_counter() - clock - result.eval_s
        record["time/train_wall_s"] = result.wall_s
        result.history.append(record)
        if log is not None and (step % args.log_every == 0 or step == total):
            log.write(record)
        if s.log_completions_every and step % s.log_completions_every == 0:
            rows = [{"step": step, "prompt": prompts[scored.prompts[j]].prompt, "completion": scored.texts[j],
                     "reward": float(scored.rewards[j]), "advantage": float(advantages[j][mask[j]].mean()),
                     "kl": float(seq_kl[j]),
                     **({"gold": float(watched.rewards[j])} if watched is not None else {})}
                    for j in range(len(scored.texts))]
            if run is not None:
                with (run / "completions.jsonl").open("a") as fh:
                    fh.writelines(json.dumps(r, default=str) + "\n" for r in rows)
            if on_completions is not None:
                on_completions(step, rows)
        if progress is not None:
            progress(step, total, record)
        out_of_time = bool(s.max_train_s) and result.wall_s >= s.max_train_s
        if (s.eval_every and step % s.eval_every == 0) or step == total or out_of_time or \
                (s.eval_every_s and result.wall_s - last_eval >= s.eval_every_s):
            last_eval = result.wall_s
            run_eval()
        if run is not None and ((s.save_every and step % s.save_every == 0) or step == total or out_of_time):
            save_training_state(run / "checkpoint", trained, opt,
                                {"step": step, "opt_step": opt_step, "epoch": stream.epoch,
                                 "position": stream.position, "beta": controller.beta, "log_lambda": log_lambda,
                                 "train_wall_s": result.wall_s,
                                 "settings": asdict(s)})
        if out_of_time:
            break
    result.steps = step
    if run is not None:
        if head is not None:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(run / "value_head.safetensors"))
        if log is not None:
            log.write({"step": step, "summary/wall_s": result.wall_s, "summary/generate_s": result.generate_s,
                       "summary/reward_s": result.reward_s, "summary/train_s": result.train_s,
                       "summary/completions_per_s": result.completions_per_s,
                       "summary/trained_tokens_per_s": result.trained_tokens_per_s})
            log.close()
        if gold:
            plot_overoptimisation(run / "metrics.jsonl", run / "overoptimisation.png")
    return result


class _OneProcess:
    num_processes = 1


_one = _OneProcess()


def _encode_ptx(tokenizer: Any, examples: Sequence[Any], max_length: int) -> list[Encoded]:
    from rlhfkit.language.sft import encode_sft

    items = encode_sft(tokenizer, examples, max_length)
    if not items:
        raise ValueError("no ptx examples")
    return items


def _ptx_nll(model: Any, items: Sequence[Encoded], pad_id: int, max_tokens: int) -> Tensor:
    """Mean negative log-likelihood per scored token of SFT/pretraining text (PPO-ptx's term)."""
    from rlhfkit.language.logprobs import packed_logprobs

    lp_n = run_packed(lambda pb: torch.stack([x.to(torch.float32) for x in packed_logprobs(model, pb)], -1),
                      [[e] for e in items], pad_id, max_tokens=max_tokens)  # (b, 2): log-prob, tokens
    return -lp_n[:, 0].sum() / lp_n[:, 1].sum().clamp_min(1)


def plot_overoptimisation(metrics_path: str | Path, out_png: str | Path) -> Path:
    """Gold and proxy reward against the KL spent, ``kl/sequence`` (Gao et al. 2022, Fig. 1), from a PPO
    run's ``metrics.jsonl``: the proxy rising while the gold reward stalls or falls is reward hacking.

    Left: each step's batch means (dots) and their means in KL bins (lines, equal numbers of steps per
    bin), the proxy on the left axis and the gold on its own right axis (the two scales differ: a
    reward model's score is not in the gold's units). Right: both over the steps, with the KL.

    Raises:
        FileNotFoundError: if ``metrics_path`` does not exist.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(x) for x in Path(metrics_path).read_text().splitlines() if x.strip()]
    rows = [r for r in rows if "kl/sequence" in r]
    fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(11, 4.2))
    series = (("reward/mean", "proxy (optimised)", "tab:blue"), ("gold/mean", "gold (watched)", "tab:orange"))
    if rows:
        kl = np.array([r["kl/sequence"] for r in rows])
        steps = np.array([r.get("step", i + 1) for i, r in enumerate(rows)])
        order = np.argsort(kl, kind="stable")
        bins = np.array_split(order, min(20, len(order)))  # equal-count KL bins
        axes = {"reward/mean": ax, "gold/mean": ax.twinx()}
        twin_t = ax_t.twinx()
        k = max(1, len(rows) // 20)  # a running mean over ~5% of the steps
        for key, label, color in series:
            ys = np.array([r.get(key, np.nan) for r in rows], dtype=float)
            if np.isnan(ys).all():
                continue
            a = axes[key]
            a.plot(kl, ys, ".", alpha=0.15, color=color)
            a.plot([kl[b].mean() for b in bins], [np.nanmean(ys[b]) for b in bins], "-o", ms=3, color=color,
                   label=label)
            a.set_ylabel(label, color=color)
            t_ax = ax_t if key == "reward/mean" else twin_t
            t_ax.plot(steps[k - 1:], np.convolve(np.nan_to_num(ys), np.ones(k) / k, mode="valid"), color=color,
                      label=label)
            t_ax.set_ylabel(label, color=color)
        ax_t.plot([], [], color="tab:gray", ls="--", label="KL (nats, scaled to the proxy axis)")
        lo, hi = ax_t.get_ylim()
        kl_s = np.convolve(kl, np.ones(k) / k, mode="valid")
        if kl_s.max() > 0:
            ax_t.plot(steps[k - 1:], lo + (hi - lo) * kl_s / kl_s.max(), "--", color="tab:gray")
            ax_t.set_title(f"over the steps (KL peaks at {kl_s.max():.2f} nats)")
        ax.legend(*[sum(x, []) for x in zip(*(a.get_legend_handles_labels() for a in axes.values()))], loc="best")
        ax_t.legend(loc="center right", fontsize=8)
    ax.set_xlabel("KL(π ‖ π_ref) per completion (nats)")
    ax.set_title("Over-optimisation: proxy and gold reward against KL")
    ax.grid(alpha=0.3)
    ax_t.set_xlabel("PPO step")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)
