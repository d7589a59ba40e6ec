#!/usr/bin/env bash
# The native extension's part of the GPU check (benchmarks/gpu_check.sh calls it):
#   bash benchmarks/gpu_native_part.sh OUTDIR
# On the lent GPU machine (torch with CUDA, nvcc, no network), from the repository root:
#  1. JIT-builds diffcore._C with its CUDA kernels into $TMPDIR/diffcore-ext (ninja, MAX_JOBS jobs;
#     DIFFCORE_CUDA_ARCH defaults to the GPU's own arch), nothing installed, nothing downloaded;
#  2. runs tests/test_native_*.py: the gpu-marked tests compare every CUDA op and the CUDA
#     trajectory integrator with the float64 reference (the CPU tests run too);
#  3. times a few CUDA paths against plain torch on the same GPU (native_gpu_timings.json).
# Logs: OUTDIR/native_build.log, native_tests.log (+ native_tests.xml), native_timings.log,
# and a one-line summary per stage in OUTDIR/native_summary.txt. About 4 minutes; the stages'
# limits: NATIVE_BUILD_S (330), NATIVE_TESTS_S (200), NATIVE_TIMINGS_S (90) seconds.
set -uo pipefail
out="${1:?usage: bash benchmarks/gpu_native_part.sh OUTDIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export DIFFCORE_EXT_DIR="${DIFFCORE_EXT_DIR:-${TMPDIR:-/tmp}/diffcore-ext}"   # build files stay out of OUTDIR
export MAX_JOBS="${MAX_JOBS:-16}"
if [ -z "${DIFFCORE_CUDA_ARCH:-}" ]; then
    DIFFCORE_CUDA_ARCH="$("$py" -c 'import torch; c = torch.cuda.get_device_capability(); print(f"{c[0]}.{c[1]}")' 2>/dev/null || echo 9.0)"
fi
export DIFFCORE_CUDA_ARCH
summary="$out/native_summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }

# 1. build (JIT: no pip, no build isolation, no network)
t0=$(date +%s)
timeout "${NATIVE_BUILD_S:-330}" "$py" - > "$out/native_build.log" 2>&1 <<'EOF'
import torch
import diffcore.native as n
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
print(n.BUILD_INFO, n.origin())
assert n.HAS_CUDA, "the extension was built without CUDA"
assert n.available("cuda")
EOF
rc=$?
note "build: rc=$rc in $(( $(date +%s) - t0 ))s (arch ${DIFFCORE_CUDA_ARCH}; log native_build.log)"
if [ $rc -ne 0 ]; then
    tail -30 "$out/native_build.log"
    exit $rc
fi

# 2. tests (gpu-marked ones run here; hypothesis-based fuzz skips if hypothesis is absent)
t0=$(date +%s)
workers=()
"$py" -c "import xdist" 2>/dev/null && workers=(-n 4)
timeout "${NATIVE_TESTS_S:-200}" "$py" -m pytest -q -rs "${workers[@]}" -p no:cacheprovider tests/test_native_*.py \
    --junitxml="$out/native_tests.xml" > "$out/native_tests.log" 2>&1
rc_tests=$?
note "tests: rc=$rc_tests in $(( $(date +%s) - t0 ))s: $(tail -1 "$out/native_tests.log")"

# 3. CUDA timings (medians of 5 after warm-up, torch baselines on the same GPU)
t0=$(date +%s)
timeout "${NATIVE_TIMINGS_S:-90}" "$py" - "$out/native_gpu_timings.json" > "$out/native_timings.log" 2>&1 <<'EOF'
import json, statistics, sys, time
import torch
import diffcore
from diffcore import native, ops, schedules, step_coeffs
from diffcore.trajectory import integrate_gmm

def med(fn, reps=5):
    fn(); torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); torch.cuda.synchronize(); ts.append(time.perf_counter() - t)
    return statistics.median(ts)

dev = torch.device("cuda")
rows = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
gm = diffcore.GaussianMixture([[4.0, 0.0], [-4.0, 0.0]], 0.5, [0.8, 0.2])
sde = diffcore.VPSDE()
n = 1 << 20
t = med(lambda: integrate_gmm(gm, sde, n, method="pc", steps=1000, predictor="euler_maruyama", corrector="none", device=dev), 3)
x, _ = integrate_gmm(gm, sde, n, method="pc", steps=1000, predictor="euler_maruyama", corrector="none", device=dev)
rows["gmm_em_1M_x_1000_s"] = t
rows["gmm_em_weight0"] = (gm.assign(x.cpu()) == 0).double().mean().item()
x = torch.randn(256, 3, 32, 32, device=dev); eps = torch.randn_like(x)
kw = step_coeffs.ddpm(diffcore.DDPM(schedules.linear_betas(1000)), torch.full((256,), 500, device=dev))
idx = torch.arange(256, device=dev)
rows["ddpm_step_native_ms"] = 1e3 * med(lambda: ops.ddpm_step(x, eps, **kw, seed=0, sample_idx=idx, step=5, backend="native"))
rows["ddpm_step_torch_ref_ms"] = 1e3 * med(lambda: ops.ddpm_step(x, eps, **kw, noise=torch.randn_like(x), backend="torch"))
x = torch.randn(64, 128, 32, 32, device=dev); w = torch.randn(128, device=dev); b = torch.randn(128, device=dev)
rows["gn_silu_native_ms"] = 1e3 * med(lambda: native.group_norm_silu(x, 32, w, b))
rows["gn_silu_torch_eager_ms"] = 1e3 * med(lambda: torch.nn.functional.silu(torch.nn.functional.group_norm(x, 32, w, b)))
print(json.dumps(rows, indent=1))
json.dump(rows, open(sys.argv[1], "w"), indent=1)
EOF
rc_t=$?
note "timings: rc=$rc_t in $(( $(date +%s) - t0 ))s (native_gpu_timings.json)"
[ $rc_tests -ne 0 ] && exit $rc_tests
exit $rc_t
