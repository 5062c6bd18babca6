"""tcnkernels: fused Triton kernels for Temporal Convolutional Networks.

    import tcnkernels
    y = tcnkernels.causal_conv1d(x, weight, bias, dilation=4, activation="relu")
    y = tcnkernels.conv1d(x, weight, bias, dilation=4, groups=1, padding="same", activation="gelu")
    block = tcnkernels.TemporalBlock(n_inputs, n_outputs, kernel_size, stride=1, dilation=4, padding=...)
    model = tcnkernels.convert(model)  # swap the reference TemporalBlocks of any model
    stream = tcnkernels.Streamer(model.eval(), batch_size=1)  # exact step-by-step inference
    x, skip = tcnkernels.WaveNetBlock(64, 128, 64, kernel_size=3, dilation=2, aux_channels=80)(x, c)
    y = tcnkernels.causal_conv1d_fn(x, weight, bias, activation="silu", dilation=2)  # causal-conv1d's API
    tcnkernels.export.to_onnx(model.eval(), x, "tcn.onnx")  # ONNX; decompose(): torch.export without tcnkernels
"""
import importlib

from ._backend import BACKENDS, use_backend
from ._version import __version__
from .conversion import convert
from .functional import causal_conv1d, conv1d
from .nn import CausalConv1d, TemporalBlock, TemporalConv1d, TemporalConvNet
from .short_conv import ShortConvolution, causal_conv1d_fn, causal_conv1d_update, causal_conv1d_varlen_states
from .streaming import Streamer
from .wavenet import WaveNetBlock

__all__ = ["BACKENDS", "CausalConv1d", "ShortConvolution", "Streamer", "TemporalBlock", "TemporalConv1d",
           "TemporalConvNet", "WaveNetBlock", "causal_conv1d", "causal_conv1d_fn", "causal_conv1d_update",
           "causal_conv1d_varlen_states", "conv1d", "convert", "use_backend", "__version__"]


def __getattr__(name):
    # tcnkernels.export imports torch.export and torch.onnx pieces: loaded on first use
    if name == "export":
        return importlib.import_module(".export", __name__)
    raise AttributeError(f"module 'tcnkernels' has no attribute {name!r}")
