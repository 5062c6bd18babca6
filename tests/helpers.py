"""Shared test helpers: NaN-guarded inputs and the tolerance rule against an fp64 reference."""
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tcnkernels.selfcheck import conv_grads as reference_grads  # noqa: F401 (used by the test modules)
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
        from tcnkernels.ops import launching
        self.launches, self._launch = [], launching.launch

        def record(kernel, grid, device_of, args, meta):
            self.launches.append(kernel.fn.__name__)
            return self._launch(kernel, grid, device_of, args, meta)

        launching.launch = record
        return self

    def __exit__(self, *exc):
        from tcnkernels.ops import launching
        launching.launch = self._launch
