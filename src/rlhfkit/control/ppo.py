"""PPO for gymnasium vector envs, discrete and continuous actions (Schulman et al. 2017).

The update is CleanRL-shaped and fits on a screen: collect ``n_steps`` from ``N`` envs, GAE
(:func:`rlhfkit.rl.gae`), then ``n_epochs`` passes of minibatch SGD on the clipped surrogate
(:func:`rlhfkit.rl.ppo_clip_loss`) or the adaptive-KL-penalty surrogate
(:func:`rlhfkit.rl.ppo_kl_penalty_loss`), a value loss and an entropy bonus. The math lives in
:mod:`rlhfkit.rl`; language-model PPO calls the same functions.

Implementation details (Huang et al. 2022, "The 37 implementation details of PPO"): separate
tanh MLPs for policy and value with orthogonal init; state-independent log-std for Gaussian
policies, actions clipped to the bounds only when sent to the env; running observation
normalisation; per-minibatch advantage normalisation; global gradient clipping; truncated
episodes bootstrap from the value of their true final observation.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Normal

from rlhfkit.control.envs import evaluate_episodes
from rlhfkit.rl import AdaptiveKLController, gae, masked_mean, ppo_clip_loss, ppo_kl_penalty_loss, value_loss

__all__ = ["PPOAgent", "PPOConfig", "Rollout", "RunningMeanStd"]


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyper-parameters. Defaults are the paper's MuJoCo settings (Schulman et al. 2017, Table 3)."""

    n_envs: int = 8
    """Parallel environments ``N``."""
    n_steps: int = 256
    """Steps per env per update; a rollout holds ``n_envs * n_steps`` transitions."""
    batch_size: int = 64
    """Minibatch size of the SGD passes."""
    n_epochs: int = 10
    """Passes over each rollout."""
    lr: float = 3e-4
    """Adam learning rate."""
    anneal_lr: bool = False
    """Decay the learning rate linearly to 0 over the run."""
    gamma: float = 0.99
    """Discount ``γ``."""
    gae_lambda: float = 0.95
    """GAE ``λ``."""
    loss: Literal["clip", "kl_penalty"] = "clip"
    """Surrogate: clipped (PPO-Clip, Eq. 7) or adaptive KL penalty (Eq. 8)."""
    clip_range: float = 0.2
    """``ε`` of the clipped surrogate."""
    kl_target: float = 0.01
    """``d_targ`` of the adaptive KL penalty."""
    kl_beta: float = 1.0
    """Initial ``β`` of the adaptive KL penalty."""
    clip_range_vf: float | None = None
    """Value clipping half-width, or None."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden widths of the policy and of the value MLP (tanh)."""
    log_std_init: float = 0.0
    """Initial log standard deviation of Gaussian policies."""
    sde: bool = False
    """Generalised state-dependent exploration (gSDE, Raffin et al. 2022): the exploration noise
    is a linear function of the policy's last hidden features, resampled every
    ``sde_sample_freq`` steps, so exploration is smooth in time (continuous actions only)."""
    sde_sample_freq: int = 4
    """Steps between resamples of the gSDE noise matrix (-1: once per rollout)."""
    normalize_obs: bool = True
    """Standardise observations with running statistics."""
    normalize_advantages: bool = True
    """Standardise advantages per minibatch."""
    target_kl: float | None = None
    """Stop the epochs of an update early when approx. KL exceeds this, or None."""


