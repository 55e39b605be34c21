"""Checkpoints of the PEBBLE loop: everything ``--resume`` needs to continue a run where it stopped.

On top of the run directory's usual checkpoint (:class:`~rlhfkit.control.checkpoint.RunDir`: the SAC
agent's weights with ``log α``, its three optimisers, the reward ensemble with its input and output
normalisation, ``state.json``), a PEBBLE checkpoint holds::

    checkpoint/replay.safetensors   every stored transition, (steps, N, ...) per field, and the ring position
    checkpoint/random.safetensors   torch generator states (minibatches, the actor's noise, the global
                                    generator) and the state-entropy reward's running statistics
    checkpoint/state.json           + "pebble": the loop's counters (:class:`PebbleProgress`), the SAC update
                                    count, the numpy generator of query sampling and the synthetic
                                    teacher's generator

The labels live in ``comparisons.npz``, rewritten at every labelling session. ``state.json`` is written
last; the replay file carries the env step it was saved at, checked against ``state.json`` on load.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rlhfkit.checkpoints import atomic_write
from rlhfkit.control.checkpoint import RunDir
from rlhfkit.control.sac import ReplayBuffer, SACAgent, StateEntropyReward
from rlhfkit.reward.ensemble import RewardEnsemble

__all__ = ["PebbleProgress", "load_pebble_checkpoint", "restore_teacher_rng", "save_pebble_checkpoint",
           "truncate_metrics"]


@dataclass
class PebbleProgress:
    """The PEBBLE loop's counters, all that is not a tensor or a random state."""

    env_steps: int = 0
    """Env steps taken (over all sub-envs)."""
    credit: float = 0.0
    """SAC updates owed but not yet done (the fractional part of the update-to-data ratio)."""
    fitted: bool = False
    """Whether r̂ has replaced the state-entropy reward (the first labelling session is over)."""
    last_log_steps: int = 0
    """``env_steps`` of the last metrics record."""
    wall_s: float = 0.0
    """Wall seconds spent before this process (resumed runs add up)."""
    return_scale: float | None = None
    """The synthetic teacher's return scale, fixed at the first session (None: not asked yet)."""
    sessions_done: list[int] = field(default_factory=list)
    """``env_steps`` of every finished labelling session."""
    true_reward: bool = False
    """A true-reward SAC baseline (no labels) rather than PEBBLE."""


def save_pebble_checkpoint(run: RunDir, *, agent: SACAgent, model: RewardEnsemble, buffer: ReplayBuffer,
                           entropy: StateEntropyReward, progress: PebbleProgress, labels: int, log_every: int,
                           rng: np.random.Generator, generator: torch.Generator, teacher: Any = None) -> None:
    """Write a resumable checkpoint of the PEBBLE loop into ``run`` (module docstring), atomically file by file.

    Args:
        run: the run directory.
        agent, model, buffer, entropy: the SAC agent, reward ensemble, replay buffer and entropy reward.
        progress: the loop's counters (``progress.wall_s`` must already include this process's time).
        labels: labels used so far (the label file's first ``labels`` comparisons).
        log_every: env steps per metrics record (for the ``iteration`` field other tools read).
        rng: the numpy generator of query sampling.
        generator: the torch generator of SAC minibatches.
        teacher: the teacher; a synthetic one's random state is saved too.
    """
    run.ckpt.mkdir(parents=True, exist_ok=True)
    meta = {"env_steps": str(progress.env_steps)}
    replay = buffer.state_dict()
    atomic_write(run.ckpt / "replay.safetensors", lambda p: save_file(replay, str(p), metadata=meta))
    rand = {"generator": generator.get_state(), "agent_generator": agent.generator.get_state(),
            "torch_global": torch.get_rng_state(),
            **{f"entropy.{k}": v.contiguous() for k, v in entropy.stats.state_dict().items()}}
    atomic_write(run.ckpt / "random.safetensors", lambda p: save_file(rand, str(p), metadata=meta))
    teacher_rng = getattr(teacher, "_rng", None)
    run.save(agent=agent, reward=model, optimizers=agent.optimizers, state={
        "iteration": progress.env_steps // log_every, "env_steps": progress.env_steps, "wall_s": progress.wall_s,
        "labels": labels, "algo": "pebble",
        "pebble": {**asdict(progress), "agent_updates": agent.updates, "rng": rng.bit_generator.state,
                   "teacher_rng": teacher_rng.bit_generator.state
                   if isinstance(teacher_rng, np.random.Generator) else None},
    })


def load_pebble_checkpoint(run: RunDir, *, agent: SACAgent, model: RewardEnsemble, buffer: ReplayBuffer,
                           entropy: StateEntropyReward, rng: np.random.Generator, generator: torch.Generator
                           ) -> tuple[PebbleProgress, dict[str, Any]]:
    """Restore what :func:`save_pebble_checkpoint` wrote into freshly built objects of the same config.

    Returns:
        ``(progress, state)``: the counters and the whole ``state.json`` (``state["labels"]``, and
        ``state["pebble"]["teacher_rng"]`` for :func:`restore_teacher_rng`).

    Raises:
        ValueError: if the checkpoint has no replay buffer (written before PEBBLE runs could be resumed),
            or its files disagree (a crash while it was being written).
    """
    replay_path = run.ckpt / "replay.safetensors"
    state = json.loads((run.ckpt / "state.json").read_text())
    if "pebble" not in state or not replay_path.is_file():
        raise ValueError(f"{run.path}: this PEBBLE checkpoint has no replay buffer (saved by an older rlhfkit); "
                         "it cannot be resumed: start a new run")
    for name in ("replay", "random"):
        with safe_open(str(run.ckpt / f"{name}.safetensors"), "pt") as f:
            saved_at = int((f.metadata() or {}).get("env_steps", -1))
        if saved_at != state["env_steps"]:
            raise ValueError(f"{run.ckpt}: {name}.safetensors was saved at env step {saved_at} but state.json at "
                             f"{state['env_steps']} (the run stopped while writing its checkpoint); it cannot be "
                             "resumed")
    run.load(agent=agent, reward=model, optimizers=agent.optimizers)
    buffer.load_state_dict(load_file(str(replay_path)))
    rand = load_file(str(run.ckpt / "random.safetensors"))
    generator.set_state(rand["generator"])
    agent.generator.set_state(rand["agent_generator"])
    torch.set_rng_state(rand["torch_global"])
    entropy.stats.load_state_dict({k.removeprefix("entropy."): v for k, v in rand.items() if k.startswith("entropy.")})
    pb = dict(state["pebble"])
    agent.updates = pb.pop("agent_updates")
    rng.bit_generator.state = pb.pop("rng")
    pb.pop("teacher_rng")
    return PebbleProgress(**pb), state


def restore_teacher_rng(teacher: Any, state: dict[str, Any]) -> None:
    """Put a synthetic teacher's random generator back where the checkpoint ``state`` left it (no-op for
    teachers without one, e.g. a person)."""
    saved, teacher_rng = state["pebble"].get("teacher_rng"), getattr(teacher, "_rng", None)
    if saved is not None and isinstance(teacher_rng, np.random.Generator):
        teacher_rng.bit_generator.state = saved


def truncate_metrics(run: RunDir, env_steps: int) -> None:
    """Drop the metrics records logged after ``env_steps`` (the resumed run logs those steps again)."""
    rows = [r for r in run.read_metrics() if r.get("env_steps", 0) <= env_steps]
    atomic_write(run.metrics_path, lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in rows)))
