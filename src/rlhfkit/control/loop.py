"""Deep RL from human preferences (Christiano et al. 2017), the training loop.

Reads like the paper's algorithm (§2.2): the policy acts, fragments are cut from its
trajectories, the most uncertain pairs go to the teacher, the reward ensemble is fitted to the
answers with the Bradley-Terry loss, and PPO optimises the learned reward. The true reward is
only seen by the synthetic teacher and by evaluation, never by the agent or the reward model.

::

    rollouts of the initial policy → first labels (initial_label_frac of the budget) → fit r̂
    repeat until the step budget is spent:
        collect a rollout with r̂ as the reward     (LearnedReward wrapper)
        PPO update on it
        ask the teacher about the most uncertain fragment pairs (label rate ∝ T₀/(T+T₀))
        refit r̂ (warm start, early stopping), renormalise it on this rollout
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rlhfkit.control.checkpoint import RunDir, load_comparisons
from rlhfkit.control.config import TrainConfig, config_from_dict, save_config
from rlhfkit.control.envs import env_seeds, make_env, make_vec_env
from rlhfkit.control.ppo import PPOAgent, Rollout
from rlhfkit.control.labelling import Labels, fragment_features, labelling_session
from rlhfkit.control.wrappers import LearnedReward
from rlhfkit.feedback.teachers import Teacher, make_teacher
from rlhfkit.reward.ensemble import RewardEnsemble

__all__ = ["RunResult", "evaluate_run", "label_schedule", "load_agent", "train", "train_baseline"]

Callback = Callable[[dict[str, Any]], None]


@dataclass
class RunResult:
    """What a finished run reports.

    ``eval_returns`` are true returns on the task the run trained on (with ``termination="penalty"``, the env
    without termination); ``standard_returns``, only for such runs, the same policy's returns on the env's
    standard task (the episode ends at a fall), the figure the literature reports.
    """

    out: str
    eval_returns: list[float]
    labels: int
    env_steps: int
    wall_s: float
    standard_returns: list[float] | None = None

    @property
    def mean_return(self) -> float:
        """Mean true return over the evaluation episodes."""
        return float(np.mean(self.eval_returns))


def label_schedule(config: TrainConfig, n_iterations: int) -> list[int]:
    """Labels to ask at each iteration after the initial batch; sums to the rest of the budget.

    The rate decays as ``T₀ / (T + T₀)`` in the env steps ``T`` done (Christiano et al. 2017,
    §2.2.4 / App. A); rounding is carried over so the total is exact. With ``config.label_every = k > 1``
    the labels of iterations ``i … i + k − 1`` are all asked at iteration ``i`` (a multiple of ``k``).
    """
    rest = config.total_labels - config.initial_labels
    if n_iterations <= 0 or rest <= 0:
        return [0] * max(n_iterations, 0)
    t0 = config.label_decay_steps or max(config.total_steps // 4, 1)
    steps = config.rollout_steps * (1 + np.arange(n_iterations))
    w = t0 / (steps + t0)
    labels = np.floor(w / w.sum() * rest).astype(int)
    labels[: rest - labels.sum()] += 1  # hand out the remainder first: exact sum, still non-increasing
    k = config.label_every
    if k > 1:
        blocks = np.add.reduceat(labels, np.arange(0, n_iterations, k))
        labels = np.zeros_like(labels)
        labels[::k] = blocks
    return labels.tolist()


def _features(model: RewardEnsemble, rollout: Rollout) -> torch.Tensor:
    obs = torch.as_tensor(rollout.obs.reshape(-1, rollout.obs.shape[-1]), dtype=torch.float32)
    acts = torch.as_tensor(rollout.env_actions.reshape(obs.shape[0], *rollout.env_actions.shape[2:]))
    return model.features(obs, acts)


def _norm_features(config: TrainConfig, model: RewardEnsemble, rollout: Rollout, labels: Labels) -> torch.Tensor:
    """``(M, D)`` features r̂ is renormalised on after a refit (:attr:`TrainConfig.reward_norm`)."""
    if config.reward_norm == "initial" and labels.used:
        first = labels.used[: config.initial_labels]  # asked on the random policy's rollouts
        x = fragment_features(model, [c.left for c in first] + [c.right for c in first])  # (B, T, D)
        return x.reshape(-1, x.shape[-1])
    return _features(model, rollout)


def train(config: TrainConfig, out: str, *, resume: bool = False, teacher: Teacher | None = None,
          on_iteration: Callback | None = None) -> RunResult:
    """Run the loop of the module docstring and write a run directory ``out`` (with ``config.algo ==
    "pebble"``, PEBBLE's off-policy loop instead: :func:`rlhfkit.control.pebble.train_pebble`).

    Args:
        config: the run's configuration (ignored on resume: the saved one is used).
        out: run directory (created).
        resume: continue the run saved in ``out``.
        teacher: who answers queries; default a synthetic teacher of ``config.teacher``.
        on_iteration: called with each iteration's metrics (for progress display).

    Returns:
        :class:`RunResult` with the final evaluation on the true reward.

    Raises:
        ValueError: for a bad config, or ``resume`` on a directory that is not a run.
    """
    run = RunDir(out)
    if resume:
        if not run.is_run():
            raise ValueError(f"--resume: {out} is not a run directory (no config.json and checkpoint/state.json)")
        config = config_from_dict(json.loads(run.config_path.read_text()))
    if config.algo == "pebble":
        from rlhfkit.control.pebble import train_pebble  # the off-policy loop builds on this module

        return train_pebble(config, out, resume=resume, teacher=teacher, on_iteration=on_iteration)
    config.validate()
    run.path.mkdir(parents=True, exist_ok=True)
    if not resume:
        save_config(config, str(run.config_path))
        run.metrics_path.unlink(missing_ok=True)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    cfg = config.ppo

    envs = make_vec_env(config.env_id, cfg.n_envs, seed=config.seed, horizon=config.horizon,
                        termination=config.termination)
    obs_dim = envs.single_observation_space.shape[0]
    agent = PPOAgent(envs.single_observation_space, envs.single_action_space, cfg, seed=config.seed)
    discrete = agent.discrete
    model = RewardEnsemble(obs_dim, agent.act_dim, discrete, config.reward)
    envs = LearnedReward(envs, lambda o, a: model.reward(torch.as_tensor(o, dtype=torch.float32),
                                                        torch.as_tensor(a)).numpy())
    n_iterations = max((config.total_steps - config.rollout_steps) // config.rollout_steps, 0)
    schedule = label_schedule(config, n_iterations)
    start = time.perf_counter()

    obs, _ = envs.reset(seed=env_seeds(config.seed, cfg.n_envs))
    session = {"model": model, "run": run, "fragment_length": config.fragment_length,
               "oversample": config.oversample, "rng": rng}
    if resume:
        state = run.load(agent=agent, reward=model, optimizers={"agent": agent.optimizer})
        labels = Labels.resumed(load_comparisons(run.comparisons_path), state["labels"])
        first_iteration, env_steps, wall_before = state["iteration"] + 1, state["env_steps"], state["wall_s"]
        rollout, obs = agent.collect(envs, obs)  # fresh rollout after the restart (not counted)
    else:
        labels = Labels([], [])
        # 1. rollouts of the initial policy, the first batch of labels, the first fit
        rollout, obs = agent.collect(envs, obs)
        env_steps, wall_before, first_iteration = rollout.n_transitions, 0.0, 0
        model.set_input_stats(_features(model, rollout))
        if teacher is None:
            scale = float(np.mean(np.abs(rollout.true_rewards))) * config.fragment_length
            teacher = make_teacher(config.teacher, seed=config.seed, return_scale=max(scale, 1e-6))
        fit = labelling_session(rollout, config.initial_labels, teacher=teacher, labels=labels,
                                norm_features=_features(model, rollout), method="random", seed=config.seed,
                                epochs=config.reward_epochs_initial, **session)
        record = {"iteration": -1, "env_steps": env_steps, "labels": len(labels),
                  "true_return": float(np.mean(rollout.episode_true_returns)) if rollout.episode_true_returns else None,
                  "wall_s": time.perf_counter() - start, **fit}
        run.log(record)
        if on_iteration:
            on_iteration(record)
    if teacher is None:
        scale = float(np.mean(np.abs(rollout.true_rewards))) * config.fragment_length
        teacher = make_teacher(config.teacher, seed=config.seed + 1, return_scale=max(scale, 1e-6))

    # 2. the loop
    for it in range(first_iteration, n_iterations):
        t_it = time.perf_counter()
        rollout, obs = agent.collect(envs, obs)
        env_steps += rollout.n_transitions
        ppo_metrics = agent.update(rollout, progress=it / max(n_iterations, 1))
        n_new = schedule[it]
        fit: dict[str, float] = {}
        if n_new > 0:
            fit = labelling_session(rollout, n_new, teacher=teacher, labels=labels,
                                    norm_features=_norm_features(config, model, rollout, labels),
                                    method=config.query_selection,
                                    seed=config.seed + it + 1, epochs=config.reward_epochs, **session)
        wall = wall_before + time.perf_counter() - start
        record = {
            "iteration": it, "env_steps": env_steps, "labels": len(labels),
            "true_return": float(np.mean(rollout.episode_true_returns)) if rollout.episode_true_returns else None,
            "learned_return": float(np.mean(rollout.episode_returns)) if rollout.episode_returns else None,
            "steps_per_s": rollout.n_transitions / (time.perf_counter() - t_it),
            "wall_s": wall, **fit, **ppo_metrics,
        }
        run.log(record)
        run.save(agent=agent, reward=model, optimizers={"agent": agent.optimizer},
                 state={"iteration": it, "env_steps": env_steps, "wall_s": wall, "labels": len(labels)})
        if on_iteration:
            on_iteration(record)
    envs.close()
    return _finish(run, config, agent, env_steps, len(labels), wall_before + time.perf_counter() - start)


def _finish(run: RunDir, config: TrainConfig, agent: PPOAgent, env_steps: int, labels: int, wall: float) -> RunResult:
    def evaluate(termination: str) -> list[float]:
        eval_env = make_env(config.env_id, horizon=config.horizon, termination=termination)
        try:
            return agent.evaluate(eval_env, config.eval_episodes, seed=1_000_000 + 1000 * config.seed)
        finally:
            eval_env.close()

    returns = evaluate(config.termination)
    standard = evaluate("absorb") if config.termination != "absorb" else None
    summary = {"env_id": config.env_id, "labels": labels, "env_steps": env_steps, "wall_s": wall,
               "eval_returns": returns, "mean_true_return": float(np.mean(returns)),
               "std_true_return": float(np.std(returns))}
    if standard is not None:
        summary.update(standard_returns=standard, mean_standard_return=float(np.mean(standard)))
    (run.path / "summary.json").write_text(json.dumps(summary, indent=1))
    return RunResult(str(run.path), returns, labels, env_steps, wall, standard)


def train_baseline(config: TrainConfig, out: str, *, on_iteration: Callback | None = None) -> RunResult:
    """PPO on the **true** reward with the same PPO settings and step budget: the reference curve.

    Writes the same run-directory layout as :func:`train` (no labels, no reward model). With
    ``algo="pebble"`` the learner is SAC (:func:`rlhfkit.control.pebble.train_sac_baseline`).
    """
    if config.algo == "pebble":
        from rlhfkit.control.pebble import train_sac_baseline

        return train_sac_baseline(config, out, on_iteration=on_iteration)
    config.validate()
    run = RunDir(out)
    run.path.mkdir(parents=True, exist_ok=True)
    save_config(config, str(run.config_path))
    run.metrics_path.unlink(missing_ok=True)
    torch.manual_seed(config.seed)
    envs = make_vec_env(config.env_id, config.ppo.n_envs, seed=config.seed, horizon=config.horizon,
                        termination=config.termination)
    agent = PPOAgent(envs.single_observation_space, envs.single_action_space, config.ppo, seed=config.seed)
    obs, _ = envs.reset(seed=env_seeds(config.seed, config.ppo.n_envs))
    n_iterations = config.total_steps // config.rollout_steps
    start, env_steps = time.perf_counter(), 0
    for it in range(n_iterations):
        t_it = time.perf_counter()
        rollout, obs = agent.collect(envs, obs)
        env_steps += rollout.n_transitions
        metrics = agent.update(rollout, progress=it / n_iterations)
        record = {"iteration": it, "env_steps": env_steps, "labels": 0,
                  "true_return": float(np.mean(rollout.episode_true_returns)) if rollout.episode_true_returns else None,
                  "steps_per_s": rollout.n_transitions / (time.perf_counter() - t_it),
                  "wall_s": time.perf_counter() - start, **metrics}
        run.log(record)
        if on_iteration:
            on_iteration(record)
    run.save(agent=agent, reward=torch.nn.Module(), optimizers={"agent": agent.optimizer},
             state={"iteration": n_iterations - 1, "env_steps": env_steps, "wall_s": time.perf_counter() - start,
                    "labels": 0})
    envs.close()
    return _finish(run, config, agent, env_steps, 0, time.perf_counter() - start)


def load_agent(out: str) -> tuple[TrainConfig, Any]:
    """Rebuild the config and the trained agent (:class:`PPOAgent`, or a PEBBLE run's ``SACAgent``) of
    run directory ``out``.

    Raises:
        ValueError: if ``out`` is not a run directory.
    """
    from safetensors.torch import load_file

    run = RunDir(out)
    if not run.is_run():
        raise ValueError(f"{out} is not a run directory (no config.json and checkpoint/state.json)")
    config = config_from_dict(json.loads(run.config_path.read_text()))
    if config.algo == "pebble":
        from rlhfkit.control.pebble import load_pebble_agent  # the PEBBLE loop builds on this module

        return load_pebble_agent(out)
    env = make_env(config.env_id, horizon=config.horizon)
    agent = PPOAgent(env.observation_space, env.action_space, config.ppo, seed=config.seed)
    env.close()
    agent.load_state_dict(load_file(str(run.ckpt / "agent.safetensors")))
    return config, agent


def evaluate_run(out: str, episodes: int = 10, *, seed: int = 2_000_000, deterministic: bool = True) -> list[float]:
    """True returns of ``episodes`` episodes of the saved agent of run ``out``, on the task it trained on
    (its ``termination`` setting)."""
    config, agent = load_agent(out)
    env = make_env(config.env_id, horizon=config.horizon, termination=config.termination)
    try:
        return agent.evaluate(env, episodes, seed=seed, deterministic=deterministic)
    finally:
        env.close()
