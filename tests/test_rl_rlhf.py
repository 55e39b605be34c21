"""RLHF PPO math for language models against hand-computed values: per-token rewards, GAE on tokens,
KL controllers, whitening, fine-grained segment rewards, the Safe RLHF Lagrangian."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit.rl import (
    FixedKLController,
    ProportionalKLController,
    lagrange_update,
    safe_advantages,
    segment_rewards,
    token_advantages,
    token_rewards,
    whiten,
)

KL = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.0, 0.0]], dtype=torch.float64)
MASK = torch.tensor([[True, True, True], [True, False, False]])


def test_token_rewards_by_hand():
    scores = torch.tensor([2.0, 1.0], dtype=torch.float64)
    r = token_rewards(scores, KL, MASK, beta=0.5, finished=torch.tensor([True, False]), missing_eos_penalty=1.0)
    # row 0: -β·KL on every token, the score on the last: [-0.05, -0.1, -0.15 + 2]
    # row 1: one token, no EOS: -0.25 + (1 - 1); padding 0
    torch.testing.assert_close(r, torch.tensor([[-0.05, -0.1, 1.85], [-0.25, 0.0, 0.0]], dtype=torch.float64))
    dense = torch.tensor([[0.0, 0.5, 0.0], [9.0, 9.0, 9.0]], dtype=torch.float64)
    r = token_rewards(scores, KL, MASK, beta=0.0, dense=dense)
    torch.testing.assert_close(r, torch.tensor([[0.0, 0.5, 2.0], [10.0, 0.0, 0.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="finished"):
        token_rewards(scores, KL, MASK, beta=0.1, missing_eos_penalty=1.0)
    with pytest.raises(ValueError, match="beta"):
        token_rewards(scores, KL, MASK, beta=-1.0)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        token_rewards(scores[:1], KL, MASK, beta=0.1)


def test_gae_on_tokens_by_hand():
    rewards = torch.tensor([[-0.05, -0.1, 1.85], [-0.25, 7.0, 7.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 0.6, 0.7], [0.2, 5.0, 5.0]], dtype=torch.float64)
    adv, ret = token_advantages(rewards, values, MASK, gamma=1.0, gae_lambda=0.95)
    # row 0: δ = [-0.05 + 0.6 - 0.5, -0.1 + 0.7 - 0.6, 1.85 + 0 - 0.7] = [0.05, 0.0, 1.15]
    # A2 = 1.15, A1 = 0 + 0.95 · 1.15 = 1.0925, A0 = 0.05 + 0.95 · 1.0925 = 1.087875
    # row 1: a single token, terminal: A = -0.25 - 0.2 = -0.45; padding (its 7s and 5s) ignored
    torch.testing.assert_close(adv, torch.tensor([[1.087875, 1.0925, 1.15], [-0.45, 0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(ret, torch.tensor([[1.587875, 1.6925, 1.85], [-0.25, 0.0, 0.0]], dtype=torch.float64))


def test_whiten_masked():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, -100.0]], dtype=torch.float64)
    w = whiten(x, MASK)
    # masked entries 1, 2, 3, 4: mean 2.5, unbiased std sqrt(5/3)
    expected = torch.tensor([[-1.5, -0.5, 0.5], [1.5, 0.0, 0.0]], dtype=torch.float64) / math.sqrt(5 / 3)
    torch.testing.assert_close(w, expected, atol=1e-7, rtol=0)
    torch.testing.assert_close(whiten(x, MASK, shift_mean=False)[0, 0], torch.tensor(-1.5 / math.sqrt(5 / 3) + 2.5,
                                                                                     dtype=torch.float64), atol=1e-7,
                               rtol=0)


def test_proportional_controller_is_zieglers_formula():
    ctl = ProportionalKLController(beta=0.1, target=6.0, horizon=10_000)
    # KL 9: e = clip(9/6 - 1, -0.2, 0.2) = 0.2 → β · (1 + 0.2 · 256 / 10000)
    assert ctl.update(9.0, n_steps=256) == pytest.approx(0.1 * (1 + 0.2 * 256 / 10_000))
    b = ctl.beta
    # KL 6.6: e = 0.1 (inside the clip)
    assert ctl.update(6.6, n_steps=256) == pytest.approx(b * (1 + 0.1 * 256 / 10_000))
    b = ctl.beta
    # KL 1: e = clip(-5/6) = -0.2
    assert ctl.update(1.0, n_steps=100) == pytest.approx(b * (1 - 0.2 * 100 / 10_000))
    assert ctl.update(6.0, n_steps=100) == pytest.approx(ctl.beta)  # on target: unchanged
    assert FixedKLController(0.3).update(100.0) == 0.3
    with pytest.raises(ValueError):
        ProportionalKLController(target=0.0)


def test_safe_rlhf_advantage_and_lagrange_step():
    ar, ac = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])
    torch.testing.assert_close(safe_advantages(ar, ac, 1.0), torch.tensor([0.25, 1.5]))
    torch.testing.assert_close(safe_advantages(ar, ac, 0.0), ar)
    # cost above the threshold: log λ rises by lr · (J_C - d); below: it falls; clamped at log λ_max
    assert lagrange_update(0.0, 0.3, 0.1, lr=0.5) == pytest.approx(0.1)
    assert lagrange_update(0.0, 0.05, 0.1, lr=0.5) == pytest.approx(-0.025)
    assert lagrange_update(0.0, 0.3, 0.1, lr=0.5, max_lambda=1.05) == pytest.approx(math.log(1.05))
    with pytest.raises(ValueError, match="lambda"):
        safe_advantages(ar, ac, -0.1)
    with pytest.raises(ValueError, match="lr"):
        lagrange_update(0.0, 1.0, 0.0, lr=0.0)


def test_segment_rewards_land_on_each_segments_last_token():
    r = segment_rewards([[1, 3], [0, 0]], [[0.5, -1.0], [2.0, 1.0]], (2, 4))
    torch.testing.assert_close(r, torch.tensor([[0.0, 0.5, 0.0, -1.0], [3.0, 0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="outside"):
        segment_rewards([[4]], [[1.0]], (1, 4))
    with pytest.raises(ValueError, match="scores"):
        segment_rewards([[1, 2]], [[1.0]], (1, 4))
