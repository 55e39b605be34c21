#!/usr/bin/env bash
# Create bench/.venv-trl (git-ignored) holding the TRL peer for the language
# benchmark (reward-model and DPO trainers, bench/peers/trl_run.py).
# Idempotent: a stamp file records a finished install; re-running with the stamp
# present only checks the versions.  Delete the stamp (or the venv) to redo it.
#
# TRL pulls transformers/datasets/accelerate, which the project's own .venv
# must not gain, hence the separate environment.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${TRL_VENV:-$HERE/../.venv-trl}"
PY="${PYTHON:-python3}"
TORCH_SPEC="torch==2.13.0"
TRL_SPEC="trl==1.16.0"
STAMP="$VENV/.bench-trl-installed"

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --quiet --disable-pip-version-check)

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$TORCH_SPEC $TRL_SPEC" ]; then
    # torch first, exactly this spec: it resolves to the local CPU wheel; any
    # other order lets pip go after the (huge) CUDA wheels.
    if ! "$VENV/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
        "${PIP[@]}" install "$TORCH_SPEC"
    fi
    # Then TRL; pip resolves transformers, datasets and accelerate.  Repeating
    # the torch pin keeps the resolver from replacing the CPU build.
    "${PIP[@]}" install "$TORCH_SPEC" "$TRL_SPEC"
    # Refuse a CUDA torch (it would mean the order above was broken).
    "$VENV/bin/python" - <<'PY'
import sys, torch
if torch.version.cuda is not None or not torch.__version__.startswith("2.13.0"):
    sys.exit(f"expected the CPU build of torch 2.13.0, got {torch.__version__} (cuda={torch.version.cuda})")
PY
    echo "$TORCH_SPEC $TRL_SPEC" > "$STAMP"
fi

"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("trl", "transformers", "torch", "datasets", "accelerate", "tokenizers"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} (missing)")
PY
