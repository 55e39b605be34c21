"""Run directories: checkpoints (safetensors + JSON), the label file, metrics JSONL.

Layout of a run directory ``OUT``::

    OUT/config.json          the resolved TrainConfig
    OUT/metrics.jsonl        one JSON object per iteration
    OUT/comparisons.npz      every label the teacher gave (rewritten atomically each iteration)
    OUT/checkpoint/agent.safetensors, reward.safetensors, optimizers.safetensors, state.json
    OUT/summary.json         the final evaluation
    OUT/curve.png            the learning curve

Writes go to a temporary file first and are moved into place with :func:`os.replace`, so a
crash never leaves a half-written checkpoint or label file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rlhfkit.checkpoints import atomic_write as _atomic
from rlhfkit.checkpoints import load_optimizer_tensors as _unflatten_optimizer
from rlhfkit.checkpoints import optimizer_tensors as _flatten_optimizer
from rlhfkit.feedback.records import Comparison, Fragment, Outcome
from rlhfkit.metrics import MetricsLog

__all__ = ["RunDir", "load_comparisons", "save_comparisons"]


def save_comparisons(path: Path, comparisons: Sequence[Comparison]) -> None:
    """Write comparisons to an ``.npz`` (atomically). Fragments must share one length."""
    if not comparisons:
        return
    arrays: dict[str, np.ndarray] = {
        "outcome": np.array([int(c.outcome) for c in comparisons], dtype=np.int64),
        "teacher": np.array([c.teacher for c in comparisons]),
    }
    for side in ("left", "right"):
        for attr in ("obs", "acts", "true_rewards"):
            arrays[f"{side}_{attr}"] = np.stack([getattr(getattr(c, side), attr) for c in comparisons])

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())

    _atomic(path, write)


def load_comparisons(path: Path) -> list[Comparison]:
    """Read comparisons written by :func:`save_comparisons`.

    Raises:
        ValueError: if the file lacks a field (naming the file and the field).
    """
    with np.load(path) as z:
        missing = {"outcome", "teacher", "left_obs", "left_acts", "left_true_rewards", "right_obs", "right_acts",
                   "right_true_rewards"} - set(z.files)
        if missing:
            raise ValueError(f"{path}: not a comparisons file, missing fields {sorted(missing)}")
        d = {k: z[k] for k in z.files}
    out = []
    for i in range(len(d["outcome"])):
        left = Fragment(d["left_obs"][i], d["left_acts"][i], d["left_true_rewards"][i])
        right = Fragment(d["right_obs"][i], d["right_acts"][i], d["right_true_rewards"][i])
        out.append(Comparison(left, right, Outcome(int(d["outcome"][i])), str(d["teacher"][i])))
    return out


class RunDir:
    """A run's output directory (see the module docstring for its layout)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.ckpt = self.path / "checkpoint"
        self._log: MetricsLog | None = None

    @property
    def config_path(self) -> Path:
        """``OUT/config.json``: the resolved TrainConfig."""
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        """``OUT/metrics.jsonl``: one JSON object per iteration."""
        return self.path / "metrics.jsonl"

    @property
    def comparisons_path(self) -> Path:
        """``OUT/comparisons.npz``: every label of the run."""
        return self.path / "comparisons.npz"

    def is_run(self) -> bool:
        """Whether this directory holds a resumable run (config + checkpoint state)."""
        return self.config_path.is_file() and (self.ckpt / "state.json").is_file()

    def log(self, record: dict[str, Any]) -> None:
        """Append one metrics record (a line of JSON, mirrored to TensorBoard under ``OUT/tb``)."""
        if self._log is None:
            self._log = MetricsLog(self.path, step_key="env_steps")
        self._log.write(record)

    def read_metrics(self) -> list[dict[str, Any]]:
        """All metrics records logged so far, in order (empty if none)."""
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def save(self, *, agent: torch.nn.Module, reward: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer],
             state: dict[str, Any]) -> None:
        """Save model weights (safetensors), optimizer states and the loop state (JSON)."""
        self.ckpt.mkdir(parents=True, exist_ok=True)
        _atomic(self.ckpt / "agent.safetensors", lambda p: save_file({k: v.contiguous() for k, v in agent.state_dict().items()}, str(p)))
        _atomic(self.ckpt / "reward.safetensors", lambda p: save_file({k: v.contiguous() for k, v in reward.state_dict().items()}, str(p)))
        tensors, metas = {}, {}
        for name, opt in optimizers.items():
            t, m = _flatten_optimizer(opt, name)
            tensors.update(t)
            metas[name] = m
        _atomic(self.ckpt / "optimizers.safetensors", lambda p: save_file(tensors, str(p)))
        _atomic(self.ckpt / "state.json", lambda p: p.write_text(json.dumps({**state, "optimizers": metas}, indent=1)))

    def load(self, *, agent: torch.nn.Module, reward: torch.nn.Module,
             optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
        """Restore what :meth:`save` wrote; returns the loop state."""
        agent.load_state_dict(load_file(str(self.ckpt / "agent.safetensors")))
        reward.load_state_dict(load_file(str(self.ckpt / "reward.safetensors")))
        state = json.loads((self.ckpt / "state.json").read_text())
        tensors = load_file(str(self.ckpt / "optimizers.safetensors"))
        for name, opt in optimizers.items():
            _unflatten_optimizer(opt, name, tensors, state["optimizers"][name])
        return state
