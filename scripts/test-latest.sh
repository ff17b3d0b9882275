#!/usr/bin/env bash
# The suite against the newest releases, on purpose: a venv of its own (.venv-latest) with the newest
# release of every dependency in requirements-dev.txt except torch (the installed one, as always), the
# whole suite (extra arguments go to pytest), and a short report of what moved against constraints.txt
# and what failed, printed and saved as runs/test-latest/report.md.  When it is green, `scripts/pin.sh`
# (or copying the report's versions) moves the pins forward; when not, fix what is ours and note the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
export R1CORE_ENV=${R1CORE_ENV:-.venv-latest} R1CORE_PINS=none
source scripts/_env.sh
rm -f "$R1CORE_ENV_DIR/.r1core-bootstrap"          # always look for newer releases
bash scripts/bootstrap.sh
out=runs/test-latest
mkdir -p "$out"
"$R1CORE_PY" -m pip freeze --all --disable-pip-version-check 2> /dev/null | grep -v "^-e " > "$out/freeze.txt" || true
set +e
PYTHONPATH=$PWD "$R1CORE_PY" -m pytest -n "${R1CORE_TEST_WORKERS:-2}" --dist loadgroup -p no:cacheprovider -q \
  -rfE "$@" 2>&1 | tee "$out/pytest.log"
status=${PIPESTATUS[0]}
set -e
"$R1CORE_PY" - "$out" "$status" <<'PY'
import re, sys, pathlib
out, status = pathlib.Path(sys.argv[1]), int(sys.argv[2])
def pins(path):
    d = {}
    for line in pathlib.Path(path).read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", line.strip())
        if m:
            d[m.group(1).lower().replace("_", "-")] = m.group(2)
    return d
old, new = pins("constraints.txt"), pins(out / "freeze.txt")
moved = [(k, old[k], new[k]) for k in sorted(old.keys() & new.keys()) if old[k] != new[k]]
added = sorted(new.keys() - old.keys() - {"torch", "r1core"})
gone = sorted(old.keys() - new.keys())
log = (out / "pytest.log").read_text()
fails = sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", log, flags=re.M)))
summary = next((ln for ln in reversed(log.splitlines()) if re.search(r"\d+ (passed|failed|error)", ln)), "(no summary)")
lines = ["# test-latest: the suite on the newest releases (torch kept)", "",
         f"pytest: {summary.strip('= ')}  (exit {status})", "",
         f"## what moved against constraints.txt ({len(moved)} changed, {len(added)} new, {len(gone)} gone)", ""]
lines += [f"- {k}: {a} -> {b}" for k, a, b in moved] or ["- nothing"]
lines += [f"- new: {k}=={new[k]}" for k in added] + [f"- gone: {k}=={old[k]}" for k in gone]
lines += ["", f"## failures ({len(fails)})", ""] + ([f"- {f}" for f in fails] or ["- none"])
(out / "report.md").write_text("\n".join(lines) + "\n")
print("\n" + "\n".join(lines))
PY
exit "$status"
