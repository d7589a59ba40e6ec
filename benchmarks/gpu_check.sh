#!/usr/bin/env bash
# The one prepared check for a lent GPU machine (shared/DESIGN.md):
#   bash benchmarks/gpu_check.sh OUTDIR
# From the repository root on a CUDA machine (torch 2.11 + triton 3.6 preinstalled, nvcc, no
# network). diffusers is not in that image: run `bash benchmarks/gpu_wheels.sh` here first and
# name .whl in the run's carry (device run: command "bash benchmarks/gpu_check.sh $OUT/gpu",
# carry [".whl"]); the wheels are installed --no-deps into a private folder on PYTHONPATH.
# Nothing is downloaded; diffcore is installed editable (no deps, no build isolation,
# DIFFCORE_NO_EXT=1: the native part JIT-builds the extension itself) so that kernels/ imports
# as diffcore.kernels. In order, each stage under its own time limit (about 8.5 minutes in all):
#   1. benchmarks/gpu_native_part.sh   JIT-builds diffcore._C with CUDA (into DIFFCORE_EXT_DIR, which
#                                      every later stage reuses), runs tests/test_native_*.py (CUDA ops
#                                      vs the float64 reference) and times CUDA paths
#   2. benchmarks/sampling.py --no-compile   diffusers' CIFAR-10 U-Net, batch 256, 100 steps: diffcore
#                                      (bf16, CUDA graphs, fused ops) vs diffusers fp32/bf16/fp16 eager
#   3. the gpu-marked engine, U-Net and accelerate tests (every sampler's step as a CUDA graph)
#   4. benchmarks/gpu_kernels_part.sh  gpu-marked Triton tests and benchmarks/kernels.py --quick
#   5. benchmarks/sampling.py --compile-only   vs diffusers under torch.compile(max-autotune), with
#                                      what time is left
# OUTDIR/summary.txt is rewritten after every stage (a run stopped early still leaves one): the
# device, one line per stage, each part's summary, and where the JSON figures are. Always exits 0.
set -u
out="${1:?usage: bash benchmarks/gpu_check.sh OUTDIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
start=$SECONDS

{
    echo "# diffcore GPU check $(date -u +%Y-%m-%dT%H:%M:%SZ) at $(git rev-parse --short HEAD 2>/dev/null)"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1 | head -4
    "$py" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
    "$py" -c 'import triton; print("triton", triton.__version__)' 2>&1
} > "$out/device.txt"

