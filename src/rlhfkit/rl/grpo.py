"""The group-relative policy loss (GRPO and its variants) as pure functions on ``(B, T)`` tokens.

One completion per row: ``B`` completions (all groups flattened), ``T`` completion tokens,
``mask`` True on real completion tokens (EOS included). The per-token surrogate is PPO's clipped
objective, :func:`rlhfkit.rl.ppo_clip_loss`, on the sequence's advantage, plus ``β`` times a
per-token KL estimate to a frozen reference (Shao et al. 2024, "DeepSeekMath", Eq. 3):

``ℓ_{i,t} = -min(ρ_{i,t} A_i, clip(ρ_{i,t}, 1-ε_low, 1+ε_high) A_i) + β · k3_{i,t}``

then reduced over tokens by :func:`aggregate_loss` (``token_mean``, ``sequence_mean`` or
``constant``). With one optimisation step per generation batch (μ = 1) the ratio is 1 and its
gradient is the plain policy gradient ``-A_i ∇ log π(y_{i,t})``; the clip acts only when μ > 1.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from rlhfkit.rl.kl import KLEstimator, kl_estimate
from rlhfkit.rl.ppo import masked_mean, ppo_clip_loss

__all__ = ["LOSS_AGGREGATIONS", "aggregate_loss", "grpo_token_loss", "sequence_log_ratio"]

Aggregation = Literal["token_mean", "sequence_mean", "constant"]
RatioLevel = Literal["token", "sequence"]
LOSS_AGGREGATIONS = ("token_mean", "sequence_mean", "constant")


def sequence_log_ratio(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> Tensor:
    """GSPO's length-normalised sequence log-ratio, ``log s_i = (1/|y_i|) Σ_t m_{i,t} (log π - log π_old)``.

    (Zheng et al. 2025, "Group sequence policy optimization", Eq. 7.)

    Args:
        logprobs: ``(B, T)`` log π_θ of the completion tokens (with gradient).
        old_logprobs: ``(B, T)`` log π_old at sampling time.
        mask: ``(B, T)`` bool, True on completion tokens.

    Returns:
        ``(B,)`` log-ratios in nats per token.

    Raises:
        ValueError: on mismatched shapes.
    """
    if not (logprobs.shape == old_logprobs.shape == mask.shape) or logprobs.ndim != 2:
        raise ValueError(f"logprobs, old_logprobs and mask must share one (B, T) shape, got "
                         f"{tuple(logprobs.shape)}, {tuple(old_logprobs.shape)}, {tuple(mask.shape)}")
    m = mask.to(logprobs.dtype)
    return ((logprobs - old_logprobs) * m).sum(-1) / m.sum(-1).clamp_min(1.0)


def grpo_token_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_range: float = 0.2,
    clip_range_high: float | None = None,
    ratio_level: RatioLevel = "token",
    ref_logprobs: Tensor | None = None,
    beta: float = 0.0,
    kl_estimator: KLEstimator = "k3",
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token GRPO loss ``ℓ_{i,t}`` (see the module docstring), before aggregation.

    ``ratio_level="token"`` uses the per-token ratios ``ρ_{i,t} = π_θ(y_{i,t}) / π_old(y_{i,t})``
    (GRPO, DAPO); ``"sequence"`` gives every token of completion ``i`` GSPO's sequence ratio
    ``s_i`` (:func:`sequence_log_ratio`; Zheng et al. 2025, Eq. 5), clipped as a whole. The KL
    term is ``β · kl_estimate(logprobs, ref_logprobs, kl_estimator)`` per token; k3, the
    unbiased non-negative estimator, is GRPO's choice (Shao et al. 2024, Eq. 4).

    Args:
        logprobs: ``(B, T)`` log π_θ of the sampled completion tokens (with gradient), in nats.
        old_logprobs: ``(B, T)`` log π_old at sampling time (no gradient); with μ = 1 pass
            ``logprobs.detach()``.
        advantages: ``(B,)`` one advantage per completion (e.g. from
            :func:`rlhfkit.rl.group_advantages`), or ``(B, T)`` per token.
        mask: ``(B, T)`` bool, True on completion tokens (EOS included), False on padding.
        clip_range: ``ε_low``.
        clip_range_high: ``ε_high`` (DAPO's clip-higher); None: ``ε_low``.
        ratio_level: ``token`` or ``sequence``.
        ref_logprobs: ``(B, T)`` log π_ref; required when ``beta > 0``.
        beta: KL coefficient ``β >= 0``.
        kl_estimator: ``k1``, ``k2`` or ``k3`` (:func:`rlhfkit.rl.kl_estimate`).

    Returns:
        ``(loss (B, T), metrics)``: the per-token loss, zero where ``mask`` is False, and the
        detached scalars ``policy/clip_fraction``, ``policy/approx_kl`` (k3 of π_old ‖ π_θ),
        ``policy/clip_low_fraction``, ``policy/clip_high_fraction`` (tokens whose clip bound binds:
        negative advantage below ``1-ε_low``, positive above ``1+ε_high``), and with a reference
        ``policy/kl`` (the mean per-token KL estimate to π_ref, nats).

    Raises:
        ValueError: on mismatched shapes, ``beta < 0``, ``beta > 0`` without ``ref_logprobs``, or
            an unknown ``ratio_level``.
    """
    if not (logprobs.shape == old_logprobs.shape == mask.shape) or logprobs.ndim != 2:
        raise ValueError(f"logprobs, old_logprobs and mask must share one (B, T) shape, got "
                         f"{tuple(logprobs.shape)}, {tuple(old_logprobs.shape)}, {tuple(mask.shape)}")
    if advantages.shape == logprobs.shape[:1]:
        advantages = advantages[:, None].expand_as(logprobs)  # (B, T)
    elif advantages.shape != logprobs.shape:
        raise ValueError(f"advantages must be (B,) or (B, T) = {tuple(logprobs.shape)}, got {tuple(advantages.shape)}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and ref_logprobs is None:
        raise ValueError("beta > 0 needs ref_logprobs (the frozen reference's log-probs)")
    if ratio_level == "token":
        new, old = logprobs, old_logprobs
    elif ratio_level == "sequence":
        new = sequence_log_ratio(logprobs, old_logprobs, mask)[:, None].expand_as(logprobs)  # (B, T), log s_i
        old = torch.zeros_like(new)
    else:
        raise ValueError(f"ratio_level must be 'token' or 'sequence', got {ratio_level!r}")
    loss, metrics = ppo_clip_loss(new, old, advantages, clip_range=clip_range, clip_range_high=clip_range_high,
                                  mask=mask)
    with torch.no_grad():
        high = clip_range if clip_range_high is None else clip_range_high
        ratio = (new - old).exp()
        metrics["policy/clip_low_fraction"] = masked_mean(((ratio < 1 - clip_range) & (advantages < 0)).float(), mask)
        metrics["policy/clip_high_fraction"] = masked_mean(((ratio > 1 + high) & (advantages > 0)).float(), mask)
    if ref_logprobs is not None:
        kl = kl_estimate(logprobs, ref_logprobs, kl_estimator)  # (B, T)
        if beta > 0:
            loss = loss + beta * kl
        metrics["policy/kl"] = masked_mean(kl.detach(), mask)
    return loss * mask.to(loss.dtype), metrics


def aggregate_loss(loss: Tensor, mask: Tensor, aggregation: Aggregation = "token_mean", *,
                   n_tokens: float | None = None, n_sequences: float | None = None,
                   max_completion_length: int | None = None) -> Tensor:
    """Reduce a per-token loss ``(B, T)`` to a scalar, the way each GRPO variant does.

    - ``token_mean`` — ``Σ_{i,t} ℓ / Σ_i |y_i|``: every token weighs the same, so long completions
      are not diluted (DAPO, Yu et al. 2025, Eq. 12, "token-level policy gradient loss");
    - ``sequence_mean`` — ``(1/B) Σ_i (1/|y_i|) Σ_t ℓ``: each completion's mean, then the mean
      over completions (the GRPO paper, Shao et al. 2024, Eq. 3);
    - ``constant`` — ``Σ_{i,t} ℓ / (B · L)`` with ``L`` the maximum completion length: no
      length bias at all (Dr. GRPO, Liu et al. 2025, Eq. 4).

    Under gradient accumulation or data parallelism a (micro-)batch is part of a larger batch:
    pass the whole batch's ``n_tokens`` (``token_mean``) or ``n_sequences`` (``sequence_mean``,
    ``constant``) and the micro-batch results add up to the whole batch's loss.

    Args:
        loss: ``(B, T)`` per-token loss (zero on padding).
        mask: ``(B, T)`` bool, True on completion tokens.
        aggregation: ``token_mean``, ``sequence_mean`` or ``constant``.
        n_tokens: the denominator of ``token_mean`` (default: ``mask.sum()``).
        n_sequences: ``B`` of the whole batch (default: ``loss.shape[0]``).
        max_completion_length: ``L`` of ``constant`` (required for it).

    Returns:
        Scalar loss.

    Raises:
        ValueError: on mismatched shapes, an unknown aggregation, or ``constant`` without
            ``max_completion_length``.
    """
    if loss.shape != mask.shape or loss.ndim != 2:
        raise ValueError(f"loss and mask must share one (B, T) shape, got {tuple(loss.shape)}, {tuple(mask.shape)}")
    m = mask.to(loss.dtype)
    loss = loss * m
    seqs = float(n_sequences if n_sequences is not None else loss.shape[0])
    if aggregation == "token_mean":
        return loss.sum() / max(float(n_tokens if n_tokens is not None else m.sum()), 1.0)
    if aggregation == "sequence_mean":
        return (loss.sum(-1) / m.sum(-1).clamp_min(1.0)).sum() / max(seqs, 1.0)
    if aggregation == "constant":
        if not max_completion_length or max_completion_length < 1:
            raise ValueError("aggregation 'constant' (Dr. GRPO) needs max_completion_length >= 1")
        return loss.sum() / (max(seqs, 1.0) * max_completion_length)
    raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {LOSS_AGGREGATIONS}")
