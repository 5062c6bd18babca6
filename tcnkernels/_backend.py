"""Which implementation runs an op: the Triton kernels or the pure-PyTorch reference.

`auto` runs Triton on CUDA tensors; on CPU tensors it runs Triton only when Triton's interpreter is
on (TRITON_INTERPRET=1 set before `import tcnkernels`), else the PyTorch reference. The environment
variable TCNKERNELS_BACKEND and the `use_backend` context manager force one; the context manager wins.
"""
import contextlib
import os

import torch

BACKENDS = ("auto", "triton", "torch")
ENV_VAR = "TCNKERNELS_BACKEND"

# A plain module-level stack, not a ContextVar: torch.compile traces (and guards on) a global
# but cannot trace ContextVar.get(). Process-wide, like torch.backends flags.
_forced = []

try:
    import triton  # noqa: F401
    from triton.runtime.interpreter import InterpretedFunction

    from .ops.triton.conv_kernels import causal_conv1d_kernel

    TRITON_IMPORT_ERROR = None
    # Detected from the kernel object itself: the environment may change after import, the
    # decorators that read it do not.
    INTERPRETER = isinstance(causal_conv1d_kernel, InterpretedFunction)
except ImportError as exc:  # e.g. macOS, where no triton wheel exists
    TRITON_IMPORT_ERROR = exc
    INTERPRETER = False


def _check_name(name, source):
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"{source} must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name


@contextlib.contextmanager
def use_backend(name):
    """Force a backend inside a `with` block: `with tcnkernels.use_backend("torch"): ...`."""
    _forced.append(_check_name(name, "backend"))
    try:
        yield
    finally:
        _forced.pop()


def requested_backend():
    """The backend asked for: the innermost `use_backend`, else $TCNKERNELS_BACKEND, else auto."""
    if _forced:
        return _forced[-1]
    return _check_name(os.environ.get(ENV_VAR, "auto"), f"${ENV_VAR}")


def triton_unusable_reason(device):
    """Why the Triton kernels cannot run on `device`, or None when they can."""
    if TRITON_IMPORT_ERROR is not None:
        return f"triton is not importable ({TRITON_IMPORT_ERROR})"
    if device.type == "cuda":
        if INTERPRETER:
            return "Triton's interpreter is on (TRITON_INTERPRET=1), so kernels run on CPU tensors only"
        return None
    if device.type == "cpu":
        if INTERPRETER:
            return None
        return "CPU tensors need Triton's interpreter (set TRITON_INTERPRET=1 before importing tcnkernels)"
    return f"the Triton kernels do not support {device.type} tensors"


def select_backend(device: torch.device) -> str:
    """Resolve the requested backend for tensors on `device`: 'triton' or 'torch'."""
    name = requested_backend()
    if name == "torch":
        return "torch"
    reason = triton_unusable_reason(device)
    if name == "triton":
        if reason is not None:
            raise ValueError(f"the triton backend was forced but cannot run here: {reason}")
        return "triton"
    return "torch" if reason is not None else "triton"


# Tests switch this on so every kernel output starts as NaN: an element a kernel forgets to write
# then fails the comparison instead of passing by luck with whatever memory held.
POISON_OUTPUTS = False


def new_output(like: torch.Tensor, shape, dtype=None) -> torch.Tensor:
    """A fresh buffer for a kernel to write (NaN-filled while tests poison outputs)."""
    out = like.new_empty(shape, dtype=dtype)
    if POISON_OUTPUTS:
        out.fill_(float("nan"))
    return out
