#!/usr/bin/env bash
# The test command: install what is needed, build, run the whole suite (CPU tiers; the `gpu` tier
# runs too where CUDA is present).  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# --dist loadgroup: the newcomer tier (tests/newcomer, one xdist group) runs on one worker while the
# other works through the rest of the suite; ungrouped tests are dealt out as with plain -n.
exec $PY -m pytest -n "${R1CORE_TEST_WORKERS:-2}" --dist loadgroup "$@"
