"""Which implementation runs an op: the Triton kernels or the pure-PyTorch reference.

`auto` runs Triton on CUDA tensors; on CPU tensors it runs Triton only when Triton's interpreter is
on (TRITON_INTERPRET=1 set before `import tcnkernels`), else the PyTorch reference. The environment
variable TCNKERNELS_BACKEND and the `use_backend` context manager force one; the context manager wins.
Whether Triton can run at all is the kernel package's to say (tcnkernels.ops.triton); this module
imports no kernel.
"""
import contextlib
import os

import torch

from .ops import triton as triton_kernels

BACKENDS = ("auto", "triton", "torch")
ENV_VAR = "TCNKERNELS_BACKEND"

# A plain module-level stack, not a ContextVar: torch.compile traces (and guards on) a global
# but cannot trace ContextVar.get(). Process-wide, like torch.backends flags.
_forced = []


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


def select_backend(device: torch.device) -> str:
    """Resolve the requested backend for tensors on `device`: 'triton' or 'torch'."""
    name = requested_backend()
    if name == "torch":
        return "torch"
    reason = triton_kernels.unusable_reason(device)
    if name == "triton":
        if reason is not None:
            raise ValueError(f"the triton backend was forced but cannot run here: {reason}")
        return "triton"
    return "torch" if reason is not None else "triton"
