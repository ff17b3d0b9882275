#!/usr/bin/env bash
# Write constraints.txt from the environment the suite just passed in (default .venv; R1CORE_ENV picks
# another, e.g. R1CORE_ENV=.venv-latest after a green scripts/test-latest.sh).  torch is never pinned
# here (bootstrap keeps the installed one); r1core itself and pip are left out.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
[[ -x $R1CORE_PY ]] || { echo "pin: no environment at ${R1CORE_ENV_DIR:-$R1CORE_PY}: run scripts/bootstrap.sh first" >&2; exit 1; }
{
  echo "# The exact versions the suite was last green with: scripts/bootstrap.sh installs requirements-dev.txt"
  echo "# under these (plus a pin of the installed torch, which is never replaced).  Written by scripts/pin.sh"
  echo "# from $(basename "${R1CORE_ENV_DIR:-system}") on $(date -u +%Y-%m-%d), Python $("$R1CORE_PY" -c 'import sys; print(*sys.version_info[:2], sep=".")'), torch $("$R1CORE_PY" -c 'import torch; print(torch.__version__)')."
  echo "# scripts/test-latest.sh reports what the newest releases move against these."
  "$R1CORE_PY" -m pip freeze --all --disable-pip-version-check 2> /dev/null \
    | grep -vE "^(#|-e |pip==|torch==|r1core[= @]|nvidia-|triton==.*\+)" | grep "==" | LC_ALL=C sort -f
} > constraints.txt
echo "pin: constraints.txt holds $(grep -c "==" constraints.txt) versions"
