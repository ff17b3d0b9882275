#!/usr/bin/env bash
# The main job on the embedded default.  For now: the benches on this machine (the training run
# replaces this once `r1core train` lands).  Extra arguments go to the command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
exec $PY -m r1core bench "$@"
