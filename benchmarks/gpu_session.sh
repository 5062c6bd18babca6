#!/usr/bin/env bash
# All the GPU work of a session in one call on a CUDA machine: the GPU test tier (the whole suite
# with compiled kernels on CUDA), the parity self-check, the conv timing preview and the speed report
# (eager and CUDA-graph-captured providers, plus the host-overhead table). The static SASS profile
# needs no GPU (benchmarks/sass_profile.py runs on any Linux machine with the triton wheel).
# Everything lands under $OUT (default benchmarks/results/out), in six files (the device tool brings
# back at most 8): session.log, preview.json, short-conv.json and the report's <device>.json/.md/.png; copy the
# report into benchmarks/results/ and commit it with the device name.
#   bash benchmarks/gpu_session.sh                      # quick report
#   BENCH_SCOPE=--full bash benchmarks/gpu_session.sh   # full report (cut at 300 s, partial kept)
# The lent GPU machines have no network but carry torch, triton, pytest, pytest-xdist,
# pytest-benchmark and matplotlib, so nothing is installed: the package runs from the checkout.
set -uo pipefail
OUT=${OUT:-benchmarks/results/out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
LOG="$OUT/session.log"
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv; $PY -m tcnkernels info; } 2>&1 | tee "$LOG"
TCNKERNELS_TEST_DEVICE=cuda timeout 240 $PY -m pytest tests -q -p no:cacheprovider -rs \
    --ignore=tests/test_compile_only.py --ignore=tests/test_cli.py 2>&1 | tail -60 | tee -a "$LOG"
$PY -m tcnkernels check 2>&1 | tee -a "$LOG"
timeout 120 $PY benchmarks/preview.py --out "$OUT/preview.json" 2>&1 | tee -a "$LOG"
# causal-conv1d's API against causal-conv1d (where installed) and cuDNN: bf16 channel-last (Mamba's
# layout) and the decode update, GB/s against the copy bandwidth (pytest-benchmark JSON).
timeout 150 $PY -m pytest benchmarks/test_short_conv_speed.py -q -p no:cacheprovider --benchmark-only \
    -k "update or (bf16 and channel-last)" --benchmark-json="$OUT/short-conv.json" 2>&1 | tail -30 | tee -a "$LOG"
# The report rewrites its files after every case, so a run cut by the timeout keeps what it measured.
timeout 300 $PY -m tcnkernels bench ${BENCH_SCOPE:---quick} --out "$OUT" --no-progress 2>&1 | tail -60 | tee -a "$LOG"
