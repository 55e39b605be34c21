"""Environments and wrappers for learning from preferences on gymnasium tasks.

- :class:`CartPoleCosEnv` (registered as ``rlhfkit/CartPoleCos-v0``): CartPole whose true reward
  is ``cos θ`` of the pole angle, with no early termination and a fixed 200-step horizon — the
  course workshop's variant. Plain ``CartPole-v1`` pays +1 every step, so every pair of
  fixed-length fragments would tie.
- :class:`FixedHorizon`: removes early termination (Christiano et al. 2017, §3.1: variable-length
  episodes leak reward information, e.g. "the episode ended, so it was bad"). After the inner
  env terminates, the episode continues in an absorbing state: the last observation repeats and
  the true reward is 0 until the horizon.
- ``termination="penalty"`` (:func:`make_env`): the paper's own handling of the MuJoCo robots (App. A.1:
  "We replaced these termination conditions by a penalty which encourages the parameters to remain in the
  range (and which the agent must learn)"): the env is made with ``terminate_when_unhealthy=False`` and
  keeps simulating after a fall; gymnasium's v5 locomotion rewards pay their healthy bonus only while
  healthy, so a fallen robot loses it every step, and every step stays a real transition whose action
  matters. With the absorbing state the learned reward ``r̂(o, a)`` still scored the actions taken in the
  frozen fallen pose, and PPO learned to fall at once and pick the actions r̂ liked there (Hopper-v5,
  700 labels: true return -2.1, bench/results/christiano_mujoco.txt). The penalty task is not the standard
  one: losing 1 per step is cheap next to Hopper's forward reward, and PPO on it learns to run on in an
  unhealthy pose (seed 0: 2,428 on the penalty task, 214 on the standard one, where the episode ends there).
- ``termination="height"`` (:class:`HeightReward`, Hopper-v5 and Walker2d-v5): the same env without
  termination, but the healthy bonus and the torque cost are replaced by a smooth height term, as the
  preference-learning reimplementation rl-teacher (Brown et al., OpenAI 2017, ``rl_teacher/envs.py``) builds
  the paper's Hopper and Walker: the penalty grows with how far the torso sinks, and the torque cost the
  paper removed ("humans cannot see" it) is gone. The healthy bonus is a box indicator over several
  observations; the height is one observation, so the reward model can fit it with a linear term.
- :func:`make_vec_env`: a gymnasium vector env in ``SAME_STEP`` autoreset mode, so no step ever
  straddles two episodes (the returned observation after an episode end is the reset one, the
  true final observation is in ``info["final_obs"]``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

__all__ = ["CARTPOLE_COS_ID", "TERMINATIONS", "CartPoleCosEnv", "FixedHorizon", "HeightReward", "check_env_id",
           "check_termination", "env_seeds", "evaluate_episodes", "make_env", "make_vec_env", "play_episode"]

CARTPOLE_COS_ID = "rlhfkit/CartPoleCos-v0"

TERMINATIONS = ("absorb", "penalty", "height")
"""What a fixed-horizon episode does when its env would terminate (:func:`make_env`)."""


class CartPoleCosEnv(CartPoleEnv):
    """CartPole with true reward ``cos θ`` per step and no termination (use a 200-step limit).

    The observation is CartPole's ``(x, ẋ, θ, θ̇)`` with the pole angle wrapped to ``[-π, π)``,
    since without termination the pole can swing all the way round (the dynamics depend on θ
    only through ``sin θ`` and ``cos θ``, so wrapping changes nothing else). The bounds of the
    observation space are infinite because the cart may leave CartPole's usual track.
    """

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode)
        high = np.full(4, np.inf, dtype=np.float32)
        self.observation_space = gym.spaces.Box(-high, high, dtype=np.float32)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """CartPole dynamics; reward ``cos θ`` of the new state; never terminated."""
        _, _, _, truncated, info = super().step(action)
        self.steps_beyond_terminated = None  # no termination: never warn about stepping past it
        # the pole may swing all the way round: keep θ in [-π, π) (the dynamics only use sin, cos)
        self.state[2] = (self.state[2] + math.pi) % (2 * math.pi) - math.pi
        obs = np.array(self.state, dtype=np.float32)
        return obs, float(math.cos(float(self.state[2]))), False, truncated, info


def _register() -> None:
    if CARTPOLE_COS_ID not in gym.registry:
        gym.register(CARTPOLE_COS_ID, entry_point=CartPoleCosEnv, max_episode_steps=200)


_register()


class FixedHorizon(gym.Wrapper):
    """Make every episode last exactly ``horizon`` steps (Christiano et al. 2017, §3.1).

    When the wrapped env terminates, the wrapper stops stepping it and repeats the last
    observation with true reward 0 (an absorbing state) until ``horizon`` steps have passed;
    ``info["absorbing"]`` is True on those steps. ``terminated`` is never True; ``truncated`` is
    True exactly at step ``horizon``.

    Raises:
        ValueError: if ``horizon < 1``.
    """

    def __init__(self, env: gym.Env, horizon: int) -> None:
        super().__init__(env)
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.horizon = horizon
        self._t = 0
        self._absorbed: np.ndarray | None = None

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        """Reset the wrapped env and the step counter."""
        self._t, self._absorbed = 0, None
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Step the wrapped env, or stay in the absorbing state after it terminated."""
        self._t += 1
        if self._absorbed is not None:
            obs, reward, info = self._absorbed, 0.0, {"absorbing": True}
        else:
            obs, reward, terminated, truncated, info = self.env.step(action)
            if terminated:
                self._absorbed = obs
        return obs, float(reward), False, self._t >= self.horizon, info


