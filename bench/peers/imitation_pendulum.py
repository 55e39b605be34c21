#!/usr/bin/env python3
"""Peer run for the control benchmark: imitation's preference-comparisons example.

Runs, once per seed, the example from imitation 1.0.1's
``docs/algorithms/preference_comparisons.rst`` ("train PPO on Pendulum using a
reward model trained on 200 synthetic preference comparisons"; online at
https://imitation.readthedocs.io/en/latest/algorithms/preference_comparisons.html)
with its tuned hyperparameters (imitation PR #771) and ``num_iterations=60``,
the value the example's own comment recommends ("Set to 60 for better
performance").  Every setting below is the doc's, except:

* seeding: the doc hard-codes ``np.random.default_rng(0)`` and leaves PPO and
  torch unseeded; here ``rng = default_rng(S)``, ``torch.manual_seed(S)``
  before the reward net is built and ``PPO(seed=S)`` (as the tutorial
  notebook does with ``seed=0``), so that a run is repeatable;
* ``steps`` / ``comparisons`` / ``iterations`` / ``eval-episodes`` are exposed
  on the command line (defaults = the doc's tuned values);
* the doc's (no-op) ``PreferenceQuerent`` is absent: it is not in 1.0.1.

The score is exactly the doc's: ``evaluate_policy(agent.policy, venv, 10)``,
i.e. the *deterministic* (mean-action) policy, true Pendulum reward, on the
same 8-env VecEnv.  ``wall_s`` times ``pref_comparisons.train`` only (reward
learning + RL, with all the env stepping it does), not setup or evaluation.

Must run in bench/.venv-imitation (see setup_imitation.sh), not the project's
.venv.  Everything imitation/SB3 print goes to stderr; stdout carries one JSON
record per seed, one line each.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata as md
import json
import os
import sys
import time

ENV_ID = "Pendulum-v1"


def _parse_seeds(values: list[str]) -> list[int]:
    seeds: list[int] = []
    for v in values:
        seeds.extend(int(s) for s in v.replace(",", " ").split())
    return seeds


def run_one(seed: int, steps: int, comparisons: int, iterations: int,
            eval_episodes: int) -> dict:
    import numpy as np
    import torch as th
    from stable_baselines3 import PPO
    from stable_baselines3.common.evaluation import evaluate_policy

    from imitation.algorithms import preference_comparisons
    from imitation.policies.base import FeedForward32Policy, NormalizeFeaturesExtractor
    from imitation.rewards.reward_nets import BasicRewardNet
    from imitation.util.networks import RunningNorm
    from imitation.util.util import make_vec_env

    th.manual_seed(seed)
    rng = np.random.default_rng(seed)

    venv = make_vec_env(ENV_ID, rng=rng)  # default n_envs=8, DummyVecEnv

    reward_net = BasicRewardNet(
        venv.observation_space, venv.action_space, normalize_input_layer=RunningNorm,
    )

    fragmenter = preference_comparisons.RandomFragmenter(warning_threshold=0, rng=rng)
    gatherer = preference_comparisons.SyntheticGatherer(rng=rng)
    preference_model = preference_comparisons.PreferenceModel(reward_net)
    reward_trainer = preference_comparisons.BasicRewardTrainer(
        preference_model=preference_model,
        loss=preference_comparisons.CrossEntropyRewardLoss(),
        epochs=10,
        rng=rng,
    )

    agent = PPO(
        policy=FeedForward32Policy,
        policy_kwargs=dict(
            features_extractor_class=NormalizeFeaturesExtractor,
            features_extractor_kwargs=dict(normalize_class=RunningNorm),
        ),
        env=venv,
        seed=seed,
        n_steps=2048 // venv.num_envs,
        clip_range=0.1,
        ent_coef=0.01,
        gae_lambda=0.95,
        n_epochs=10,
        gamma=0.97,
        learning_rate=2e-3,
    )

    trajectory_generator = preference_comparisons.AgentTrainer(
        algorithm=agent,
        reward_fn=reward_net,
        venv=venv,
        exploration_frac=0.05,
        rng=rng,
    )

    pref_comparisons = preference_comparisons.PreferenceComparisons(
        trajectory_generator,
        reward_net,
        num_iterations=iterations,
        fragmenter=fragmenter,
        preference_gatherer=gatherer,
        reward_trainer=reward_trainer,
        initial_epoch_multiplier=4,
        initial_comparison_frac=0.1,
        query_schedule="hyperbolic",
    )

    def env_steps_so_far() -> int:
        # make_vec_env wraps each env in an SB3 Monitor, which counts every step.
        return int(sum(e.get_total_steps() for e in venv.envs))

    steps0 = env_steps_so_far()
    t0 = time.perf_counter()
    pref_comparisons.train(total_timesteps=steps, total_comparisons=comparisons)
    wall_s = time.perf_counter() - t0
    train_env_steps = env_steps_so_far() - steps0

    reward_mean, reward_std = evaluate_policy(agent.policy, venv, eval_episodes)

    record = {
        "peer": "imitation",
        "version": md.version("imitation"),
        "env": ENV_ID,
        "seed": seed,
        "labels": len(pref_comparisons.dataset),
        # Real environment transitions stepped during training (PPO rollouts +
        # extra fragment sampling + exploration), counted by the Monitors.
        "env_steps": train_env_steps,
        "mean_true_return": float(reward_mean),
        "std_true_return": float(reward_std),
        "wall_s": wall_s,
        "steps_per_s": train_env_steps / wall_s,
        # Extra context, not part of the shared record format.
        "env_steps_budget": steps,            # total_timesteps passed to train()
        "agent_timesteps": int(agent.num_timesteps),  # PPO's own counter
        "iterations": iterations,
        "eval_episodes": eval_episodes,
        "eval_deterministic": True,
        "torch_threads": th.get_num_threads(),
        "sb3_version": md.version("stable-baselines3"),
        "gymnasium_version": md.version("gymnasium"),
        "torch_version": md.version("torch"),
    }
    venv.close()
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", action="append", default=None,
                   help="seed(s); repeatable and/or comma/space list (default 0)")
    p.add_argument("--steps", type=int, default=50_000,
                   help="total_timesteps passed to PreferenceComparisons.train")
    p.add_argument("--comparisons", type=int, default=200)
    p.add_argument("--iterations", type=int, default=60)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--json", metavar="OUT", default=None,
                   help="write a JSON list of all records here (rewritten after each seed)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch.set_num_threads (default: torch's own default)")
    args = p.parse_args(argv)
    seeds = _parse_seeds(args.seed or ["0"])

    if args.torch_threads:
        import torch
        torch.set_num_threads(args.torch_threads)

    records = []
    for seed in seeds:
        with contextlib.redirect_stdout(sys.stderr):
            rec = run_one(seed, args.steps, args.comparisons, args.iterations,
                          args.eval_episodes)
        records.append(rec)
        print(json.dumps(rec), flush=True)
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:  # one line: a JSON list of records
                f.write(json.dumps(records) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
