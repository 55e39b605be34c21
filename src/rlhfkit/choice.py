"""Choice models: the likelihood of a human's answer given the scores of what they compared.

Pure functions on tensors, in log space. Each takes scores (returns of trajectory fragments,
rewards of responses, strengths of players) and a label, and returns the **per-example**
negative log-likelihood; the caller reduces (mean, weighted sum, ...).

Shapes use fixed letters: ``B`` comparisons in a batch, ``K`` items in a ranked list.

Labels for pairwise models are a float ``target`` of shape ``(B,)``: the probability that the
*left* item is preferred — ``1.0`` left, ``0.0`` right, ``0.5`` a tie under the "tie = half a
win" convention (Christiano et al. 2017, §2.2.3). Davidson's model instead takes an explicit
outcome code (:data:`LEFT`, :data:`RIGHT`, :data:`TIE`).

Sources
-------
- Bradley & Terry (1952), "Rank analysis of incomplete block designs".
- Christiano et al. (2017), "Deep RL from Human Preferences", Eq. (1) and §2.2.3
  (Boltzmann-rational comparisons on summed reward, 10% uniform-noise floor).
- Dai et al. (2023), "Safe RLHF: Safe Reinforcement Learning from Human Feedback", Eq. (6)
  (the cost model: pairs ordered by harm plus a per-response safety-sign term).
- Davidson (1970), "On extending the Bradley-Terry model to accommodate ties", Eq. (2.1).
- Plackett (1975), "The analysis of permutations"; Luce (1959), "Individual choice behavior".
- Thurstone (1927), "A law of comparative judgment" (Case V).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LEFT",
    "RIGHT",
    "TIE",
    "bradley_terry_logprob",
    "bradley_terry_nll",
    "bradley_terry_prob",
    "cost_pair_loss",
    "davidson_logprobs",
    "davidson_nll",
    "hinge_loss",
    "plackett_luce_nll",
    "reward_pair_loss",
    "thurstone_nll",
]

LEFT, RIGHT, TIE = 0, 1, 2
"""Outcome codes for :func:`davidson_nll`: the left item won, the right item won, a tie."""


def _check_pair(score_left: Tensor, score_right: Tensor, target: Tensor | None = None) -> None:
    if score_left.shape != score_right.shape:
        raise ValueError(
            f"score_left and score_right must have the same shape (B,), got "
            f"{tuple(score_left.shape)} and {tuple(score_right.shape)}"
        )
    if target is not None and target.shape != score_left.shape:
        raise ValueError(
            f"target must have the shape of the scores {tuple(score_left.shape)}, got {tuple(target.shape)}"
        )


def _check_target(target: Tensor) -> None:
    if torch.any((target < 0) | (target > 1)):
        raise ValueError("target must lie in [0, 1] (1 = left preferred, 0 = right, 0.5 = tie)")


def _check_noise(temperature: float, epsilon: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"epsilon must be in [0, 1), got {epsilon}")


def bradley_terry_logprob(
    score_left: Tensor, score_right: Tensor, *, temperature: float = 1.0, epsilon: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Log-probabilities that the left, and the right, item is preferred.

    ``P[left ≻ right] = (1 - ε) · σ((s_l - s_r) / τ) + ε / 2`` — Bradley-Terry on the score
    difference with Boltzmann temperature ``τ`` and Christiano et al.'s (2017, §2.2.3) noise floor
    ``ε`` (a labeller who answers uniformly at random a fraction ``ε`` of the time; the paper
    uses ε = 0.1). Computed in log space with ``logsigmoid`` and ``logaddexp``; never overflows.

    Args:
        score_left, score_right: ``(B,)`` scores, e.g. summed predicted reward of each fragment.
        temperature: ``τ > 0``; larger means a noisier labeller.
        epsilon: noise floor in ``[0, 1)``.

    Returns:
        ``(log P[left ≻ right], log P[right ≻ left])``, each ``(B,)``.

    Raises:
        ValueError: on mismatched shapes, ``τ <= 0`` or ``ε`` outside ``[0, 1)``.
    """
    _check_pair(score_left, score_right)
    _check_noise(temperature, epsilon)
    x = (score_left - score_right) / temperature
    log_left, log_right = F.logsigmoid(x), F.logsigmoid(-x)
    if epsilon > 0.0:
        floor = torch.full_like(x, math.log(epsilon) - math.log(2.0))  # log(ε/2); ε/2 underflows for denormal ε
        scale = math.log1p(-epsilon)
        log_left = torch.logaddexp(log_left + scale, floor)
        log_right = torch.logaddexp(log_right + scale, floor)
    return log_left, log_right


