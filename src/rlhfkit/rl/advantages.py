"""Advantage estimators: generalised advantage estimation (GAE).

Pure functions, shared by control PPO (gymnasium) and language-model PPO (per-token rewards).
Shapes: ``B`` parallel sequences (envs or responses), ``T`` time steps (env steps or tokens).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gae"]


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
