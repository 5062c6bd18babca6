"""One-call integrations: patch a TCN library's own classes so that the models it builds run
tcnkernels' fused kernels, with nothing else changed (Liger-Kernel style).

    import tcnkernels.integrations
    tcnkernels.integrations.apply_to_pytorch_tcn()
    model = pytorch_tcn.TCN(...)  # its convs now run tcnkernels.conv1d

The library's classes are patched in place, never replaced: its models, state_dicts and pickles stay
the library's, so a checkpoint saved with the integration on loads in a process without it. Each
integration checks that the library's structure is the one it was tested with and raises a
RuntimeError naming the version otherwise.
"""
import importlib

from .conversion import fused_conv, self_padding

TESTED_VERSIONS = {"pytorch_tcn": ("1.2.3",)}
_UNKNOWN = object()


def _module(name):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"{name} is not installed ({exc}); pip install tcnkernels[zoo]") from None


def apply_to_pytorch_tcn():
    """Patch pytorch_tcn.conv.TemporalConv1d so that every pytorch-tcn model runs its padded convs on
    tcnkernels.conv1d (causal, or its p//2 split), its streaming mode (`inference=True`) and every
    other call on the library's own code. Idempotent."""
    pytorch_tcn = _module("pytorch_tcn")
    cls = pytorch_tcn.conv.TemporalConv1d
    if getattr(cls, "_tcnkernels_original_forward", None) is not None:
        return
    version = getattr(pytorch_tcn, "__version__", "unknown")
    probes = [(cls(2, 2, 3, dilation=2, causal=causal), padding) for causal, padding in ((True, (4, 0)),
                                                                                          (False, (2, 2)))]
    if any(self_padding(conv) != padding for conv, padding in probes):
        raise RuntimeError(f"apply_to_pytorch_tcn: pytorch-tcn {version}'s TemporalConv1d does not pad as the "
                           f"versions it was tested with ({', '.join(TESTED_VERSIONS['pytorch_tcn'])}) do")
    original = cls.forward

    def forward(self, x, inference=False, in_buffer=None, buffer_io=None):
        padding = self.__dict__.get("_tcnkernels_class_padding", _UNKNOWN)
        if padding is _UNKNOWN:  # structural: found once per module, not on every call
            padding = self.__dict__["_tcnkernels_class_padding"] = self_padding(self)
        if inference or in_buffer is not None or buffer_io is not None or padding is None or x.dim() not in (2, 3):
            return original(self, x, inference=inference, in_buffer=in_buffer, buffer_io=buffer_io)
        return fused_conv(self, x, padding)

    forward.__doc__ = original.__doc__
    cls._tcnkernels_original_forward = original
    cls.forward = forward


def restore_pytorch_tcn():
    """Undo apply_to_pytorch_tcn (for tests and comparisons in one process)."""
    cls = _module("pytorch_tcn").conv.TemporalConv1d
    original = getattr(cls, "_tcnkernels_original_forward", None)
    if original is not None:
        cls.forward = original
        del cls._tcnkernels_original_forward