# the peers the image lacks (diffusers), carried as wheels made by benchmarks/gpu_wheels.sh
if ls .whl/*.whl > /dev/null 2>&1; then
    site="${TMPDIR:-/tmp}/diffcore-site"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        .whl/*.whl > "$out/wheels.log" 2>&1
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$py" -c 'import diffusers; print("diffusers", diffusers.__version__)' >> "$out/device.txt" 2>&1 \
    || echo "diffusers missing: sampling.py and the accelerate tests cannot compare (carry .whl)" >> "$out/device.txt"

# every stage: the tree first on the path, compiled Triton, and one extension build directory
# (without it each later process would JIT-build the extension again, a minute each)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" TRITON_INTERPRET=0
export DIFFCORE_EXT_DIR="${DIFFCORE_EXT_DIR:-${TMPDIR:-/tmp}/diffcore-ext}"
# the same CUDA arch list in every process: a different nvcc command line makes ninja rebuild
if [ -z "${DIFFCORE_CUDA_ARCH:-}" ]; then
    DIFFCORE_CUDA_ARCH="$("$py" -c 'import torch; c = torch.cuda.get_device_capability(); print(f"{c[0]}.{c[1]}")' 2>/dev/null || echo 9.0)"
fi
export DIFFCORE_CUDA_ARCH
rm -f benchmarks/results/sampling_cuda.json benchmarks/results/sampling_cuda_compile.json

summary() {   # rewritten after every stage, so a run stopped early still leaves one
    {
        cat "$out/device.txt"
        echo
        cat "$out/parts.txt"
        echo "## native"; cat "$out/native/native_summary.txt" 2>/dev/null || echo "(not run)"
        echo "## sampling"; tail -14 "$out/sampling.log" 2>/dev/null || echo "(not run)"
        echo "## gpu tests"; tail -3 "$out/gpu_tests.log" 2>/dev/null || echo "(not run)"
        echo "## kernels"; cat "$out/kernels/kernels_summary.txt" 2>/dev/null || echo "(not run)"
        echo "## compile contests"; tail -8 "$out/sampling_compile.log" 2>/dev/null || echo "(not run)"
        echo "## figures"; ls "$out"/native/*.json "$out"/kernels/*.json "$out"/sampling*.json 2>/dev/null
        echo "total $((SECONDS - start)) s"
    } > "$out/summary.txt"
}
part() { echo "$1: exit $2 after $((SECONDS - start)) s${3:+ ($3)}" >> "$out/parts.txt"; summary; }

# 0. install (editable, no deps, no build: kernels/ imports as diffcore.kernels)
DIFFCORE_NO_EXT=1 timeout 60 "$py" -m pip install -q --no-deps --no-build-isolation -e . > "$out/install.log" 2>&1
part "editable install" $?
# 1. the extension (JIT build), CUDA ops vs the float64 reference, CUDA timings
NATIVE_BUILD_S=150 NATIVE_TESTS_S=90 NATIVE_TIMINGS_S=40 \
    timeout 290 bash benchmarks/gpu_native_part.sh "$out/native" > "$out/native_part.log" 2>&1
rc=$?
part "native part" $rc
grep -q "^build: rc=0" "$out/native/native_summary.txt" 2>/dev/null || export DIFFCORE_NO_EXT=1  # no rebuilds
# 2. the headline: whole-loop sampling against diffusers, eager contenders (results file after each)
timeout 150 "$py" benchmarks/sampling.py --repeats 3 --no-compile > "$out/sampling.log" 2>&1
part "sampling benchmark (eager contenders)" $?
cp benchmarks/results/sampling_cuda.json "$out/" 2>/dev/null
# 3. gpu-marked engine / U-Net / accelerate tests: every sampler's step as a CUDA graph,
#    accelerated diffusers U-Nets on CUDA
timeout 90 "$py" -m pytest -q -m gpu tests/test_unet_gpu.py tests/test_engine.py tests/test_accelerate.py \
    -p no:cacheprovider > "$out/gpu_tests.log" 2>&1
part "engine/unet/accelerate gpu tests" $? "$(tail -1 "$out/gpu_tests.log")"
# 4. the Triton kernels: gpu-marked tests and benchmarks/kernels.py --quick, in what time is left
kb=$(( 430 - (SECONDS - start) ))
if [ "$kb" -ge 60 ]; then
    KERNELS_PART_SECONDS=$(( kb > 150 ? 150 : kb )) \
        timeout $(( (kb > 150 ? 150 : kb) + 10 )) bash benchmarks/gpu_kernels_part.sh "$out/kernels" \
        > "$out/kernels_part.log" 2>&1
    part "kernels part" $?
else
    part "kernels part" skipped "no time left"
fi
# 5. torch.compile(mode="max-autotune") contests: minutes of compiling; only with time left
left=$(( 500 - (SECONDS - start) ))
if [ "$left" -ge 90 ]; then
    timeout "$left" "$py" benchmarks/sampling.py --repeats 3 --compile-only > "$out/sampling_compile.log" 2>&1
    part "sampling benchmark (compile contests)" $?
    cp benchmarks/results/sampling_cuda_compile.json "$out/" 2>/dev/null
else
    part "sampling benchmark (compile contests)" skipped "no time left"
fi
summary
cat "$out/summary.txt"
exit 0
