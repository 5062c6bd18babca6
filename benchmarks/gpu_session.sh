#!/usr/bin/env bash
# All the GPU work of a session in one call on a CUDA machine: install, the GPU test tier (the whole
# suite with compiled kernels on CUDA), the parity self-check, the speed report, and the conv preview.
# Everything lands under $OUT (default benchmarks/results/out): copy <device>.json/.md/.png into
# benchmarks/results/ and commit them with the device name.
#   BENCH_SCOPE=--full bash benchmarks/gpu_session.sh    # full report instead of --quick
set -uo pipefail
OUT=${OUT:-benchmarks/results/out}
mkdir -p "$OUT"
python -m pip install -q -e ".[test,bench]" 2>&1 | tail -2
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv; python -m tcnkernels info; } \
    2>&1 | tee "$OUT/device.txt"
TCNKERNELS_TEST_DEVICE=cuda timeout 240 python -m pytest tests -q -p no:cacheprovider \
    --ignore=tests/test_compile_only.py --ignore=tests/test_cli.py --junitxml="$OUT/gpu-tests.xml" \
    2>&1 | tail -40 | tee "$OUT/gpu-tests.txt"
python -m tcnkernels check 2>&1 | tee "$OUT/check.txt"
timeout 120 python benchmarks/preview.py --out "$OUT/preview.json" 2>&1 | tee "$OUT/preview.txt"
# The report rewrites its files after every case, so a run cut by the timeout keeps what it measured.
timeout 300 python -m tcnkernels bench ${BENCH_SCOPE:---quick} --out "$OUT" 2>&1 | tail -60 | tee "$OUT/bench.txt"
