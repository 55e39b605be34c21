"""Crash-safe checkpoint pieces shared by every trainer: atomic file writes and optimizer state
as safetensors tensors plus JSON metadata (no pickle)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_write", "load_optimizer_tensors", "optimizer_tensors"]


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then move it into place with :func:`os.replace`,
    so that a crash never leaves a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state as ``({"prefix.param_id.name": tensor}, json_metadata)`` for safetensors + JSON."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"param_groups": sd["param_groups"], "scalars": {}}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            key = f"{prefix}.{pid}.{k}"
            if torch.is_tensor(v):
                tensors[key] = v.contiguous()
            else:
                meta["scalars"][key] = v
    return tensors, meta


def load_optimizer_tensors(opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor],
                           meta: dict[str, Any]) -> None:
    """Restore an optimizer's state from what :func:`optimizer_tensors` returned."""
    state: dict[int, dict[str, Any]] = {}
    for key, v in {**tensors, **meta["scalars"]}.items():
        p, pid, k = key.split(".", 2)
        if p == prefix:
            state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
