"""The models each provider runs, all with the same weights, and one callable step of each.

Providers are compared at equal semantics: same weights, dtype, TF32 setting and dropout p.
"""
import functools
import math

import torch
from torch import nn

from .._backend import use_backend
from ..nn import CausalConv1d, TemporalBlock, TemporalConvNet
from ..ops.reference import Chomp1d, ReferenceTemporalBlock, ReferenceTemporalConvNet
from .configs import RECURRENT

GRAPH_SUFFIX = "+graph"


def reference_model(shape):
    """The reference as users run it: Conv1d padded both sides + chomp + separate ops."""
    if shape.level == "conv":
        pad = (shape.K - 1) * shape.dilation
        conv = nn.Conv1d(shape.c_in, shape.channels[0], shape.K, padding=pad, dilation=shape.dilation)
        return nn.Sequential(conv, Chomp1d(pad), nn.ReLU())
    if shape.level == "block":
        n_in, n_out, d = shape.blocks()[0]
        return ReferenceTemporalBlock(n_in, n_out, shape.K, 1, d, (shape.K - 1) * d, shape.dropout)
    return ReferenceTemporalConvNet(shape.c_in, list(shape.channels), shape.K, shape.dropout)


def tcnkernels_model(shape, reference):
    if shape.level == "conv":
        model = CausalConv1d(shape.c_in, shape.channels[0], shape.K, shape.dilation, activation="relu")
        model.load_state_dict(reference[0].state_dict())
        return model
    if shape.level == "block":
        n_in, n_out, d = shape.blocks()[0]
        model = TemporalBlock(n_in, n_out, shape.K, 1, d, (shape.K - 1) * d, shape.dropout)
    else:
        model = TemporalConvNet(shape.c_in, list(shape.channels), shape.K, shape.dropout)
    model.load_state_dict(reference.state_dict())
    return model


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())


class RecurrentBaseline(nn.Module):
    """A one-layer cuDNN LSTM/GRU on the same (B, C_in, L) input, sized to the TCN's parameter count."""

    def __init__(self, kind, c_in, n_params):
        super().__init__()
        gates = 4 if kind == "lstm" else 3
        # gates * (h*c_in + h*h + 2h) = n_params, solved for the hidden size h
        hidden = max(1, round((-(c_in + 2) + math.sqrt((c_in + 2) ** 2 + 4 * n_params / gates)) / 2))
        self.rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(c_in, hidden)

    def forward(self, x):
        return self.rnn(x.permute(2, 0, 1))[0]


def base_provider(provider):
    return provider.removesuffix(GRAPH_SUFFIX)


@functools.lru_cache(maxsize=None)
def _recurrent_probe(kind, device_type, dtype):
    """Why a tiny `kind` forward + backward fails under `dtype` autocast on this device, or None.
    oneDNN's bf16 LSTM needs AVX-512 on a CPU: without it (a 2-core AMD EPYC, say) it raises
    "could not create a primitive descriptor for the LSTM forward propagation primitive"."""
    cell = RecurrentBaseline(kind, 3, 200).to(device_type)
    try:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            y = cell(torch.randn(2, 3, 5, device=device_type))
        y.float().sum().backward()
    except RuntimeError as exc:
        return f"{kind} in {dtype} does not run on this {device_type.upper()}: {str(exc).splitlines()[0][:200]}"
    return None


def unsupported_reason(provider, mode, dtype, device):
    """Why `provider` cannot run a `mode` case in `dtype` on `device` (found by running a tiny
    model of it once), or None. Such a provider is reported as skipped, with the reason."""
    if base_provider(provider) in RECURRENT and device.type == "cpu" and dtype != "fp32":
        return _recurrent_probe(base_provider(provider), device.type, dtype)
    return None


def build_model(provider, shape, device):
    """The model of `provider` for `shape`, on `device`, in train mode."""
    provider = base_provider(provider)
    torch.manual_seed(0)
    reference = reference_model(shape)
    if provider in RECURRENT:
        model = RecurrentBaseline(provider, shape.c_in, parameter_count(reference))
    elif provider == "tcnkernels":
        model = tcnkernels_model(shape, reference)
    else:
        model = reference
    model = model.to(device)
    if provider.startswith("compiled"):
        mode = "max-autotune" if provider.endswith("max-autotune") else None
        model = torch.compile(model, mode=mode)
    return model


def make_step(model, shape, mode, dtype, device, graph=False, n_inputs=4):
    """A zero-argument callable doing one forward / forward+backward / optimizer step.

    Cycles through `n_inputs` random input sets so small inputs do not just measure the L2 cache.
    With `graph`, the step is captured once in a CUDA graph and each call copies the next input
    into the graph's static input and replays it."""
    xs = [torch.randn(shape.B, shape.c_in, shape.L, device=device) for _ in range(n_inputs)]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
    # capturable: Adam keeps its step count on the device, as graph capture requires
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, capturable=graph) if mode == "step" else None
    model.train(mode != "forward")
    static_x = xs[0].clone() if graph else None

    def body(x):
        if mode == "forward":
            with torch.no_grad(), autocast:
                return model(x)
        with autocast:
            y = model(x)
        y.float().square().mean().backward()
        if optimizer is not None:
            optimizer.step()
        if not graph:  # a captured graph writes the same .grad buffers on every replay
            (optimizer or model).zero_grad(set_to_none=True)

    state = {"i": 0}

    def next_input():
        state["i"] += 1
        return xs[state["i"] % n_inputs]

    if not graph:
        return lambda: body(next_input())

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up outside the graph: cuDNN autotuning, Triton compilation, allocations
            body(static_x)
    torch.cuda.current_stream(device).wait_stream(side)
    (optimizer or model).zero_grad(set_to_none=True)
    captured = torch.cuda.CUDAGraph()
    with torch.cuda.graph(captured):
        body(static_x)

    def replay():
        static_x.copy_(next_input())
        captured.replay()
    return replay


def cudnn_settings(provider):
    deterministic = provider == "cudnn-deterministic"
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def backend_for(provider, device):
    """tcnkernels runs its kernels on a GPU and its torch path on a CPU; baselines never touch them."""
    return "auto" if device.type == "cuda" or base_provider(provider) != "tcnkernels" else "torch"


def prepare(provider, shape, mode, dtype, device):
    """A zero-argument call that runs one step of `provider` under its backend and cuDNN settings
    and waits for the device."""
    backend = backend_for(provider, device)
    base = base_provider(provider)
    cudnn_settings(base)
    with use_backend(backend):
        step = make_step(build_model(provider, shape, device), shape, mode, dtype, device,
                         graph=provider.endswith(GRAPH_SUFFIX))

    def timed():
        cudnn_settings(base)
        with use_backend(backend):
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    return timed
