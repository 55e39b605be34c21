"""Advantage estimators: generalised advantage estimation (GAE) and group baselines (GRPO family).

Pure functions, shared by control PPO (gymnasium) and language-model PPO / GRPO. Shapes: ``B``
parallel sequences (envs, responses) or prompts, ``T`` time steps (env steps or tokens), ``G``
completions sampled per prompt (a group).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["GROUP_ESTIMATORS", "gae", "group_advantages"]

GroupEstimator = Literal["grpo", "dr_grpo", "rloo", "reinforce_pp"]
Scale = Literal["group", "batch", "none"]

GROUP_ESTIMATORS: dict[str, Scale] = {"grpo": "group", "dr_grpo": "none", "rloo": "none", "reinforce_pp": "batch"}
"""Each group estimator and its default advantage scaling."""


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    episode_end: Tensor,
    *,
    gamma: float = 0.99,
    gae_lambda: float = 0.95,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation, vectorised over ``B`` and looped backwards over ``T``.

    ``δ_t = r_t + γ · (1 - terminated_t) · V(s_{t+1}) - V(s_t)`` and
    ``A_t = δ_t + γ λ · (1 - episode_end_t) · A_{t+1}`` (Schulman et al. 2016, "High-dimensional
    continuous control using generalized advantage estimation", Eq. 16), with returns
    ``R_t = A_t + V(s_t)`` as value targets.

    Termination and truncation are kept apart (gymnasium semantics): a *terminated* step does not
    bootstrap, a *truncated* one bootstraps from the value of its true final observation, which
    the caller passes in ``next_values`` (not the value of the auto-reset observation). Either
    way the λ-trace is cut at an episode end, so no advantage leaks across episodes.

    Args:
        rewards: ``(B, T)`` rewards ``r_t``.
        values: ``(B, T)`` value estimates ``V(s_t)``.
        next_values: ``(B, T)`` value estimates ``V(s_{t+1})`` of the observation that followed
            step ``t`` (the final observation of an episode at its last step). For language
            models this is ``values`` shifted left by one with 0 at the end.
        terminated: ``(B, T)`` bool, step ``t`` ended the episode in a terminal state.
        episode_end: ``(B, T)`` bool, step ``t`` was the last of its episode (terminated or
            truncated, or the end of a response).
        gamma: discount ``γ`` in ``[0, 1]``.
        gae_lambda: ``λ`` in ``[0, 1]``; 0 gives one-step TD, 1 Monte-Carlo returns.

    Returns:
        ``(advantages, returns)``, each ``(B, T)``.

    Raises:
        ValueError: if shapes differ or ``γ``, ``λ`` are outside ``[0, 1]``.
    """
    shape = rewards.shape
    for name, x in (("values", values), ("next_values", next_values), ("terminated", terminated),
                    ("episode_end", episode_end)):
        if x.shape != shape:
            raise ValueError(f"gae: {name} has shape {tuple(x.shape)}, expected rewards' shape {tuple(shape)} (B, T)")
    if rewards.ndim != 2:
        raise ValueError(f"gae expects (B, T) tensors, got shape {tuple(shape)}")
    if not (0.0 <= gamma <= 1.0 and 0.0 <= gae_lambda <= 1.0):
        raise ValueError(f"gamma and gae_lambda must lie in [0, 1], got {gamma}, {gae_lambda}")
    not_terminal = 1.0 - terminated.to(rewards.dtype)
    carry = (1.0 - episode_end.to(rewards.dtype)) * gamma * gae_lambda
    deltas = rewards + gamma * not_terminal * next_values - values  # (B, T)
    advantages = torch.empty_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in range(shape[1] - 1, -1, -1):
        last = deltas[:, t] + carry[:, t] * last
        advantages[:, t] = last
    return advantages, advantages + values


def group_advantages(rewards: Tensor, estimator: GroupEstimator = "grpo", *, scale: Scale | None = None,
                     eps: float = 1e-4) -> Tensor:
    """Advantages of ``G`` completions of each prompt from their rewards, with a group baseline.

    With ``r_i`` the reward of completion ``i`` of a group and ``r̄`` the group mean:

    - ``grpo`` — ``A_i = (r_i - r̄) / (std(r) + eps)`` (Shao et al. 2024, "DeepSeekMath", §4.1.2,
      outcome supervision; the std is the unbiased sample std, as in TRL);
    - ``dr_grpo`` — ``A_i = r_i - r̄``: no std scaling, which biases learning towards too easy and
      too hard questions (Liu et al. 2025, "Understanding R1-Zero-like training", §3.1);
    - ``rloo`` — the leave-one-out baseline ``A_i = r_i - (1/(G-1)) Σ_{j≠i} r_j``
      ``= G/(G-1) · (r_i - r̄)`` (Ahmadian et al. 2024, "Back to basics", Eq. 6; Kool et al. 2019);
    - ``reinforce_pp`` — REINFORCE++-baseline: ``A_i = r_i - r̄``, then normalised over the whole
      batch, ``A / (std(A) + eps)`` (Hu 2025, "REINFORCE++", §3.2; the paper also subtracts the
      batch mean of ``A``, which is zero once every group is centred).

    ``scale`` overrides the estimator's scaling (:data:`GROUP_ESTIMATORS`): ``"group"`` divides
    each group's centred rewards by that group's reward std, ``"batch"`` divides the advantages by
    the std of all ``B × G`` of them, ``"none"`` leaves them. A group whose rewards are all equal
    gets exactly zero advantages (no learning signal) under every estimator.

    Args:
        rewards: ``(B, G)`` scalar rewards, ``B`` prompts × ``G >= 2`` completions each.
        estimator: ``grpo``, ``dr_grpo``, ``rloo`` or ``reinforce_pp``.
        scale: ``group``, ``batch``, ``none`` or None (the estimator's default).
        eps: added to the std before dividing.

    Returns:
        ``(B, G)`` advantages, in reward units (unscaled) or standard deviations (scaled).

    Raises:
        ValueError: for rewards not ``(B, G)`` with ``G >= 2``, non-finite rewards, or an unknown
            estimator or scale.
    """
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be (B, G) with G >= 2 completions per prompt, got shape {tuple(rewards.shape)}")
    if estimator not in GROUP_ESTIMATORS:
        raise ValueError(f"unknown group estimator {estimator!r}; choose one of {sorted(GROUP_ESTIMATORS)}")
    scale = GROUP_ESTIMATORS[estimator] if scale is None else scale
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError("rewards must be finite")
    G = rewards.shape[1]
    advantages = rewards - rewards.mean(dim=1, keepdim=True)  # (B, G)
    if estimator == "rloo":
        advantages = advantages * (G / (G - 1))
    if scale == "group":
        advantages = advantages / (rewards.std(dim=1, keepdim=True) + eps)
    elif scale == "batch":
        advantages = advantages / (advantages.std() + eps)
    tied = rewards.amax(dim=1, keepdim=True) == rewards.amin(dim=1, keepdim=True)  # (B, 1): no signal
    return advantages.masked_fill(tied, 0.0)  # exactly 0, whatever the rounding of the mean
