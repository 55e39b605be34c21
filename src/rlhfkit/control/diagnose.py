"""Does the learned reward agree with the true one where the policy goes? A check for reward hacking.

A preference run's reward model r̂ is fitted on the fragments its teacher compared; the policy is
then free to go where no label was asked. :func:`reward_agreement` rolls out a saved policy on the
run's task and scores every transition with both the true reward and the run's r̂ (normalised as
the agent saw it after the last refit), then reports the Pearson correlation between them per step
and over non-overlapping fragment-length windows (what the teacher compared). A run whose r̂ is
being exploited shows a learned return that climbs while the correlation on the policy's own states
falls (Christiano et al. 2017, §3.3 and Fig. 5, on the agent exploiting a reward predictor that is
not refitted online); a run stuck in a poor policy with a faithful r̂ shows a high correlation and a
higher learned return for a better run's policy (``policy=``), i.e. the optimiser, not the reward,
is the limit.

Shapes: ``N`` steps of an episode, ``W`` the window (fragment) length.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from rlhfkit.control.checkpoint import RunDir
from rlhfkit.control.config import TrainConfig, config_from_dict
from rlhfkit.control.envs import make_env, play_episode
from rlhfkit.control.loop import load_agent
from rlhfkit.reward.ensemble import RewardEnsemble

__all__ = ["RewardAgreement", "agreement_stats", "load_reward_model", "reward_agreement"]


@dataclass(frozen=True)
class RewardAgreement:
    """True and learned returns of a policy's episodes and how r̂ tracks the true reward on them.

    ``step_corr`` is the Pearson correlation of r̂ and the true reward over every step of every episode;
    ``window_corr`` the same over the sums of non-overlapping ``window``-step slices of each episode (the
    remainder of an episode shorter than a window is left out). Either is NaN when one side is constant
    or there are fewer than two points.
    """

    true_returns: list[float]
    learned_returns: list[float]
    step_corr: float
    window_corr: float
    window: int
    steps: int


def agreement_stats(learned: list[np.ndarray], true: list[np.ndarray], window: int) -> RewardAgreement:
    """Returns and correlations of per-episode reward sequences ``learned[i], true[i]`` (``(N_i,)`` each).

    Raises:
        ValueError: if the lists differ in length or are empty, an episode's two sequences differ in
            length, or ``window < 1``.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not learned or len(learned) != len(true):
        raise ValueError(f"need one learned and one true reward sequence per episode, got {len(learned)} and "
                         f"{len(true)}")
    wl, wt = [], []
    for i, (lr, tr) in enumerate(zip(learned, true)):
        if lr.shape != tr.shape or lr.ndim != 1:
            raise ValueError(f"episode {i}: learned {lr.shape} and true {tr.shape} rewards must be one (N,) shape")
        k = len(lr) // window
        wl.append(lr[: k * window].reshape(k, window).sum(1))
        wt.append(tr[: k * window].reshape(k, window).sum(1))

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        if len(a) < 2 or a.std() == 0 or b.std() == 0:
            return float("nan")
        return float(np.corrcoef(a, b)[0, 1])

    return RewardAgreement(
        true_returns=[float(t.sum()) for t in true], learned_returns=[float(r.sum()) for r in learned],
        step_corr=corr(np.concatenate(learned), np.concatenate(true)),
        window_corr=corr(np.concatenate(wl), np.concatenate(wt)), window=window,
        steps=int(sum(len(t) for t in true)))


def _run_config(out: str) -> TrainConfig:
    run = RunDir(out)
    if not run.is_run():
        raise ValueError(f"{out} is not a run directory (no config.json and checkpoint/state.json)")
    return config_from_dict(json.loads(run.config_path.read_text()))


def load_reward_model(out: str) -> RewardEnsemble:
    """The reward ensemble saved in run directory ``out``, with its input and output normalisation.

    Raises:
        ValueError: if ``out`` is not a run directory, or it holds no reward model (a true-reward baseline).
    """
    from safetensors.torch import load_file

    config = _run_config(out)
    state = load_file(str(RunDir(out).ckpt / "reward.safetensors"))
    if not state:
        raise ValueError(f"{out} has no reward model (a true-reward baseline run?)")
    env = make_env(config.env_id, horizon=config.horizon)
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    discrete = hasattr(act_space, "n")
    act_dim = int(act_space.n) if discrete else int(act_space.shape[0])
    model = RewardEnsemble(int(obs_space.shape[0]), act_dim, discrete, config.reward)
    model.load_state_dict(state)
    return model


def reward_agreement(out: str, episodes: int = 3, *, policy: str | None = None, seed: int = 3_000_000,
                     deterministic: bool = False, window: int | None = None) -> RewardAgreement:
    """Roll out a saved policy on run ``out``'s task and compare ``out``'s r̂ with the true reward on it.

    Args:
        out: the preference run whose reward model is checked (and whose task is used: env, horizon,
            termination).
        episodes: episodes to roll out, seeds ``seed, seed + 1, …``.
        policy: run directory whose saved policy acts (default ``out``'s own), e.g. a better run's, to see
            whether ``out``'s r̂ would rank it higher.
        seed: first episode seed.
        deterministic: take the policy's mode instead of sampling (sampling, the default, is what training
            saw).
        window: window length for ``window_corr`` (default the run's ``fragment_length``).

    Returns:
        :class:`RewardAgreement`; learned returns are sums of r̂ normalised as after the run's last refit.

    Raises:
        ValueError: if either directory is not a run, ``out`` has no reward model, ``episodes < 1``, or the
            policy run's env differs from ``out``'s.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    config = _run_config(out)
    model = load_reward_model(out)
    pconfig, agent = load_agent(policy or out)
    if pconfig.env_id != config.env_id:
        raise ValueError(f"the policy of {policy} acts in {pconfig.env_id}, the reward model of {out} is for "
                         f"{config.env_id}")
    env = make_env(config.env_id, horizon=config.horizon, termination=config.termination)
    learned, true = [], []
    try:
        for ep in range(episodes):
            obs, acts, rewards = play_episode(agent.act, env, seed=seed + ep, deterministic=deterministic)
            learned.append(model.reward(torch.from_numpy(obs), torch.from_numpy(acts)).numpy().astype(np.float64))
            true.append(np.asarray(rewards, dtype=np.float64))
    finally:
        env.close()
    return agreement_stats(learned, true, window or config.fragment_length)
