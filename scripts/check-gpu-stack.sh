#!/usr/bin/env bash
# The GPU machine's software stack, checked on this GPU-less machine (docs/gpu.md).  Run it after any
# change to csrc/, kernels/ or setup.py:
#   1. a venv with the GPU image's versions: torch==2.11.0 (PyPI's default wheel, +cu130), triton==3.6.0,
#      numpy<2.4 (triton 3.6's interpreter calls int() on one-element arrays, which numpy >= 2.4
#      refuses; the GPU tier never runs the interpreter, so the pin only concerns this check).  It is
#      made once (a multi-GB download) outside the checkout and reused: $R1CORE_GPU_VENV, default
#      ~/.cache/r1core/gpu-stack-venv; it sees the system's site-packages for everything else;
#   2. a copy of the checkout (tracked and untracked-not-ignored files), so the in-place build does
#      not replace this checkout's own r1core._C;
#   3. r1core._C built there WITH CUDA for sm_90 (R1CORE_REQUIRE_CUDA=1: no silent CPU-only build),
#      its sm_90 machine code listed, the module imported and r1core.backends() printed;
#   4. the whole suite run there under those versions (the interpreter, nvcc and sm90 tiers included).
# Usage: scripts/check-gpu-stack.sh [pytest args…]      (R1CORE_TEST_WORKERS, default 2)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${R1CORE_GPU_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/r1core/gpu-stack-venv}
COPY=${R1CORE_GPU_STACK_COPY:-${VENV}-src}
PY=$VENV/bin/python
PINS=("torch==2.11.0" "triton==3.6.0" "numpy<2.4")

step() { echo "== check-gpu-stack: $*"; }

if ! "$PY" -c "import torch, triton, sys; sys.exit(not (torch.__version__.startswith('2.11.0') and torch.version.cuda \
     and triton.__version__ == '3.6.0'))" 2>/dev/null; then
  step "making the venv $VENV (torch 2.11.0 CUDA, triton 3.6.0: a multi-GB download, once)"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv --system-site-packages "$VENV" || exit 1
  "$PY" -m pip install -q --disable-pip-version-check "${PINS[@]}" || exit 1
fi
step "dev requirements under the venv's torch"
constraints=$(mktemp)
printf '%s\n' "${PINS[@]}" > "$constraints"
"$PY" -m pip install -q --disable-pip-version-check -c "$constraints" -r requirements-dev.txt 2>&1 \
  | grep -vE "^(WARNING: (Location|Running pip as)|\[notice\])" || true
rm -f "$constraints"
"$PY" -c "import torch, triton, numpy; print(f'torch {torch.__version__} (CUDA {torch.version.cuda}) | triton {triton.__version__} | numpy {numpy.__version__}')"

step "copying the checkout to $COPY"
mkdir -p "$COPY"
# rsync-like refresh without rsync: remove what the checkout no longer has (keep build/ for ninja)
find "$COPY" -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$COPY" || exit 1
cd "$COPY" || exit 1

step "building r1core._C with CUDA (log: $COPY/build.log)"
start=$SECONDS
if ! R1CORE_REQUIRE_CUDA=1 "$PY" setup.py build_ext --inplace > build.log 2>&1; then
  tail -40 build.log
  echo "check-gpu-stack: FAILED: the CUDA build (full log: $COPY/build.log)"
  exit 1
fi
grep -E "r1core setup|spill" build.log
echo "built in $((SECONDS - start)) s"
CUOBJDUMP=$("$PY" -c "import triton, os; print(os.path.join(os.path.dirname(triton.__file__), 'backends/nvidia/bin/cuobjdump'))")
so=$(ls r1core/_C*.so)
echo "machine code in $so: $("$CUOBJDUMP" --list-elf "$so" 2>/dev/null | grep -oE 'sm_[0-9]+a?' | sort | uniq -c | tr '\n' ' ')"
PYTHONPATH=$COPY "$PY" -W ignore -c "import r1core, r1core._C; print('backends:', r1core.backends())" || {
  echo "check-gpu-stack: FAILED: importing the CUDA build"; exit 1; }

step "the suite under these versions"
PYTHONPATH=$COPY "$PY" -m pytest -n "${R1CORE_TEST_WORKERS:-2}" -q -p no:cacheprovider "$@" 2>&1 | tee pytest.log | tail -40
rc=${PIPESTATUS[0]}
echo "check-gpu-stack: suite exit $rc ($(tail -1 pytest.log))"
exit "$rc"
