"""Shared test helpers: NaN-guarded inputs and the tolerance rule against an fp64 reference."""
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import tcnkernels
from tcnkernels.ops import launching
from tcnkernels.ops.reference import causal_conv1d_reference
from tcnkernels.selfcheck import conv_grads as reference_grads
from tcnkernels.selfcheck import error_and_bound


def guarded(t, pad=3):
    """A copy of `t` living inside a NaN-filled buffer (a non-contiguous view): a kernel that reads
    past any edge of the tensor pulls NaN into its result."""
    big = torch.full([s + 2 * pad for s in t.shape], float("nan"), dtype=t.dtype, device=t.device)
    view = big[tuple(slice(pad, pad + s) for s in t.shape)]
    view.copy_(t)
    return view


def assert_close_to_reference(name, actual, ref64, torch_same_dtype):
    """Kernel error vs fp64 <= 2x PyTorch's own error in the same dtype + a few ulps of the scale;
    on failure, names the first mismatching index."""
    assert actual.shape == ref64.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(ref64.shape)}"
    err, bound = error_and_bound(actual, ref64, torch_same_dtype)
    if err > bound:
        bad = ~((actual.double() - ref64).abs() <= bound)
        idx = tuple(torch.nonzero(bad)[0].tolist())
        raise AssertionError(f"{name}: error {err:.3g} > bound {bound:.3g}; first mismatch at {idx}: "
                             f"got {actual[idx].item()!r}, expected {ref64[idx].item()!r}")


def check_conv_parity(x, w, b, dilation, act, dy=None):
    """The triton backend's causal_conv1d and its three gradients against the fp64 reference, within
    the tolerance rule (PyTorch's own error in x's dtype). dy: the output gradient (random if None)."""
    with tcnkernels.use_backend("triton"):
        y = tcnkernels.causal_conv1d(x, w, b, dilation, act)
    detached = [None if t is None else t.detach() for t in (x, w, b)]
    y64 = causal_conv1d_reference(*[None if t is None else t.double() for t in detached], dilation, act)
    assert_close_to_reference("y", y.detach(), y64, causal_conv1d_reference(*detached, dilation, act))
    if dy is None:
        dy = torch.randn_like(y)
    leaves = [t for t in (x, w, b) if t is not None]
    grads = torch.autograd.grad(y, leaves, dy)
    y_mask = y.detach() if act == "relu" else None
    grads64 = reference_grads(x, w, b, dilation, y_mask, dy, torch.float64)
    grads_torch = reference_grads(x, w, b, dilation, y_mask, dy, x.dtype)
    for name, got, ref64, ref_torch in zip(("dx", "dweight", "dbias"), grads, grads64, grads_torch):
        assert_close_to_reference(name, got, ref64, ref_torch)


class OpRecorder(TorchDispatchMode):
    """Records every aten/custom op that runs inside the `with` block."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))

    def pytorch_convolutions(self):
        return [op for op in self.ops if "conv" in op and not op.startswith("tcnkernels.")]


class LaunchRecorder:
    """Records the name of every Triton kernel launched inside the `with` block (they still run)."""

    def __enter__(self):
        self.launches, self.statics, self._launch = [], [], launching.launch

        def record(kernel, grid, device_of, tensors, static):
            self.launches.append(kernel.fn.__name__)
            self.statics.append(static)
            return self._launch(kernel, grid, device_of, tensors, static)

        launching.launch = record
        return self

    def __exit__(self, *exc):
        launching.launch = self._launch


def assert_same_as_library(ours, theirs, got, want, build):
    """A converted model `ours` against the library's own `theirs` (built alike): outputs, every
    parameter's gradient (the library's as the reference), and strict state_dict loads both ways
    with a freshly built model."""
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    dy = torch.randn_like(want)
    torch.autograd.backward(got, dy)
    torch.autograd.backward(want, dy)
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")
    fresh = build()
    fresh.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(fresh.state_dict(), strict=True)


class BigOps(TorchDispatchMode):
    """The PyTorch ops outside tcnkernels' launches (the interpreter's own tensor handling inside a
    launch is not counted) whose output has at least `numel` elements: the passes over
    activations that the fused kernels do not make."""

    def __init__(self, numel):
        super().__init__()
        self.numel, self.ops, self.launching = numel, [], False

    def __enter__(self):
        self._launch = launching.launch

        def launch(*args):
            self.launching = True
            try:
                return self._launch(*args)
            finally:
                self.launching = False

        launching.launch = launch
        return super().__enter__()

    def __exit__(self, *exc):
        launching.launch = self._launch
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        allocation = str(func).startswith(("aten.empty", "aten.new_empty", "aten.fill", "aten.detach", "aten.view",
                                           "aten.slice", "aten.split", "aten.alias", "aten.transpose",
                                           "aten.as_strided"))
        if not self.launching and not allocation \
                and any(isinstance(o, torch.Tensor) and o.numel() >= self.numel for o in outs):
            self.ops.append(str(func))
        return out
