"""Crash-safe checkpoint pieces shared by every trainer: atomic file writes and optimizer state
as safetensors tensors plus JSON metadata (no pickle)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_write", "load_optimizer_tensors", "load_training_state", "optimizer_tensors", "save_training_state",
           "unique_tensors"]


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


def unique_tensors(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of a state dict with tensors that share memory (tied embeddings) kept once, under the
    first name: safetensors refuses shared tensors."""
    seen: set[int] = set()
    out = {}
    for k, v in weights.items():
        if v.data_ptr() not in seen:
            seen.add(v.data_ptr())
            out[k] = v.detach().contiguous()
    return out


def save_training_state(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Save a trainer's checkpoint in ``path``: ``model.safetensors`` (tied tensors once),
    ``optimizer.safetensors`` and ``state.json`` (the loop state and the optimizer's metadata), each
    written atomically."""
    import json

    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    atomic_write(path / "model.safetensors", lambda p: save_file(unique_tensors(model.state_dict()), str(p)))
    tensors, meta = optimizer_tensors(opt, "opt")
    atomic_write(path / "optimizer.safetensors", lambda p: save_file(tensors, str(p)))
    atomic_write(path / "state.json", lambda p: p.write_text(json.dumps({**state, "optimizer": meta}, indent=1)))


def load_training_state(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore what :func:`save_training_state` wrote into ``model`` and ``opt``; return the loop state.

    Raises:
        ValueError: if the saved weights do not fit the model (naming missing and unexpected keys).
    """
    import json

    from safetensors.torch import load_file

    saved = load_file(str(path / "model.safetensors"))
    expected = unique_tensors(model.state_dict())
    if set(saved) != set(expected):
        raise ValueError(f"{path}/model.safetensors does not fit the model: missing "
                         f"{sorted(set(expected) - set(saved))[:5]}, unexpected {sorted(set(saved) - set(expected))[:5]}")
    model.load_state_dict(saved, strict=False)  # strict would ask for the tied copies too
    state = json.loads((path / "state.json").read_text())
    load_optimizer_tensors(opt, "opt", load_file(str(path / "optimizer.safetensors")), state["optimizer"])
    return state
