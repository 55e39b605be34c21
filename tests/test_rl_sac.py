"""SAC's losses and the k-NN state entropy against hand-computed values; the replay buffer; an agent that learns."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from rlhfkit.control.sac import ReplayBuffer, SACAgent, SACConfig, StateEntropyReward
from rlhfkit.rl.sac import (
    knn_state_entropy,
    sac_actor_loss,
    sac_critic_loss,
    sac_target,
    sac_temperature_loss,
    soft_update,
    tanh_gaussian_sample,
)


def test_tanh_gaussian_logprob_equals_the_change_of_variables():
    torch.manual_seed(0)
    mean, log_std = torch.randn(64, 3) * 2, torch.randn(64, 3) * 0.5
    a, lp = tanh_gaussian_sample(mean, log_std, generator=torch.Generator().manual_seed(1))
    ref = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform(cache_size=1)])  # torch's own
    u = torch.atanh(a.clamp(-1 + 1e-6, 1 - 1e-6))
    expected = Normal(mean, log_std.exp()).log_prob(u).sum(-1) - torch.log1p(-a.pow(2) + 1e-12).sum(-1)
    keep = a.abs().max(-1).values < 0.999  # atanh is ill-conditioned at the edges
    torch.testing.assert_close(lp[keep], expected[keep], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(lp[keep], ref.log_prob(a).sum(-1)[keep], rtol=1e-3, atol=1e-3)
    det, _ = tanh_gaussian_sample(mean, log_std, deterministic=True)
    torch.testing.assert_close(det, torch.tanh(mean))


def test_tanh_gaussian_sample_is_reparameterised_and_checks_shapes():
    mean = torch.zeros(4, 2, requires_grad=True)
    a, lp = tanh_gaussian_sample(mean, torch.zeros(4, 2))
    (a.sum() + lp.sum()).backward()
    assert mean.grad is not None and mean.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="share one shape"):
        tanh_gaussian_sample(torch.zeros(4, 2), torch.zeros(4, 3))


def test_soft_bellman_target_by_hand():
    one = lambda x: torch.tensor([x], dtype=torch.float32)  # noqa: E731
    # y = r + γ (1 - d) (min(Q1', Q2') - α log π') = 1 + 0.9 (2 - 0.2 · 0.5) = 2.71
    y = sac_target(one(1.0), one(2.0), one(3.0), one(0.5), one(0.0), alpha=0.2, gamma=0.9)
    torch.testing.assert_close(y, one(2.71))
    y = sac_target(one(1.0), one(2.0), one(3.0), one(0.5), torch.tensor([True]), alpha=0.2, gamma=0.9)
    torch.testing.assert_close(y, one(1.0))  # a true termination does not bootstrap
    with pytest.raises(ValueError, match="gamma"):
        sac_target(one(1.0), one(2.0), one(3.0), one(0.5), one(0.0), alpha=0.2, gamma=1.5)
    with pytest.raises(ValueError, match="share one shape"):
        sac_target(one(1.0), torch.zeros(2), one(3.0), one(0.5), one(0.0), alpha=0.2)


def test_critic_actor_and_temperature_losses_by_hand():
    t = lambda *x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    # ½ mean((Q1 - y)²) + ½ mean((Q2 - y)²) = ½ (0 + 1)/2 + ½ (1 + 1)/2 = 0.75
    torch.testing.assert_close(sac_critic_loss(t(1, 2), t(0, 0), t(1, 1)), torch.tensor(0.75))
    # mean(α log π - min Q) with α = 0.5: (0.5 - 1, -0.5 - 0) → -0.5
    torch.testing.assert_close(sac_actor_loss(t(2, 0), t(1, 3), t(1, -1), 0.5), torch.tensor(-0.5))
    # entropy below target (log π = 2 > -H̄ = 1): the gradient step raises α
    log_alpha = torch.tensor(0.0, requires_grad=True)
    sac_temperature_loss(log_alpha, t(2.0), target_entropy=-1.0).backward()
    assert log_alpha.grad == pytest.approx(-1.0)
    log_alpha.grad = None
    sac_temperature_loss(log_alpha, t(0.0), target_entropy=-1.0).backward()  # entropy above target
    assert log_alpha.grad == pytest.approx(1.0)


def test_soft_update_is_polyak_averaging():
    src, dst = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        src.weight.fill_(1.0), dst.weight.fill_(3.0)
    soft_update(dst, src, 0.25)
    torch.testing.assert_close(dst.weight, torch.full((1, 2), 2.5))  # 0.25 · 1 + 0.75 · 3
    with pytest.raises(ValueError):
        soft_update(dst, src, 1.5)


def test_knn_state_entropy_by_hand():
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    # the first column of distances is each point to itself (0): k-th neighbour is the (k+1)-th smallest
    torch.testing.assert_close(knn_state_entropy(x, x, k=1), torch.tensor([1.0, 1.0, 2.0, 3.0]))
    torch.testing.assert_close(knn_state_entropy(x, x, k=2), torch.tensor([3.0, 2.0, 3.0, 5.0]))
    torch.testing.assert_close(knn_state_entropy(x, x, k=2, chunk=3), torch.tensor([3.0, 2.0, 3.0, 5.0]))
    with pytest.raises(ValueError, match="more than k"):
        knn_state_entropy(x, x, k=4)


def test_state_entropy_reward_divides_by_the_running_std():
    rew = StateEntropyReward(k=1)
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    d = torch.tensor([1.0, 1.0, 2.0, 3.0])
    torch.testing.assert_close(rew(x, x), d / d.std(unbiased=False))
    rew(x * 2, x * 2)  # a second batch: distances 2, 2, 4, 6 join the statistics, then the third call's
    both = torch.cat([d, 2 * d, d])
    torch.testing.assert_close(rew(x, x), d / both.std(unbiased=False), rtol=1e-5, atol=1e-6)


def test_replay_buffer_order_wraparound_and_relabel():
    buf = ReplayBuffer(capacity=6, n_envs=2, obs_dim=1, act_dim=1)  # 3 vector steps
    for t in range(5):
        buf.add(obs=np.full((2, 1), t), actions=np.zeros((2, 1)), env_actions=np.full((2, 1), 10 + t),
                next_obs=np.zeros((2, 1)), true_rewards=np.full(2, t), rewards=np.zeros(2),
                terminated=np.zeros(2), episode_end=np.array([t == 2, False]))
    assert len(buf) == 6 and buf.steps == 3
    tr = buf.trajectories()
    assert tr.obs[:, 0, 0].tolist() == [2, 3, 4]  # oldest first after the wrap
    assert tr.episode_end[:, 0].tolist() == [True, False, True] and tr.episode_end[:, 1].tolist() == [False, False, True]
    assert buf.trajectories(last_steps=2).obs[:, 1, 0].tolist() == [3, 4]
    buf.relabel(lambda o, a: o[:, 0] + a[:, 0], chunk=4)
    assert sorted(buf.flat("rewards").tolist()) == [14.0, 14.0, 16.0, 16.0, 18.0, 18.0]  # o + (10 + o)
    batch = buf.sample(32, torch.Generator().manual_seed(0))
    assert batch["obs"].shape == (32, 1) and batch["rewards"].shape == (32,)
    torch.testing.assert_close(batch["rewards"], 2 * batch["obs"][:, 0] + 10)


def test_sac_agent_refuses_discrete_actions():
    with pytest.raises(ValueError, match="--algo ppo"):
        SACAgent(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2))


def test_sac_learns_the_best_action_of_a_one_step_task():
    """Reward -(a - 0.5)² after one step (terminated): the deterministic action must move to 0.5."""
    obs_space, act_space = gym.spaces.Box(-1, 1, (2,)), gym.spaces.Box(-2.0, 2.0, (1,))
    agent = SACAgent(obs_space, act_space, SACConfig(batch_size=64, hidden_sizes=(32, 32), actor_lr=3e-3,
                                                      critic_lr=3e-3, alpha_lr=3e-3, init_temperature=0.01), seed=0)
    buf = ReplayBuffer(4096, 1, 2, 1)
    rng = np.random.default_rng(0)
    for step in range(1500):
        o = rng.uniform(-1, 1, (1, 2)).astype(np.float32)
        a, env_a = agent.random_actions(1) if step < 200 else agent.sample_actions(o)
        buf.add(obs=o, actions=a, env_actions=env_a, next_obs=o, true_rewards=-(env_a[:, 0] - 0.5) ** 2,
                rewards=-(env_a[:, 0] - 0.5) ** 2, terminated=np.ones(1), episode_end=np.ones(1))
        if step >= 200:
            agent.update(buf.sample(64, agent.generator))
    best = agent.act(rng.uniform(-1, 1, (16, 2)).astype(np.float32), deterministic=True)
    assert np.abs(best - 0.5).max() < 0.15, best.ravel()
    assert math.isfinite(float(agent.alpha))


def _filled(capacity: int, n_envs: int, steps: int, ends: dict[int, list[bool]]) -> ReplayBuffer:
    """A buffer whose obs at vector step t is t, with the episode ends given per step."""
    buf = ReplayBuffer(capacity=capacity * n_envs, n_envs=n_envs, obs_dim=1, act_dim=1)
    for t in range(steps):
        buf.add(obs=np.full((n_envs, 1), t), actions=np.zeros((n_envs, 1)), env_actions=np.zeros((n_envs, 1)),
                next_obs=np.zeros((n_envs, 1)), true_rewards=np.zeros(n_envs), rewards=np.zeros(n_envs),
                terminated=np.zeros(n_envs), episode_end=np.array(ends.get(t, [False] * n_envs)))
    return buf


def test_recent_steps_is_qpas_policy_aligned_window():
    # one env, episodes of 10 steps ending at 9, 19, 29, 39; 45 steps stored (the 5th episode is running)
    buf = _filled(100, 1, 45, {t: [True] for t in (9, 19, 29, 39)})
    # the last 2 whole episodes start after the 3rd most recent end (step 19): steps 20 … 44
    assert buf.recent_steps(2) == 25
    assert buf.recent_steps(1) == 15  # steps 30 … 44
    assert buf.recent_steps(4) == 45 and buf.recent_steps(9) == 45  # fewer ends than asked: everything
    # two lockstep envs, both ending at 9 and 19, env 1 also at 14: 3 whole episodes need
    # 3 + 2 = 5 ends back from the newest step: 19, 19, 14, 9, 9 → the window starts at step 10
    buf = _filled(100, 2, 25, {9: [True, True], 14: [False, True], 19: [True, True]})
    assert buf.recent_steps(3) == 15
    # after a wrap the window is counted in time order: 8 steps kept of 12, ends at 5 and 9
    buf = _filled(8, 1, 12, {5: [True], 9: [True]})
    assert buf.recent_steps(1) == 6  # after the end at step 5: steps 6 … 11
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        buf.recent_steps(0)


def test_sample_hybrid_draws_its_recent_share_from_the_last_steps():
    buf = _filled(8, 2, 12, {})  # wrapped: steps 4 … 11 stored, the newest at ring slot 3
    g = torch.Generator().manual_seed(0)
    batch = buf.sample_hybrid(10, 3, 0.5, g)  # QPA's her_ratio 0.5: 5 recent, 5 uniform
    assert batch["obs"].shape == (10, 1)
    assert set(batch["obs"][5:, 0].tolist()) <= {9.0, 10.0, 11.0}
    big = buf.sample_hybrid(4000, 3, 0.25, g)["obs"][:, 0]
    assert set(big[3000:].unique().tolist()) == {9.0, 10.0, 11.0}  # every recent step, nothing older
    assert set(big[:3000].unique().tolist()) == set(map(float, range(4, 12)))
    assert buf.sample_hybrid(6, 3, 0.0, g)["obs"].shape == (6, 1)
    with pytest.raises(ValueError, match="recent_frac in"):
        buf.sample_hybrid(6, 3, 1.5, g)


def test_replay_buffer_state_dict_round_trip_and_episode_mark():
    buf = _filled(8, 2, 11, {4: [True, False]})
    state = buf.state_dict()
    assert state["obs"].shape == (8, 2, 1)
    fresh = ReplayBuffer(capacity=16, n_envs=2, obs_dim=1, act_dim=1)
    fresh.load_state_dict(state)
    assert (fresh.pos, fresh.full) == (buf.pos, buf.full)
    for k in ReplayBuffer.FIELDS:
        torch.testing.assert_close(fresh.data[k], buf.data[k])
    fresh.mark_episode_end()
    assert fresh.trajectories().episode_end[-1].tolist() == [True, True]
    assert fresh.data["episode_end"][(fresh.pos - 1) % 8].tolist() == [1.0, 1.0]
    assert fresh.data["terminated"].sum() == 0  # an end, not a termination
    partial = _filled(8, 2, 3, {})
    assert partial.state_dict()["obs"].shape == (3, 2, 1)  # only what is stored
    with pytest.raises(ValueError, match="holds 8 steps × 2 envs"):
        ReplayBuffer(capacity=10, n_envs=1, obs_dim=1, act_dim=1).load_state_dict(state)
