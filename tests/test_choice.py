"""Tests for rlhfkit.choice: hand-computed values, identities between models, stability, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rlhfkit.choice import (
    LEFT,
    RIGHT,
    TIE,
    bradley_terry_logprob,
    bradley_terry_nll,
    bradley_terry_prob,
    davidson_logprobs,
    davidson_nll,
    hinge_loss,
    plackett_luce_nll,
    thurstone_nll,
)

D = torch.float64


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=D)


# Hand-computed constants.
# -log σ(1) = log(1 + e^-1) = log(1.3678794411714423) = 0.31326168751822286
NLL_SIG_1 = 0.31326168751822286
# -log σ(-1) = log(1 + e) = log(3.718281828459045) = 1.3132616875182228
NLL_SIG_M1 = 1.3132616875182228
# σ(1) = 1 / (1 + e^-1) = 0.7310585786300049
SIG_1 = 0.7310585786300049

scores = st.floats(min_value=-30, max_value=30, allow_nan=False)


# ----------------------------------------------------------------------------------------------
# Bradley-Terry
# ----------------------------------------------------------------------------------------------


def test_bradley_terry_hand_values():
    # Δ = 1 → P[left] = σ(1); Δ = 0 → 1/2; chosen-is-left loss = -log σ(1).
    assert bradley_terry_prob(t(1.0), t(0.0)).item() == pytest.approx(SIG_1, abs=1e-12)
    assert bradley_terry_prob(t(3.0), t(3.0)).item() == pytest.approx(0.5, abs=1e-12)
    assert bradley_terry_nll(t(1.0), t(0.0)).item() == pytest.approx(NLL_SIG_1, abs=1e-12)
    # Right preferred (target 0) with Δ = 1: -log σ(-1) = log(1 + e).
    assert bradley_terry_nll(t(1.0), t(0.0), t(0.0)).item() == pytest.approx(NLL_SIG_M1, abs=1e-12)


def test_bradley_terry_temperature_divides_the_difference():
    # τ = 2, Δ = 2 → σ(2 / 2) = σ(1).
    assert bradley_terry_prob(t(2.0), t(0.0), temperature=2.0).item() == pytest.approx(SIG_1, abs=1e-12)
    assert bradley_terry_nll(t(2.0), t(0.0), temperature=2.0).item() == pytest.approx(NLL_SIG_1, abs=1e-12)


def test_bradley_terry_soft_target_tie():
    # μ = 0.5, Δ = 1: -(½ log σ(1) + ½ log σ(-1)) = ½ (0.31326… + 1.31326…) = 0.81326168751822…
    loss = bradley_terry_nll(t(1.0), t(0.0), t(0.5)).item()
    assert loss == pytest.approx(0.5 * (NLL_SIG_1 + NLL_SIG_M1), abs=1e-12)
    assert loss == pytest.approx(0.8132616875182228, abs=1e-12)


def test_bradley_terry_margin():
    # Δ = 2, margin 1 → -log σ(2 - 1) = -log σ(1); a per-example margin works the same.
    assert bradley_terry_nll(t(2.0), t(0.0), margin=1.0).item() == pytest.approx(NLL_SIG_1, abs=1e-12)
    loss = bradley_terry_nll(t(2.0, 2.0), t(0.0, 0.0), margin=t(1.0, 3.0))
    # second: -log σ(2 - 3) = -log σ(-1)
    assert loss.tolist() == pytest.approx([NLL_SIG_1, NLL_SIG_M1], abs=1e-12)


def test_bradley_terry_epsilon_floor_hand_values():
    # ε = 0.1: P = 0.9 σ(Δ) + 0.05. Δ = 0 → 0.5; Δ = +1e4 → 0.95 and the loser keeps ε/2 = 0.05.
    assert bradley_terry_prob(t(0.0), t(0.0), epsilon=0.1).item() == pytest.approx(0.5, abs=1e-12)
    log_left, log_right = bradley_terry_logprob(t(1e4), t(-1e4), epsilon=0.1)
    assert log_left.exp().item() == pytest.approx(0.95, abs=1e-12)
    assert log_right.item() == pytest.approx(math.log(0.05), abs=1e-12)  # log 0.05 = -2.9957…
    # Δ = 1: 0.9 · σ(1) + 0.05 = 0.9 · 0.7310585786300049 + 0.05 = 0.7079527207670044
    assert bradley_terry_prob(t(1.0), t(0.0), epsilon=0.1).item() == pytest.approx(0.7079527207670044, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(a=scores, b=scores, eps=st.floats(min_value=0.0, max_value=0.99))
@example(a=0.0, b=0.0, eps=5e-324)  # a denormal ε: ε/2 underflows to 0, log(ε/2) must not be log 0
def test_bradley_terry_probabilities_are_complementary_and_floored(a, b, eps):
    log_left, log_right = bradley_terry_logprob(t(a), t(b), epsilon=eps)
    assert (log_left.exp() + log_right.exp()).item() == pytest.approx(1.0, abs=1e-12)
    assert log_left.exp().item() >= eps / 2 - 1e-15
    assert log_right.exp().item() >= eps / 2 - 1e-15


@settings(max_examples=60, deadline=None)
@given(a=scores, b=scores, mu=st.floats(min_value=0.0, max_value=1.0))
def test_bradley_terry_swapping_sides_swaps_the_label(a, b, mu):
    forward = bradley_terry_nll(t(a), t(b), t(mu))
    backward = bradley_terry_nll(t(b), t(a), t(1 - mu))
    assert forward.item() == pytest.approx(backward.item(), rel=1e-9, abs=1e-12)


def test_bradley_terry_no_overflow_and_finite_gradients_at_extremes():
    left = t(1e4, -1e4, 0.0).requires_grad_(True)
    right = t(-1e4, 1e4, 0.0).requires_grad_(True)
    for eps in (0.0, 0.1):
        loss = bradley_terry_nll(left, right, epsilon=eps)
        assert torch.isfinite(loss).all()
        # Losing by 2e4 costs 2e4 nats without a floor, log(2/ε) = log 20 with ε = 0.1.
        expected = 2e4 if eps == 0 else math.log(20)
        assert loss[1].item() == pytest.approx(expected, rel=1e-9)
        assert loss[0].item() == pytest.approx(0.0 if eps == 0 else -math.log(0.95), abs=1e-9)
        (grad_l, grad_r) = torch.autograd.grad(loss.sum(), (left, right))
        assert torch.isfinite(grad_l).all() and torch.isfinite(grad_r).all()
    # float32 too: the naive 1 / (1 + exp(-Δ)) would give log(0) = -inf here.
    loss32 = bradley_terry_nll(torch.tensor([-1e4]), torch.tensor([1e4]))
    assert loss32.item() == pytest.approx(2e4)


def test_bradley_terry_gradient_matches_closed_form():
    # d/dΔ of -log σ(Δ) = -(1 - σ(Δ)) = σ(Δ) - 1; at Δ = 1: 0.7310585786300049 - 1.
    left = t(1.0).requires_grad_(True)
    (grad,) = torch.autograd.grad(bradley_terry_nll(left, t(0.0)).sum(), left)
    assert grad.item() == pytest.approx(SIG_1 - 1, abs=1e-12)


def test_bradley_terry_errors():
    with pytest.raises(ValueError, match="same shape"):
        bradley_terry_nll(t(1.0, 2.0), t(1.0))
    with pytest.raises(ValueError, match="target must have the shape"):
        bradley_terry_nll(t(1.0, 2.0), t(1.0, 2.0), t(1.0))
    with pytest.raises(ValueError, match=r"target must lie in \[0, 1\]"):
        bradley_terry_nll(t(1.0), t(0.0), t(1.5))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        bradley_terry_nll(t(1.0), t(0.0), temperature=0.0)
    with pytest.raises(ValueError, match=r"epsilon must be in \[0, 1\)"):
        bradley_terry_prob(t(1.0), t(0.0), epsilon=1.0)
    with pytest.raises(ValueError, match=r"epsilon must be in \[0, 1\)"):
        bradley_terry_logprob(t(1.0), t(0.0), epsilon=-0.1)


# ----------------------------------------------------------------------------------------------
# Davidson
# ----------------------------------------------------------------------------------------------


def test_davidson_hand_values():
    # s = (0, 0), ν = 1: π = (1, 1), D = 1 + 1 + 1·√1 = 3 → each outcome 1/3.
    p = davidson_logprobs(t(0.0), t(0.0), 1.0).exp()
    assert p[0].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3], abs=1e-12)
    # s = (log 4, 0), ν = 2: π = (4, 1), ν√(π_l π_r) = 2·2 = 4, D = 9 → (4/9, 1/9, 4/9).
    p = davidson_logprobs(t(math.log(4.0)), t(0.0), 2.0).exp()
    assert p[0].tolist() == pytest.approx([4 / 9, 1 / 9, 4 / 9], abs=1e-12)
    loss = davidson_nll(t(math.log(4.0), math.log(4.0)), t(0.0, 0.0), torch.tensor([RIGHT, TIE]), 2.0)
    assert loss.tolist() == pytest.approx([math.log(9.0), math.log(9 / 4)], abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(a=scores, b=scores, nu=st.floats(min_value=0.0, max_value=20.0))
def test_davidson_probabilities_sum_to_one(a, b, nu):
    p = davidson_logprobs(t(a), t(b), nu).exp()
    assert p.shape == (1, 3)
    assert p.sum().item() == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(a=scores, b=scores)
def test_davidson_with_nu_zero_is_bradley_terry(a, b):
    outcome = torch.tensor([LEFT, RIGHT])
    dav = davidson_nll(t(a, a), t(b, b), outcome, 0.0)
    bt = bradley_terry_nll(t(a, a), t(b, b), t(1.0, 0.0))
    assert dav.tolist() == pytest.approx(bt.tolist(), rel=1e-9, abs=1e-12)
    assert davidson_logprobs(t(a), t(b), 0.0)[0, TIE].item() == float("-inf")


def test_davidson_nu_tensor_gets_a_gradient_and_extremes_are_finite():
    nu = torch.tensor(0.7, dtype=D, requires_grad=True)
    s_l = t(1e4, -1e4, 0.0).requires_grad_(True)
    s_r = t(-1e4, 1e4, 0.0)
    loss = davidson_nll(s_l, s_r, torch.tensor([LEFT, RIGHT, TIE]), nu)
    assert torch.isfinite(loss).all()
    grad_s, grad_nu = torch.autograd.grad(loss.sum(), (s_l, nu))
    assert torch.isfinite(grad_s).all() and torch.isfinite(grad_nu)
    # Equal strengths, outcome tie: P = ν / (2 + ν); d(-log P)/dν = -1/ν + 1/(2 + ν) = -1/0.7 + 1/2.7.
    tie_only = davidson_nll(t(0.0), t(0.0), torch.tensor([TIE]), nu)
    (g,) = torch.autograd.grad(tie_only.sum(), nu)
    assert g.item() == pytest.approx(-1 / 0.7 + 1 / 2.7, abs=1e-12)


def test_davidson_errors():
    with pytest.raises(ValueError, match="nu must be >= 0"):
        davidson_logprobs(t(0.0), t(0.0), -0.5)
    with pytest.raises(ValueError, match="outcome codes must be 0"):
        davidson_nll(t(0.0), t(0.0), torch.tensor([3]), 1.0)
    with pytest.raises(ValueError, match="outcome must have shape"):
        davidson_nll(t(0.0, 1.0), t(0.0, 1.0), torch.tensor([0]), 1.0)
    with pytest.raises(ValueError, match="same shape"):
        davidson_logprobs(t(0.0, 1.0), t(0.0), 1.0)


# ----------------------------------------------------------------------------------------------
# Plackett-Luce
# ----------------------------------------------------------------------------------------------


def _plackett_luce_loop(row: list[float]) -> float:
    """Naive reference: Σ_k [log Σ_{j>=k} exp(s_j) - s_k]."""
    return sum(math.log(sum(math.exp(s) for s in row[k:])) - row[k] for k in range(len(row)))


def test_plackett_luce_hand_value():
    # Strengths (3, 2, 1), ranked in that order: P = 3/6 · 2/3 · 1/1 = 1/3 → NLL = log 3.
    loss = plackett_luce_nll(torch.log(t(3.0, 2.0, 1.0)).unsqueeze(0))
    assert loss.item() == pytest.approx(math.log(3.0), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(a=scores, b=scores)
def test_plackett_luce_with_two_items_is_bradley_terry(a, b):
    pl = plackett_luce_nll(t(a, b).unsqueeze(0))  # (1, 2), a ranked first
    bt = bradley_terry_nll(t(a), t(b))
    assert pl.item() == pytest.approx(bt.item(), rel=1e-9, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.lists(scores, min_size=1, max_size=6), min_size=1, max_size=5))
def test_plackett_luce_mask_equals_unpadded_lists(rows):
    k = max(len(r) for r in rows)
    padded = torch.full((len(rows), k), 123.0, dtype=D)  # padding values must not matter
    mask = torch.zeros(len(rows), k, dtype=torch.bool)
    for i, r in enumerate(rows):
        padded[i, : len(r)] = t(*r)
        mask[i, : len(r)] = True
    masked = plackett_luce_nll(padded, mask)
    for i, r in enumerate(rows):
        alone = plackett_luce_nll(t(*r).unsqueeze(0))
        assert masked[i].item() == pytest.approx(alone.item(), rel=1e-9, abs=1e-9)
        assert masked[i].item() == pytest.approx(_plackett_luce_loop(r), rel=1e-9, abs=1e-9)


def test_plackett_luce_extremes_and_masked_gradients_are_finite():
    scores_ = t(1e4, 0.0, -1e4, 5.0).reshape(1, 4).repeat(2, 1).requires_grad_(True)  # (2, 4)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    loss = plackett_luce_nll(scores_, mask)
    assert torch.isfinite(loss).all()
    (grad,) = torch.autograd.grad(loss.sum(), scores_)
    assert torch.isfinite(grad).all()
    assert grad[1, 2:].abs().sum().item() == 0.0  # padded items get no gradient
    # Row 1 is (1e4 ≻ 0): -log σ(1e4) ≈ 0 (e^-1e4 underflows).
    # Row 0 is 1e4 ≻ 0 ≻ -1e4 ≻ 5: the first pick costs ≈ 0; the second log(e^0 + e^5 + e^-1e4) - 0
    # = 5 + log(1 + e^-5) = 5.006715348489118; the third log(e^-1e4 + e^5) + 1e4 = 10005; the last 0.
    assert loss[1].item() == pytest.approx(0.0, abs=1e-9)
    assert loss[0].item() == pytest.approx(5.006715348489118 + 10005.0, rel=1e-12)


def test_plackett_luce_errors():
    with pytest.raises(ValueError, match=r"scores must be \(B, K\)"):
        plackett_luce_nll(t(1.0, 2.0))
    with pytest.raises(ValueError, match="mask must have shape"):
        plackett_luce_nll(t(1.0, 2.0).unsqueeze(0), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="prefix"):
        plackett_luce_nll(t(1.0, 2.0, 3.0).unsqueeze(0), torch.tensor([[True, False, True]]))


# ----------------------------------------------------------------------------------------------
# Thurstone and hinge
# ----------------------------------------------------------------------------------------------


def test_thurstone_hand_values():
    # Δ = 0 → Φ(0) = 1/2 → log 2. Δ = √2, σ = 1 → z = 1, Φ(1) = 0.8413447460685429 → 0.1727537790234499.
    assert thurstone_nll(t(0.0), t(0.0)).item() == pytest.approx(math.log(2.0), abs=1e-12)
    assert thurstone_nll(t(math.sqrt(2.0)), t(0.0)).item() == pytest.approx(0.1727537790234499, abs=1e-12)
    # σ = 2 scales z: Δ = 2√2 → z = 1 again.
    assert thurstone_nll(t(2 * math.sqrt(2.0)), t(0.0), sigma=2.0).item() == pytest.approx(0.1727537790234499, abs=1e-12)
    # target 0 (right preferred) at Δ = √2: -log Φ(-1) = -log 0.15865525393145707 = 1.8410216450092636
    assert thurstone_nll(t(math.sqrt(2.0)), t(0.0), t(0.0)).item() == pytest.approx(1.8410216450092636, abs=1e-12)


def test_thurstone_extremes_are_finite():
    left = t(-1e4).requires_grad_(True)
    loss = thurstone_nll(left, t(1e4))
    assert torch.isfinite(loss).all() and loss.item() > 1e7  # -log Φ(-z) ≈ z²/2 with z = 2e4/√2
    (grad,) = torch.autograd.grad(loss.sum(), left)
    assert torch.isfinite(grad).all()


def test_hinge_hand_values():
    # margin 1: Δ = 0.3 left preferred → 1 - 0.3 = 0.7; right preferred → 1 + 0.3 = 1.3;
    # tie → |Δ| = 0.3; Δ = 2 left preferred → 0.
    loss = hinge_loss(t(0.3, 0.3, 0.3, 2.0), t(0.0, 0.0, 0.0, 0.0), t(1.0, 0.0, 0.5, 1.0))
    assert loss.tolist() == pytest.approx([0.7, 1.3, 0.3, 0.0], abs=1e-12)
    assert hinge_loss(t(0.3), t(0.0), margin=2.0).item() == pytest.approx(1.7, abs=1e-12)


def test_thurstone_and_hinge_errors():
    with pytest.raises(ValueError, match="sigma must be > 0"):
        thurstone_nll(t(0.0), t(0.0), sigma=0.0)
    with pytest.raises(ValueError, match="margin must be >= 0"):
        hinge_loss(t(0.0), t(0.0), margin=-1.0)
    with pytest.raises(ValueError, match="same shape"):
        thurstone_nll(t(0.0, 1.0), t(0.0))
    with pytest.raises(ValueError, match="target must have the shape"):
        hinge_loss(t(0.0, 1.0), t(0.0, 1.0), t(1.0))
    with pytest.raises(ValueError, match=r"target must lie in \[0, 1\]"):
        thurstone_nll(t(0.0), t(0.0), t(-0.5))
    with pytest.raises(ValueError, match=r"target must lie in \[0, 1\]"):
        hinge_loss(t(0.0), t(0.0), t(2.0))
