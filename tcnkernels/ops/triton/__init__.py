"""The Triton kernels, and whether they can run here.

conv_kernels    the causal conv: forward and input gradient (one kernel, epilogues), weight gradient
weight_kernels  weight norm + the K-major layout the conv kernels read; weight-gradient finalize
stream_kernels  the whole-network streaming step
update_kernels  causal-conv1d's decode update

Importing this package imports no kernel module: it only finds out whether Triton imports and
whether its interpreter is on (TRITON_INTERPRET=1 set before the first `@triton.jit` ran). The
interpreter is detected from a jitted function, as the kernels' own decorators decide it, not from
the environment at call time (it may change after import; the decorators do not).
"""
try:
    import triton
    from triton.runtime.interpreter import InterpretedFunction

    @triton.jit
    def _probe():
        pass

    IMPORT_ERROR = None
    INTERPRETER = isinstance(_probe, InterpretedFunction)
except ImportError as exc:  # e.g. macOS, where no triton wheel exists: only the torch backend runs
    IMPORT_ERROR = exc
    INTERPRETER = False

# Switched on by tcnkernels.ops.launching.launches_replaced while launches are recorded or stubbed:
# the kernels then "run" on any device (CPU and meta tensors), since none of them really launches.
_any_device = False


def unusable_reason(device):
    """Why the Triton kernels cannot run on `device`, or None when they can."""
    if IMPORT_ERROR is not None:
        return f"triton is not importable ({IMPORT_ERROR})"
    if _any_device:
        return None
    if device.type == "cuda":
        if INTERPRETER:
            return "Triton's interpreter is on (TRITON_INTERPRET=1), so kernels run on CPU tensors only"
        return None
    if device.type == "cpu":
        if INTERPRETER:
            return None
        return "CPU tensors need Triton's interpreter (set TRITON_INTERPRET=1 before importing tcnkernels)"
    return f"the Triton kernels do not support {device.type} tensors"
