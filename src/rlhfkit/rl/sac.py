"""Soft actor-critic losses (Haarnoja et al. 2018a, "Soft Actor-Critic"; 2018b, "Soft Actor-Critic
Algorithms and Applications"), and the k-NN state-entropy reward of PEBBLE's unsupervised
pre-training (Lee et al. 2021, §4.1; Liu & Abbeel 2021, APT), as pure functions.

The control SAC agent (:mod:`rlhfkit.control.sac`) calls these; nothing here holds state. Shapes:
``(B,)`` a minibatch of transitions, ``(B, A)`` actions, ``(N, D)`` observations.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["knn_state_entropy", "sac_actor_loss", "sac_critic_loss", "sac_target", "sac_temperature_loss",
           "soft_update", "tanh_gaussian_sample"]


def tanh_gaussian_sample(mean: Tensor, log_std: Tensor, *, deterministic: bool = False,
                         generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """A squashed-Gaussian action ``a = tanh(u)``, ``u ~ N(mean, exp(log_std)²)``, and its log-density.

    ``log π(a|s) = Σ_i [log N(u_i; μ_i, σ_i) - log(1 - tanh²(u_i))]`` (Haarnoja et al. 2018b, App. C,
    Eq. 21), with ``log(1 - tanh² u) = 2 (log 2 - u - softplus(-2u))`` for numerical stability.
    The sample is reparameterised (``u = μ + σ ε``), so gradients flow into ``mean`` and ``log_std``.

    Args:
        mean: ``(B, A)`` Gaussian means before the squashing.
        log_std: ``(B, A)`` log standard deviations.
        deterministic: take ``u = mean`` (the evaluation action); the log-density is still returned.
        generator: for the noise ``ε``.

    Returns:
        ``(actions, logprobs)``: ``(B, A)`` in ``(-1, 1)`` and ``(B,)`` in nats.

    Raises:
        ValueError: if ``mean`` and ``log_std`` differ in shape.
    """
    if mean.shape != log_std.shape:
        raise ValueError(f"mean {tuple(mean.shape)} and log_std {tuple(log_std.shape)} must share one shape")
    std = log_std.exp()
    eps = torch.zeros_like(mean) if deterministic else torch.randn(mean.shape, generator=generator,
                                                                     dtype=mean.dtype)
    u = mean + std * eps
    gauss = -0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
    squash = 2.0 * (math.log(2.0) - u - nn.functional.softplus(-2.0 * u))
    return torch.tanh(u), (gauss - squash).sum(-1)


def sac_target(rewards: Tensor, next_q1: Tensor, next_q2: Tensor, next_logprobs: Tensor, terminated: Tensor, *,
               alpha: float | Tensor, gamma: float = 0.99) -> Tensor:
    """The soft Bellman target ``y = r + γ (1 - d) (min_j Q̄_j(s', a') - α log π(a'|s'))``, ``a' ~ π(·|s')``.

    Haarnoja et al. 2018b, Eq. 3 and 5, with the clipped double-Q minimum of the target critics
    (Fujimoto et al. 2018, TD3). Only true terminations cut the bootstrap (``d``); time-limit
    truncations do not.

    Args:
        rewards: ``(B,)`` rewards (true, or the learned ``r̂``).
        next_q1, next_q2: ``(B,)`` target critics at ``(s', a')``.
        next_logprobs: ``(B,)`` ``log π(a'|s')``.
        terminated: ``(B,)`` bool or 0/1.
        alpha: the entropy temperature ``α`` (a float, or a 0-d tensor; it is detached).
        gamma: the discount.

    Returns:
        ``(B,)`` targets, detached.

    Raises:
        ValueError: on mismatched shapes or ``gamma`` outside ``[0, 1]``.
    """
    shapes = {tuple(t.shape) for t in (rewards, next_q1, next_q2, next_logprobs, terminated)}
    if len(shapes) != 1:
        raise ValueError(f"all inputs must share one shape, got {sorted(shapes)}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    alpha = alpha.detach() if isinstance(alpha, Tensor) else alpha
    with torch.no_grad():
        soft_v = torch.minimum(next_q1, next_q2) - alpha * next_logprobs
        return rewards + gamma * (1.0 - terminated.to(rewards.dtype)) * soft_v


def sac_critic_loss(q1: Tensor, q2: Tensor, target: Tensor) -> Tensor:
    """``J_Q = ½ E[(Q_1 - y)²] + ½ E[(Q_2 - y)²]`` (Haarnoja et al. 2018b, Eq. 5), a scalar.

    ``q1, q2, target``: ``(B,)``; ``target`` from :func:`sac_target` (no gradient).
    """
    return 0.5 * ((q1 - target).pow(2).mean() + (q2 - target).pow(2).mean())


def sac_actor_loss(q1: Tensor, q2: Tensor, logprobs: Tensor, alpha: float | Tensor) -> Tensor:
    """``J_π = E[α log π(a|s) - min_j Q_j(s, a)]``, ``a`` reparameterised (Haarnoja et al. 2018b, Eq. 7), a scalar.

    ``q1, q2, logprobs``: ``(B,)`` at actions sampled from the current policy (gradient through
    ``a``); ``alpha`` is detached.
    """
    alpha = alpha.detach() if isinstance(alpha, Tensor) else alpha
    return (alpha * logprobs - torch.minimum(q1, q2)).mean()


def sac_temperature_loss(log_alpha: Tensor, logprobs: Tensor, target_entropy: float) -> Tensor:
    """Automatic entropy tuning: ``J(α) = E[-α (log π(a|s) + H̄)]`` (Haarnoja et al. 2018b, Eq. 18), a scalar.

    Written in ``log α`` (as the authors' code): ``-(log α) · mean(log π + H̄)``, so ``α`` grows while
    the policy's entropy ``-log π`` is below the target ``H̄`` (usually ``-dim(A)``).

    Args:
        log_alpha: 0-d tensor with gradient.
        logprobs: ``(B,)`` ``log π(a|s)`` of fresh actions (detached here).
        target_entropy: ``H̄`` in nats.
    """
    return -(log_alpha * (logprobs.detach() + target_entropy)).mean()


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging ``θ̄ ← τ θ + (1 - τ) θ̄`` of every parameter (Haarnoja et al. 2018b, Alg. 1).

    Raises:
        ValueError: if ``tau`` is outside ``[0, 1]``.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must lie in [0, 1], got {tau}")
    for t, s in zip(target.parameters(), source.parameters()):
        t.lerp_(s, tau)


@torch.no_grad()
def knn_state_entropy(obs: Tensor, reference: Tensor, k: int = 5, *, chunk: int = 10_000) -> Tensor:
    """The particle-based state-entropy reward: the distance from each state to its ``k``-th nearest
    neighbour among ``reference`` (Lee et al. 2021, PEBBLE, §4.1 Eq. 4; Liu & Abbeel 2021).

    ``r_int(s_i) = ‖s_i - s_i^{k}‖₂``, computed as B-Pref's ``compute_state_entropy``: ``obs`` is
    expected to be a subset of ``reference`` (a minibatch of the replay buffer), so the distance 0 to
    itself is skipped by taking the ``(k+1)``-th smallest. The caller normalises it (PEBBLE divides by
    a running standard deviation).

    Args:
        obs: ``(B, D)`` states to reward.
        reference: ``(N, D)`` states (the buffer), ``N > k``.
        k: the neighbour rank (PEBBLE: 5).
        chunk: reference rows per distance block (bounds memory at ``B × chunk``).

    Returns:
        ``(B,)`` distances.

    Raises:
        ValueError: if ``k < 1``, ``N <= k`` or the feature sizes differ.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if reference.shape[0] <= k:
        raise ValueError(f"need more than k={k} reference states, got {reference.shape[0]}")
    if obs.shape[-1] != reference.shape[-1]:
        raise ValueError(f"obs has {obs.shape[-1]} features, reference {reference.shape[-1]}")
    obs, reference = obs.float(), reference.float()
    dists = torch.cat([torch.cdist(obs, reference[i:i + chunk]) for i in range(0, reference.shape[0], chunk)], 1)
    return dists.kthvalue(k + 1, dim=1).values
