"""Shared test fixtures and helpers."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from rlhfkit.control import make_env


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small MLPs run fastest on one thread; on a shared 2-core machine intra-op threads only contend."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_policy_returns(env_id: str, episodes: int, seed: int) -> list[float]:
    """True returns of uniformly random actions in ``env_id``, episodes seeded ``seed, seed+1, ...``."""
    env: gym.Env = make_env(env_id)
    env.action_space.seed(seed)
    returns = []
    for ep in range(episodes):
        env.reset(seed=seed + ep)
        total, done = 0.0, False
        while not done:
            _, r, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(r)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns
