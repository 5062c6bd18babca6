"""Streaming inference speed: one new time step of the adding-problem and seq-MNIST networks, for the
C++ step, the naive (PyTorch) streamer, recomputing the receptive-field window, the streaming ONNX
step in onnxruntime, pytorch-tcn's streaming mode and an LSTM of the same size
(tcnkernels.bench.streaming builds them). CPU timings.

    pytest benchmarks/test_streaming_speed.py --benchmark-only
"""
import pytest
import torch

from tcnkernels import use_backend
from tcnkernels.bench import streaming

CASES = [(c, b, p) for c in streaming.STREAM_CONFIGS for b in streaming.BATCHES for p in streaming.PROVIDERS]


@pytest.mark.parametrize("config,batch,provider", CASES, ids=[f"{c}-B{b}-{p.split()[0]}" for c, b, p in CASES])
def test_streaming_step(benchmark, config, batch, provider):
    if provider == "recompute window" and batch > 64:
        pytest.skip("recomputing the window at this batch takes seconds a step")
    with use_backend("torch"):
        steppers = streaming.steppers(config, batch)
        if provider not in steppers:
            pytest.skip(f"{provider} cannot run here (no C++ compiler, onnxruntime or pytorch-tcn; or pytorch-tcn "
                        f"beyond {streaming.PYTORCH_TCN_MAX_BATCH} rows)")
        benchmark.extra_info.update(config=config, batch=batch, provider=provider, threads=torch.get_num_threads())
        benchmark(steppers[provider])
