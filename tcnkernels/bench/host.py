"""Host overhead: the Python and dispatch time of a call with every Triton launch replaced by a no-op.

Small TCNs are launch- and host-bound on a GPU: a kernel of a few microseconds waits for the host to
issue it. This measures the host side alone, on CPU tensors with the triton backend forced and the
kernels stubbed, so neither device time nor Triton's own launcher is in the number. Small shapes keep
the few real CPU ops (allocations, autograd's bookkeeping) from measuring arithmetic. Alongside, the
same calls through a do-nothing `torch.autograd.Function` with the same inputs and outputs: the
floor PyTorch itself sets on this machine.
"""
import contextlib
import statistics

import torch

from .._backend import use_backend
from ..functional import causal_conv1d
from ..nn import TemporalBlock
from ..ops import launching
from .timer import call_seconds

GOALS_US = {"causal_conv1d forward": 20.0, "causal_conv1d forward+backward": 50.0,
            "TemporalBlock forward+backward": 100.0, "TemporalBlock forward+backward, dropout 0.2": 100.0}


@contextlib.contextmanager
def stubbed_launches():
    """Every kernel launch is a no-op (the launchers' one launch point is swapped), and the triton
    backend is forced and accepts CPU tensors."""
    with launching.launches_replaced(lambda kernel, grid, device_of, tensors, static: None), use_backend("triton"):
        yield


class _Floor(torch.autograd.Function):
    """What PyTorch costs for a conv-shaped autograd op that does nothing: allocate y, save the
    inputs, allocate dx, dw, db."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return x.new_empty((x.shape[0], weight.shape[0], x.shape[2]))

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        return x.new_empty(x.shape), weight.new_empty(weight.shape), weight.new_empty(weight.shape[0])


class _BlockFloor(torch.autograd.Function):
    """The same for a block's inputs: x and six parameters in, seven gradients out."""

    @staticmethod
    def forward(ctx, x, *params):
        ctx.save_for_backward(x, *params)
        return x.new_empty(x.shape)

    @staticmethod
    def backward(ctx, dy):
        return tuple(t.new_empty(t.shape) for t in ctx.saved_tensors)


def _median_us(fn, rounds, warmup=200):
    return statistics.median(call_seconds(fn, rounds, warmup)) * 1e6


def cases():
    """(name, callable) pairs; the tensors are small: B=2, 25 channels, L=64, K=7 (a seq-MNIST conv)."""
    x = torch.randn(2, 25, 64, requires_grad=True)
    w = torch.randn(25, 25, 7, requires_grad=True)
    b = torch.randn(25, requires_grad=True)
    dy = torch.randn(2, 25, 64)
    block = TemporalBlock(25, 25, 7, stride=1, dilation=4, padding=24, dropout=0.0)
    dropout_block = TemporalBlock(25, 25, 7, stride=1, dilation=4, padding=24, dropout=0.2)
    # gradients reset by hand: Module.zero_grad walks the module tree (~20 us), not the library's cost
    block_params, dropout_params = list(block.parameters()), list(dropout_block.parameters())

    def forward():
        with torch.no_grad():
            causal_conv1d(x, w, b, 16, "relu")

    def forward_backward():
        causal_conv1d(x, w, b, 16, "relu").backward(dy)
        x.grad = w.grad = b.grad = None

    def floor_forward_backward():
        _Floor.apply(x, w, b).backward(dy)
        x.grad = w.grad = b.grad = None

    def floor_block_forward_backward():
        _BlockFloor.apply(x, *block_params).backward(dy)
        x.grad = None
        for p in block_params:
            p.grad = None

    def block_forward():
        with torch.no_grad():
            block(x)

    def block_forward_backward():
        block(x).backward(dy)
        x.grad = None
        for p in block_params:
            p.grad = None

    def dropout_block_forward_backward():
        dropout_block(x).backward(dy)  # its seeds drawn by one small torch op on every call
        x.grad = None
        for p in dropout_params:
            p.grad = None

    return [("causal_conv1d forward", forward), ("causal_conv1d forward+backward", forward_backward),
            ("autograd.Function floor, forward+backward", floor_forward_backward),
            ("autograd.Function floor, a block's 7 inputs, forward+backward", floor_block_forward_backward),
            ("TemporalBlock forward", block_forward), ("TemporalBlock forward+backward", block_forward_backward),
            ("TemporalBlock forward+backward, dropout 0.2", dropout_block_forward_backward)]


def measure(rounds=2000, threads=1, blocks=5):
    """[{name, us, block_us, goal_us}] of each call, measured in this process in `blocks` blocks of
    rounds/blocks calls, the cases interleaved block by block so noise hits every case alike. `us` is
    the median of the fastest block: on a shared machine whole blocks run up to 2x slow (measured
    here: the same do-nothing autograd call at 40 us in one process and 70 us in the next)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with stubbed_launches():
            calls = cases()
            samples = {name: [] for name, _ in calls}
            for _ in range(blocks):
                for name, fn in calls:
                    samples[name].append(_median_us(fn, rounds // blocks))
    finally:
        torch.set_num_threads(previous)
    return [dict(name=name, us=min(v), block_us=v, goal_us=GOALS_US.get(name)) for name, v in samples.items()]