def bradley_terry_prob(
    score_left: Tensor, score_right: Tensor, *, temperature: float = 1.0, epsilon: float = 0.0
) -> Tensor:
    """``P[left ≻ right]``, shape ``(B,)``; see :func:`bradley_terry_logprob` for the model."""
    return bradley_terry_logprob(score_left, score_right, temperature=temperature, epsilon=epsilon)[0].exp()


def bradley_terry_nll(
    score_left: Tensor,
    score_right: Tensor,
    target: Tensor | None = None,
    *,
    temperature: float = 1.0,
    epsilon: float = 0.0,
    margin: Tensor | float = 0.0,
) -> Tensor:
    """Per-example Bradley-Terry negative log-likelihood (cross-entropy against a soft label).

    ``loss = -[μ · log P[l ≻ r] + (1 - μ) · log P[r ≻ l]]`` with ``P`` as in
    :func:`bradley_terry_logprob` (Christiano et al. 2017, Eq. 1 and the loss below it); ``μ`` is
    the label: 1 left, 0 right, 0.5 tie. With ``target=None`` the left item is the chosen one,
    which gives the reward-model loss ``-log σ(r_chosen - r_rejected)`` of Ouyang et al. (2022,
    Eq. 1). ``margin`` is subtracted from the score difference (Llama 2's margin loss, Touvron et
    al. 2023, Eq. 2): the left item must win by at least that much.

    Args:
        score_left, score_right: ``(B,)`` scores.
        target: ``(B,)`` probability in ``[0, 1]`` that left is preferred, or None for all-left.
        temperature: Boltzmann temperature ``τ > 0``.
        epsilon: noise floor in ``[0, 1)``.
        margin: scalar or ``(B,)`` margin, in score units.

    Returns:
        ``(B,)`` negative log-likelihood in nats.

    Raises:
        ValueError: on mismatched shapes, bad ``τ``/``ε`` or a target outside ``[0, 1]``.
    """
    _check_pair(score_left, score_right, target)
    log_left, log_right = bradley_terry_logprob(
        score_left - margin, score_right, temperature=temperature, epsilon=epsilon
    )
    if target is None:
        return -log_left
    _check_target(target)
    target = target.to(log_left.dtype)
    return -(target * log_left + (1 - target) * log_right)


def _per_head(x: Tensor, B: int, E: int) -> Tensor:
    """A ``(B,)`` (or scalar) per-pair quantity repeated for the ``E`` heads and flattened: ``(B·E,)``."""
    return x.unsqueeze(-1).expand(B, E).reshape(-1) if isinstance(x, Tensor) else x


