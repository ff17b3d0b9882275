#!/usr/bin/env bash
# The main job on the embedded default: `r1core train` with no arguments (configs/default.yaml:
# SmolLM2-135M-Instruct, cold-start SFT then GRPO on two-digit sums, held-out pass@1 and format
# reward before/after printed side by side; docs/train.md), in the pinned environment that
# scripts/bootstrap.sh makes.  Extra arguments go to the command
# (`bash scripts/run.sh --quick`, `bash scripts/run.sh steps=10 out=runs/short`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
source scripts/_env.sh
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
exec "$R1CORE_PY" -m r1core train "$@"
