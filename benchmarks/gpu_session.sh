#!/usr/bin/env bash
# All the GPU work of a session in one `run` call on the lent GPU machine: install, the GPU test tier
# (the whole suite with compiled kernels on CUDA), and the timing preview. Results go under $OUT.
set -uo pipefail
OUT=${OUT:-benchmarks/results/out}
mkdir -p "$OUT"
pip install -q -e ".[test]" 2>&1 | tail -2
nvidia-smi --query-gpu=name,driver_version --format=csv | tee "$OUT/device.txt"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/device.txt"
TCNKERNELS_TEST_DEVICE=cuda python -m pytest tests -q -x -p no:cacheprovider \
    --ignore=tests/test_compile_only.py --junitxml="$OUT/gpu-tests.xml" 2>&1 | tail -40 | tee "$OUT/gpu-tests.txt"
python benchmarks/preview.py --out "$OUT/preview.json" 2>&1 | tee "$OUT/preview.txt"
