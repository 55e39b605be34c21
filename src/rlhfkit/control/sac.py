"""Soft actor-critic for continuous-action gymnasium tasks, and its replay buffer on torch tensors.

SAC (Haarnoja et al. 2018b) with twin critics, target critics by Polyak averaging and automatic
entropy tuning; the losses are the pure functions of :mod:`rlhfkit.rl.sac`. The networks and
defaults follow B-Pref's SAC (Lee et al. 2021): two hidden layers of 256 ReLU units, a
tanh-squashed Gaussian actor whose log-std is squashed into ``[-5, 2]``, initial temperature 0.1,
target updates every 2 steps with ``τ = 0.005``.

The replay buffer stores the ``N`` lockstep sub-envs of a vector env as ``(C, N, ...)`` tensors,
so that trajectory fragments can be cut from it as from a PPO rollout, and every stored reward can
be recomputed in one batched pass (PEBBLE's relabelling).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from rlhfkit.control.envs import evaluate_episodes
from rlhfkit.control.ppo import RunningMeanStd
from rlhfkit.rl.sac import (
    knn_state_entropy,
    sac_actor_loss,
    sac_critic_loss,
    sac_target,
    sac_temperature_loss,
    soft_update,
    tanh_gaussian_sample,
)

__all__ = ["ReplayBuffer", "SACAgent", "SACConfig", "Trajectories"]


@dataclass(frozen=True)
class SACConfig:
    """SAC hyper-parameters (defaults: B-Pref's ``sac.yaml``, Lee et al. 2021, with batch 256)."""

    n_envs: int = 1
    """Parallel environments ``N``."""
    updates_per_step: float = 1.0
    """Gradient updates per env transition (the update-to-data ratio; SAC and PEBBLE use 1)."""
    batch_size: int = 256
    """Transitions per gradient update."""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """Hidden widths of the actor and of each critic (ReLU)."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics."""
    alpha_lr: float = 3e-4
    """Adam learning rate of ``log α``."""
    init_temperature: float = 0.1
    """Initial entropy temperature ``α``."""
    target_entropy: float | None = None
    """Target entropy ``H̄`` in nats; None: ``-dim(A)`` (Haarnoja et al. 2018b)."""
    gamma: float = 0.99
    """Discount ``γ``."""
    tau: float = 0.005
    """Polyak coefficient of the target critics."""
    target_update_every: int = 2
    """Gradient updates between target-critic updates."""
    actor_update_every: int = 1
    """Gradient updates between actor (and temperature) updates."""
    log_std_bounds: tuple[float, float] = (-5.0, 2.0)
    """The actor's log-std is squashed into this interval."""
    buffer_size: int = 1_000_000
    """Replay capacity in transitions (over all sub-envs)."""

    def validate(self) -> None:
        """Raises ValueError naming the field that is out of range."""
        for name in ("n_envs", "batch_size", "target_update_every", "actor_update_every", "buffer_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"sac.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("actor_lr", "critic_lr", "alpha_lr", "init_temperature", "updates_per_step"):
            if not getattr(self, name) > 0:
                raise ValueError(f"sac.{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.gamma <= 1 or not 0 <= self.tau <= 1:
            raise ValueError(f"sac.gamma and sac.tau must lie in [0, 1], got {self.gamma} and {self.tau}")
        if self.log_std_bounds[0] >= self.log_std_bounds[1]:
            raise ValueError(f"sac.log_std_bounds must be (low, high) with low < high, got {self.log_std_bounds}")


@dataclass
class Trajectories:
    """Time-ordered ``(T, N, ...)`` numpy views of stored transitions, what fragments are cut from
    (:func:`rlhfkit.control.queries.sample_fragments` reads ``obs``, ``env_actions``,
    ``true_rewards`` and ``episode_end``)."""

    obs: np.ndarray
    env_actions: np.ndarray
    true_rewards: np.ndarray
    episode_end: np.ndarray


class ReplayBuffer:
    """A ring buffer of transitions from ``N`` lockstep envs, as ``(C, N, ...)`` float32 tensors.

    Holds ``obs``, ``actions`` (the policy's, in ``[-1, 1]``), ``env_actions`` (what the env got:
    the reward model's input), ``next_obs`` (the true final observation where an episode ended),
    ``true_rewards`` (for the teacher and plots only), ``rewards`` (what the agent learns from:
    the learned ``r̂``, rewritten by :meth:`relabel`), ``terminated`` and ``episode_end``.

    Args:
        capacity: transitions over all sub-envs (rounded up to whole vector steps).
        n_envs: ``N``.
        obs_dim, act_dim: sizes of observations and actions.

    Raises:
        ValueError: if a size is < 1.
    """

    FIELDS = ("obs", "actions", "env_actions", "next_obs", "true_rewards", "rewards", "terminated", "episode_end")

    def __init__(self, capacity: int, n_envs: int, obs_dim: int, act_dim: int) -> None:
        if min(capacity, n_envs, obs_dim, act_dim) < 1:
            raise ValueError(f"capacity, n_envs, obs_dim and act_dim must be >= 1, got "
                             f"{capacity}, {n_envs}, {obs_dim}, {act_dim}")
        C, N = math.ceil(capacity / n_envs), n_envs
        self.capacity, self.n_envs = C, N
        shapes = {"obs": (obs_dim,), "actions": (act_dim,), "env_actions": (act_dim,), "next_obs": (obs_dim,)}
        self.data = {k: torch.zeros((C, N, *shapes.get(k, ())), dtype=torch.float32) for k in self.FIELDS}
        self.pos, self.full = 0, False

    @property
    def steps(self) -> int:
        """Vector steps stored (``≤ C``)."""
        return self.capacity if self.full else self.pos

    def __len__(self) -> int:
        """Transitions stored."""
        return self.steps * self.n_envs

    def add(self, **batch: np.ndarray | Tensor) -> None:
        """Store one vector step: every field of :attr:`FIELDS` as an ``(N, ...)`` array.

        Raises:
            KeyError: naming a missing field.
        """
        for k in self.FIELDS:
            self.data[k][self.pos] = torch.as_tensor(np.asarray(batch[k]), dtype=torch.float32).reshape(
                self.data[k].shape[1:])
        self.pos = (self.pos + 1) % self.capacity
        self.full = self.full or self.pos == 0

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``batch_size`` transitions drawn uniformly with replacement, each field flattened to ``(B, ...)``.

        Raises:
            ValueError: if the buffer is empty.
        """
        if len(self) == 0:
            raise ValueError("the replay buffer is empty")
        flat = torch.randint(len(self), (batch_size,), generator=generator)
        t, n = flat // self.n_envs, flat % self.n_envs
        return {k: v[t, n] for k, v in self.data.items()}

    def sample_hybrid(self, batch_size: int, recent_steps: int, recent_frac: float,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """QPA's hybrid experience replay (Hu et al. 2023, §4.2): ``⌊recent_frac · B⌋`` transitions drawn
        uniformly from the last ``recent_steps`` vector steps (the policy-aligned buffer), the rest
        uniformly from the whole buffer; fields ``(B, ...)``, the uniform part first.

        Raises:
            ValueError: if the buffer is empty, ``recent_steps < 1`` or ``recent_frac`` is outside ``[0, 1]``.
        """
        if recent_steps < 1 or not 0.0 <= recent_frac <= 1.0:
            raise ValueError(f"recent_steps must be >= 1 and recent_frac in [0, 1], got {recent_steps} and "
                             f"{recent_frac}")
        n_recent = int(batch_size * recent_frac)
        uniform = self.sample(batch_size - n_recent, generator)
        if n_recent == 0:
            return uniform
        k = min(recent_steps, self.steps)
        flat = torch.randint(k * self.n_envs, (n_recent,), generator=generator)
        t, n = (self.pos - k + flat // self.n_envs) % self.capacity, flat % self.n_envs
        return {key: torch.cat([uniform[key], v[t, n]]) for key, v in self.data.items()}

    def recent_steps(self, episodes: int) -> int:
        """Vector steps of the shortest recent window holding at least ``episodes`` whole episodes over all
        sub-envs, plus the episodes still running: QPA's policy-aligned buffer of the last ``N``
        trajectories (Hu et al. 2023, §4.1). All stored steps if fewer episodes have ended.

        The window starts after the step of the ``(episodes + n_envs)``-th most recent episode end: each
        sub-env's first end inside the window may close an episode that began before it.

        Raises:
            ValueError: if ``episodes < 1``.
        """
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        order = torch.arange(self.steps)
        if self.full:
            order = (order + self.pos) % self.capacity
        ends = self.data["episode_end"][order].sum(1).flip(0).cumsum(0)  # (T,) ends in the last i + 1 steps
        hit = torch.nonzero(ends >= episodes + self.n_envs)
        return int(hit[0, 0]) if len(hit) else self.steps

    def mark_episode_end(self) -> None:
        """Mark the newest stored vector step as the end of every sub-env's episode (not as terminated): the
        envs were reset (a resumed run), so no fragment may join the pieces on either side."""
        if self.steps:
            self.data["episode_end"][(self.pos - 1) % self.capacity] = 1.0

    def state_dict(self) -> dict[str, Tensor]:
        """The stored transitions (the first ``steps`` slots of every field, ``(steps, N, ...)``) and the ring
        position, for a checkpoint; :meth:`load_state_dict` restores them."""
        out = {k: v[: self.steps].contiguous() for k, v in self.data.items()}
        out["_ring"] = torch.tensor([self.pos, int(self.full), self.capacity, self.n_envs], dtype=torch.int64)
        return out

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            ValueError: if it was saved from a buffer of another capacity, number of envs or field shapes.
        """
        pos, full, capacity, n_envs = (int(x) for x in state["_ring"])
        if (capacity, n_envs) != (self.capacity, self.n_envs):
            raise ValueError(f"the saved replay buffer holds {capacity} steps × {n_envs} envs, this one "
                             f"{self.capacity} × {self.n_envs}")
        steps = capacity if full else pos
        for k, v in self.data.items():
            if state[k].shape != (steps, *v.shape[1:]):
                raise ValueError(f"saved replay field {k!r} has shape {tuple(state[k].shape)}, expected "
                                 f"{(steps, *v.shape[1:])}")
            v[:steps] = state[k]
        self.pos, self.full = pos, bool(full)

    def flat(self, key: str) -> Tensor:
        """Field ``key`` of every stored transition, ``(steps · N, ...)`` (storage order)."""
        v = self.data[key][: self.steps]
        return v.reshape(-1, *v.shape[2:])

    @torch.no_grad()
    def relabel(self, reward_fn: Callable[[Tensor, Tensor], Tensor], chunk: int = 65_536) -> None:
        """Recompute ``rewards`` of every stored transition as ``reward_fn(obs, env_actions)`` in batched
        passes of ``chunk`` transitions (PEBBLE, Lee et al. 2021, §4.2: relabel after each reward update)."""
        obs, acts = self.flat("obs"), self.flat("env_actions")
        out = torch.cat([reward_fn(obs[i:i + chunk], acts[i:i + chunk]).float()
                         for i in range(0, obs.shape[0], chunk)]) if obs.shape[0] else torch.zeros(0)
        self.data["rewards"][: self.steps] = out.reshape(self.steps, self.n_envs)

    def trajectories(self, last_steps: int | None = None) -> Trajectories:
        """The stored transitions in time order (oldest first) as numpy ``(T, N, ...)`` arrays, the last
        ``last_steps`` vector steps only if given. Where the ring wrapped, the step before the wrap is
        marked as an episode end, so that no fragment joins two unrelated pieces."""
        order = torch.arange(self.steps)
        if self.full:
            order = (order + self.pos) % self.capacity
        if last_steps is not None:
            order = order[-last_steps:]
        view = {k: self.data[k][order].numpy() for k in ("obs", "env_actions", "true_rewards", "episode_end")}
        ends = view["episode_end"].astype(bool)
        ends[-1] = True  # the newest step: the episode goes on beyond what is stored
        return Trajectories(obs=view["obs"], env_actions=view["env_actions"],
                            true_rewards=view["true_rewards"].astype(np.float64), episode_end=ends)


def _mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        nn.init.orthogonal_(lin.weight)
        nn.init.zeros_(lin.bias)
        layers += [lin] if i == len(sizes) - 2 else [lin, nn.ReLU()]
    return nn.Sequential(*layers)


class _Critics(nn.Module):
    """Twin Q-networks ``Q_1, Q_2 : (s, a) → ℝ`` as one batched MLP: each layer is a ``(2, in, out)`` weight
    applied with ``baddbmm``, so both critics cost one kernel per layer (CPU time goes to kernel launches
    at these sizes)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        sizes = (obs_dim + act_dim, *hidden, 1)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(sizes[:-1], sizes[1:]):
            w = torch.empty(2, a, b)
            for i in range(2):
                wi = torch.empty(b, a)
                nn.init.orthogonal_(wi)  # as nn.Linear's (out, in) weight
                w[i] = wi.T
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(2, 1, b)))

    def forward(self, obs: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.cat([obs, actions], -1).unsqueeze(0).expand(2, -1, -1)  # (2, B, D)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = torch.relu(h)
        q = h.squeeze(-1)  # (2, B)
        return q[0], q[1]


class SACAgent(nn.Module):
    """A soft actor-critic agent for a 1-D ``Box`` action space.

    Args:
        observation_space: a 1-D ``Box``.
        action_space: a 1-D bounded ``Box`` (actions are squashed to ``[-1, 1]`` and rescaled).
        config: :class:`SACConfig`.
        seed: seeds the networks and the action noise.

    Raises:
        ValueError: for a discrete or unbounded action space (discrete tasks use the PPO loop).
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, config: SACConfig = SACConfig(),
                 seed: int = 0) -> None:
        super().__init__()
        if not (isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 1):
            raise ValueError(f"SAC needs a 1-D Box observation space, got {observation_space}")
        if not (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1
                and np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
            raise ValueError(f"SAC needs a bounded 1-D Box action space, got {action_space} "
                             "(discrete-action tasks: use --algo ppo)")
        config.validate()
        self.config = config
        self.discrete = False
        torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.obs_dim, self.act_dim = observation_space.shape[0], action_space.shape[0]
        self.actor = _mlp((self.obs_dim, *config.hidden_sizes, 2 * self.act_dim))
        self.critics = _Critics(self.obs_dim, self.act_dim, config.hidden_sizes)
        self.critics_target = copy.deepcopy(self.critics).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(config.init_temperature)))
        self.target_entropy = float(-self.act_dim if config.target_entropy is None else config.target_entropy)
        self.register_buffer("act_low", torch.as_tensor(action_space.low, dtype=torch.float32))
        self.register_buffer("act_high", torch.as_tensor(action_space.high, dtype=torch.float32))
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr, fused=True)
        self.critic_optimizer = torch.optim.Adam(self.critics.parameters(), lr=config.critic_lr, fused=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=config.alpha_lr, fused=True)
        self.updates = 0

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The three optimisers by name (for checkpoints)."""
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer, "alpha": self.alpha_optimizer}

    @property
    def alpha(self) -> Tensor:
        """The entropy temperature ``α = exp(log α)`` (0-d, with gradient)."""
        return self.log_alpha.exp()

    def policy(self, obs: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor]:
        """Actions in ``[-1, 1]`` ``(B, A)`` and their log-densities ``(B,)`` for observations ``(B, D)``."""
        mean, log_std = self.actor(obs).chunk(2, -1)
        low, high = self.config.log_std_bounds
        log_std = low + 0.5 * (high - low) * (torch.tanh(log_std) + 1.0)
        return tanh_gaussian_sample(mean, log_std, deterministic=deterministic, generator=self.generator)

    def to_env_actions(self, actions: Tensor) -> np.ndarray:
        """``[-1, 1]`` actions → the env's bounds."""
        return (self.act_low + 0.5 * (actions + 1.0) * (self.act_high - self.act_low)).numpy()

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Env actions for raw observations ``(N, D)``; ``deterministic`` takes ``tanh(mean)``."""
        a, _ = self.policy(torch.as_tensor(obs, dtype=torch.float32), deterministic)
        return self.to_env_actions(a)

    @torch.no_grad()
    def sample_actions(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Policy actions in ``[-1, 1]`` and the env actions for observations ``(N, D)``."""
        a, _ = self.policy(torch.as_tensor(obs, dtype=torch.float32))
        return a.numpy(), self.to_env_actions(a)

    def random_actions(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Uniform actions (the seed steps): policy-space and env-space, ``(n, A)`` each."""
        a = torch.rand((n, self.act_dim), generator=self.generator) * 2.0 - 1.0
        return a.numpy(), self.to_env_actions(a)

    def reset_critics(self) -> None:
        """Re-initialise the critics, their targets and optimiser (PEBBLE, after unsupervised pre-training)."""
        fresh = _Critics(self.obs_dim, self.act_dim, self.config.hidden_sizes)
        self.critics.load_state_dict(fresh.state_dict())
        self.critics_target.load_state_dict(fresh.state_dict())
        self.critic_optimizer = torch.optim.Adam(self.critics.parameters(), lr=self.config.critic_lr, fused=True)

    def update(self, batch: dict[str, Tensor], rewards: Tensor | None = None) -> dict[str, float]:
        """One SAC gradient update on a sampled ``batch`` (:meth:`ReplayBuffer.sample`).

        Args:
            batch: ``obs, actions, next_obs, rewards, terminated`` as ``(B, ...)`` tensors.
            rewards: ``(B,)`` rewards to use instead of ``batch["rewards"]`` (e.g. the state-entropy reward).

        Returns:
            ``loss/critic``, ``q/mean`` and, on actor steps, ``loss/actor``, ``loss/alpha``, ``sac/alpha``,
            ``policy/entropy`` (``-log π`` of fresh actions, nats).
        """
        cfg = self.config
        r = batch["rewards"] if rewards is None else rewards
        actor_step = (self.updates + 1) % cfg.actor_update_every == 0
        B = batch["obs"].shape[0]
        # one actor pass for a' ~ π(·|s') (the target) and, on actor steps, a ~ π(·|s) (the actor loss)
        if actor_step:
            both_a, both_lp = self.policy(torch.cat([batch["obs"], batch["next_obs"]]))
            a, lp, next_a, next_lp = both_a[:B], both_lp[:B], both_a[B:].detach(), both_lp[B:].detach()
        else:
            with torch.no_grad():
                next_a, next_lp = self.policy(batch["next_obs"])
        with torch.no_grad():
            nq1, nq2 = self.critics_target(batch["next_obs"], next_a)
            y = sac_target(r, nq1, nq2, next_lp, batch["terminated"], alpha=self.alpha, gamma=cfg.gamma)
        q1, q2 = self.critics(batch["obs"], batch["actions"])
        critic_loss = sac_critic_loss(q1, q2, y)
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()
        out = {"loss/critic": critic_loss.item(), "q/mean": q1.detach().mean().item()}
        self.updates += 1
        if actor_step:
            self.critics.requires_grad_(False)
            pq1, pq2 = self.critics(batch["obs"], a)
            self.critics.requires_grad_(True)
            actor_loss = sac_actor_loss(pq1, pq2, lp, self.alpha)
            self.actor_optimizer.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_optimizer.step()
            alpha_loss = sac_temperature_loss(self.log_alpha, lp, self.target_entropy)
            self.alpha_optimizer.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_optimizer.step()
            out.update({"loss/actor": actor_loss.item(), "loss/alpha": alpha_loss.item(),
                        "sac/alpha": self.alpha.item(), "policy/entropy": -lp.detach().mean().item()})
        if self.updates % cfg.target_update_every == 0:
            soft_update(self.critics_target, self.critics, cfg.tau)
        return out

    @torch.no_grad()
    def evaluate(self, env: gym.Env, n_episodes: int, *, seed: int, deterministic: bool = True) -> list[float]:
        """True (env) returns of ``n_episodes`` episodes in a single env, seeds ``seed, seed+1, …``."""
        return evaluate_episodes(self.act, env, n_episodes, seed=seed, deterministic=deterministic)


class StateEntropyReward:
    """PEBBLE's intrinsic reward for unsupervised pre-training: the k-NN distance of ``s'`` among the
    buffer's states (:func:`rlhfkit.rl.knn_state_entropy`), divided by a running standard deviation
    of those distances (B-Pref's ``s_ent_stats``; Lee et al. 2021, §4.1)."""

    def __init__(self, k: int = 5) -> None:
        self.k = k
        self.stats = RunningMeanStd(1, epsilon=1e-12)  # a negligible prior: the std of the distances seen

    def __call__(self, next_obs: Tensor, buffer_obs: Tensor) -> Tensor:
        """``(B,)`` normalised rewards for ``next_obs (B, D)`` against ``buffer_obs (N, D)``."""
        d = knn_state_entropy(next_obs, buffer_obs, self.k)
        self.stats.update(d.unsqueeze(-1))
        return d / float(self.stats.var.sqrt().clamp_min(1e-8))
