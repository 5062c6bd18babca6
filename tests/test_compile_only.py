"""Compile-only tier: every shipped kernel configuration builds for sm_80 and sm_90 with Triton's
bundled ptxas, without a GPU, and fits the architecture's shared memory. This catches what the
interpreter lets through (dot sizes under 16, unsupported ops, oversized tiles)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Opt-in shared memory per block: A100 (sm_80) 163 KB, H100 (sm_90) 227 KB.
SHARED_MEMORY_LIMIT = {80: 166912, 90: 232448}


@pytest.mark.parametrize("arch", sorted(SHARED_MEMORY_LIMIT), ids=lambda a: f"sm_{a}")
def test_every_kernel_configuration_compiles(arch):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("compile_kernels.py")
    proc = subprocess.run([sys.executable, str(script), str(arch)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(rows) >= 100, f"too few configurations compiled: {len(rows)}\n{proc.stderr[-2000:]}"
    errors = [r for r in rows if "error" in r]
    assert not errors, json.dumps(errors[:3], indent=1)
    too_big = [r for r in rows if r["shared"] > SHARED_MEMORY_LIMIT[arch]]
    assert not too_big, json.dumps(too_big[:3], indent=1)
    kernels = {r["kernel"] for r in rows}
    assert kernels == {"causal_conv1d_kernel", "causal_conv1d_weight_grad_kernel"}