class RunningMeanStd(nn.Module):
    """Running mean and variance of a stream of ``(N, D)`` batches (Chan et al. parallel update)."""

    def __init__(self, dim: int, epsilon: float = 1e-4) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(epsilon, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Fold a batch ``x (N, D)`` into the running statistics."""
        x = x.to(torch.float64)
        n, mean, var = x.shape[0], x.mean(0), x.var(0, unbiased=False)
        delta, total = mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var.copy_((self.var * self.count + var * n + delta**2 * self.count * n / total) / total)
        self.count.copy_(total)

    def normalize(self, x: Tensor, clip: float = 10.0) -> Tensor:
        """Standardise ``x (..., D)`` and clip to ``[-clip, clip]``."""
        return ((x - self.mean.float()) / torch.sqrt(self.var.float() + 1e-8)).clamp(-clip, clip)


def _mlp(sizes: tuple[int, ...], out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        last = i == len(sizes) - 2
        nn.init.orthogonal_(lin.weight, out_gain if last else np.sqrt(2))
        nn.init.zeros_(lin.bias)
        layers += [lin] if last else [lin, nn.Tanh()]
    return nn.Sequential(*layers)


@dataclass
class Rollout:
    """One rollout of ``T`` steps from ``N`` envs; arrays are ``(T, N, ...)``.

    ``obs`` are raw observations ``o_t``; ``actions`` what the policy sampled (unclipped);
    ``env_actions`` what the env received (clipped to the bounds), which the reward model and
    fragments use; ``rewards`` the rewards the env (or the learned-reward wrapper) returned;
    ``true_rewards`` the environment's own reward (equal to ``rewards`` without the wrapper);
    ``episode_end`` = terminated or truncated.
    """

    obs: np.ndarray
    actions: np.ndarray
    env_actions: np.ndarray
    logprobs: np.ndarray
    values: np.ndarray
    next_values: np.ndarray
    rewards: np.ndarray
    true_rewards: np.ndarray
    terminated: np.ndarray
    episode_end: np.ndarray
    episode_true_returns: list[float]
    episode_returns: list[float]
    seconds: float

    @property
    def n_transitions(self) -> int:
        """``T · N``, the env steps in the rollout."""
        return int(self.rewards.size)


class PPOAgent(nn.Module):
    """An actor-critic trained with PPO on a gymnasium vector env.

    Args:
        observation_space: a 1-D ``Box``.
        action_space: ``Discrete`` or 1-D ``Box``.
        config: :class:`PPOConfig`.
        seed: seeds the network init and the action sampling.

    Raises:
        ValueError: for observation or action spaces it cannot handle.
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, config: PPOConfig = PPOConfig(),
                 seed: int = 0) -> None:
        super().__init__()
        if not (isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 1):
            raise ValueError(f"PPOAgent needs a 1-D Box observation space, got {observation_space}")
        self.config = config
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        if not self.discrete and not (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1):
            raise ValueError(f"PPOAgent needs a Discrete or 1-D Box action space, got {action_space}")
        torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed)
        obs_dim = observation_space.shape[0]
        self.act_dim = int(action_space.n) if self.discrete else action_space.shape[0]
        h = config.hidden_sizes
        self.policy = _mlp((obs_dim, *h, self.act_dim), 0.01)
        self.value = _mlp((obs_dim, *h, 1), 1.0)
        self.sde = config.sde and not self.discrete
        std_shape = (h[-1], self.act_dim) if self.sde else (self.act_dim,)
        self.log_std = nn.Parameter(torch.full(std_shape, float(config.log_std_init))) if not self.discrete else None
        self._sde_noise: Tensor | None = None  # (h, act_dim) exploration matrix of gSDE
        self._sde_steps = 0
        self.obs_rms = RunningMeanStd(obs_dim)
        # running (learned, true) return of each env's current episode, kept across collect() calls
        self._episode_sums: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        if not self.discrete:
            self.register_buffer("act_low", torch.as_tensor(action_space.low, dtype=torch.float32))
            self.register_buffer("act_high", torch.as_tensor(action_space.high, dtype=torch.float32))
        self.optimizer = torch.optim.Adam(self.parameters(), lr=config.lr, eps=1e-5)
        self.kl_ctl = AdaptiveKLController(config.kl_beta, config.kl_target)

    # --- acting -------------------------------------------------------------------------
    def _norm(self, obs: Tensor) -> Tensor:
        return self.obs_rms.normalize(obs) if self.config.normalize_obs else obs

    def distribution(self, obs_n: Tensor) -> Categorical | Normal:
        """Action distribution for normalised observations ``(B, obs_dim)``."""
        if self.discrete:
            return Categorical(logits=self.policy(obs_n))
        if self.sde:
            latent = self.policy[:-1](obs_n)  # (B, h) last hidden features
            mean = self.policy[-1](latent)
            # Var[a_j] = Σ_i z_i² σ_ij² for a = μ + z·ε, ε_ij ~ N(0, σ_ij²) (Raffin et al. 2022, Eq. 3)
            var = latent.detach() ** 2 @ self.log_std.exp() ** 2
            dist = Normal(mean, torch.sqrt(var + 1e-6))
            dist.latent = latent.detach()  # type: ignore[attr-defined]
            return dist
        out = self.policy(obs_n)
        return Normal(out, self.log_std.exp().expand_as(out))

    def _logprob(self, dist: Categorical | Normal, actions: Tensor) -> Tensor:
        lp = dist.log_prob(actions)
        return lp if self.discrete else lp.sum(-1)

    def to_env_actions(self, actions: Tensor) -> np.ndarray:
        """Policy actions → what the env accepts (continuous actions clipped to the bounds)."""
        if self.discrete:
            return actions.numpy()
        return torch.maximum(torch.minimum(actions, self.act_high), self.act_low).numpy()

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Env actions for raw observations ``(N, obs_dim)``; ``deterministic`` takes the mode."""
        obs_n = self._norm(torch.as_tensor(obs, dtype=torch.float32))
        dist = self.distribution(obs_n)
        if deterministic:
            a = dist.probs.argmax(-1) if self.discrete else dist.mean
        else:
            a = self._sample(dist)
        return self.to_env_actions(a)

    def _sample(self, dist: Categorical | Normal) -> Tensor:
        if self.discrete:
            return torch.multinomial(dist.probs, 1, generator=self.generator).squeeze(-1)
        if self.sde:
            freq = self.config.sde_sample_freq
            n = dist.mean.shape[0]
            stale = self._sde_noise is None or self._sde_noise.shape[0] != n
            if stale or (freq > 0 and self._sde_steps % freq == 0):
                # one exploration matrix per env: (N, h, act_dim)
                self._sde_noise = torch.randn((n, *self.log_std.shape), generator=self.generator) * self.log_std.detach().exp()
            self._sde_steps += 1
            latent = dist.latent  # type: ignore[attr-defined]
            return dist.mean + torch.bmm(latent.unsqueeze(1), self._sde_noise).squeeze(1)
        eps = torch.randn(dist.mean.shape, generator=self.generator)
        return dist.mean + dist.stddev * eps

    # --- collecting ---------------------------------------------------------------------
    @torch.no_grad()
    def collect(self, envs: gym.vector.VectorEnv, obs: np.ndarray, n_steps: int | None = None,
                update_obs_stats: bool = True) -> tuple[Rollout, np.ndarray]:
        """Run the policy for ``n_steps`` in ``envs`` (SAME_STEP autoreset) from ``obs (N, obs_dim)``.

        Returns the :class:`Rollout` and the observation to continue from. The true reward is
        read from ``info["true_reward"]`` when a learned-reward wrapper provides it.

        An episode's return (``episode_returns``, ``episode_true_returns``) sums all its steps, also
        those collected by earlier calls on the same ``envs`` (an episode of 1,000 steps spans two
        rollouts of 512): the running sums are kept per ``envs`` object, so ``obs`` must continue
        where the last call on it stopped, or come from a fresh ``envs.reset`` on a new ``envs``.
        """
        T, N = n_steps or self.config.n_steps, envs.num_envs
        self._sde_noise, self._sde_steps = None, 0
        buf: dict[str, list] = {k: [] for k in ("obs", "actions", "env_actions", "logprobs", "values",
                                                  "next_values", "rewards", "true_rewards", "terminated", "episode_end")}
        sums = self._episode_sums.get(envs)
        if sums is None or sums.shape != (2, N):
            sums = self._episode_sums[envs] = np.zeros((2, N))
        ep_ret, ep_true = sums  # views: updated in place, kept for the next call
        done_returns: list[float] = []
        done_true: list[float] = []
        start = time.perf_counter()
        for _ in range(T):
            obs = np.array(obs, dtype=np.float32, copy=True)  # the env may reuse its buffer in step()
            o = torch.as_tensor(obs)
            if update_obs_stats and self.config.normalize_obs:
                self.obs_rms.update(o)
            o_n = self._norm(o)
            dist = self.distribution(o_n)
            a = self._sample(dist)
            env_a = self.to_env_actions(a)
            next_obs, reward, terminated, truncated, info = envs.step(env_a)
            true_r = np.asarray(info.get("true_reward", reward), dtype=np.float64)
            end = terminated | truncated
            # value of the true next observation: the final one where an episode ended
            real_next = np.array(next_obs, dtype=np.float32, copy=True)
            if end.any():
                real_next[end] = np.stack(info["final_obs"][end])
            next_v = self.value(self._norm(torch.as_tensor(real_next))).squeeze(-1)
            for k, v in (("obs", obs), ("actions", a.numpy()), ("env_actions", env_a),
                         ("logprobs", self._logprob(dist, a).numpy()), ("values", self.value(o_n).squeeze(-1).numpy()),
                         ("next_values", next_v.numpy()), ("rewards", reward), ("true_rewards", true_r),
                         ("terminated", terminated), ("episode_end", end)):
                buf[k].append(np.asarray(v))
            ep_ret += reward
            ep_true += true_r
            for i in np.flatnonzero(end):
                done_returns.append(float(ep_ret[i]))
                done_true.append(float(ep_true[i]))
                ep_ret[i] = ep_true[i] = 0.0
            obs = next_obs
        arrays = {k: np.stack(v) for k, v in buf.items()}
        return Rollout(**arrays, episode_returns=done_returns, episode_true_returns=done_true,
                       seconds=time.perf_counter() - start), obs

    # --- learning -----------------------------------------------------------------------
    def update(self, rollout: Rollout, progress: float = 0.0) -> dict[str, float]:
        """One PPO update (``n_epochs`` minibatch passes) on ``rollout``; returns metrics.

        Args:
            rollout: from :meth:`collect`.
            progress: fraction of the run done in ``[0, 1]``, for learning-rate annealing.
        """
        cfg = self.config
        if cfg.anneal_lr:
            for g in self.optimizer.param_groups:
                g["lr"] = cfg.lr * max(1.0 - progress, 0.0)
        f = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32).T.contiguous()  # (T, N) → (N, T)
        advantages, returns = gae(f(rollout.rewards), f(rollout.values), f(rollout.next_values),
                                  f(rollout.terminated).bool(), f(rollout.episode_end).bool(),
                                  gamma=cfg.gamma, gae_lambda=cfg.gae_lambda)
        T, N = rollout.rewards.shape
        flat = lambda x: torch.as_tensor(np.asarray(x)).reshape(T * N, *np.asarray(x).shape[2:])
        obs_n = self._norm(flat(rollout.obs).float())
        actions = flat(rollout.actions)
        actions = actions.long() if self.discrete else actions.float()
        old_logprobs, old_values = flat(rollout.logprobs).float(), flat(rollout.values).float()
        adv, ret = advantages.T.reshape(-1), returns.T.reshape(-1)  # back to (T, N) order, flattened
        stats: dict[str, list[float]] = {}
        kls: list[float] = []
        stop = False
        for _ in range(cfg.n_epochs):
            perm = torch.randperm(T * N, generator=self.generator)
            for start in range(0, T * N, cfg.batch_size):
                idx = perm[start : start + cfg.batch_size]
                dist = self.distribution(obs_n[idx])
                logprobs = self._logprob(dist, actions[idx])
                a = adv[idx]
                if cfg.normalize_advantages and len(idx) > 1:
                    a = (a - a.mean()) / (a.std() + 1e-8)
                if cfg.loss == "clip":
                    pg, m = ppo_clip_loss(logprobs, old_logprobs[idx], a, clip_range=cfg.clip_range)
                else:
                    pg, m = ppo_kl_penalty_loss(logprobs, old_logprobs[idx], a, beta=self.kl_ctl.beta)
                values = self.value(obs_n[idx]).squeeze(-1)
                vl = value_loss(values, old_values[idx], ret[idx], clip_range_vf=cfg.clip_range_vf)
                entropy = dist.entropy() if self.discrete else dist.entropy().sum(-1)
                loss = masked_mean(pg) + cfg.vf_coef * masked_mean(vl) - cfg.ent_coef * masked_mean(entropy)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                for k, v in {**m, "loss/policy": pg.mean(), "loss/value": vl.mean(),
                             "policy/entropy": entropy.mean()}.items():
                    stats.setdefault(k, []).append(float(v.detach()))
                kls.append(float(m["policy/approx_kl"]))
            if cfg.target_kl is not None and np.mean(kls[-(T * N // cfg.batch_size):]) > cfg.target_kl:
                stop = True
                break
        if cfg.loss == "kl_penalty":
            self.kl_ctl.update(float(np.mean(kls)))
        out = {k: float(np.mean(v)) for k, v in stats.items()}
        var_y = ret.var()
        out["policy/explained_variance"] = float(1 - (ret - old_values).var() / var_y) if var_y > 0 else float("nan")
        out["policy/early_stop"] = float(stop)
        if not self.discrete:
            out["policy/std"] = float(self.log_std.detach().exp().mean())
        return out

    # --- evaluating ---------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, env: gym.Env, n_episodes: int, *, seed: int, deterministic: bool = True) -> list[float]:
        """True (env) returns of ``n_episodes`` episodes in a single env, seeds ``seed, seed+1, …``."""
        return evaluate_episodes(self.act, env, n_episodes, seed=seed, deterministic=deterministic)
