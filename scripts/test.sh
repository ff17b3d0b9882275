#!/usr/bin/env bash
# The test command: make the pinned environment (scripts/bootstrap.sh: .venv/ from constraints.txt),
# build, run the whole suite in it (CPU tiers; the `gpu` tier runs too where CUDA is present).
# Extra arguments go to pytest.  R1CORE_ENV / R1CORE_PINS choose another environment (scripts/_env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
source scripts/_env.sh
# The checkout root goes on the path (the in-place r1core._C); kernels/ has no __init__.py, so this can
# never shadow Hugging Face's `kernels` package (docs/environment.md, tests/test_no_shadowing.py).
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# --dist loadgroup: the newcomer tier (tests/newcomer, one xdist group) runs on one worker while the
# other works through the rest of the suite; ungrouped tests are dealt out as with plain -n.
exec "$R1CORE_PY" -m pytest -n "${R1CORE_TEST_WORKERS:-2}" --dist loadgroup "$@"
