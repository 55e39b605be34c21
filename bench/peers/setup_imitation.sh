#!/usr/bin/env bash
# Create bench/.venv-imitation (git-ignored) holding the `imitation` peer for
# the control benchmark.  Idempotent: re-running only tops up what is missing.
#
# imitation 1.0.x pins gymnasium~=0.29 and stable-baselines3~=2.2, which clash
# with the project's own .venv, hence the separate environment.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${IMITATION_VENV:-$HERE/../.venv-imitation}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --quiet --disable-pip-version-check)

# torch first, exactly this spec: it resolves to the local CPU wheel; any other
# spec lets pip go after the (huge) CUDA wheels.
if ! "$VENV/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
    "${PIP[@]}" install torch==2.13.0
fi

# imitation 1.0.1 with the pins it was released against.  numpy<2: gymnasium
# 0.29's env checker still uses np.bool8, which numpy 2 removed.
if ! "$VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as md, sys
want = {"imitation": "1.0.1", "stable-baselines3": "2.2.", "gymnasium": "0.29."}
sys.exit(any(not md.version(k).startswith(v) for k, v in want.items()))
PY
then
    "${PIP[@]}" install torch==2.13.0 "imitation==1.0.1" "gymnasium~=0.29.1" \
        "stable-baselines3~=2.2.1" "numpy<2"
fi
