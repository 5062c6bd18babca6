"""The paper networks' whole forward in onnxruntime against PyTorch eager (the authors' TCN) and
tcnkernels' torch path, inference, CPU timings (tcnkernels.bench.deployment builds them; the ONNX
step is a provider of benchmarks/test_streaming_speed.py).

    pytest benchmarks/test_onnx_speed.py --benchmark-only
"""
import functools

import numpy as np
import pytest
import torch

from tcnkernels import use_backend
from tcnkernels.bench import deployment
from tcnkernels.bench.configs import PAPER_CONFIGS

CASES = [(c, p) for c in PAPER_CONFIGS for p in deployment.FORWARD_PROVIDERS]


@functools.lru_cache(maxsize=1)  # one network's exports at a time: the cases run config by config
def _callables(config):
    return deployment.forward_callables(config)


@pytest.mark.parametrize("config,provider", CASES, ids=[f"{c}-{p}" for c, p in CASES])
def test_onnx_forward(benchmark, config, provider):
    missing = deployment.onnx_missing()
    if missing:
        pytest.skip(missing)
    with use_backend("torch"):
        fns = _callables(config)
        np.testing.assert_allclose(fns[provider](), fns["reference"](), rtol=1e-4, atol=1e-4)
        benchmark.extra_info.update(config=config, provider=provider, threads=torch.get_num_threads())
        benchmark.pedantic(fns[provider], rounds=5, iterations=1, warmup_rounds=1)
