#!/usr/bin/env bash
# The one prepared GPU run (docs/gpu.md).  On the GPU machine (H200: python3 3.12, torch 2.11 cu130,
# triton 3.6, nvcc 13.0, 16 cores, no package registry), in at most ~9 minutes:
#   env       versions, nvidia-smi, nvcc
#   wheels    carried wheels (fetched beforehand with --fetch) installed into a target dir
#   build     r1core._C with CUDA for sm_90 (setup.py build_ext --inplace, R1CORE_REQUIRE_CUDA=1)
#   ceilings  device-to-device copy bandwidth and the bf16 matmul rate (scripts/gpu_ceilings.py)
#   tests     the gpu tier (pytest -m gpu)
#   bench     `r1core bench` at the GPU issues' shapes: eager, torch.compile, Liger-Kernel, CCE; then
#             GRPO steps with rollout.async false vs true (benches/bench_async.py -> bench.json "async")
#   ncu       (only when asked: --only ncu or --ncu) Nsight Compute on one kernel
# Each phase has its own time limit, clipped to what is left of --total; a failing phase does not
# stop the next.  Everything lands in --out DIR (at most 8 files, none over 16 MiB, one level deep)
# and a short table is printed last.
#
#   scripts/gpu.sh --fetch                  here, once: download the wheels into .gpu-wheels/ (ignored)
#   scripts/gpu.sh --out "$OUT"             on the GPU machine
#   scripts/gpu.sh --only bench --ops moe --out "$OUT"      a second run re-measuring one op
#   scripts/gpu.sh --rehearse               here, on CPU: every phase, tiny shapes, the Triton
#                                           interpreter, no CUDA build (CI runs this)
# Options: --only PHASE,…  --ops OP,… (bench names)  --quick (the benches' small shapes)
#   --case-budget S (timing seconds per bench case)  --bench-args "…" (passed to r1core bench)
#   --total S (whole-run limit, default 540)  --wheels DIR  --ncu  --ncu-kernel REGEX
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}

# versions of the carried wheels (pure Python; torch and triton come from the GPU image)
WHEEL_PINS="liger-kernel==0.8.5 cut-cross-entropy==25.1.1"
GPU_OPS="grpo_loss,fused_linear,advantage,moe"     # the GPU issues' op benches (moe last: the slowest)
REHEARSE_OPS="advantage,grpo_loss"                 # fast enough on a 2-core CPU under the interpreter

OUTDIR="" ONLY="" OPS="" QUICK=0 REHEARSE=0 FETCH=0 NCU=0 TOTAL=540 CASE_BUDGET="" BENCH_ARGS=""
WHEELS=$ROOT/.gpu-wheels NCU_KERNEL="_grpo_fwd_kernel"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUTDIR=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --ops) OPS=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --rehearse) REHEARSE=1; shift ;;
    --fetch) FETCH=1; shift ;;
    --ncu) NCU=1; shift ;;
    --ncu-kernel) NCU_KERNEL=$2; shift 2 ;;
    --total) TOTAL=$2; shift 2 ;;
    --case-budget) CASE_BUDGET=$2; shift 2 ;;
    --bench-args) BENCH_ARGS=$2; shift 2 ;;
    --wheels) WHEELS=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$FETCH" = 1 ]; then
  # Python 3.12 wheels for the GPU machine; --no-deps: their needs (torch, triton) are in its image
  mkdir -p "$WHEELS"
  $PY -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$WHEELS" $WHEEL_PINS || exit 1
  ls -l "$WHEELS"
  echo "gpu.sh --fetch: $(du -sh "$WHEELS" | cut -f1) in $WHEELS (carry it: its path is git-ignored)"
  exit 0
fi

ALL_PHASES="env wheels build ceilings tests bench"
[ "$NCU" = 1 ] && ALL_PHASES="$ALL_PHASES ncu"
PHASES=${ONLY//,/ }
PHASES=${PHASES:-$ALL_PHASES}
for p in $PHASES; do
  case " env wheels build ceilings tests bench ncu " in *" $p "*) ;; *) echo "gpu.sh: unknown phase $p" >&2; exit 2 ;; esac