HEIGHT_OFFSETS = {"Hopper-v5": 0.0, "Walker2d-v5": -1.0}
"""Constant added to ``x_velocity + z`` per step by :class:`HeightReward`: rl-teacher's bonus ``z - 1`` (Hopper)
and ``z - 2`` (Walker2d) on top of gym v1's healthy bonus of 1, which v1 paid on every step."""


class HeightReward(gym.Wrapper):
    """Reward ``x_velocity + z + offset`` per step: forward speed (m/s) plus torso height (m), no torque cost.

    For Hopper-v5 and Walker2d-v5 made with ``terminate_when_unhealthy=False``
    (``make_env(..., termination="height")``): Christiano et al. 2017, App. A.1 replace the termination "by a
    penalty which encourages the parameters to remain in the range" and drop the torque costs; this is that
    penalty as rl-teacher (OpenAI's release of the paper's method, ``rl_teacher/envs.py``, ``hopper`` and
    ``walker``) writes it: gym v1's reward ``forward + 1 - 1e-3·|a|²`` plus the bonus ``z - 1 + 1e-3·|a|²``
    (Walker ``z - 2 + …``). ``info["reward_height"]`` holds ``z + offset``; the env's own terms stay in ``info``.

    Raises:
        ValueError: at the first step of an env without ``x_velocity`` in its step info.
    """

    def __init__(self, env: gym.Env, offset: float = 0.0) -> None:
        super().__init__(env)
        self.offset = float(offset)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Step the env and replace its reward by forward speed plus height."""
        obs, _, terminated, truncated, info = self.env.step(action)
        if "x_velocity" not in info:
            raise ValueError(f"HeightReward needs x_velocity in the step info; {self.env} has none")
        height = float(self.env.unwrapped.data.qpos[1]) + self.offset
        info["reward_height"] = height
        return obs, float(info["x_velocity"]) + height, terminated, truncated, info


def check_env_id(env_id: str) -> None:
    """Raise a clear error if ``env_id`` is not a registered gymnasium environment.

    Raises:
        ValueError: naming the unknown id and a few close registered ids.
    """
    if env_id not in gym.registry:
        import difflib

        close = difflib.get_close_matches(env_id, list(gym.registry), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown environment id {env_id!r}.{hint}")


def check_termination(env_id: str, termination: str) -> None:
    """Raise a clear error if ``env_id`` cannot run with ``termination`` (one of :data:`TERMINATIONS`).

    ``"penalty"`` needs an env whose constructor takes ``terminate_when_unhealthy`` (gymnasium's MuJoCo
    Hopper, Walker2d, Ant and Humanoid locomotion tasks); ``"height"`` is defined for Hopper-v5 and Walker2d-v5.

    Raises:
        ValueError: naming the field ``termination`` and the env.
    """
    if termination not in TERMINATIONS:
        raise ValueError(f"termination must be one of {', '.join(TERMINATIONS)}, got {termination!r}")
    if termination == "height" and env_id not in HEIGHT_OFFSETS:
        raise ValueError(f"termination='height' is defined for {', '.join(HEIGHT_OFFSETS)} (rl-teacher's height "
                         f"bonus); {env_id} has none: use termination='penalty' or 'absorb'")
    if termination in ("penalty", "height"):
        check_env_id(env_id)
        entry = gym.spec(env_id).entry_point
        creator = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
        if "terminate_when_unhealthy" not in inspect.signature(creator).parameters:
            raise ValueError(f"termination='penalty' needs an env with a terminate_when_unhealthy option (MuJoCo "
                             f"Hopper, Walker2d, Ant, Humanoid); {env_id} has none: use termination='absorb'")


def make_env(env_id: str, *, horizon: int | None = None, render_mode: str | None = None,
             termination: str = "absorb") -> gym.Env:
    """One env; with ``horizon`` wrapped in :class:`FixedHorizon` instead of its own time limit.

    Args:
        env_id: gymnasium id.
        horizon: fixed episode length, or None for the env's own limits.
        render_mode: passed to ``gym.make``.
        termination: ``"absorb"`` (the env terminates as usual; with ``horizon`` the episode then sits in
            :class:`FixedHorizon`'s absorbing state, so its true return is the standard one) or
            ``"penalty"`` (made with ``terminate_when_unhealthy=False``: the robot keeps moving after a
            fall and loses its healthy bonus; Christiano et al. 2017, App. A.1) or ``"height"`` (the same, with
            the reward :class:`HeightReward`: forward speed plus torso height, no torque cost). The loops train
            and evaluate on the run's setting and otherwise evaluate again with ``"absorb"`` (the standard return).

    Raises:
        ValueError: for an unknown id, ``"penalty"`` on an env without ``terminate_when_unhealthy``, or
            ``"height"`` on an env other than Hopper-v5 and Walker2d-v5.
    """
    check_env_id(env_id)
    check_termination(env_id, termination)
    kwargs = {"terminate_when_unhealthy": False} if termination != "absorb" else {}
    env = gym.make(env_id, render_mode=render_mode, **kwargs)
    inner = env.unwrapped if horizon is not None else env  # with a horizon, drop the env's own TimeLimit
    if termination == "height":
        inner = HeightReward(inner, HEIGHT_OFFSETS[env_id])
    return inner if horizon is None else FixedHorizon(inner, horizon)


def make_vec_env(env_id: str, num_envs: int, *, seed: int, horizon: int | None = None,
                 termination: str = "absorb") -> gym.vector.VectorEnv:
    """A synchronous vector env in ``SAME_STEP`` autoreset mode, its sub-envs seeded by :func:`env_seeds`.

    Args:
        env_id: gymnasium id, e.g. ``Pendulum-v1`` or :data:`CARTPOLE_COS_ID`.
        num_envs: number of parallel copies ``N``.
        seed: base seed.
        horizon: fixed episode length (:class:`FixedHorizon`), or None for the env's own limits.
        termination: ``"absorb"``, ``"penalty"`` or ``"height"`` (:func:`make_env`).

    Raises:
        ValueError: for an unknown env id, a ``termination`` the env cannot run, or ``num_envs < 1``.
    """
    check_env_id(env_id)
    check_termination(env_id, termination)
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    envs = gym.vector.SyncVectorEnv(
        [lambda: make_env(env_id, horizon=horizon, termination=termination) for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    envs.reset(seed=env_seeds(seed, num_envs))
    envs.action_space.seed(seed)
    return envs


def env_seeds(seed: int, num_envs: int) -> list[int]:
    """Independent per-env seeds for run seed ``seed`` (``numpy.random.SeedSequence``).

    gymnasium's ``reset(seed=s)`` seeds sub-env ``i`` with ``s + i``, so runs with seeds 0 and 1
    would share 7 of 8 env streams; these do not overlap.
    """
    return [int(x) for x in np.random.SeedSequence(seed).generate_state(num_envs)]


def play_episode(act: Callable[[np.ndarray, bool], np.ndarray], env: gym.Env, *, seed: int,
                 deterministic: bool = True) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """One episode in a single env reset with ``seed``: ``obs (N, D)`` float32 (the observation each action was
    taken in), ``acts (N, ...)`` env actions and the ``N`` env rewards.

    ``act(obs (1, D), deterministic) -> (1, ...)`` env actions: a PPO or SAC agent's ``act``.
    """
    obs, _ = env.reset(seed=seed)
    obs_l, act_l, rewards, done = [], [], [], False
    while not done:
        o = np.asarray(obs, dtype=np.float32)
        a = act(o[None], deterministic)[0]
        obs, r, terminated, truncated, _ = env.step(a)
        obs_l.append(o)
        act_l.append(np.asarray(a))
        rewards.append(float(r))
        done = terminated or truncated
    return np.stack(obs_l), np.stack(act_l), rewards


def evaluate_episodes(act: Callable[[np.ndarray, bool], np.ndarray], env: gym.Env, n_episodes: int, *, seed: int,
                      deterministic: bool = True) -> list[float]:
    """True (env) returns of ``n_episodes`` episodes (:func:`play_episode`), seeds ``seed, seed+1, …``."""
    return [sum(play_episode(act, env, seed=seed + ep, deterministic=deterministic)[2]) for ep in range(n_episodes)]
