"""Speed of causal-conv1d's API (tcnkernels.causal_conv1d_fn and causal_conv1d_update) against
causal-conv1d itself (where it is installed: it needs CUDA; widths 2 to 4, no dilation) and cuDNN's
depthwise conv (F.conv1d(groups=dim), padded and cut to length, then SiLU).

    pytest benchmarks/test_short_conv_speed.py --benchmark-only
    pytest benchmarks/test_short_conv_speed.py --benchmark-only -k "update or (fn and bf16)"

It is memory-bound, so each result's extra_info has the compulsory traffic (forward: read x, write
out; forward + backward: also read dout and write dx; update: read x and the state's history, write
out and the new columns) in GB/s and as a fraction of this machine's measured copy bandwidth.
On a CPU the GPU-only providers and bf16 skip with a reason, and the shapes are smaller.
"""
import importlib.util
import statistics

import pytest
import torch
import torch.nn.functional as F

from tcnkernels import causal_conv1d_fn, causal_conv1d_update
from tcnkernels.bench.timer import call_seconds
from tcnkernels.bench.timing import measure_ceilings

PROVIDERS = ("tcnkernels", "causal-conv1d", "cudnn")
FN_SHAPES = [(4, 1536, 2048, width, dilation) for width in (4, 16) for dilation in (1, 8)]  # batch, dim, L
CPU_FN_SHAPES = [(2, 128, 512, width, dilation) for width in (4, 16) for dilation in (1, 8)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MODES = ("forward", "forward+backward")
HAS_CAUSAL_CONV1D = importlib.util.find_spec("causal_conv1d") is not None


@pytest.fixture(scope="module")
def bandwidth(device):
    """Copy bandwidth (read + write bytes/s) measured on this machine."""
    return measure_ceilings(device, dtypes=())["bandwidth_Bps"]


def _skip_reason(provider, width, dilation, dtype, device):
    if device.type == "cpu" and (provider != "tcnkernels" and provider != "cudnn" or dtype == "bf16"):
        return f"{provider} / {dtype} is measured on GPUs only"
    if provider == "causal-conv1d":
        if not HAS_CAUSAL_CONV1D:
            return "causal-conv1d is not installed (it needs CUDA and nvcc)"
        if width > 4 or dilation > 1:
            return "causal-conv1d takes widths 2 to 4 and no dilation"
    return None


def _fn(provider, dilation):
    if provider == "tcnkernels":
        return lambda x, w, b: causal_conv1d_fn(x, w, b, activation="silu", dilation=dilation)
    if provider == "causal-conv1d":
        from causal_conv1d import causal_conv1d_fn as theirs
        return lambda x, w, b: theirs(x, w, b, activation="silu")

    def cudnn(x, w, b):
        S = (w.shape[1] - 1) * dilation
        return F.silu(F.conv1d(x, w.unsqueeze(1), b, padding=S, dilation=dilation, groups=w.shape[0])[..., :x.shape[2]])
    return cudnn


def _timed(benchmark, fn, device, rounds):
    def call():
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    for _ in range(3):
        call()
    benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: one round ran untimed; time a few for extra_info
        return statistics.median(call_seconds(call, 3))
    return statistics.median(benchmark.stats.stats.data)


def _record(benchmark, provider, seconds, bytes_moved, bandwidth, **info):
    benchmark.extra_info.update(provider=provider, compulsory_bytes=bytes_moved, gb_per_s=bytes_moved / seconds / 1e9,
                                fraction_of_copy=bytes_moved / seconds / bandwidth, copy_gb_per_s=bandwidth / 1e9,
                                **info)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["channel-first", "channel-last"])
@pytest.mark.parametrize("case", range(len(FN_SHAPES)), ids=[f"w{s[3]}-d{s[4]}" for s in FN_SHAPES])
def test_fn_speed(benchmark, provider, mode, dtype, layout, case, device, bandwidth):
    batch, dim, L, width, dilation = (FN_SHAPES if device.type == "cuda" else CPU_FN_SHAPES)[case]
    reason = _skip_reason(provider, width, dilation, dtype, device)
    if reason:
        pytest.skip(reason)
    torch.manual_seed(0)
    t = DTYPES[dtype]
    shape = (batch, L, dim) if layout == "channel-last" else (batch, dim, L)
    x = torch.randn(shape, device=device, dtype=t)
    x = (x.transpose(1, 2) if layout == "channel-last" else x).requires_grad_(mode != "forward")
    w = torch.randn(dim, width, device=device, requires_grad=mode != "forward")  # fp32, as Mamba keeps it
    b = torch.randn(dim, device=device, requires_grad=mode != "forward")
    fn = _fn(provider, dilation)
    if mode == "forward":
        def step():
            with torch.no_grad():
                fn(x, w, b)
    else:
        dout = torch.randn_like(x)

        def step():
            torch.autograd.grad(fn(x, w, b), [x, w, b], dout)
    seconds = _timed(benchmark, step, device, 30 if device.type == "cuda" else 5)
    per_tensor = x.numel() * x.element_size()
    _record(benchmark, provider, seconds, per_tensor * (2 if mode == "forward" else 4), bandwidth, mode=mode,
            dtype=dtype, layout=layout, shape=[batch, dim, L], width=width, dilation=dilation)


@pytest.mark.parametrize("provider", ("tcnkernels", "causal-conv1d", "torch"))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("circular", [False, True], ids=["shift", "circular"])
def test_update_speed(benchmark, provider, dtype, circular, device, bandwidth):
    """One decode token, batch 64 x dim 4096, width 4 (state_len 3 + 5 for the circular buffer)."""
    batch, dim, width = (64, 4096, 4) if device.type == "cuda" else (16, 512, 4)
    reason = _skip_reason("tcnkernels" if provider == "torch" else provider, width, 1, dtype, device)
    if reason:
        pytest.skip(reason)
    torch.manual_seed(0)
    t = DTYPES[dtype]
    state_len = width - 1 + (5 if circular else 0)
    x = torch.randn(batch, dim, device=device, dtype=t)
    state = torch.randn(batch, state_len, dim, device=device, dtype=t).transpose(1, 2)  # vLLM's layout
    w, b = torch.randn(dim, width, device=device), torch.randn(dim, device=device)
    cache = torch.randint(0, 100, (batch,), dtype=torch.int32, device=device) if circular else None
    if provider == "causal-conv1d":
        from causal_conv1d import causal_conv1d_update as theirs

        def step():
            theirs(x, state, w, b, "silu", cache)
    else:
        import tcnkernels

        def step():
            with tcnkernels.use_backend("torch" if provider == "torch" else "auto"):
                causal_conv1d_update(x, state, w, b, "silu", cache)
    seconds = _timed(benchmark, step, device, 100 if device.type == "cuda" else 10)
    item = x.element_size()
    moved = batch * dim * item * (1 + (width - 1) + 1 + 1)  # x, the history, out, the new column
    _record(benchmark, provider, seconds, moved, bandwidth, dtype=dtype, mode="update",
            shape=[batch, dim, state_len], width=width, circular=circular)
