"""Tests of rlhfkit.control.diagnose: the learned-vs-true reward agreement check (``rlhf control eval --reward-check``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.control import PPOConfig, make_config, make_env, train, train_baseline
from rlhfkit.control.diagnose import agreement_stats, load_reward_model, reward_agreement
from rlhfkit.control.loop import load_agent
from rlhfkit.reward import RewardEnsemble


def test_agreement_stats_against_hand_computed_correlations():
    # one episode of 6 steps; windows of 2: true sums (1, 1, 2), learned sums (1, 2, 0)
    true = [np.array([1.0, 0, 0, 1, 1, 1])]
    learned = [np.array([0.0, 1, 1, 1, 0, 0])]
    a = agreement_stats(learned, true, window=2)
    # per step: cov = -1/6·6… by hand: Σ(t-2/3)(l-1/2) = -1, Σ(t-2/3)² = 4/3, Σ(l-1/2)² = 3/2 → -1/√2
    assert a.step_corr == pytest.approx(-1 / math.sqrt(2))
    # per window: deviations (-1/3, -1/3, 2/3) and (0, 1, -1): -1 / √(2/3 · 2) = -√3/2
    assert a.window_corr == pytest.approx(-math.sqrt(3) / 2)
    assert a.true_returns == [4.0] and a.learned_returns == [3.0] and a.steps == 6 and a.window == 2
    # an affine r̂ agrees perfectly; the remainder of an episode shorter than a window is left out of windows
    b = agreement_stats([2 * t + 1 for t in true + [np.array([3.0, 5, 4])]], true + [np.array([3.0, 5, 4])], 2)
    assert b.step_corr == pytest.approx(1.0) and b.window_corr == pytest.approx(1.0)
    assert b.learned_returns == [14.0, 27.0]
    # a constant side has no correlation
    assert math.isnan(agreement_stats([np.ones(4)], [np.arange(4.0)], 2).step_corr)


@pytest.mark.parametrize("learned, true, window, match", [
    ([], [], 2, "one learned and one true"),
    ([np.ones(3)], [np.ones(3), np.ones(3)], 2, "one learned and one true"),
    ([np.ones(3)], [np.ones(4)], 2, "episode 0"),
    ([np.ones(3)], [np.ones(3)], 0, "window"),
])
def test_agreement_stats_errors(learned, true, window, match):
    with pytest.raises(ValueError, match=match):
        agreement_stats(learned, true, window)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny Pendulum preference run and a true-reward baseline (seconds)."""
    root = tmp_path_factory.mktemp("diag")
    config = make_config("Pendulum-v1", total_steps=768, total_labels=10, fragment_length=20, eval_episodes=1,
                         ppo=PPOConfig(n_envs=2, n_steps=128, batch_size=64, n_epochs=1))
    train(config, str(root / "pref"))
    train_baseline(config, str(root / "base"))
    return root


def test_reward_agreement_scores_the_saved_policy_with_the_saved_normalised_reward_model(runs):
    out = str(runs / "pref")
    a = reward_agreement(out, 2, deterministic=True)
    # the same episodes rolled out here, scored with the checkpoint's reward ensemble built by hand
    config, agent = load_agent(out)
    env = make_env("Pendulum-v1")
    assert agent.evaluate(env, 2, seed=3_000_000) == pytest.approx(a.true_returns)
    model = RewardEnsemble(3, 1, False, config.reward)
    model.load_state_dict(load_file(str(runs / "pref" / "checkpoint" / "reward.safetensors")))
    assert not torch.allclose(model.out_std, torch.ones_like(model.out_std))  # the renormalisation was saved
    want = []
    for ep in range(2):
        obs, _ = env.reset(seed=3_000_000 + ep)
        obs_l, act_l, done = [], [], False
        while not done:
            act = agent.act(np.asarray(obs, np.float32)[None], True)[0]
            obs_l.append(obs)
            act_l.append(act)
            obs, _, term, trunc, _ = env.step(act)
            done = term or trunc
        want.append(float(model.reward(torch.as_tensor(np.stack(obs_l), dtype=torch.float32),
                                       torch.as_tensor(np.stack(act_l))).sum()))
    env.close()
    assert a.learned_returns == pytest.approx(want, rel=1e-5)
    assert a.steps == 400 and a.window == 20 and -1.0 <= a.step_corr <= 1.0
    # another run's policy acting under this run's r̂: the baseline's policy, different returns
    b = reward_agreement(out, 2, deterministic=True, policy=str(runs / "base"))
    assert b.true_returns != pytest.approx(a.true_returns)


def test_reward_agreement_errors(runs, tmp_path):
    with pytest.raises(ValueError, match="no reward model"):
        load_reward_model(str(runs / "base"))
    with pytest.raises(ValueError, match="not a run directory"):
        reward_agreement(str(tmp_path), 1)
    with pytest.raises(ValueError, match="episodes"):
        reward_agreement(str(runs / "pref"), 0)


def test_cli_eval_reward_check(runs):
    runner = CliRunner()
    res = runner.invoke(app, ["control", "eval", str(runs / "pref"), "--episodes", "1", "--reward-check"])
    assert res.exit_code == 0, res.output
    assert "correlation with the true reward" in res.output and "per 20-step window" in res.output
    res = runner.invoke(app, ["control", "eval", str(runs / "pref"), "--episodes", "1", "--policy", str(runs / "base")])
    assert res.exit_code != 0 and "--policy is only used with --reward-check" in res.output
    res = runner.invoke(app, ["control", "eval", str(runs / "base"), "--episodes", "1", "--reward-check"])
    assert res.exit_code != 0 and "no reward model" in res.output
