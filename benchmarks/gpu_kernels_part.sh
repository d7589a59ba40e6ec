#!/usr/bin/env bash
# The Triton-kernel part of the GPU check:  bash benchmarks/gpu_kernels_part.sh OUTDIR
#
# Run from the repository root on a CUDA machine (no network; torch + triton preinstalled).
# Writes into OUTDIR:
#   kernels_gpu_tests.log / .xml     the gpu-marked kernel tests (torch.compile, CUDA graphs, large shapes)
#   kernels_bench.log, kernels.json  benchmarks/kernels.py (the JSON is rewritten after each section)
#   kernels_all_tests.log / .xml     the whole kernel test suite compiled for the GPU (what time is left)
#   kernels_summary.txt              one line per step: name, exit status, seconds
# Budget about 4 minutes (KERNELS_PART_SECONDS, default 240; KERNELS_FULL=1 runs the whole
# benchmark sweep instead of --quick and gives it the time the last step would have had). Exits 0 whatever the results
# (the summary says what failed); exits 0 with a note when there is no CUDA device or no triton.
# PYTHON picks the interpreter (default: python3). If diffcore.kernels is not importable from
# the tree (kernels/ ships as diffcore.kernels only through the package mapping of an install),
# a sitecustomize shim in OUTDIR maps it to ./kernels for this script's processes.
set -u
OUT="${1:?usage: bash benchmarks/gpu_kernels_part.sh OUTDIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
BUDGET="${KERNELS_PART_SECONDS:-240}"
START=$SECONDS
SUMMARY="$OUT/kernels_summary.txt"
: > "$SUMMARY"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

note() { echo "$*" | tee -a "$SUMMARY"; }

"$PY" -c "
import sys
try:
    import torch
except Exception:
    sys.exit(2)
sys.exit(0 if torch.cuda.is_available() else 3)" >/dev/null 2>&1
case $? in
    0) ;;
    3) note "kernels: skip (no CUDA device here)"; exit 0 ;;
    *) note "kernels: skip (torch is not importable by $PY; set PYTHON=...)"; exit 0 ;;
esac
if ! "$PY" -c "import triton" >/dev/null 2>&1; then
    note "kernels: skip (triton is not importable)"
    exit 0
fi
if ! "$PY" -c "import diffcore.kernels" >/dev/null 2>&1; then
    mkdir -p "$OUT/_shim"
    cat > "$OUT/_shim/sitecustomize.py" <<EOF
# diffcore.kernels -> $ROOT/kernels when running from the tree (written by gpu_kernels_part.sh)
import importlib.abc, importlib.util, os, sys
_DIR = os.path.join("$ROOT", "kernels")
class _KernelsFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "diffcore.kernels":
            return importlib.util.spec_from_file_location(
                name, os.path.join(_DIR, "__init__.py"), submodule_search_locations=[_DIR])
        return None
sys.meta_path.insert(0, _KernelsFinder())
EOF
    export PYTHONPATH="$OUT/_shim:$PYTHONPATH"
    note "kernels: diffcore.kernels mapped to ./kernels by $OUT/_shim/sitecustomize.py (package not installed)"
fi
"$PY" -c "import torch, triton; print('kernels: torch', torch.__version__, 'triton', triton.__version__, 'on', torch.cuda.get_device_name(0))" 2>&1 | tee -a "$SUMMARY"

left() { echo $(( BUDGET - (SECONDS - START) )); }

step() {  # step NAME SECONDS LOG COMMAND...
    local name="$1" limit="$2" log="$3"; shift 3
    if [ "$limit" -lt 15 ]; then
        note "$name: skipped (out of time)"
        return
    fi
    local t0=$SECONDS
    timeout --signal=TERM --kill-after=10 "$limit" "$@" > "$log" 2>&1
    local rc=$?
    local verdict="ok"
    [ $rc -ne 0 ] && verdict="FAILED"
    [ $rc -eq 124 ] && verdict="TIMEOUT after ${limit}s"
    note "$name: $verdict (exit $rc, $((SECONDS - t0)) s) -> $log"
    tail -n 3 "$log" | sed 's/^/    /' | tee -a "$SUMMARY"
}

step "gpu-marked kernel tests" 100 "$OUT/kernels_gpu_tests.log" \
    "$PY" -m pytest -q -m gpu -p no:cacheprovider --junitxml="$OUT/kernels_gpu_tests.xml" tests/test_kernels_*.py

# --quick (3 sizes; every size recompiles torch.compile's side) unless KERNELS_FULL=1
BENCH_T=$(( $(left) - 45 ))
[ "$BENCH_T" -gt 150 ] && BENCH_T=150
QUICK="--quick"
[ "${KERNELS_FULL:-0}" = "1" ] && QUICK="" && BENCH_T=$(( $(left) - 5 ))
step "benchmarks/kernels.py $QUICK" "$BENCH_T" "$OUT/kernels_bench.log" \
    "$PY" benchmarks/kernels.py $QUICK --plot "$OUT/kernels.png"
[ -f benchmarks/results/kernels.json ] && cp benchmarks/results/kernels.json "$OUT/kernels.json"

step "all kernel tests on the GPU" "$(( $(left) - 5 ))" "$OUT/kernels_all_tests.log" \
    "$PY" -m pytest -q -x -p no:cacheprovider --junitxml="$OUT/kernels_all_tests.xml" tests/test_kernels_*.py

note "kernels: done in $((SECONDS - START)) s"
exit 0
