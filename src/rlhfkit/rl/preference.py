"""Direct preference losses on sequence log-probabilities: DPO, cDPO, IPO and SimPO.

The policy is its own reward model. With ``h = log π(y_c|x)/π_ref(y_c|x) - log π(y_r|x)/π_ref(y_r|x)``
(the difference of the two responses' log-ratios to the frozen reference):

- ``sigmoid`` — DPO, Rafailov et al. (2023) Eq. 7: ``-log σ(β h)``, i.e. Bradley-Terry on the
  implicit rewards ``β log π/π_ref`` (computed by :func:`rlhfkit.choice.bradley_terry_nll`);
- ``cdpo`` — conservative DPO (Mitchell 2023): labels flipped with probability ``ε``, the same
  Bradley-Terry with the soft target ``1 - ε``;
- ``ipo`` — IPO, Azar et al. (2023) Eq. 17: ``(h - 1/(2β))²`` on length-averaged log-probs;
- ``simpo`` — SimPO, Meng et al. (2024) Eq. 6: no reference; Bradley-Terry with margin ``γ`` on the
  length-normalised rewards ``(β/|y|) log π(y|x)``: ``-log σ(β ℓ_c - β ℓ_r - γ)`` with ``ℓ`` the
  per-token average log-prob.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from rlhfkit.choice import bradley_terry_nll

__all__ = ["PREFERENCE_LOSSES", "LossType", "dpo_loss"]

LossType = Literal["sigmoid", "cdpo", "ipo", "simpo"]
PREFERENCE_LOSSES: tuple[str, ...] = ("sigmoid", "cdpo", "ipo", "simpo")
"""The ``loss_type`` values :func:`dpo_loss` accepts."""


def dpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps: Tensor,
             ref_rejected_logps: Tensor, *, beta: float, loss_type: LossType = "sigmoid",
             label_smoothing: float = 0.0, margin: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """Per-pair DPO / cDPO / IPO / SimPO loss and the implicit rewards (see the module docstring).

    Args:
        policy_chosen_logps, policy_rejected_logps: ``(B,)`` ``log π(y|x)`` (summed over the
            completion's tokens; length-averaged for IPO and SimPO), in nats.
        ref_chosen_logps, ref_rejected_logps: ``(B,)`` the same under ``π_ref`` (ignored by SimPO).
        beta: ``β > 0``.
        loss_type: ``sigmoid``, ``cdpo``, ``ipo`` or ``simpo``.
        label_smoothing: cDPO's ``ε`` (``sigmoid`` with ``ε > 0`` is cDPO too; SimPO takes it as well).
        margin: SimPO's target reward margin ``γ ≥ 0`` (reward units; the paper's ``γ/β`` is 0.3-1.6).

    Returns:
        ``(losses (B,), chosen_rewards (B,), rejected_rewards (B,))``; rewards are
        ``β · (log π - log π_ref)`` (SimPO: ``β · log π``, length-averaged), detached, in nats.

    Raises:
        ValueError: on mismatched shapes, an unknown ``loss_type`` or a negative margin.
    """
    shapes = {tuple(t.shape) for t in (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                                       ref_rejected_logps)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"the four log-prob tensors must share one (B,) shape, got {sorted(shapes)}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if loss_type == "simpo":
        chosen_logratios, rejected_logratios = policy_chosen_logps, policy_rejected_logps
    else:
        chosen_logratios = policy_chosen_logps - ref_chosen_logps
        rejected_logratios = policy_rejected_logps - ref_rejected_logps
    if loss_type in ("sigmoid", "cdpo", "simpo"):
        target = None if label_smoothing == 0 else torch.full_like(chosen_logratios, 1.0 - label_smoothing)
        losses = bradley_terry_nll(beta * chosen_logratios, beta * rejected_logratios, target, margin=margin)
    elif loss_type == "ipo":
        losses = (chosen_logratios - rejected_logratios - 1.0 / (2.0 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; one of {', '.join(PREFERENCE_LOSSES)}")
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()
