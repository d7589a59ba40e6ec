#!/usr/bin/env bash
# The one prepared check for a lent GPU machine (shared/DESIGN.md):
#   bash benchmarks/gpu_check.sh OUTDIR
# From the repository root on a CUDA machine (torch 2.11 + triton 3.6 preinstalled, nvcc, no
# network). diffusers is not in that image: run `bash benchmarks/gpu_wheels.sh` here first and
# name .whl in the run's carry (device run: command "bash benchmarks/gpu_check.sh $OUT/gpu",
# carry [".whl"]); the wheels are installed --no-deps into a private folder on PYTHONPATH.
# Nothing is downloaded; diffcore is installed editable (no deps, no build isolation,
# DIFFCORE_NO_EXT=1: the native part JIT-builds the extension itself) so that kernels/ imports
# as diffcore.kernels. In order:
#   1. benchmarks/gpu_native_part.sh   JIT-builds diffcore._C with CUDA, runs tests/test_native_*.py
#                                      (CUDA ops vs the float64 reference) and times CUDA paths (~4 min)
#   2. benchmarks/gpu_kernels_part.sh  gpu-marked Triton tests (torch.compile, CUDA graphs, large
#                                      shapes) and benchmarks/kernels.py --quick (~3 min)
#   3. tests/test_unet_gpu.py, the gpu-marked engine and accelerate tests: a U-Net step, every
#      sampler's step captured as a CUDA graph, accelerated diffusers U-Nets on CUDA (1 min at most)
#   4. benchmarks/sampling.py          diffusers' CIFAR-10 U-Net, batch 256, 100 steps: diffcore
#                                      (bf16, CUDA graphs, fused ops) vs diffusers fp32/fp16/compile
# then OUTDIR/summary.txt: the device, both parts' one-line-per-stage summaries, and where the
# JSON figures are. Under 8 minutes in all; always exits 0 (the summary says what failed).
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

DIFFCORE_NO_EXT=1 timeout 120 "$py" -m pip install -q --no-deps --no-build-isolation -e . > "$out/install.log" 2>&1
echo "editable install: exit $? after $((SECONDS - start)) s" >> "$out/parts.txt"
timeout 220 bash benchmarks/gpu_native_part.sh "$out/native" > "$out/native_part.log" 2>&1
echo "native part: exit $? after $((SECONDS - start)) s" >> "$out/parts.txt"
KERNELS_PART_SECONDS=$(( 400 - (SECONDS - start) > 120 ? 400 - (SECONDS - start) : 120 )) \
    timeout 170 bash benchmarks/gpu_kernels_part.sh "$out/kernels" > "$out/kernels_part.log" 2>&1
echo "kernels part: exit $? after $((SECONDS - start)) s" >> "$out/parts.txt"
# a whole U-Net sampling step on the fused ops, captured as a CUDA graph and replayed
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" TRITON_INTERPRET=0 timeout 60 "$py" -m pytest -q -m gpu tests/test_unet_gpu.py \
    tests/test_engine.py tests/test_accelerate.py -p no:cacheprovider \
    > "$out/unet_gpu_tests.log" 2>&1
echo "unet gpu test: exit $? after $((SECONDS - start)) s ($(tail -1 "$out/unet_gpu_tests.log"))" >> "$out/parts.txt"

# whole-loop sampling against diffusers; compile (max-autotune) only when time is left
left=$(( 470 - (SECONDS - start) ))
if [ "$left" -gt 200 ]; then compile_flag=""; else compile_flag="--no-compile"; fi
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" TRITON_INTERPRET=0 timeout $(( left > 60 ? left : 60 )) "$py" benchmarks/sampling.py --repeats 3 \
    $compile_flag > "$out/sampling.log" 2>&1
rc=$?
cp benchmarks/results/sampling.json "$out/" 2>/dev/null
echo "sampling benchmark: exit $rc after $((SECONDS - start)) s $compile_flag" >> "$out/parts.txt"

{
    cat "$out/device.txt"
    echo
    cat "$out/parts.txt"
    echo "## native"; cat "$out/native/native_summary.txt" 2>/dev/null || echo "(no summary)"
    echo "## kernels"; cat "$out/kernels/kernels_summary.txt" 2>/dev/null || echo "(no summary)"
    echo "## sampling"; tail -12 "$out/sampling.log" 2>/dev/null
    echo "## figures"; ls "$out"/native/*.json "$out"/kernels/*.json "$out"/sampling.json 2>/dev/null
    echo "total $((SECONDS - start)) s"
} > "$out/summary.txt"
cat "$out/summary.txt"
exit 0