def _heads(r_chosen: Tensor, r_rejected: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(B,)`` or ``(B, E)`` scores of a pair as ``(B, E)`` each; checks shapes (and the weights')."""
    if r_chosen.shape != r_rejected.shape or r_chosen.ndim not in (1, 2):
        raise ValueError(f"chosen and rejected scores differ in shape or are not (B,) or (B, E): "
                         f"{tuple(r_chosen.shape)} vs {tuple(r_rejected.shape)}")
    rc = r_chosen if r_chosen.ndim == 2 else r_chosen.unsqueeze(-1)  # (B, E)
    rr = r_rejected if r_rejected.ndim == 2 else r_rejected.unsqueeze(-1)
    if weights is not None and weights.shape != rc.shape:
        raise ValueError(f"weights must be (B, E) = {tuple(rc.shape)}, got {tuple(weights.shape)}")
    return rc, rr


def reward_pair_loss(r_chosen: Tensor, r_rejected: Tensor, target: Tensor | None = None, *,
                     margin: Tensor | float = 0.0, weights: Tensor | None = None) -> Tensor:
    """Bradley-Terry reward-model loss per pair, averaged over ensemble heads.

    ``L_b = (1/E) Σ_e w_{b,e} · BT(r_{b,e}^c, r_{b,e}^r; μ_b, m_b)`` with ``BT`` from
    :func:`bradley_terry_nll` (Ouyang et al. 2022, Eq. 1; the margin ``m`` is Llama 2's, Touvron et
    al. 2023, Eq. 2).

    Args:
        r_chosen, r_rejected: ``(B,)`` or ``(B, E)`` rewards (``E`` ensemble heads).
        target: ``(B,)`` probability that ``chosen`` is better (0.5: a tie); None: all 1.
        margin: scalar or ``(B,)`` margin, in reward units.
        weights: ``(B, E)`` bootstrap weights; None: all 1.

    Returns:
        ``(B,)`` loss in nats.

    Raises:
        ValueError: on mismatched shapes, or a target outside ``[0, 1]``.
    """
    rc, rr = _heads(r_chosen, r_rejected, weights)
    B, E = rc.shape
    per = bradley_terry_nll(rc.reshape(-1), rr.reshape(-1), _per_head(target, B, E),
                            margin=_per_head(margin, B, E)).view(B, E)  # (B, E)
    return (per * weights if weights is not None else per).mean(-1)


def cost_pair_loss(c_chosen: Tensor, c_rejected: Tensor, target: Tensor | None = None, *,
                   sign_chosen: Tensor | None = None, sign_rejected: Tensor | None = None,
                   margin: Tensor | float = 0.0, weights: Tensor | None = None) -> Tensor:
    """Safe RLHF's cost-model loss per pair, averaged over ensemble heads (Dai et al. 2023, Eq. 6).

    The pair is ordered by safety: ``chosen`` is the *safer* response (``y_l`` in the paper),
    ``rejected`` the more harmful one (``y_w``), so the cost ``C`` must rank ``rejected`` above::

        L = -log σ(C(y_r) - C(y_c) - m) - |s_r| log σ(s_r C(y_r)) - |s_c| log σ(s_c C(y_c))

    with the safety sign ``s = +1`` for a response labelled unsafe, ``-1`` for one labelled safe
    and ``0`` where there is no label (the term drops). The sign term anchors the cost's zero:
    ``C > 0`` means unsafe, so PPO-Lagrangian's threshold ``d = 0`` asks for safe responses. A tie
    (``target = 0.5``) is the soft Bradley-Terry target ½ on the ordering term. Each head ``e``
    is weighted by ``w_{b,e}`` and the heads are averaged. In log space (``logsigmoid``).

    Args:
        c_chosen, c_rejected: ``(B,)`` or ``(B, E)`` costs (the safer, the more harmful response).
        target: ``(B,)`` probability that ``chosen`` is the safer one (1, or 0.5 for a tie); None: all 1.
        sign_chosen, sign_rejected: ``(B,)`` safety signs in ``{-1, 0, +1}`` (+1 unsafe, -1 safe,
            0 unlabelled); None: no labels.
        margin: scalar or ``(B,)`` margin by which the more harmful response must cost more, in cost units.
        weights: ``(B, E)`` bootstrap weights; None: all 1.

    Returns:
        ``(B,)`` loss in nats.

    Raises:
        ValueError: on mismatched shapes, a target outside ``[0, 1]``, or a sign outside ``{-1, 0, +1}``.
    """
    rc, rr = _heads(c_chosen, c_rejected, weights)
    B, E = rc.shape
    # the harm ordering: the rejected (more harmful) response must cost more, -log σ(C_r - C_c - m)
    per = bradley_terry_nll(rr.reshape(-1), rc.reshape(-1), _per_head(target, B, E),
                            margin=_per_head(margin, B, E)).view(B, E)  # (B, E)
    for sign, cost in ((sign_chosen, rc), (sign_rejected, rr)):
        if sign is None:
            continue
        if sign.shape != (B,):
            raise ValueError(f"safety signs must be (B,) = ({B},), got {tuple(sign.shape)}")
        if torch.any((sign != 0) & (sign.abs() != 1)):
            raise ValueError("safety signs must be +1 (unsafe), -1 (safe) or 0 (unlabelled)")
        s = sign.to(cost.dtype).unsqueeze(-1)  # (B, 1)
        per = per - s.abs() * F.logsigmoid(s * cost)  # (B, E)
    return (per * weights if weights is not None else per).mean(-1)


def davidson_logprobs(score_left: Tensor, score_right: Tensor, nu: Tensor | float) -> Tensor:
    """Log-probabilities of (left wins, right wins, tie) under Davidson's (1970) tie model.

    With strengths ``π = exp(s)``: ``P[l] = π_l / D``, ``P[r] = π_r / D``,
    ``P[tie] = ν √(π_l π_r) / D``, ``D = π_l + π_r + ν √(π_l π_r)`` (Davidson 1970, Eq. 2.1).
    ``ν = 0`` recovers Bradley-Terry. Computed with ``logsumexp`` over the three log-terms.

    Args:
        score_left, score_right: ``(B,)`` log-strengths.
        nu: tie parameter ``ν >= 0`` (scalar or ``(B,)``; a tensor keeps its gradient).

    Returns:
        ``(B, 3)`` log-probabilities in the order :data:`LEFT`, :data:`RIGHT`, :data:`TIE`.

    Raises:
        ValueError: on mismatched shapes or ``ν < 0``.
    """
    _check_pair(score_left, score_right)
    nu_t = torch.as_tensor(nu, dtype=score_left.dtype, device=score_left.device)
    if torch.any(nu_t < 0):
        raise ValueError(f"Davidson tie parameter nu must be >= 0, got {nu}")
    log_tie = torch.log(nu_t) + 0.5 * (score_left + score_right)
    terms = torch.stack([score_left, score_right, log_tie.expand_as(score_left)], dim=-1)  # (B, 3)
    return terms - torch.logsumexp(terms, dim=-1, keepdim=True)


def davidson_nll(score_left: Tensor, score_right: Tensor, outcome: Tensor, nu: Tensor | float) -> Tensor:
    """Per-example negative log-likelihood of observed outcomes under Davidson's tie model.

    Args:
        score_left, score_right: ``(B,)`` log-strengths.
        outcome: ``(B,)`` integer codes :data:`LEFT` (0), :data:`RIGHT` (1) or :data:`TIE` (2).
        nu: tie parameter ``ν >= 0``; see :func:`davidson_logprobs`.

    Returns:
        ``(B,)`` NLL in nats.

    Raises:
        ValueError: on mismatched shapes, ``ν < 0`` or an outcome code outside {0, 1, 2}.
    """
    if outcome.shape != score_left.shape:
        raise ValueError(f"outcome must have shape {tuple(score_left.shape)}, got {tuple(outcome.shape)}")
    outcome = outcome.long()
    if torch.any((outcome < 0) | (outcome > 2)):
        raise ValueError("outcome codes must be 0 (left), 1 (right) or 2 (tie)")
    logp = davidson_logprobs(score_left, score_right, nu)
    return -logp.gather(-1, outcome.unsqueeze(-1)).squeeze(-1)


def plackett_luce_nll(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-list negative log-likelihood of a ranking under the Plackett-Luce model.

    ``P[σ] = Π_k exp(s_σ(k)) / Σ_{j>=k} exp(s_σ(j))`` (Plackett 1975; Luce 1959): the best item is
    chosen from all, the second from the rest, and so on. With two items this is Bradley-Terry.
    ``loss = Σ_k [logsumexp(s_k, ..., s_K) - s_k]``, computed with a reversed ``logcumsumexp``.

    Args:
        scores: ``(B, K)`` scores **in ranked order**, best first.
        mask: optional ``(B, K)`` bool, True for real items; padded items must come after the real
            ones in each row (lists of different lengths).

    Returns:
        ``(B,)`` NLL in nats.

    Raises:
        ValueError: if ``scores`` is not 2-D, the mask has another shape, or a mask row has a
            real item after a padded one.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be (B, K) in ranked order, got shape {tuple(scores.shape)}")
    if mask is not None:
        if mask.shape != scores.shape:
            raise ValueError(f"mask must have shape {tuple(scores.shape)}, got {tuple(mask.shape)}")
        mask = mask.bool()
        if torch.any(mask[:, 1:] & ~mask[:, :-1]):
            raise ValueError("mask rows must be True for a prefix and False after it (padding last)")
        scores = scores.masked_fill(~mask, float("-inf"))
    # log Σ_{j>=k} exp(s_j) for every k: reverse, cumulative logsumexp, reverse back.
    tail = torch.logcumsumexp(scores.flip(-1), dim=-1).flip(-1)  # (B, K)
    terms = tail - scores
    if mask is not None:
        terms = terms.masked_fill(~mask, 0.0)
    return terms.sum(-1)


def thurstone_nll(
    score_left: Tensor, score_right: Tensor, target: Tensor | None = None, *, sigma: float = 1.0
) -> Tensor:
    """Per-example NLL under Thurstone's Case V (probit) model.

    ``P[l ≻ r] = Φ((s_l - s_r) / (√2 σ))``: each item's perceived utility is its score plus
    independent Gaussian noise of standard deviation ``σ`` (Thurstone 1927). Uses
    ``torch.special.log_ndtr`` for a stable ``log Φ``.

    Args:
        score_left, score_right: ``(B,)`` scores.
        target: ``(B,)`` probability that left is preferred (0.5 a tie), None for all-left.
        sigma: per-item noise standard deviation, > 0.

    Returns:
        ``(B,)`` NLL in nats.

    Raises:
        ValueError: on mismatched shapes, ``σ <= 0`` or a target outside ``[0, 1]``.
    """
    _check_pair(score_left, score_right, target)
    if target is not None:
        _check_target(target)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    z = (score_left - score_right) / (math.sqrt(2.0) * sigma)
    log_left, log_right = torch.special.log_ndtr(z), torch.special.log_ndtr(-z)
    if target is None:
        return -log_left
    target = target.to(z.dtype)
    return -(target * log_left + (1 - target) * log_right)


def hinge_loss(
    score_left: Tensor, score_right: Tensor, target: Tensor | None = None, *, margin: float = 1.0
) -> Tensor:
    """Per-example margin (hinge) ranking loss: ``max(0, margin - y · (s_l - s_r))``.

    Not a likelihood: a large-margin alternative to Bradley-Terry (Herbrich et al. 2000, "Large
    margin rank boundaries for ordinal regression"), with ``y = 2μ - 1`` (+1 left, -1 right).
    For a tie (``μ = 0.5``) the loss is ``|s_l - s_r|``, pulling the two scores together.

    Args:
        score_left, score_right: ``(B,)`` scores.
        target: ``(B,)`` label in ``[0, 1]``, None for all-left.
        margin: required score gap, >= 0.

    Returns:
        ``(B,)`` loss in score units.

    Raises:
        ValueError: on mismatched shapes, a negative margin or a target outside ``[0, 1]``.
    """
    _check_pair(score_left, score_right, target)
    if target is not None:
        _check_target(target)
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    delta = score_left - score_right
    if target is None:
        return F.relu(margin - delta)
    target = target.to(delta.dtype)
    y = 2 * target - 1
    tie = target == 0.5
    return torch.where(tie, delta.abs(), F.relu(margin - y * delta))
