"""PPO policy and value losses (Schulman et al. 2017), as pure per-element functions.

Control PPO (``rlhfkit.control.ppo``) and language-model PPO call these same functions.
Shapes are written ``(B,)`` (a flat minibatch of transitions) but any shape works as long as all
arguments share it — e.g. ``(B, T)`` tokens with a ``mask``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["AdaptiveKLController", "ppo_clip_loss", "ppo_kl_penalty_loss", "value_loss", "masked_mean"]


def masked_mean(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean of ``x`` over the entries where ``mask`` is True (all entries if ``mask`` is None)."""
    if mask is None:
        return x.mean()
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def _check_same(**tensors: Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"all inputs must share one shape, got {shapes}")


def ppo_clip_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    *,
    clip_range: float = 0.2,
    clip_range_high: float | None = None,
    mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped surrogate objective, negated as a loss (Schulman et al. 2017, Eq. 7).

    ``L = -min(ρ A, clip(ρ, 1-ε_low, 1+ε_high) A)`` with ``ρ = exp(logprobs - old_logprobs)``;
    PPO has ``ε_low = ε_high = ε``, DAPO's "clip-higher" (Yu et al. 2025, Eq. 10) raises
    ``ε_high`` (0.28 with ``ε_low`` 0.2) so that unlikely tokens with positive advantages can
    grow. The clip is applied in log-ratio space (``log ρ`` clamped to
    ``[log(1-ε_low), log(1+ε_high)]``), the ratio is only exponentiated once.

    Args:
        logprobs: ``(B,)`` log π_θ(a|s) under the policy being optimised (with gradient).
        old_logprobs: ``(B,)`` log π_old(a|s) from the rollout (no gradient).
        advantages: ``(B,)`` advantage estimates (normalised by the caller if wanted).
        clip_range: ``ε_low > 0`` (``ε``); the paper uses 0.2.
        clip_range_high: ``ε_high > 0``; None: ``ε_low`` (symmetric PPO clipping).
        mask: optional ``(B,)`` bool; metrics are averaged over True entries.

    Returns:
        ``(loss, metrics)``: ``loss`` is ``(B,)`` per element (the caller reduces, e.g. with
        :func:`masked_mean`); metrics ``policy/clip_fraction`` and ``policy/approx_kl``
        (``k3`` estimator of KL(π_old ‖ π_θ), Schulman 2020) are detached scalars.

    Raises:
        ValueError: on mismatched shapes or ``clip_range <= 0`` / ``clip_range_high <= 0``.
    """
    _check_same(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages)
    high = clip_range if clip_range_high is None else clip_range_high
    if not clip_range > 0:
        raise ValueError(f"clip_range must be > 0, got {clip_range}")
    if not high > 0:
        raise ValueError(f"clip_range_high must be > 0, got {clip_range_high}")
    log_ratio = logprobs - old_logprobs
    ratio = log_ratio.exp()
    clipped = log_ratio.clamp(math.log1p(-min(clip_range, 1.0 - 1e-12)), math.log1p(high)).exp()
    loss = -torch.minimum(ratio * advantages, clipped * advantages)
    with torch.no_grad():
        clip_fraction = masked_mean(((ratio < 1.0 - clip_range) | (ratio > 1.0 + high)).float(), mask)
        approx_kl = masked_mean((ratio - 1.0) - log_ratio, mask)
    return loss, {"policy/clip_fraction": clip_fraction, "policy/approx_kl": approx_kl}


def ppo_kl_penalty_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    *,
    beta: float,
    mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO with an adaptive KL penalty instead of clipping (Schulman et al. 2017, Eq. 8).

    ``L = -(ρ A - β · KL[π_old ‖ π_θ])`` per sample, with the KL estimated per sample by the
    unbiased, non-negative ``k3 = (ρ - 1) - log ρ`` (Schulman 2020, "Approximating KL
    divergence"). Adapt ``β`` between updates with :class:`AdaptiveKLController`.

    Args:
        logprobs, old_logprobs, advantages: ``(B,)`` as in :func:`ppo_clip_loss`.
        beta: penalty coefficient ``β >= 0``.
        mask: optional ``(B,)`` bool for the metrics.

    Returns:
        ``(loss (B,), metrics)`` with ``policy/approx_kl`` and ``policy/kl_beta``.

    Raises:
        ValueError: on mismatched shapes or ``β < 0``.
    """
    _check_same(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages)
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    log_ratio = logprobs - old_logprobs
    ratio = log_ratio.exp()
    kl = (ratio - 1.0) - log_ratio
    loss = -(ratio * advantages - beta * kl)
    with torch.no_grad():
        metrics = {"policy/approx_kl": masked_mean(kl, mask), "policy/kl_beta": torch.tensor(float(beta))}
    return loss, metrics


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    *,
    clip_range_vf: float | None = None,
) -> Tensor:
    """Per-element squared-error value loss, ``½ (V - R)²``, optionally clipped.

    With ``clip_range_vf`` the loss is ``½ max((V - R)², (V_clip - R)²)``,
    ``V_clip = V_old + clip(V - V_old, -c, c)`` (the OpenAI baselines PPO2 implementation;
    Engstrom et al. 2020, "Implementation matters in deep policy gradients", §A.2).

    Args:
        values: ``(B,)`` current value predictions (with gradient).
        old_values: ``(B,)`` predictions at rollout time.
        returns: ``(B,)`` targets, e.g. from :func:`rlhfkit.rl.gae`.
        clip_range_vf: clip half-width ``c`` in return units, or None for no clipping.

    Returns:
        ``(B,)`` loss.

    Raises:
        ValueError: on mismatched shapes.
    """
    _check_same(values=values, old_values=old_values, returns=returns)
    loss = (values - returns) ** 2
    if clip_range_vf is not None:
        clipped = old_values + (values - old_values).clamp(-clip_range_vf, clip_range_vf)
        loss = torch.maximum(loss, (clipped - returns) ** 2)
    return 0.5 * loss


@dataclass
class AdaptiveKLController:
    """β schedule for :func:`ppo_kl_penalty_loss` (Schulman et al. 2017, §4).

    After each policy update with measured ``d = KL[π_old ‖ π_θ]``: if ``d < target / 1.5``
    then ``β ← β / 2``; if ``d > 1.5 · target`` then ``β ← 2 β``. ``target`` is ``d_targ``.
    """

    beta: float = 1.0
    target: float = 0.01

    def update(self, kl: float) -> float:
        """Adapt ``β`` to the KL measured over the last update and return the new value."""
        if kl < self.target / 1.5:
            self.beta /= 2.0
        elif kl > self.target * 1.5:
            self.beta *= 2.0
        return self.beta
