"""Speed of tcnkernels against cuDNN, torch.compile and a cuDNN LSTM/GRU, at the paper's TCNs.

    pytest benchmarks/ --benchmark-only                       # everything this device can run
    pytest benchmarks/ --benchmark-only -k "seq-mnist and network and fp32"
    pytest benchmarks/ --benchmark-only --benchmark-json=out.json / --benchmark-compare

Each result's extra_info records device, versions, shape, dtype, mode, peak memory, GB/s, TFLOP/s
and the roofline floor (measured on the same machine) as a multiple. Cases a CPU cannot run
(cuDNN, torch.compile of the GPU baselines, the cuDNN LSTM) skip with a reason.
"""
import pytest
import torch

from tcnkernels.bench import configs
from tcnkernels.bench.providers import base_provider, prepare
from tcnkernels.bench.timing import summarize, warm_and_peak_memory

SHAPES = configs.paper_shapes(("conv", "block", "network")) + configs.sweep_shapes()
CASES = [(s, m, d) for s in SHAPES for m in configs.MODES for d in configs.DTYPES]
PROVIDERS = configs.CPU_PROVIDERS + tuple(p for p in configs.GPU_PROVIDERS if p != "tcnkernels")


def _skip_reason(provider, shape, mode, dtype, device):
    if device.type == "cpu":
        if provider not in configs.CPU_PROVIDERS:
            return f"{provider} is a GPU baseline"
        if dtype == "bf16":
            return "bf16 autocast is measured on GPUs only"
    elif provider == "reference":
        return "on a GPU the reference is the cudnn provider"
    if base_provider(provider) in configs.RECURRENT and shape.level != "network":
        return "recurrent baselines stand in for whole networks only"
    return None


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape,mode,dtype", CASES,
                         ids=[f"{s.name}-{s.level}-{m}-{d}" for s, m, d in CASES])
def test_speed(benchmark, provider, shape, mode, dtype, device, ceilings, environment):
    reason = _skip_reason(provider, shape, mode, dtype, device)
    if reason:
        pytest.skip(reason)
    timed = prepare(provider, shape, mode, dtype, device)
    peak = warm_and_peak_memory(timed, device, warmup=10 if device.type == "cuda" else 2)
    benchmark.pedantic(timed, rounds=30 if device.type == "cuda" else 5, iterations=1, warmup_rounds=1)
    stats = benchmark.stats.stats
    seconds = list(stats.data)
    benchmark.extra_info.update(environment=environment, provider=provider, peak_memory_bytes=peak,
                                **summarize(seconds, shape, mode, dtype, ceilings))
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, False

