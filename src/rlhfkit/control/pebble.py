"""PEBBLE (Lee et al. 2021): off-policy preference-based RL with unsupervised pre-training and relabelling.

Reads like the paper's Algorithm 2, with the fragments, teachers, query selection, reward ensemble,
run directory and plots of the PPO loop (:mod:`rlhfkit.control.loop`), and its labelling session
(:func:`rlhfkit.control.labelling.labelling_session`)::

    seed steps: uniform random actions into the replay buffer
    unsupervised pre-training: SAC on the k-NN state-entropy reward (§4.1)
    first labels: uniform queries from the buffer; fit r̂; relabel the buffer; reset the critics
    every feedback_every env steps while labels remain:
        queries by ensemble disagreement (or entropy) among oversample × n candidates from the buffer
        refit r̂ (warm start), renormalise it on the buffer, relabel EVERY stored transition (§4.2)
    every env step: act, store (o, a, o', r̂(o, a)), one SAC update per transition
    every checkpoint_every env steps, after each session and at the end: a resumable checkpoint

Two label-efficiency options (:class:`~rlhfkit.control.config.PebbleConfig`):

- ``pebble.qpa`` — QPA (Hu et al. 2023, ICLR 2024): queries uniform from the last ``qpa_window``
  episodes only (policy-aligned query selection, §4.1) and, while labels remain, a ``qpa_replay``
  fraction of each SAC batch from those episodes (hybrid experience replay, §4.2).
- ``pebble.surf`` — SURF (Park et al. 2022, ICLR 2022): r̂ is also fitted on unlabelled pairs from the
  buffer that the ensemble confidently pseudo-labels, with temporal crops of every pair
  (:mod:`rlhfkit.reward.surf`).

The true reward is seen only by the synthetic teacher and by evaluation. Discrete-action tasks
(CartPoleCos) are left to the PPO loop: SAC here is for continuous actions.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import torch

from rlhfkit.control.checkpoint import RunDir, load_comparisons
from rlhfkit.control.config import TrainConfig, config_from_dict, save_config
from rlhfkit.control.envs import env_seeds, make_vec_env
from rlhfkit.control.labelling import Labels, SurfOptions, labelling_session
from rlhfkit.control.loop import Callback, RunResult, _finish
from rlhfkit.control.pebble_checkpoint import (
    PebbleProgress,
    load_pebble_checkpoint,
    restore_teacher_rng,
    save_pebble_checkpoint,
    truncate_metrics,
)
from rlhfkit.control.sac import ReplayBuffer, SACAgent, StateEntropyReward
from rlhfkit.feedback.teachers import Teacher, make_teacher
from rlhfkit.reward.ensemble import RewardEnsemble

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

    Checkpoints (:mod:`rlhfkit.control.pebble_checkpoint`) are written every ``pebble.checkpoint_every``
    env steps, after every labelling session and at the end. ``resume`` restores everything from the
    last one — agent, optimisers, ``log α``, reward ensemble, replay buffer, counters, random states —
    and reloads the labels: those asked after the checkpoint are spent first, so no label is asked twice
    or lost. The environments' own states cannot be restored: they are reset (with fresh seeds) on
    resume, the episodes running at the interruption end there (their last stored step is marked as an
    episode end, not a termination), and the resumed run's trajectory differs from an uninterrupted one.

    Args:
        config: with ``algo="pebble"``; its ``sac`` and ``pebble`` settings (ignored on resume: the saved
            config is used).
        out: run directory (created).
        resume: continue the run saved in ``out``.
        teacher: who answers queries; default a synthetic teacher of ``config.teacher`` (on resume, with
            its random state restored).
        on_iteration: called with each metrics record (for progress display), after its checkpoint.
        true_reward: learn from the environment's reward (:func:`train_sac_baseline`); on resume, the
            saved run's choice is used.

    Returns:
        :class:`~rlhfkit.control.loop.RunResult` with the final evaluation on the true reward.

    Raises:
        ValueError: for a bad config, a discrete-action env, or ``resume`` of a directory that is not a
            resumable PEBBLE run.
    """
    run = RunDir(out)
    if resume:
        if not run.is_run():
            raise ValueError(f"--resume: {out} is not a run directory (no config.json and checkpoint/state.json)")
        config = config_from_dict(json.loads(run.config_path.read_text()))
    config.validate()
    run.path.mkdir(parents=True, exist_ok=True)
    if not resume:
        save_config(config, str(run.config_path))
        run.metrics_path.unlink(missing_ok=True)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    sc, pb = config.sac, config.pebble
    envs = make_vec_env(config.env_id, sc.n_envs, seed=config.seed, horizon=config.horizon,
                        termination=config.termination)
    agent = SACAgent(envs.single_observation_space, envs.single_action_space, sc, seed=config.seed)
    obs_dim, act_dim, N = agent.obs_dim, agent.act_dim, sc.n_envs
    model = RewardEnsemble(obs_dim, act_dim, False, config.reward)
    buffer = ReplayBuffer(min(sc.buffer_size, config.steps_run), N, obs_dim, act_dim)
    entropy_reward = StateEntropyReward(pb.knn_k)
    gen = torch.Generator().manual_seed(config.seed + 17)
    # with the true reward there is nothing to fit: SAC learns from it from the first update (no pre-training)
    progress = PebbleProgress(true_reward=true_reward, fitted=true_reward)
    labels, reset_seeds = Labels([], []), env_seeds(config.seed, N)
    parts = {"agent": agent, "model": model, "buffer": buffer, "entropy": entropy_reward}
    if resume:
        progress, state = load_pebble_checkpoint(run, **parts, rng=rng, generator=gen)
        if run.comparisons_path.is_file():
            labels = Labels.resumed(load_comparisons(run.comparisons_path), state["labels"])
        if teacher is None and progress.return_scale is not None:
            teacher = make_teacher(config.teacher, seed=config.seed, return_scale=progress.return_scale)
            restore_teacher_rng(teacher, state)
        buffer.mark_episode_end()  # the envs restart below: no fragment may join the two pieces
        truncate_metrics(run, progress.env_steps)
        reset_seeds = [int(x) for x in np.random.SeedSequence([config.seed, progress.env_steps]).generate_state(N)]
    schedule = {} if progress.true_reward else dict(feedback_schedule(config))
    last_session = max(schedule, default=0)
    surf = SurfOptions(pb.surf_tau, pb.surf_weight, pb.surf_ratio, pb.surf_crop) if pb.surf else None
    recent_start = progress.env_steps // N - buffer.recent_steps(pb.qpa_window) if pb.qpa else 0  # vector step
    ep_true, ep_learned = np.zeros(N), np.zeros(N)
    done_true: list[float] = []
    done_learned: list[float] = []
    stats: dict[str, list[float]] = {}
    fit_metrics: dict[str, float] = {}
    wall_before, start = progress.wall_s, time.perf_counter()
    last_log_t, unsup_end = start, pb.seed_steps + pb.unsup_steps

    def checkpoint() -> None:
        progress.wall_s = wall_before + time.perf_counter() - start
        save_pebble_checkpoint(run, **parts, progress=progress, labels=len(labels), log_every=pb.log_every,
                               rng=rng, generator=gen, teacher=teacher)

    obs, _ = envs.reset(seed=reset_seeds)  # fresh episodes with new seeds on resume
    while progress.env_steps < config.steps_run:
        obs = np.array(obs, dtype=np.float32, copy=True)
        if progress.env_steps < pb.seed_steps:
            actions, env_actions = agent.random_actions(N)
        else:
            actions, env_actions = agent.sample_actions(obs)
        next_obs, true_r, terminated, truncated, info = envs.step(env_actions)
        end = terminated | truncated
        real_next = np.array(next_obs, dtype=np.float32, copy=True)
        if end.any():
            real_next[end] = np.stack(info["final_obs"][end])
        if progress.true_reward:
            learned = np.asarray(true_r, np.float32)
        elif progress.fitted:
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
        progress.env_steps += N
        env_steps = progress.env_steps
        if pb.qpa and end.any():  # QPA's policy-aligned window moves on when an episode ends
            recent_start = env_steps // N - buffer.recent_steps(pb.qpa_window)

        if env_steps in schedule:  # a labelling session: queries, r̂ refit, relabelling
            if not labels.used:
                model.set_input_stats(model.features(buffer.flat("obs"), buffer.flat("env_actions")))
                if teacher is None:
                    scale = float(buffer.flat("true_rewards").abs().mean()) * config.fragment_length
                    progress.return_scale = max(scale, 1e-6)
                    teacher = make_teacher(config.teacher, seed=config.seed, return_scale=progress.return_scale)
            fit_metrics = _session(config, buffer, schedule[env_steps], env_steps, model=model, teacher=teacher,
                                   labels=labels, run=run, rng=rng, surf=surf)
            buffer.relabel(lambda o, a: model.reward(o, a))
            if not progress.fitted and pb.reset_critic and pb.unsup_steps > 0:
                agent.reset_critics()
            progress.fitted = True
            progress.sessions_done.append(env_steps)

        if env_steps > pb.seed_steps and (progress.fitted or env_steps <= unsup_end):
            progress.credit += N * sc.updates_per_step  # updates owed: the update-to-data ratio
            hybrid = pb.qpa and progress.fitted and env_steps < last_session  # QPA: while labels remain
            while progress.credit >= 1.0:
                progress.credit -= 1.0
                if hybrid:
                    batch = buffer.sample_hybrid(sc.batch_size, env_steps // N - recent_start, pb.qpa_replay, gen)
                else:
                    batch = buffer.sample(sc.batch_size, gen)
                intrinsic = None
                if not progress.fitted:  # unsupervised pre-training: maximise state entropy
                    intrinsic = entropy_reward(batch["next_obs"], buffer.flat("obs"))
                for k, v in agent.update(batch, rewards=intrinsic).items():
                    stats.setdefault(k, []).append(v)

        record: dict[str, Any] | None = None
        if env_steps - progress.last_log_steps >= pb.log_every or env_steps >= config.steps_run:
            now = time.perf_counter()
            record = {
                "iteration": env_steps // pb.log_every - 1, "env_steps": env_steps, "labels": len(labels),
                "phase": "seed" if env_steps <= pb.seed_steps else "unsupervised" if not progress.fitted
                else "preferences",
                "true_return": float(np.mean(done_true)) if done_true else None,
                "learned_return": float(np.mean(done_learned)) if done_learned and progress.fitted else None,
                "steps_per_s": (env_steps - progress.last_log_steps) / max(now - last_log_t, 1e-9),
                "wall_s": wall_before + now - start, **fit_metrics, **{k: float(np.mean(v)) for k, v in stats.items()},
            }
            run.log(record)
            done_true, done_learned, stats, fit_metrics = [], [], {}, {}
            progress.last_log_steps, last_log_t = env_steps, now
        due = (env_steps in schedule
               or env_steps // pb.checkpoint_every > (env_steps - N) // pb.checkpoint_every)
        if due and env_steps < config.steps_run:  # the last one is written below
            checkpoint()
        if record is not None and on_iteration:
            on_iteration(record)
    checkpoint()
    envs.close()
    return _finish(run, config, agent, progress.env_steps, len(labels), progress.wall_s)


def _session(config: TrainConfig, buffer: ReplayBuffer, n: int, env_steps: int, *, model: RewardEnsemble,
             teacher: Teacher, labels: Labels, run: RunDir, rng: np.random.Generator,
             surf: SurfOptions | None) -> dict[str, float]:
    """One PEBBLE labelling session (:func:`~rlhfkit.control.labelling.labelling_session`) on the replay buffer:
    the first with uniform queries; under QPA every one uniform from the policy-aligned buffer."""
    pb, first = config.pebble, not labels.used
    window = buffer.recent_steps(pb.qpa_window) if pb.qpa else pb.query_window
    return labelling_session(
        buffer.trajectories(window), n, model=model, teacher=teacher, labels=labels, run=run,
        norm_features=model.features(buffer.flat("obs"), buffer.flat("env_actions")),
        fragment_length=config.fragment_length,
        method="random" if first or pb.qpa else config.query_selection, oversample=config.oversample, rng=rng,
        seed=config.seed + env_steps, epochs=config.reward_epochs_initial if first else config.reward_epochs, surf=surf)


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

