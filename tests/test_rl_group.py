"""Group advantages (GRPO, Dr. GRPO, RLOO, REINFORCE++) and the GRPO policy loss, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit.rl import aggregate_loss, group_advantages, grpo_token_loss, kl_estimate, sequence_log_ratio

# Two prompts, G = 4: one group with a signal (two right, two wrong), one where all four tie.
REWARDS = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]], dtype=torch.float64)
EPS = 1e-4


def test_grpo_divides_centred_rewards_by_the_group_std():
    # group 1: mean 0.5, unbiased std sqrt((4 · 0.25) / 3) = sqrt(1/3); group 2: std 0 → 0 / eps = 0
    a = 0.5 / (math.sqrt(1 / 3) + EPS)
    expected = torch.tensor([[a, -a, -a, a], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(group_advantages(REWARDS, "grpo", eps=EPS), expected)


def test_dr_grpo_only_centres():
    expected = torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.0] * 4], dtype=torch.float64)
    torch.testing.assert_close(group_advantages(REWARDS, "dr_grpo"), expected)


def test_rloo_subtracts_the_mean_of_the_other_completions():
    # completion 0: 1 - (0 + 0 + 1)/3 = 2/3; completion 1: 0 - (1 + 0 + 1)/3 = -2/3
    expected = torch.tensor([[2 / 3, -2 / 3, -2 / 3, 2 / 3], [0.0] * 4], dtype=torch.float64)
    torch.testing.assert_close(group_advantages(REWARDS, "rloo"), expected)
    # against the definition, on random rewards
    r = torch.randn(5, 6, dtype=torch.float64)
    loo = torch.stack([r[:, i] - (r.sum(1) - r[:, i]) / 5 for i in range(6)], 1)
    torch.testing.assert_close(group_advantages(r, "rloo"), loo)


def test_reinforce_pp_normalises_group_centred_advantages_over_the_batch():
    # centred: [.5, -.5, -.5, .5, 0, 0, 0, 0]; batch mean 0, unbiased std sqrt(4 · 0.25 / 7) = sqrt(1/7)
    a = 0.5 / (math.sqrt(1 / 7) + EPS)
    expected = torch.tensor([[a, -a, -a, a], [0.0] * 4], dtype=torch.float64)
    torch.testing.assert_close(group_advantages(REWARDS, "reinforce_pp", eps=EPS), expected)


def test_scale_overrides_the_estimators_default():
    torch.testing.assert_close(group_advantages(REWARDS, "grpo", scale="none"), group_advantages(REWARDS, "dr_grpo"))
    torch.testing.assert_close(group_advantages(REWARDS, "dr_grpo", scale="batch", eps=EPS),
                               group_advantages(REWARDS, "reinforce_pp", eps=EPS))
    rloo_group = group_advantages(REWARDS, "rloo", scale="group", eps=EPS)
    torch.testing.assert_close(rloo_group[0], torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3], dtype=torch.float64)
                               / (math.sqrt(1 / 3) + EPS))


def test_group_advantages_errors():
    with pytest.raises(ValueError, match="G >= 2"):
        group_advantages(torch.ones(3, 1))
    with pytest.raises(ValueError, match="G >= 2"):
        group_advantages(torch.ones(4))
    with pytest.raises(ValueError, match="unknown group estimator"):
        group_advantages(REWARDS, "ppo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scale"):
        group_advantages(REWARDS, scale="prompt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        group_advantages(torch.tensor([[1.0, float("nan")]]))


# ----------------------------------------------------------------------------------------------
# Loss aggregation
# ----------------------------------------------------------------------------------------------

LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
MASK = torch.tensor([[True, True, True], [True, False, False]])


def test_aggregations_by_hand():
    # the 9s are padding: masked out. token_mean: (1+2+3+4)/4; sequence_mean: (6/3 + 4/1)/2; constant: 10/(2·3)
    assert aggregate_loss(LOSS, MASK, "token_mean").item() == pytest.approx(2.5)
    assert aggregate_loss(LOSS, MASK, "sequence_mean").item() == pytest.approx(3.0)
    assert aggregate_loss(LOSS, MASK, "constant", max_completion_length=3).item() == pytest.approx(10 / 6)
    assert aggregate_loss(LOSS, MASK, "constant", max_completion_length=5).item() == pytest.approx(1.0)


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean", "constant"])
def test_micro_batches_with_global_normalisers_add_up_to_the_whole_batch(aggregation):
    loss, mask = torch.rand(6, 5), torch.rand(6, 5) > 0.3
    mask[:, 0] = True
    whole = aggregate_loss(loss, mask, aggregation, max_completion_length=5)
    parts = sum(aggregate_loss(loss[i:i + 2], mask[i:i + 2], aggregation, n_tokens=float(mask.sum()), n_sequences=6,
                               max_completion_length=5) for i in range(0, 6, 2))
    torch.testing.assert_close(parts, whole)


def test_aggregation_errors():
    with pytest.raises(ValueError, match="max_completion_length"):
        aggregate_loss(LOSS, MASK, "constant")
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate_loss(LOSS, MASK, "sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        aggregate_loss(LOSS, MASK[:, :2])


# ----------------------------------------------------------------------------------------------
# The per-token GRPO loss
# ----------------------------------------------------------------------------------------------


def _lp(*probs: float) -> torch.Tensor:
    return torch.tensor([probs], dtype=torch.float64).log()


def test_token_loss_clips_symmetrically_and_with_clip_higher():
    old, new, mask = _lp(0.4, 0.4), _lp(0.5, 0.28), torch.tensor([[True, True]])
    # token 0: ρ = 1.25, A = +1 → -min(1.25, 1.2) = -1.2 (ε = .2) or -1.25 (ε_high = .28: 1.25 < 1.28)
    # token 1: ρ = 0.7,  A = -1 → -min(-0.7, -0.8) = 0.8 (the low clip binds)
    adv = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    loss, m = grpo_token_loss(new, old, adv, mask, clip_range=0.2)
    torch.testing.assert_close(loss, torch.tensor([[-1.2, 0.8]], dtype=torch.float64))
    assert m["policy/clip_fraction"].item() == pytest.approx(1.0)
    assert m["policy/clip_low_fraction"].item() == pytest.approx(0.5)
    assert m["policy/clip_high_fraction"].item() == pytest.approx(0.5)
    loss, m = grpo_token_loss(new, old, adv, mask, clip_range=0.2, clip_range_high=0.28)
    torch.testing.assert_close(loss, torch.tensor([[-1.25, 0.8]], dtype=torch.float64))
    assert m["policy/clip_high_fraction"].item() == 0.0


def test_sequence_level_ratio_is_gspos_geometric_mean():
    old, new = _lp(0.5, 0.5, 0.5), _lp(0.55, 0.65, 0.9)
    mask = torch.tensor([[True, True, False]])  # the third token is padding
    s = math.sqrt(1.1 * 1.3)  # exp(mean(log 1.1, log 1.3)) = 1.19583
    assert sequence_log_ratio(new, old, mask).exp().item() == pytest.approx(s)
    adv = torch.tensor([1.0], dtype=torch.float64)
    loss, _ = grpo_token_loss(new, old, adv, mask, clip_range=0.2, ratio_level="sequence")
    torch.testing.assert_close(loss, torch.tensor([[-s, -s, 0.0]], dtype=torch.float64))
    loss, m = grpo_token_loss(new, old, adv, mask, clip_range=0.1, ratio_level="sequence")
    torch.testing.assert_close(loss, torch.tensor([[-1.1, -1.1, 0.0]], dtype=torch.float64))
    assert m["policy/clip_fraction"].item() == 1.0


def test_kl_term_is_beta_times_the_estimator_per_token():
    lp, ref, mask = _lp(0.5, 0.2), _lp(0.25, 0.4), torch.tensor([[True, True]])
    adv = torch.zeros(1, dtype=torch.float64)
    for est in ("k1", "k2", "k3"):
        loss, m = grpo_token_loss(lp, lp, adv, mask, ref_logprobs=ref, beta=0.1, kl_estimator=est)
        kl = kl_estimate(lp, ref, est)
        torch.testing.assert_close(loss, 0.1 * kl)
        assert m["policy/kl"].item() == pytest.approx(kl.mean().item())
    # k3 by hand for token 0: r = 0.25/0.5 = 0.5 → (0.5 - 1) - log 0.5 = 0.193147
    assert kl_estimate(lp, ref, "k3")[0, 0].item() == pytest.approx(-0.5 + math.log(2))


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean", "constant"])
@pytest.mark.parametrize("ratio_level", ["token", "sequence"])
def test_with_one_step_the_gradient_is_the_plain_policy_gradient(aggregation, ratio_level):
    torch.manual_seed(0)
    logits = torch.randn(4, 6, 7, dtype=torch.float64, requires_grad=True)  # (B, T, V)
    tokens = torch.randint(0, 7, (4, 6))
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 4:] = False
    mask[3, 2:] = False
    adv = torch.tensor([1.5, -0.5, 0.25, -2.0], dtype=torch.float64)

    def logprobs() -> torch.Tensor:
        return logits.log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)  # (B, T)

    lp = logprobs()
    loss, _ = grpo_token_loss(lp, lp.detach(), adv, mask, ratio_level=ratio_level)
    (grad,) = torch.autograd.grad(aggregate_loss(loss, mask, aggregation, max_completion_length=6), logits)
    lp = logprobs()
    if ratio_level == "token":
        pg = -adv[:, None] * lp  # -A ∇log π per token
    else:  # GSPO: ∇s_i = ∇ mean_t log π(y_{i,t}) at s_i = 1
        pg = -adv[:, None] * lp.masked_fill(~mask, 0).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True) \
            * torch.ones_like(lp)
    (expected,) = torch.autograd.grad(aggregate_loss(pg * mask, mask, aggregation, max_completion_length=6), logits)
    torch.testing.assert_close(grad, expected)
    assert grad.abs().sum() > 0


def test_token_loss_errors():
    lp, mask = _lp(0.5, 0.5), torch.tensor([[True, True]])
    adv = torch.ones(1, dtype=torch.float64)
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_token_loss(lp, lp, adv, mask, beta=0.1)
    with pytest.raises(ValueError, match="beta"):
        grpo_token_loss(lp, lp, adv, mask, ref_logprobs=lp, beta=-1.0)
    with pytest.raises(ValueError, match="advantages"):
        grpo_token_loss(lp, lp, torch.ones(3), mask)
    with pytest.raises(ValueError, match="ratio_level"):
        grpo_token_loss(lp, lp, adv, mask, ratio_level="group")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clip_range"):
        grpo_token_loss(lp, lp, adv, mask, clip_range_high=0.0)


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo", "reinforce_pp"])
def test_equal_rewards_give_exactly_zero_advantages(estimator):
    # seven rewards of 0.1 have a floating-point mean 1.4e-17 off 0.1: that must not leak a tiny advantage
    r = torch.tensor([[0.1] * 7, [0.1, 0.7, 0.3, 0.3, 0.3, 0.3, 0.3]], dtype=torch.float64)
    assert (r[0] - r[0].mean()).abs().max() > 0  # the rounding this test is about
    a = group_advantages(r, estimator)
    assert (a[0] == 0).all() and (a[1] != 0).any()