done
if [ "$REHEARSE" = 1 ]; then
  OPS=${OPS:-$REHEARSE_OPS}
  QUICK=1
  CASE_BUDGET=${CASE_BUDGET:-0.01}
  export TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES=""   # CPU tensors, kernels under the interpreter
else
  OPS=${OPS:-$GPU_OPS}
  CASE_BUDGET=${CASE_BUDGET:-1.0}
fi
OUTDIR=${OUTDIR:-runs/gpu-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUTDIR" || exit 1
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/r1core-gpu.XXXXXX")
SITE=$WORK/site
LOG=$OUTDIR/gpu.log
: > "$LOG"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PY ROOT OUTDIR WORK SITE WHEELS OPS QUICK \
  REHEARSE CASE_BUDGET BENCH_ARGS NCU_KERNEL
export TRITON_DEFAULT_FP_FUSION=${TRITON_DEFAULT_FP_FUSION:-1}

# ---------------------------------------------------------------------------------------------
# phases: each runs in its own bash under `timeout`; stdout/stderr go to the log
# ---------------------------------------------------------------------------------------------
phase_env() {
  echo "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') | $(uname -srm) | $(nproc) cores"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem \
    --format=csv || echo "no nvidia-smi"
  command -v nvcc >/dev/null && nvcc --version | tail -2 || echo "no nvcc on PATH"
  command -v ncu >/dev/null && echo "ncu: $(ncu --version | tail -1)" || echo "no ncu"
  $PY - <<'EOF'
import platform, torch
try:
    import triton; tv = triton.__version__
except ImportError:
    tv = None
import numpy
line = f"python {platform.python_version()} | torch {torch.__version__} | triton {tv} | numpy {numpy.__version__}"
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    line = f"{p.name} sm_{p.major}{p.minor} {p.multi_processor_count} SMs | " + line
print("NOTE:", line)
EOF
}

phase_wheels() {
  shopt -s nullglob
  local whl=("$WHEELS"/*.whl)
  if [ ${#whl[@]} = 0 ]; then echo "SKIP: no wheels in $WHEELS (run scripts/gpu.sh --fetch here and carry it)"; return 0; fi
  echo "NOTE: ${#whl[@]} wheels"
  $PY -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "${whl[@]}" || return 1
  ls "$SITE"
  PYTHONPATH=$SITE:$PYTHONPATH $PY -c "import liger_kernel, cut_cross_entropy; print('liger-kernel and cut-cross-entropy import')"
}

phase_build() {
  if [ "$REHEARSE" = 1 ]; then  # no CUDA build here: show which toolkit the build would use
    $PY - <<'EOF'
import importlib.util, os
spec = importlib.util.spec_from_file_location("r1core_setup", os.path.join(os.environ["ROOT"], "setup.py"))
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
root, tried = m.find_cuda_home()
print(f"NOTE: rehearsal, no CUDA build; toolkit {root} (looked at {tried})")
EOF
    return
  fi
  R1CORE_REQUIRE_CUDA=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} $PY setup.py build_ext --inplace > "$OUTDIR/build.log" 2>&1
  local rc=$?
  grep -iE "error|warning.*spill|r1core setup" "$OUTDIR/build.log" | head -40
  [ $rc = 0 ] || { tail -30 "$OUTDIR/build.log"; return $rc; }
  $PY -c "import r1core; b = r1core.backends(); print(b); print('NOTE: available:', ', '.join(k for k, v in b.items() if v.startswith('available')))"
}

phase_ceilings() {
  if [ "$REHEARSE" = 1 ]; then set -- --device cpu --copy-mib 32 --mm 256 --reps 3; fi
  $PY scripts/gpu_ceilings.py --out "$OUTDIR/ceilings.json" "$@" | sed 's/^/NOTE: /'
  return "${PIPESTATUS[0]}"
}

phase_tests() {
  # only the files that hold gpu tests: the others may import what the GPU image lacks (trl, gguf)
  local files
  files=$(grep -rlE "mark\.gpu|marks=pytest\.mark\.gpu" tests --include='test_*.py' | sort | tr '\n' ' ')
  local workers=${GPU_TEST_WORKERS:-4}
  [ "$REHEARSE" = 1 ] && workers=0
  PYTHONPATH=$SITE:$PYTHONPATH $PY -m pytest -q -m gpu -n "$workers" -p no:cacheprovider -ra \
    --continue-on-collection-errors $files > "$OUTDIR/tests.log" 2>&1
  local rc=$?
  tail -25 "$OUTDIR/tests.log"
  echo "NOTE: $(grep -E '(passed|failed|skipped|error)' "$OUTDIR/tests.log" | tail -1 | tr -d '=')"
  return $rc
}

phase_bench() {
  # one runner call per op (a hung or slow op cannot take the others' numbers with it), merged
  # into bench.csv / bench.json after each
  local device=cuda rc=0
  [ "$REHEARSE" = 1 ] && device=cpu
  local quick=""
  [ "$QUICK" = 1 ] && quick=--quick
  for op in ${OPS//,/ }; do
    echo "== bench $op"
    PYTHONPATH=$SITE:$PYTHONPATH $PY -m r1core bench --device $device --ops "$op" $quick --budget "$CASE_BUDGET" \
      --out "$WORK/bench/$op" $BENCH_ARGS || rc=1
    $PY - <<'EOF'
import csv, glob, json, os
work, out = os.environ["WORK"], os.environ["OUTDIR"]
rows, runs = [], []
for path in sorted(glob.glob(f"{work}/bench/*/*.json")):
    d = json.load(open(path))
    runs.append({"machine": d.get("machine"), "when": d.get("when")})
    rows += d.get("rows", [])
keys = sorted({k for r in rows for k in r})
with open(f"{out}/bench.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=keys); w.writeheader(); w.writerows(rows)
json.dump({"runs": runs, "rows": rows}, open(f"{out}/bench.json", "w"), indent=1)
print(f"NOTE: {len(rows)} rows, {sum(1 for r in rows if r.get('error'))} errors")
EOF
  done
  # one-step off-policy GRPO (issue 29): the default recipe's GRPO stage, synchronous vs rollout.async
  echo "== bench async"
  local tiny="" steps=4
  [ "$REHEARSE" = 1 ] && tiny=--tiny && steps=2
  PYTHONPATH=$SITE:$PYTHONPATH $PY -m benches.bench_async --device $device --steps $steps $tiny \
    --out "$WORK/async.json" || rc=1
  # into bench.json under "async" (no file of its own: --out holds at most 8)
  $PY -c 'import json, os, sys; o = os.environ["OUTDIR"] + "/bench.json"; w = os.environ["WORK"] + "/async.json"
b = json.load(open(o)) if os.path.exists(o) else {}
if os.path.exists(w): b["async"] = json.load(open(w)); json.dump(b, open(o, "w"), indent=1)' || rc=1
  return $rc
}

phase_ncu() {
  command -v ncu >/dev/null || { echo "SKIP: no ncu"; return 0; }
  # one launch of one kernel, clocks as found (never lock them on a shared machine)
  PYTHONPATH=$SITE:$PYTHONPATH timeout 240 ncu --clock-control none --set basic -k "regex:$NCU_KERNEL" -c 1 \
    $PY -m r1core bench --device cuda --ops "${OPS%%,*}" --quick --budget 0.1 --no-save > "$OUTDIR/ncu.txt" 2>&1
  local rc=$?
  grep -E "Duration|Throughput|Registers|Block Size|Grid Size" "$OUTDIR/ncu.txt" | head -20
  echo "NOTE: $(grep -E "Duration" "$OUTDIR/ncu.txt" | head -1 | tr -s ' ')"
  return $rc
}
export -f phase_env phase_wheels phase_build phase_ceilings phase_tests phase_bench phase_ncu

limit_of() {  # seconds each phase may take on the GPU machine (the rehearsal takes far less)
  case $1 in env) echo 60 ;; wheels) echo 60 ;; build) echo 240 ;; ceilings) echo 60 ;; tests) echo 180 ;;
    bench) echo 300 ;; ncu) echo 240 ;; esac
}

