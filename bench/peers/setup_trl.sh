#!/usr/bin/env bash
# Create bench/.venv-trl (git-ignored) holding the TRL peer for the language
# benchmark (reward-model and DPO trainers, bench/peers/trl_run.py; GRPOTrainer,
# bench/peers/trl_grpo.py).
# Idempotent: a stamp file records a finished install; re-running with the stamp
# present only checks the versions.  Delete the stamp (or the venv) to redo it.
#
#     bash bench/peers/setup_trl.sh          # bench/.venv-trl,     trl 1.16.0
#     bash bench/peers/setup_trl.sh ppo      # bench/.venv-trl-ppo, trl 1.12.0
#
# The `ppo` variant is for bench/peers/trl_ppo.py: TRL 1.12.0 is the last release
# with PPOTrainer (trl.experimental.ppo); 1.13.0 removed PPO altogether.
#
# TRL pulls transformers/datasets/accelerate, which the project's own .venv
# must not gain, hence the separate environment.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
TORCH_SPEC="torch==2.13.0"
case "${1:-}" in
    "") VENV="${TRL_VENV:-$HERE/../.venv-trl}"; TRL_SPEC="trl==1.16.0" ;;
    ppo) VENV="${TRL_VENV:-$HERE/../.venv-trl-ppo}"; TRL_SPEC="trl==1.12.0" ;;
    *) echo "usage: $0 [ppo]" >&2; exit 2 ;;
esac
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
