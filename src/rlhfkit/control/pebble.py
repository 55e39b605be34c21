"""PEBBLE (Lee et al. 2021): off-policy preference-based RL with unsupervised pre-training and relabelling.

Reads like the paper's Algorithm 2, with the fragments, teachers, query selection, reward ensemble,
run directory and plots of the PPO loop (:mod:`rlhfkit.control.loop`)::

    seed steps: uniform random actions into the replay buffer
    unsupervised pre-training: SAC on the k-NN state-entropy reward (§4.1)
    first labels: uniform queries from the buffer; fit r̂; relabel the buffer; reset the critics
    every feedback_every env steps while labels remain:
        queries by ensemble disagreement (or entropy) among oversample × n candidates from the buffer
        refit r̂ (warm start), renormalise it on the buffer, relabel EVERY stored transition (§4.2)
    every env step: act, store (o, a, o', r̂(o, a)), one SAC update per transition

The true reward is seen only by the synthetic teacher and by evaluation. Discrete-action tasks
(CartPoleCos) are left to the PPO loop: SAC here is for continuous actions.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import torch

from rlhfkit.control.checkpoint import RunDir, save_comparisons
from rlhfkit.control.config import TrainConfig, config_from_dict, save_config
from rlhfkit.control.envs import env_seeds, make_vec_env
from rlhfkit.control.loop import Callback, RunResult, _ask, _finish
from rlhfkit.control.queries import select_queries
from rlhfkit.control.sac import ReplayBuffer, SACAgent, StateEntropyReward
from rlhfkit.feedback.records import Comparison
from rlhfkit.feedback.teachers import Teacher, make_teacher
from rlhfkit.reward.ensemble import RewardEnsemble, fit_reward_ensemble

__all__ = ["feedback_schedule", "load_pebble_agent", "train_pebble", "train_sac_baseline"]


def feedback_schedule(config: TrainConfig) -> list[tuple[int, int]]:
    """``(env_step, labels)`` of every labelling session: the first (``initial_labels``, uniform queries)
    when the seed and unsupervised steps end, then sessions every ``pebble.feedback_every`` env steps
    sharing the rest of the budget evenly (the remainder to the earliest), as B-Pref's fixed
    ``reward_batch`` per session. Sessions past the step budget are dropped."""
    pb, n_envs = config.pebble, config.sac.n_envs
    first = pb.seed_steps + pb.unsup_steps
    first = -(-first // n_envs) * n_envs  # on a vector step
    rest = config.total_labels - config.initial_labels
    every = -(-pb.feedback_every // n_envs) * n_envs
    room = max((config.total_steps // 2 - first) // every, 1) if pb.label_sessions is None else pb.label_sessions
    room = min(room, max((config.total_steps - first - 1) // every, 0))
    sessions = [(first, config.initial_labels)]
    if rest > 0 and room > 0:
        base, extra = divmod(rest, room)
        sessions += [(first + (i + 1) * every, base + (i < extra)) for i in range(room) if base + (i < extra) > 0]
    return sessions


def train_sac_baseline(config: TrainConfig, out: str, *, on_iteration: Callback | None = None) -> RunResult:
    """SAC on the **true** reward with the same settings and step budget (seed steps, no pre-training, no
    labels): the reference PEBBLE is measured against. Writes the same run-directory layout."""
    return train_pebble(config, out, on_iteration=on_iteration, true_reward=True)


def train_pebble(config: TrainConfig, out: str, *, resume: bool = False, teacher: Teacher | None = None,
                 on_iteration: Callback | None = None, true_reward: bool = False) -> RunResult:
    """Run PEBBLE (module docstring) and write a run directory ``out`` like :func:`rlhfkit.control.loop.train`.

    Args:
        config: with ``algo="pebble"``; its ``sac`` and ``pebble`` settings.
        out: run directory (created).
        resume: not supported yet for PEBBLE (the replay buffer is not checkpointed).
        teacher: who answers queries; default a synthetic teacher of ``config.teacher``.
        on_iteration: called with each metrics record (for progress display).
        true_reward: learn from the environment's reward (:func:`train_sac_baseline`).

    Returns:
        :class:`~rlhfkit.control.loop.RunResult` with the final evaluation on the true reward.

    Raises:
        ValueError: for a bad config, a discrete-action env, or ``resume``.
    """
    if resume:
        raise ValueError("--resume is not supported for --algo pebble yet (its replay buffer is not saved)")
    config.validate()
    run = RunDir(out)
    run.path.mkdir(parents=True, exist_ok=True)
    save_config(config, str(run.config_path))
    run.metrics_path.unlink(missing_ok=True)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    sc, pb = config.sac, config.pebble
    envs = make_vec_env(config.env_id, sc.n_envs, seed=config.seed, horizon=config.horizon)
    agent = SACAgent(envs.single_observation_space, envs.single_action_space, sc, seed=config.seed)
    obs_dim, act_dim, N = agent.obs_dim, agent.act_dim, sc.n_envs
    model = RewardEnsemble(obs_dim, act_dim, False, config.reward)
    buffer = ReplayBuffer(min(sc.buffer_size, config.steps_run), N, obs_dim, act_dim)
    entropy_reward = StateEntropyReward(pb.knn_k)
    sessions = {} if true_reward else dict(feedback_schedule(config))
    comparisons: list[Comparison] = []
    fitted, fit_metrics = true_reward, {}
    ep_true, ep_learned = np.zeros(N), np.zeros(N)
    done_true: list[float] = []
    done_learned: list[float] = []
    stats: dict[str, list[float]] = {}
    gen = torch.Generator().manual_seed(config.seed + 17)
    start = last_log_t = time.perf_counter()
    env_steps, last_log_steps, credit = 0, 0, 0.0
    unsup_end = pb.seed_steps + pb.unsup_steps

    obs, _ = envs.reset(seed=env_seeds(config.seed, N))
    while env_steps < config.steps_run:
        obs = np.array(obs, dtype=np.float32, copy=True)
        if env_steps < pb.seed_steps:
            actions, env_actions = agent.random_actions(N)
        else:
            actions, env_actions = agent.sample_actions(obs)
        next_obs, true_r, terminated, truncated, info = envs.step(env_actions)
        end = terminated | truncated
        real_next = np.array(next_obs, dtype=np.float32, copy=True)
        if end.any():
            real_next[end] = np.stack(info["final_obs"][end])
        if true_reward:
            learned = np.asarray(true_r, np.float32)
        elif fitted:
            learned = model.reward(torch.as_tensor(obs), torch.as_tensor(env_actions, dtype=torch.float32)).numpy()
        else:
            learned = np.zeros(N, np.float32)
        buffer.add(obs=obs, actions=actions, env_actions=env_actions, next_obs=real_next, true_rewards=true_r,
                   rewards=learned, terminated=terminated, episode_end=end)
        ep_true += true_r
        ep_learned += learned
        for i in np.flatnonzero(end):
            done_true.append(float(ep_true[i]))
            done_learned.append(float(ep_learned[i]))
            ep_true[i] = ep_learned[i] = 0.0
        obs = next_obs
        env_steps += N

        if env_steps in sessions:  # a labelling session: queries, r̂ refit, relabelling
            first = not comparisons
            if first:
                model.set_input_stats(model.features(buffer.flat("obs"), buffer.flat("env_actions")))
                if teacher is None:
                    scale = float(buffer.flat("true_rewards").abs().mean()) * config.fragment_length
                    teacher = make_teacher(config.teacher, seed=config.seed, return_scale=max(scale, 1e-6))
            pairs = select_queries(buffer.trajectories(pb.query_window), sessions[env_steps], model=model,
                                   fragment_length=config.fragment_length,
                                   method="random" if first else config.query_selection,
                                   oversample=config.oversample, rng=rng)
            _ask(teacher, pairs, comparisons)
            save_comparisons(run.comparisons_path, comparisons)
            fit_metrics = fit_reward_ensemble(model, comparisons, seed=config.seed + env_steps,
                                              max_epochs=config.reward_epochs_initial if first else config.reward_epochs)
            model.normalize_outputs(model.features(buffer.flat("obs"), buffer.flat("env_actions")))
            buffer.relabel(lambda o, a: model.reward(o, a))
            if first and pb.reset_critic and pb.unsup_steps > 0:
                agent.reset_critics()
            fitted = True

        if env_steps > pb.seed_steps and (fitted or env_steps <= unsup_end):
            credit += N * sc.updates_per_step  # updates owed: the update-to-data ratio
            while credit >= 1.0:
                credit -= 1.0
                batch = buffer.sample(sc.batch_size, gen)
                intrinsic = None
                if not fitted:  # unsupervised pre-training: maximise state entropy
                    intrinsic = entropy_reward(batch["next_obs"], buffer.flat("obs"))
                for k, v in agent.update(batch, rewards=intrinsic).items():
                    stats.setdefault(k, []).append(v)

        if env_steps - last_log_steps >= pb.log_every or env_steps >= config.steps_run:
            now = time.perf_counter()
            record: dict[str, Any] = {
                "iteration": env_steps // pb.log_every - 1, "env_steps": env_steps, "labels": len(comparisons),
                "phase": "seed" if env_steps <= pb.seed_steps else "unsupervised" if not fitted else "preferences",
                "true_return": float(np.mean(done_true)) if done_true else None,
                "learned_return": float(np.mean(done_learned)) if done_learned and fitted else None,
                "steps_per_s": (env_steps - last_log_steps) / max(now - last_log_t, 1e-9),
                "wall_s": now - start, **fit_metrics, **{k: float(np.mean(v)) for k, v in stats.items()},
            }
            run.log(record)
            if on_iteration:
                on_iteration(record)
            done_true, done_learned, stats, fit_metrics = [], [], {}, {}
            last_log_steps, last_log_t = env_steps, now
    wall = time.perf_counter() - start
    run.save(agent=agent, reward=model, optimizers=agent.optimizers,
             state={"iteration": env_steps // pb.log_every, "env_steps": env_steps, "wall_s": wall,
                    "labels": len(comparisons), "algo": "pebble"})
    envs.close()
    return _finish(run, config, agent, env_steps, len(comparisons), wall)


def load_pebble_agent(out: str) -> tuple[TrainConfig, SACAgent]:
    """Rebuild the config and the trained SAC agent of a PEBBLE run directory ``out``.

    Raises:
        ValueError: if ``out`` is not a run directory.
    """
    from safetensors.torch import load_file

    from rlhfkit.control.envs import make_env

    run = RunDir(out)
    if not run.is_run():
        raise ValueError(f"{out} is not a run directory (no config.json and checkpoint/state.json)")
    config = config_from_dict(json.loads(run.config_path.read_text()))
    env = make_env(config.env_id, horizon=config.horizon)
    agent = SACAgent(env.observation_space, env.action_space, config.sac, seed=config.seed)
    env.close()
    agent.load_state_dict(load_file(str(run.ckpt / "agent.safetensors")))
    return config, agent

