# Sourced by bootstrap.sh, test.sh, run.sh and test-latest.sh: which Python environment the README's
# commands run in (docs/environment.md).  Sets R1CORE_ENV_DIR (empty when the environment is not a venv
# of ours) and R1CORE_PY (that environment's interpreter).
#   R1CORE_ENV unset       .venv/ in the checkout: made by bootstrap.sh from the pins when missing, so a
#                          fresh clone runs with what CI runs with, whatever this machine has installed
#   R1CORE_ENV=DIR         a venv in DIR (made when missing; scripts/test-latest.sh uses .venv-latest)
#   R1CORE_ENV=system      the interpreter $PYTHON (default python3) as it is: your own environment
# PYTHON is the base interpreter a venv is made from (default python3).
R1CORE_ROOT=${R1CORE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
R1CORE_BASE_PY=${PYTHON:-python3}
case "${R1CORE_ENV:-}" in
  system) R1CORE_ENV_DIR=""; R1CORE_PY=$R1CORE_BASE_PY ;;
  "")     R1CORE_ENV_DIR=$R1CORE_ROOT/.venv; R1CORE_PY=$R1CORE_ENV_DIR/bin/python ;;
  /*)     R1CORE_ENV_DIR=$R1CORE_ENV; R1CORE_PY=$R1CORE_ENV_DIR/bin/python ;;
  *)      R1CORE_ENV_DIR=$R1CORE_ROOT/$R1CORE_ENV; R1CORE_PY=$R1CORE_ENV_DIR/bin/python ;;
esac
