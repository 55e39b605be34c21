"""SURF's two label-efficiency tools as pure functions: temporal cropping of fragment pairs and
confidence-thresholded pseudo-labels (Park et al. 2022, "SURF: Semi-supervised Reward Learning with
Data Augmentation for Feedback-efficient Preference-based Reinforcement Learning", ICLR 2022).

- **Temporal cropping** (§4.2, "temporal data augmentation"): a pair of fragments ``(σ⁰, σ¹)`` of
  ``T`` steps keeps its label when both are replaced by random sub-windows of one common length
  ``L``; each side's start is drawn independently. The authors' code draws ``L`` uniformly in
  ``[H - c, H + c]`` (``c = crop_range = 5``) out of fragments stored ``2w = 10`` steps longer than
  the ``H`` the teacher saw. Here a comparison holds exactly the ``T`` steps the teacher judged, so
  windows are cut *inside* the fragment: ``L`` uniform in ``[T - c, T]`` and a start uniform in
  ``[0, T - L]`` per side (the same shifts of up to ``c`` steps; QPA, Hu et al. 2023, crops the same
  way: ``L ∈ [T - 15, T - 5]`` inside the fragment).
- **Pseudo-labels** (§4.1, Eq. 5-6): an unlabelled pair is labelled with the reward model's own
  prediction ``ŷ = 1[P[σ⁰ ≻ σ¹] > 0.5]`` and enters the loss only when the prediction is
  confident, ``max(P, 1 - P) ≥ τ``; the unlabelled loss is ``λ`` times the mean over the unlabelled
  batch of the masked cross-entropy (FixMatch-style: the denominator counts every unlabelled pair).
  The paper's confidence comes from each member; here ``P`` is the **ensemble mean** over members,
  so that every member learns from the pairs the whole ensemble is sure about.

The fitting loop that uses them is :func:`rlhfkit.reward.ensemble.fit_reward_ensemble`.
Shapes: ``E`` members, ``B`` pairs, ``T`` steps per fragment, ``L`` steps per window.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlhfkit.choice import bradley_terry_logprob

__all__ = ["crop_windows", "pseudo_labels", "temporal_crop_masks", "window_mask"]


def crop_windows(shape: tuple[int, ...], length: int, crop: int, generator: torch.Generator | None = None
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """Random crop windows for pairs of ``length``-step fragments (SURF, Park et al. 2022, §4.2).

    For every pair: a common window length ``L ~ U{max(length - crop, 1), …, length}``, then a start
    ``s ~ U{0, …, length - L}`` for the left and, independently, for the right fragment.

    Args:
        shape: the batch shape of pairs, e.g. ``(B,)`` or ``(E, B)``.
        length: ``T``, steps per fragment (≥ 1).
        crop: ``c ≥ 0``, the most steps a window is shorter than the fragment (0: no cropping).
        generator: for the draws.

    Returns:
        ``(lengths, start_left, start_right)``, int64 tensors of ``shape``.

    Raises:
        ValueError: if ``length < 1`` or ``crop < 0``.
    """
    if length < 1 or crop < 0:
        raise ValueError(f"crop_windows needs length >= 1 and crop >= 0, got length={length}, crop={crop}")
    low = max(length - crop, 1)
    lengths = torch.randint(low, length + 1, shape, generator=generator)
    room = (length - lengths + 1).double()  # starts 0 … length - L
    start_left = (torch.rand(shape, generator=generator, dtype=torch.float64) * room).long()
    start_right = (torch.rand(shape, generator=generator, dtype=torch.float64) * room).long()
    return lengths, start_left, start_right


def window_mask(starts: Tensor, lengths: Tensor, length: int) -> Tensor:
    """The 0/1 mask of windows ``[start, start + L)`` over ``length`` steps.

    ``window_mask([0, 2], [3, 2], 5) = [[1, 1, 1, 0, 0], [0, 0, 1, 1, 0]]``.

    Args:
        starts: ``(...)`` first step of each window.
        lengths: ``(...)`` window lengths, same shape.
        length: ``T``.

    Returns:
        ``(..., T)`` float32 mask.

    Raises:
        ValueError: if the shapes differ or a window leaves ``[0, T)``.
    """
    if starts.shape != lengths.shape:
        raise ValueError(f"starts and lengths must have one shape, got {tuple(starts.shape)} and "
                         f"{tuple(lengths.shape)}")
    if starts.numel() and (bool((starts < 0).any()) or bool((starts + lengths > length).any())):
        raise ValueError(f"every window [start, start + L) must lie in [0, {length})")
    t = torch.arange(length)
    return ((t >= starts.unsqueeze(-1)) & (t < (starts + lengths).unsqueeze(-1))).float()


def temporal_crop_masks(shape: tuple[int, ...], length: int, crop: int, generator: torch.Generator | None = None
                        ) -> tuple[Tensor, Tensor]:
    """Masks ``(..., T)`` of the left and right crop windows of :func:`crop_windows`: the cropped return
    of a fragment is ``(mask · r).sum(-1)``; both windows of a pair have the same length."""
    lengths, start_left, start_right = crop_windows(shape, length, crop, generator)
    return window_mask(start_left, lengths, length), window_mask(start_right, lengths, length)


@torch.no_grad()
def pseudo_labels(returns_left: Tensor, returns_right: Tensor, tau: float, *, temperature: float = 1.0
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """SURF's pseudo-labels (Park et al. 2022, §4.1, Eq. 5-6) from the ensemble's mean preference.

    ``P = mean_e σ((R_l,e - R_r,e) / temperature)``; the label is ``1`` (left) where ``P > 0.5``, else
    ``0``; a pair is kept where ``max(P, 1 - P) ≥ τ``. E.g. members with ``R_l - R_r = ln 19`` and
    ``ln 99`` give ``P = (0.95 + 0.99) / 2 = 0.97``: label 1, kept at ``τ = 0.95``.

    Args:
        returns_left, returns_right: ``(E, B)`` summed predicted rewards of each fragment, per member.
        tau: confidence threshold in ``(0.5, 1]`` (SURF's ``threshold_u``; the authors' config: 0.95).
        temperature: Boltzmann temperature of the likelihood.

    Returns:
        ``(target, keep, p_left)``: ``(B,)`` float labels in ``{0, 1}``, ``(B,)`` bool mask, ``(B,)`` ``P``.

    Raises:
        ValueError: for mismatched shapes or ``τ`` outside ``(0.5, 1]``.
    """
    if returns_left.shape != returns_right.shape or returns_left.ndim != 2:
        raise ValueError(f"returns_left and returns_right must both be (E, B), got {tuple(returns_left.shape)} "
                         f"and {tuple(returns_right.shape)}")
    if not 0.5 < tau <= 1.0:
        raise ValueError(f"tau must lie in (0.5, 1], got {tau}")
    p = bradley_terry_logprob(returns_left, returns_right, temperature=temperature)[0].exp().mean(0)  # (B,)
    target = (p > 0.5).float()
    keep = torch.maximum(p, 1.0 - p) >= tau
    return target, keep, p
