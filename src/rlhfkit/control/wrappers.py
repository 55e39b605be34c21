"""The learned-reward wrapper for gymnasium vector envs.

The agent must never see the true reward (Christiano et al. 2017, §2.2): :class:`LearnedReward`
replaces every step's reward with ``r̂(o_t, a_t)`` from a reward model and moves the
environment's reward into ``info["true_reward"]``, where only evaluation reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["LearnedReward"]

RewardFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class LearnedReward(gym.vector.VectorWrapper):
    """Replace a vector env's reward with a learned reward ``r̂(o_t, a_t)``.

    The reward of step ``t`` is computed from the observation the action was taken in and the
    action itself, batched over the ``N`` sub-envs in one call of ``reward_fn``.

    gymnasium 1.x autoreset: in ``SAME_STEP`` mode (what :func:`rlhfkit.control.envs.make_vec_env`
    builds) the observation returned at an episode's end is already the next episode's first
    one, so every step is a real transition. In ``NEXT_STEP`` mode the step after an episode's
    end only resets that sub-env (its action is ignored): there the wrapper gives reward 0 and
    sets ``info["reset_step"]`` so that no fake transition across the boundary is rewarded.

    Args:
        env: a vector env with 1-D observations.
        reward_fn: ``(obs (N, obs_dim), actions (N, ...)) → rewards (N,)``.
    """

    def __init__(self, env: gym.vector.VectorEnv, reward_fn: RewardFn) -> None:
        super().__init__(env)
        self.reward_fn = reward_fn
        mode = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if mode not in (gym.vector.AutoresetMode.SAME_STEP, gym.vector.AutoresetMode.NEXT_STEP):
            raise ValueError(f"LearnedReward supports SAME_STEP or NEXT_STEP autoreset, got {mode}")
        self._next_step = mode == gym.vector.AutoresetMode.NEXT_STEP
        self._obs: np.ndarray | None = None
        self._resetting = np.zeros(env.num_envs, dtype=bool)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        """Reset all sub-envs and remember the observations for the next step's reward."""
        obs, info = self.env.reset(**kwargs)
        self._obs = np.array(obs, copy=True)  # the env may reuse its buffer
        self._resetting[:] = False
        return obs, info

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Step all sub-envs; the reward is ``reward_fn(previous obs, actions)``, ``(N,)``.

        Raises:
            RuntimeError: if called before :meth:`reset`.
            ValueError: if ``reward_fn`` returns the wrong shape.
        """
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        obs, true_reward, terminated, truncated, info = self.env.step(actions)
        reward = np.asarray(self.reward_fn(self._obs, np.asarray(actions)), dtype=np.float64).reshape(-1)
        if reward.shape != (self.num_envs,):
            raise ValueError(f"reward_fn returned shape {reward.shape}, expected ({self.num_envs},)")
        info = dict(info)
        info["true_reward"] = np.asarray(true_reward, dtype=np.float64)
        if self._next_step:
            reward = np.where(self._resetting, 0.0, reward)
            info["reset_step"] = self._resetting.copy()
            self._resetting = np.asarray(terminated | truncated)
        self._obs = np.array(obs, copy=True)  # the env may reuse its buffer
        return obs, reward, terminated, truncated, info
