#!/usr/bin/env bash
# Create bench/.venv-choix (git-ignored) holding the `choix` peer for the ranking
# benchmark (bench/rank.py).  Idempotent: re-running only tops up what is missing.
#
# choix needs only numpy and scipy; it lives in its own environment so the
# project's .venv never gains scipy by accident, and so its timings are its own.
# No torch here: choix does not use it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${CHOIX_VENV:-$HERE/../.venv-choix}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --quiet --disable-pip-version-check)

if ! "$VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as md, sys
sys.exit(md.version("choix") != "0.4.1" or not md.version("scipy") or not md.version("numpy"))
PY
then
    "${PIP[@]}" install "choix==0.4.1" numpy scipy
fi
"$VENV/bin/python" -c 'import choix, numpy, scipy; print("choix ready:", choix.__file__)'