RESERVE=10              # kept for the table at the end
START=$SECONDS
declare -a ROWS=()
echo "# gpu.sh: phases [$PHASES] -> $OUTDIR (log: gpu.log)$([ "$REHEARSE" = 1 ] && echo ' [rehearsal on CPU]')"
for p in $PHASES; do
  left=$(( TOTAL - (SECONDS - START) - RESERVE ))
  limit=$(limit_of "$p")
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 5 ]; then ROWS+=("$p|not run|0|$limit|no time left of --total $TOTAL"); continue; fi
  echo "## $p (limit ${limit}s)" | tee -a "$LOG"
  t0=$SECONDS
  timeout -k 10 "$limit" bash -c "phase_$p" > "$WORK/$p.out" 2>&1
  rc=$?
  dt=$(( SECONDS - t0 ))
  cat "$WORK/$p.out" >> "$LOG"
  tail -6 "$WORK/$p.out" | cut -c1-200
  if [ $rc = 124 ] || [ $rc = 137 ]; then status="TIMEOUT"
  elif [ $rc != 0 ]; then status="FAIL($rc)"
  elif grep -q "^SKIP:" "$WORK/$p.out"; then status="skip"
  else status="ok"; fi
  note=$(grep -E "^(SKIP|NOTE):" "$WORK/$p.out" | tail -1 | sed -E 's/^(NOTE|SKIP): //' | cut -c1-100)
  ROWS+=("$p|$status|$dt|$limit|$note")
