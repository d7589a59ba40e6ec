#!/usr/bin/env bash
# Run HERE (with network) before benchmarks/gpu_check.sh goes to a lent GPU machine:
#   bash benchmarks/gpu_wheels.sh
# The GPU image (Python 3.12, torch 2.11, triton 3.6; see the device tool's KINDS.md) has no
# diffusers and nothing can be fetched there, so the diffusers peer of benchmarks/sampling.py
# and of the gpu-marked accelerate tests travels as wheels: .whl/ (git-ignored; name it in the
# run's `carry`). Only what the image lacks: diffusers (pure Python) and importlib_metadata;
# its other needs (huggingface-hub >= 1.32, safetensors >= 0.8, numpy, Pillow, regex, requests,
# filelock, zipp) are in the image. gpu_check.sh installs .whl/*.whl with --no-deps into a
# private folder on PYTHONPATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DIFFUSERS="${DIFFUSERS_VERSION:-0.42.1}"   # the version the CPU tests and figures use
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d .whl "diffusers==$DIFFUSERS" "importlib_metadata>=4" 2>&1 | grep -v "^WARNING: Location" || true
ls .whl/*.whl >/dev/null
du -sh .whl
ls .whl
