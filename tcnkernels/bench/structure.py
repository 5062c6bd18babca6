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
from torch.utils._python_dispatch import TorchDispatchMode

from .._backend import use_backend
from ..ops import launching
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
    launches = []  # kernel names only: holding a launch's tensors would make autograd copy the gradients
    x = torch.empty(shape.B, shape.c_in, shape.L, device="meta", requires_grad=True)
    counter = _OpCounter()
    with launching.launches_replaced(lambda kernel, *_: launches.append(kernel.fn.__name__)), \
            use_backend("triton" if triton else "torch"), _cuda_dropout(), counter, _saved_bytes(model) as kept:
        model(x).square().mean().backward()
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

