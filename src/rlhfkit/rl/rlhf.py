"""RLHF-specific PPO math for language models: per-token rewards with a KL penalty, KL controllers,
whitening, fine-grained (segment) rewards and the Safe RLHF Lagrangian. Pure functions on tensors.

Shapes: ``B`` completions, ``T`` completion tokens (left-aligned, right-padded), ``mask`` True on
real completion tokens (EOS included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["FixedKLController", "ProportionalKLController", "lagrange_update", "safe_advantages",
           "segment_rewards", "token_advantages", "token_rewards", "whiten"]


def _last_index(mask: Tensor) -> Tensor:
    """``(B,)`` column of each row's last True entry (0 for an empty row)."""
    T = mask.shape[1]
    return (torch.arange(T, device=mask.device) * mask.long()).amax(-1)


def token_rewards(scores: Tensor, kl: Tensor, mask: Tensor, *, beta: float, finished: Tensor | None = None,
                  missing_eos_penalty: float | None = None, dense: Tensor | None = None) -> Tensor:
    """Per-token rewards of RLHF's PPO: a KL penalty on every token and the score on the last one.

    ``r_t = -β · KL_t + 1[t = last] · (score - penalty · 1[no EOS]) + dense_t`` (Ziegler et al. 2019,
    §2.2; Stiennon et al. 2020, Eq. 1; Ouyang et al. 2022, Eq. 2 without the ptx term). ``KL_t`` is a
    per-token estimate of ``KL[π ‖ π_ref]`` (:func:`rlhfkit.rl.kl_estimate`). A completion cut at the
    length limit (no EOS) loses ``missing_eos_penalty`` (TRL's ``missing_eos_penalty``).

    Args:
        scores: ``(B,)`` sequence rewards (e.g. a reward model's score).
        kl: ``(B, T)`` per-token KL estimates (nats), 0 on padding.
        mask: ``(B, T)`` bool, True on completion tokens.
        beta: KL coefficient ``β >= 0``.
        finished: ``(B,)`` bool, the completion ended with EOS (needed with a penalty).
        missing_eos_penalty: subtracted from the score of unfinished completions; None: none.
        dense: ``(B, T)`` extra per-token rewards (fine-grained segment rewards), or None.

    Returns:
        ``(B, T)`` rewards, 0 on padding.

    Raises:
        ValueError: on mismatched shapes, ``β < 0``, or a penalty without ``finished``.
    """
    if kl.shape != mask.shape or kl.ndim != 2 or scores.shape != kl.shape[:1]:
        raise ValueError(f"scores must be (B,) and kl, mask (B, T): got {tuple(scores.shape)}, {tuple(kl.shape)}, "
                         f"{tuple(mask.shape)}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    m = mask.to(kl.dtype)
    rewards = -beta * kl * m
    score = scores.to(kl.dtype)
    if missing_eos_penalty is not None:
        if finished is None:
            raise ValueError("missing_eos_penalty needs the finished flags")
        score = score - missing_eos_penalty * (~finished).to(kl.dtype)
    rows = torch.arange(len(score), device=kl.device)
    rewards[rows, _last_index(mask)] += score * mask.any(-1).to(kl.dtype)
    if dense is not None:
        if dense.shape != kl.shape:
            raise ValueError(f"dense must be (B, T) = {tuple(kl.shape)}, got {tuple(dense.shape)}")
        rewards = rewards + dense * m
    return rewards


def token_advantages(rewards: Tensor, values: Tensor, mask: Tensor, *, gamma: float = 1.0,
                     gae_lambda: float = 0.95) -> tuple[Tensor, Tensor]:
    """GAE over the tokens of each completion (:func:`rlhfkit.rl.gae`): ``(advantages, returns)``, ``(B, T)``.

    A completion is one episode whose last real token is terminal (no bootstrap after it); padding
    gets 0. ``γ = 1`` and ``λ = 0.95`` are the InstructGPT/TRL defaults.

    Raises:
        ValueError: on mismatched shapes.
    """
    from rlhfkit.rl.advantages import gae

    if not (rewards.shape == values.shape == mask.shape) or rewards.ndim != 2:
        raise ValueError(f"rewards, values and mask must share one (B, T) shape, got {tuple(rewards.shape)}, "
                         f"{tuple(values.shape)}, {tuple(mask.shape)}")
    m = mask.to(values.dtype)
    values = values * m
    next_values = torch.nn.functional.pad(values[:, 1:], (0, 1))  # (B, T): V(s_{t+1}), 0 after the last token
    last = torch.zeros_like(mask)
    last[torch.arange(len(mask)), _last_index(mask)] = mask.any(-1)
    end = last | ~mask  # padding ends nothing it can leak into: its rewards and values are 0
    advantages, returns = gae(rewards * m, values, next_values, end, end, gamma=gamma, gae_lambda=gae_lambda)
    return advantages * m, returns * m


def segment_rewards(segment_ends: list[list[int]], segment_scores: list[list[float]], shape: tuple[int, int]) -> Tensor:
    """Fine-grained rewards as a dense ``(B, T)`` tensor: each segment's score on its last token.

    (Wu et al. 2023, "Fine-grained human feedback gives better rewards for language model
    training", §2.2: a reward after every segment, e.g. sentence, instead of one at the end.)

    Args:
        segment_ends: for each completion, the token index (0-based, within the completion) that
            ends each segment.
        segment_scores: the matching scores (already weighted).
        shape: ``(B, T)``.

    Returns:
        ``(B, T)`` float32 rewards; two segments ending on one token add up.

    Raises:
        ValueError: on ragged inputs or an index outside ``[0, T)``.
    """
    B, T = shape
    if len(segment_ends) != B or len(segment_scores) != B:
        raise ValueError(f"segment_ends and segment_scores need one list per completion ({B})")
    out = torch.zeros(shape)
    for b, (ends, scores) in enumerate(zip(segment_ends, segment_scores)):
        if len(ends) != len(scores):
            raise ValueError(f"completion {b}: {len(ends)} segment ends but {len(scores)} scores")
        for t, r in zip(ends, scores):
            if not 0 <= t < T:
                raise ValueError(f"completion {b}: segment end {t} outside [0, {T})")
            out[b, t] += float(r)
    return out


def whiten(x: Tensor, mask: Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """``(x - mean) / std`` over the masked entries (mean kept with ``shift_mean=False``), 0 elsewhere.

    The usual normalisation of advantages (and, optionally, rewards) in RLHF PPO (Ziegler et al.
    2019's implementation; TRL's ``masked_whiten``). The std is the unbiased one.

    Raises:
        ValueError: on mismatched shapes.
    """
    if x.shape != mask.shape:
        raise ValueError(f"x {tuple(x.shape)} and mask {tuple(mask.shape)} differ")
    m = mask.to(x.dtype)
    n = m.sum().clamp_min(1.0)
    mean = (x * m).sum() / n
    var = (((x - mean) * m) ** 2).sum() / (n - 1).clamp_min(1.0)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m


@dataclass
class FixedKLController:
    """A constant KL coefficient ``β``."""

    beta: float = 0.05

    def update(self, kl: float, n_steps: int = 1) -> float:
        """``β``, unchanged."""
        return self.beta


@dataclass
class ProportionalKLController:
    """Ziegler et al. (2019), §2.2: ``β`` steered towards a target KL with a proportional controller.

    ``e = clip(KL / KL_target - 1, -0.2, 0.2)`` and ``β ← β (1 + K_β e)`` with
    ``K_β = n_steps / horizon`` (the paper's ``K_β = 0.1`` per batch, expressed as a horizon of
    completions), so ``β`` grows while the policy drifts past the target and shrinks below it.

    Attributes:
        beta: the current coefficient.
        target: the target KL per completion, in nats (the paper: 6 for style, 10 for summaries).
        horizon: completions over which the error is integrated (the paper: 10,000).
    """

    beta: float = 0.1
    target: float = 6.0
    horizon: float = 10_000.0

    def __post_init__(self) -> None:
        if self.beta < 0 or self.target <= 0 or self.horizon <= 0:
            raise ValueError(f"need beta >= 0, target > 0, horizon > 0; got {self.beta}, {self.target}, {self.horizon}")

    def update(self, kl: float, n_steps: int = 1) -> float:
        """Adapt ``β`` to the mean KL per completion of the last batch of ``n_steps`` completions."""
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + error * n_steps / self.horizon
        return self.beta


def safe_advantages(reward_advantages: Tensor, cost_advantages: Tensor, lam: float | Tensor) -> Tensor:
    """Safe RLHF's combined advantage, ``(A_r - λ A_c) / (1 + λ)`` (Dai et al. 2023, Eq. 27).

    Args:
        reward_advantages, cost_advantages: the same shape, e.g. ``(B, T)``.
        lam: the Lagrange multiplier ``λ >= 0``.

    Raises:
        ValueError: on mismatched shapes or ``λ < 0``.
    """
    if reward_advantages.shape != cost_advantages.shape:
        raise ValueError(f"advantages differ in shape: {tuple(reward_advantages.shape)}, "
                         f"{tuple(cost_advantages.shape)}")
    if float(lam) < 0:
        raise ValueError(f"lambda must be >= 0, got {float(lam)}")
    return (reward_advantages - lam * cost_advantages) / (1.0 + lam)


def lagrange_update(log_lambda: float, mean_cost: float, threshold: float, *, lr: float,
                    max_lambda: float | None = None) -> float:
    """One gradient-ascent step on ``log λ`` of the Safe RLHF Lagrangian (Dai et al. 2023, Eq. 26).

    The dual objective grows with ``λ (J_C - d)``, so ``log λ ← log λ + lr · (J_C - d)`` (a step
    in log space keeps ``λ > 0``): ``λ`` rises while the mean cost ``J_C`` is above the threshold
    ``d`` and falls once it is below; ``λ`` is clamped at ``max_lambda``.

    Returns:
        The new ``log λ``.

    Raises:
        ValueError: for ``lr <= 0`` or ``max_lambda <= 0``.
    """
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    log_lambda = log_lambda + lr * (mean_cost - threshold)
    if max_lambda is not None:
        if max_lambda <= 0:
            raise ValueError(f"max_lambda must be > 0, got {max_lambda}")
        log_lambda = min(log_lambda, math.log(max_lambda))
    return log_lambda
