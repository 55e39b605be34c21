"""Tests of rlhfkit.rl: GAE, PPO surrogate/value losses, the adaptive KL controller, KL estimators.

Every expected number is derived by hand in a comment, or computed by a plain Python loop that
follows the paper's equation element by element.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlhfkit.rl import AdaptiveKLController, gae, kl_estimate, masked_mean, ppo_clip_loss, ppo_kl_penalty_loss, value_loss

# --------------------------------------------------------------------------------------------
# GAE
# --------------------------------------------------------------------------------------------


def _gae_loop(rewards, values, next_values, terminated, episode_end, gamma, lam):
    """Schulman et al. 2016 Eq. 16, one float at a time: δ_t then A_t = δ_t + γλ(1-end_t) A_{t+1}."""
    B, T = len(rewards), len(rewards[0])
    adv = [[0.0] * T for _ in range(B)]
    for b in range(B):
        a_next = 0.0
        for t in reversed(range(T)):
            bootstrap = 0.0 if terminated[b][t] else gamma * next_values[b][t]
            delta = rewards[b][t] + bootstrap - values[b][t]
            trace = 0.0 if episode_end[b][t] else gamma * lam * a_next
            a_next = delta + trace
            adv[b][t] = a_next
    ret = [[adv[b][t] + values[b][t] for t in range(T)] for b in range(B)]
    return adv, ret


def _random_rollout(B: int, T: int, seed: int):
    """Random (B, T) rollout with terminations and truncations.

    ``next_values[t]`` is ``values[t+1]`` inside an episode; at a truncation it is the value of
    the true final observation, which differs from ``values[t+1]`` (the auto-reset observation's);
    at a termination it is arbitrary (GAE must ignore it).
    """
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64)
    values = torch.randn(B, T, generator=g, dtype=torch.float64)
    u = torch.rand(B, T, generator=g, dtype=torch.float64)
    terminated = u < 0.1
    truncated = (u >= 0.1) & (u < 0.2)
    episode_end = terminated | truncated
    next_values = torch.cat([values[:, 1:], torch.randn(B, 1, generator=g, dtype=torch.float64)], dim=1)
    final_values = 10.0 + torch.randn(B, T, generator=g, dtype=torch.float64)  # clearly not values[t+1]
    next_values = torch.where(episode_end, final_values, next_values)
    assert terminated.any() and truncated.any()
    return rewards, values, next_values, terminated, episode_end


@pytest.mark.parametrize("gamma,lam,seed", [(0.99, 0.95, 0), (0.9, 0.5, 1), (1.0, 1.0, 2), (0.8, 0.0, 3)])
def test_gae_matches_plain_double_loop(gamma, lam, seed):
    r, v, nv, term, end = _random_rollout(4, 37, seed)
    adv, ret = gae(r, v, nv, term, end, gamma=gamma, gae_lambda=lam)
    ref_adv, ref_ret = _gae_loop(r.tolist(), v.tolist(), nv.tolist(), term.tolist(), end.tolist(), gamma, lam)
    torch.testing.assert_close(adv, torch.tensor(ref_adv, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ret, torch.tensor(ref_ret, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_gae_ignores_next_value_of_terminated_steps_but_uses_truncated_ones():
    r, v, nv, term, end = _random_rollout(3, 40, seed=7)
    truncated = end & ~term
    adv, _ = gae(r, v, nv, term, end, gamma=0.99, gae_lambda=0.95)
    adv_term, _ = gae(r, v, torch.where(term, nv + 100.0, nv), term, end, gamma=0.99, gae_lambda=0.95)
    torch.testing.assert_close(adv_term, adv, rtol=0, atol=0)
    adv_trunc, _ = gae(r, v, torch.where(truncated, nv + 100.0, nv), term, end, gamma=0.99, gae_lambda=0.95)
    # a truncated step's δ_t grows by γ·100 = 99
    torch.testing.assert_close((adv_trunc - adv)[truncated], torch.full_like(adv[truncated], 99.0))


def test_gae_hand_computed_three_steps_with_truncation():
    # γ = λ = 0.5; step 1 is truncated (bootstraps from the final obs' value 4, not values[2] = 1.5),
    # step 2 is terminated (no bootstrap).
    # δ0 = 1 + 0.5·1 - 0.5 = 1.0; δ1 = 2 + 0.5·4 - 1 = 3.0; δ2 = 3 + 0 - 1.5 = 1.5
    # A2 = 1.5; A1 = 3.0 (trace cut at the episode end); A0 = 1.0 + 0.25·3.0 = 1.75
    # R = A + V = [2.25, 4.0, 3.0]
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, 1.0, 1.5]])
    next_values = torch.tensor([[1.0, 4.0, 2.0]])
    terminated = torch.tensor([[False, False, True]])
    episode_end = torch.tensor([[False, True, True]])
    adv, ret = gae(rewards, values, next_values, terminated, episode_end, gamma=0.5, gae_lambda=0.5)
    torch.testing.assert_close(adv, torch.tensor([[1.75, 3.0, 1.5]]))
    torch.testing.assert_close(ret, torch.tensor([[2.25, 4.0, 3.0]]))


def test_gae_lambda_zero_is_one_step_td():
    r, v, nv, term, end = _random_rollout(3, 20, seed=11)
    adv, ret = gae(r, v, nv, term, end, gamma=0.9, gae_lambda=0.0)
    td = r + 0.9 * (~term).double() * nv - v
    torch.testing.assert_close(adv, td)
    torch.testing.assert_close(ret, r + 0.9 * (~term).double() * nv)


def test_gae_lambda_one_gamma_one_is_monte_carlo_return_minus_value():
    # Every episode ends in a termination (also the rollout's last step), and inside an episode
    # V(s_{t+1}) is the next step's value, so with γ = λ = 1 the sum Σ δ telescopes: the return is
    # the plain sum of the episode's remaining rewards and A_t = G_t - V(s_t).
    g = torch.Generator().manual_seed(5)
    B, T = 2, 15
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64)
    values = torch.randn(B, T, generator=g, dtype=torch.float64)
    next_values = torch.cat([values[:, 1:], torch.randn(B, 1, generator=g, dtype=torch.float64)], dim=1)
    terminated = torch.zeros(B, T, dtype=torch.bool)
    terminated[0, [4, 9, 14]] = True
    terminated[1, [0, 14]] = True
    adv, ret = gae(rewards, values, next_values, terminated, terminated.clone(), gamma=1.0, gae_lambda=1.0)
    mc = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        running = 0.0
        for t in reversed(range(T)):
            running = rewards[b, t].item() + (0.0 if terminated[b, t] else running)
            mc[b, t] = running
    torch.testing.assert_close(ret, mc)
    torch.testing.assert_close(adv, mc - values)


def test_gae_shape_and_range_errors():
    x = torch.zeros(2, 5)
    flags = torch.zeros(2, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"next_values has shape \(2, 4\)"):
        gae(x, x, torch.zeros(2, 4), flags, flags)
    with pytest.raises(ValueError, match=r"episode_end has shape \(5,\)"):
        gae(x, x, x, flags, torch.zeros(5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"expects \(B, T\)"):
        gae(torch.zeros(5), torch.zeros(5), torch.zeros(5), torch.zeros(5, dtype=torch.bool),
            torch.zeros(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="gamma and gae_lambda"):
        gae(x, x, x, flags, flags, gamma=1.5)
    with pytest.raises(ValueError, match="gamma and gae_lambda"):
        gae(x, x, x, flags, flags, gae_lambda=-0.1)


# --------------------------------------------------------------------------------------------
# PPO losses
# --------------------------------------------------------------------------------------------

# ε = 0.2. Five samples, ratio ρ and advantage A:
#   0: ρ=1.1, A=+2 (inside the clip):       L = -min(2.2, 2.2)        = -2.2, dL/dlogρ = -ρA = -2.2
#   1: ρ=1.5, A=+2 (above, clipped):        L = -min(3.0, 1.2·2=2.4)  = -2.4, gradient 0
#   2: ρ=1.5, A=-2 (above, pessimistic):    L = -min(-3.0, -2.4)      =  3.0, dL/dlogρ = -ρA = 3.0
#   3: ρ=0.5, A=-2 (below, clipped):        L = -min(-1.0, 0.8·-2)    =  1.6, gradient 0
#   4: ρ=0.5, A=+2 (below, pessimistic):    L = -min(1.0, 1.6)        = -1.0, dL/dlogρ = -ρA = -1.0
# clip_fraction = #{|ρ-1| > 0.2} / 5 = 4/5; approx_kl = mean((ρ-1) - log ρ).
RATIOS = [1.1, 1.5, 1.5, 0.5, 0.5]
ADVS = [2.0, 2.0, -2.0, -2.0, 2.0]


def _clip_inputs():
    old = torch.tensor([-1.0, -0.3, -2.0, -0.7, -1.2], dtype=torch.float64)
    logprobs = (old + torch.log(torch.tensor(RATIOS, dtype=torch.float64))).requires_grad_(True)
    return logprobs, old, torch.tensor(ADVS, dtype=torch.float64)


def test_ppo_clip_loss_hand_values_and_gradient_zero_when_clipped():
    logprobs, old, adv = _clip_inputs()
    loss, metrics = ppo_clip_loss(logprobs, old, adv, clip_range=0.2)
    torch.testing.assert_close(loss.detach(), torch.tensor([-2.2, -2.4, 3.0, 1.6, -1.0], dtype=torch.float64))
    loss.sum().backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([-2.2, 0.0, 3.0, 0.0, -1.0], dtype=torch.float64))
    assert metrics["policy/clip_fraction"].item() == pytest.approx(0.8)
    expected_kl = np.mean([(r - 1) - math.log(r) for r in RATIOS])
    assert metrics["policy/approx_kl"].item() == pytest.approx(expected_kl, rel=1e-9)
    assert not metrics["policy/clip_fraction"].requires_grad


def test_ppo_clip_loss_mask_restricts_metrics():
    logprobs, old, adv = _clip_inputs()
    mask = torch.tensor([True, True, False, False, False])
    _, metrics = ppo_clip_loss(logprobs, old, adv, clip_range=0.2, mask=mask)
    assert metrics["policy/clip_fraction"].item() == pytest.approx(0.5)  # sample 0 inside, sample 1 outside
    # masked_mean: (x · m).sum() / m.sum()
    assert masked_mean(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([True, True, False])).item() == 2.0


def test_ppo_clip_loss_errors():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="share one shape"):
        ppo_clip_loss(x, torch.zeros(4), x)
    with pytest.raises(ValueError, match="clip_range must be > 0"):
        ppo_clip_loss(x, x, x, clip_range=0.0)


def test_ppo_kl_penalty_loss_value():
    # ρ = 1.5, A = 2, β = 0.5: KL_k3 = (1.5 - 1) - ln 1.5 = 0.0945348919...
    # L = -(ρA - β·KL) = -(3.0 - 0.5·0.0945349) = -2.9527325540...
    old = torch.tensor([-1.0], dtype=torch.float64)
    logprobs = old + math.log(1.5)
    loss, metrics = ppo_kl_penalty_loss(logprobs, old, torch.tensor([2.0], dtype=torch.float64), beta=0.5)
    kl = 0.5 - math.log(1.5)
    assert loss.item() == pytest.approx(-(3.0 - 0.5 * kl), rel=1e-12)
    assert metrics["policy/approx_kl"].item() == pytest.approx(kl, rel=1e-12)
    assert metrics["policy/kl_beta"].item() == 0.5
    with pytest.raises(ValueError, match="beta must be >= 0"):
        ppo_kl_penalty_loss(logprobs, old, old, beta=-1.0)


def test_value_loss_with_and_without_clipping():
    values = torch.tensor([1.0, 3.0])
    old_values = torch.tensor([0.0, 2.5])
    returns = torch.tensor([2.0, 2.0])
    # unclipped: ½(1-2)² = 0.5, ½(3-2)² = 0.5
    torch.testing.assert_close(value_loss(values, old_values, returns), torch.tensor([0.5, 0.5]))
    # c = 0.2: V_clip = [0 + 0.2, 2.5 + 0.2] = [0.2, 2.7]; (V_clip - R)² = [3.24, 0.49]
    # ½ max((V-R)², (V_clip-R)²) = [½·3.24, ½·1] = [1.62, 0.5]
    torch.testing.assert_close(value_loss(values, old_values, returns, clip_range_vf=0.2), torch.tensor([1.62, 0.5]))
    with pytest.raises(ValueError, match="share one shape"):
        value_loss(values, old_values, torch.zeros(3))


def test_adaptive_kl_controller_halves_doubles_and_holds():
    ctl = AdaptiveKLController(beta=1.0, target=0.01)
    assert ctl.update(0.001) == 0.5  # 0.001 < 0.01 / 1.5 → halve
    assert ctl.update(0.0001) == 0.25
    assert ctl.update(0.01) == 0.25  # within [target/1.5, 1.5·target] → unchanged
    assert ctl.update(0.0070) == 0.25  # 0.0070 > 0.00667 → unchanged
    assert ctl.update(0.02) == 0.5  # 0.02 > 0.015 → double
    assert ctl.update(0.5) == 1.0
    assert ctl.beta == 1.0


# --------------------------------------------------------------------------------------------
# KL estimators
# --------------------------------------------------------------------------------------------


def test_kl_estimate_hand_values():
    # log r = log p - log q. Sample 0: r = 2, sample 1: r = 1/2.
    # k1 = -log r = [-ln2, ln2]; k2 = ½(log r)² = ½ ln²2 for both; k3 = (r-1) - log r = [1 - ln2, -½ + ln2]
    logq = torch.tensor([math.log(0.25), math.log(0.5)], dtype=torch.float64)
    logp = torch.tensor([math.log(0.5), math.log(0.25)], dtype=torch.float64)
    ln2 = math.log(2.0)
    torch.testing.assert_close(kl_estimate(logq, logp, "k1"), torch.tensor([-ln2, ln2], dtype=torch.float64))
    torch.testing.assert_close(kl_estimate(logq, logp, "k2"), torch.tensor([0.5 * ln2**2] * 2, dtype=torch.float64))
    torch.testing.assert_close(kl_estimate(logq, logp, "k3"), torch.tensor([1 - ln2, -0.5 + ln2], dtype=torch.float64))
    torch.testing.assert_close(kl_estimate(logq, logp), kl_estimate(logq, logp, "k1"))  # default is k1


def test_kl_estimate_k3_is_non_negative():
    g = torch.Generator().manual_seed(0)
    logq = torch.randn(10_000, generator=g, dtype=torch.float64) * 5
    logp = torch.randn(10_000, generator=g, dtype=torch.float64) * 5
    k3 = kl_estimate(logq, logp, "k3")
    assert (k3 >= 0).all()
    # and k3 = 0 exactly when the two distributions agree on the sample
    assert kl_estimate(logq, logq, "k3").abs().max().item() == 0.0


def test_kl_estimate_errors():
    with pytest.raises(ValueError, match="differ"):
        kl_estimate(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="unknown KL estimator 'k4'"):
        kl_estimate(torch.zeros(3), torch.zeros(3), "k4")  # type: ignore[arg-type]


def test_kl_estimators_k1_k3_unbiased_k2_biased_on_categoricals():
    # q = (0.5, 0.3, 0.2), p = (0.2, 0.3, 0.5):
    # KL[q ‖ p] = 0.5 ln 2.5 + 0.3 ln 1 + 0.2 ln 0.4 = 0.3 ln 2.5 = 0.27489...
    q = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    p = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    exact = float((q * (q / p).log()).sum())
    assert exact == pytest.approx(0.3 * math.log(2.5))
    n = 200_000
    x = torch.multinomial(q, n, replacement=True, generator=torch.Generator().manual_seed(0))
    logq, logp = q.log()[x], p.log()[x]
    for name in ("k1", "k3"):
        k = kl_estimate(logq, logp, name)
        # 4 standard errors of the sample mean (sd(k1) ≈ 0.72, SE ≈ 0.0016 at n = 2e5): a false
        # failure has probability ≈ 6e-5.
        se = k.std().item() / math.sqrt(n)
        assert abs(k.mean().item() - exact) < 4 * se, name
    # k2 estimates ½ E[(log r)²] = ½ · 0.7 · ln² 2.5 = 0.2938, biased by 0.019 ≈ 40 standard
    # errors: the check above has the power to tell a biased estimator apart.
    k2 = kl_estimate(logq, logp, "k2")
    assert abs(k2.mean().item() - exact) > 10 * k2.std().item() / math.sqrt(n)
