"""Structure of a training step, counted on meta tensors (no device, nothing timed): kernel launches
and the bytes autograd keeps for the backward, tcnkernels against the reference TCN.

Launches: tcnkernels' Triton launches (recorded at the launchers' one launch point) plus the PyTorch
compute ops either model dispatches; each compute op stands for one kernel launch, a lower bound for
the reference (cuDNN's convolution backward alone launches two or three). Views, allocations and
detaches are not counted. Saved bytes: every tensor autograd packs for the backward (parameters
excluded, each storage counted once), the bulk of training memory beyond the parameters. The
reference's dropout is counted as it runs on CUDA (`native_dropout`: one fused op, a 1-byte mask),
not as on a CPU (a float mask and three ops).
"""
import contextlib

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from .._backend import use_backend
from ..nn import TemporalConv1d, TemporalConvNet
from ..ops import launching
from ..ops.reference import Chomp1d, ReferenceTemporalConvNet
from .configs import paper_shapes
from .providers import reference_model, tcnkernels_model

NOT_A_LAUNCH = ("empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "as_strided", "view",
                "_unsafe_view", "detach", "alias", "t", "transpose", "permute", "expand", "slice", "select",
                "unsqueeze", "squeeze", "split", "split_with_sizes", "unbind", "lift_fresh", "_reshape_alias",
                "zeros_like", "ones_like")  # the last two: autograd's own seeds, as with any model


class _OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__.split(".")[0] not in NOT_A_LAUNCH:
            self.count += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _cuda_dropout():
    """F.dropout as on CUDA (the reference's nn.Dropout calls it)."""
    cpu_dropout = torch.nn.functional.dropout

    def dropout(x, p=0.5, training=True, inplace=False):
        return torch.native_dropout(x, p, training)[0] if training and p > 0 else x

    torch.nn.functional.dropout = dropout
    try:
        yield
    finally:
        torch.nn.functional.dropout = cpu_dropout


@contextlib.contextmanager
def _saved_bytes(model):
    params = {id(p) for p in model.parameters()}
    seen, total = set(), [0]

    def pack(t):
        base = t if t._base is None else t._base
        if id(t) not in params and id(base) not in seen:
            seen.add(id(base))
            total[0] += base.numel() * base.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield total


def count_step(model, shape, triton):
    """{launches, saved_bytes} of one forward + backward of `model` (on meta) in train mode."""
    x = torch.empty(shape.B, shape.c_in, shape.L, device="meta", requires_grad=True)
    return count_training_step(model, lambda: model(x), triton)


def count_training_step(model, forward, triton):
    """{launches, saved_bytes} of `forward()` (an output of `model`, on meta) and its backward."""
    launches = []  # kernel names only: holding a launch's tensors would make autograd copy the gradients
    counter = _OpCounter()
    with launching.launches_replaced(lambda kernel, *_: launches.append(kernel.fn.__name__)), \
            use_backend("triton" if triton else "torch"), _cuda_dropout(), counter, _saved_bytes(model) as kept:
        forward().square().mean().backward()
    return dict(launches=len(launches) + counter.count, saved_bytes=kept[0])


def structure_rows(batch_size=None, max_length=None):
    """[{config, provider, launches, saved_bytes}] for every paper network, tcnkernels and reference."""
    rows = []
    for shape in paper_shapes(("network",), batch_size, max_length):
        with torch.device("meta"):
            torch.manual_seed(0)
            reference = reference_model(shape)
            ours = tcnkernels_model(shape, reference)
        for provider, model, triton in (("tcnkernels", ours, True), ("reference", reference, False)):
            model.train()
            rows.append(dict(config=shape.name, provider=provider, **count_step(model, shape, triton)))
    return rows



# ------------------------------------------------------------------------------------------------
# The general op's models: a GELU TCN (the authors' network with GELU for every ReLU) and a gated
# TCN (WaveNet's gate: per level a conv of twice the width, tanh(a) * sigmoid(b), a residual add).

VARIANT_CONFIGS = ("seq-mnist", "char-ptb")


class GatedStack(nn.Module):
    """A 1x1 input conv, then per level x + tanh(a) * sigmoid(b), (a, b) = a causal dilated conv of x
    of twice the width: fused (TemporalConv1d with the gated unit) or as users write it (Conv1d
    padded on both sides, chomp, chunk, tanh, sigmoid, multiply)."""

    def __init__(self, c_in, width, K, levels, fused):
        super().__init__()
        self.inp = nn.Conv1d(c_in, width, 1)
        self.fused = fused
        self.convs = nn.ModuleList(
            TemporalConv1d(width, 2 * width, K, 2**i, activation="gated_tanh") if fused
            else nn.Sequential(nn.Conv1d(width, 2 * width, K, dilation=2**i, padding=(K - 1) * 2**i),
                               Chomp1d((K - 1) * 2**i)) for i in range(levels))

    def forward(self, x):
        x = self.inp(x)
        for conv in self.convs:
            if self.fused:
                x = x + conv(x)
            else:
                a, b = conv(x).chunk(2, dim=1)
                x = x + torch.tanh(a) * torch.sigmoid(b)
        return x


def _gelu_reference(shape):
    model = ReferenceTemporalConvNet(shape.c_in, list(shape.channels), shape.K, shape.dropout)
    for block in model.network:
        block.net[2], block.net[6], block.relu = nn.GELU(), nn.GELU(), nn.GELU()
    return model


def variant_rows(batch_size=None, max_length=None):
    """[{config, provider, launches, saved_bytes}] of a GELU TCN and a gated TCN on the seq-MNIST and
    char-PTB shapes, tcnkernels against the same model from torch.nn modules."""
    rows = []
    for shape in paper_shapes(("network",), batch_size, max_length):
        if shape.name not in VARIANT_CONFIGS:
            continue
        width = max(shape.channels)
        with torch.device("meta"):
            torch.manual_seed(0)
            models = {
                "GELU TCN": (TemporalConvNet(shape.c_in, list(shape.channels), shape.K, shape.dropout,
                                             activation="gelu"), _gelu_reference(shape)),
                "gated TCN": (GatedStack(shape.c_in, width, shape.K, len(shape.channels), True),
                              GatedStack(shape.c_in, width, shape.K, len(shape.channels), False)),
            }
        for name, (ours, reference) in models.items():
            for provider, model, triton in (("tcnkernels", ours, True), ("reference", reference, False)):
                model.train()
                rows.append(dict(config=f"{shape.name} {name}", provider=provider,
                                 **count_step(model, shape, triton)))
    return rows