done

# keep every file under the fetch limit (16 MiB): the tail of a log is the part that matters
for f in "$OUTDIR"/*; do
  [ -f "$f" ] && [ "$(stat -c %s "$f")" -gt $((15 * 2**20)) ] && { tail -c $((15 * 2**20)) "$f" > "$f.tmp"; mv "$f.tmp" "$f"; }
done
{
  echo
  echo "# gpu.sh summary ($(( SECONDS - START )) s of --total $TOTAL; files in $OUTDIR)"
  printf "%-9s %-10s %5s %6s  %s\n" phase status secs limit note
  for r in "${ROWS[@]}"; do IFS='|' read -r a b c d e <<< "$r"; printf "%-9s %-10s %5s %6s  %s\n" "$a" "$b" "$c" "$d" "$e"; done
  if [ -f "$OUTDIR/bench.csv" ]; then
    $PY - <<'EOF'
import csv, os
rows = list(csv.DictReader(open(os.path.join(os.environ["OUTDIR"], "bench.csv"))))
ok = [r for r in rows if not r.get("error")]
print(f"bench: {len(rows)} rows, {len(rows) - len(ok)} errors; fastest non-baseline per op:")
best = {}
for r in ok:
    if r.get("speedup") and r.get("baseline") != "True":
        key = (r["op"], r["shape"])
        if key not in best or float(r["speedup"]) > float(best[key]["speedup"]):
            best[key] = r
for (op, shape), r in sorted(best.items()):
    print(f"  {op:28s} {shape:34s} {r['backend']:14s} {float(r['median_ms']):9.3f} ms  {float(r['speedup']):6.2f}x")
EOF
  fi
} | tee "$OUTDIR/summary.txt"
rm -rf "$WORK"
failed=0
for r in "${ROWS[@]}"; do case $r in *"|FAIL"*|*"|TIMEOUT"*) failed=1 ;; esac; done
exit $failed
