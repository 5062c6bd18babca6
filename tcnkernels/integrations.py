"""One-call integrations: patch a TCN library's own classes so that the models it builds run
tcnkernels' fused kernels, with nothing else changed (Liger-Kernel style).

    import tcnkernels.integrations
    tcnkernels.integrations.apply_to_darts()
    model = darts.models.TCNModel(...)  # its residual blocks now run tcnkernels.conv1d
    model.fit(series)

    apply_to_pytorch_tcn()    pytorch_tcn.conv.TemporalConv1d (causal or its p//2 split) and
                              pytorch_tcn.tcn.TemporalBlock (activations fused, without norms)
    apply_to_darts()          darts.models.forecasting.tcn_model._ResidualBlock
    apply_to_neuralforecast() neuralforecast.common._modules.CausalConv1d and
                              TemporalConvolutionEncoder

Only the classes' `forward` is replaced, never a class itself: the library's models, state_dicts,
pickles and checkpoints stay the library's, so a checkpoint saved with an integration on loads in a
process without it (Darts pickles its classes by name and loads them through a restricted
unpickler). Each patched forward finds its module's structure (a `zoo` plan, a plain tuple) on its
first call and runs the library's own forward for modules of another structure and for any call
the fused forward does not take (pytorch-tcn's `inference=True` streaming). Each integration
checks, on a small module it builds, that the library's structure is the one it was tested with
(`TESTED_VERSIONS`), and raises a RuntimeError naming the version otherwise. `restore_*` undoes it.
"""
import importlib

import torch

from .zoo import DARTS_BLOCK, NF_CAUSAL_CONV, NF_ENCODER, PYTORCH_TCN_BLOCK, SELF_PADDED_CONV

TESTED_VERSIONS = {"pytorch_tcn": ("1.2.3",), "darts": ("0.48.1",), "neuralforecast": ("3.3.0",)}
_PLAN = "_tcnkernels_class_plan"  # where a module keeps its plan (a plain tuple or None: pickles anywhere)
_UNKNOWN = object()


def _module(name):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"{name} is not installed ({exc}); pip install tcnkernels[zoo]") from None


def _check_structure(library, what, probes):
    """RuntimeError unless every (module, structure, plan) probe has the plan the integration expects."""
    if any(structure.plan(module) != plan for module, structure, plan in probes):
        version = getattr(_module(library), "__version__", "unknown")
        raise RuntimeError(f"apply_to_{library}: {library} {version}'s {what} is not built as in the versions "
                           f"the integration was tested with ({', '.join(TESTED_VERSIONS[library])}); "
                           "tcnkernels.convert(model) still fuses what it recognises")


def _patch(cls, structure):
    """Replace cls.forward by the structure's fused forward, the original kept for every other call."""
    if "_tcnkernels_original_forward" in cls.__dict__:
        return  # idempotent
    original = cls.forward

    def forward(self, x, *args, **kwargs):
        plan = self.__dict__.get(_PLAN, _UNKNOWN)
        if plan is _UNKNOWN:  # structural: found once per module, not on every call
            plan = self.__dict__[_PLAN] = structure.plan(self)
        if plan is None or not isinstance(x, torch.Tensor) or x.dim() not in structure.x_dims:
            return original(self, x, *args, **kwargs)
        if structure.passes_args:
            return structure.forward(self, x, plan, *args, **kwargs)
        if args or any(v not in (None, False) for v in kwargs.values()):
            return original(self, x, *args, **kwargs)
        return structure.forward(self, x, plan)

    forward.__doc__ = original.__doc__
    cls._tcnkernels_original_forward = original
    cls.forward = forward


def _restore(*classes):
    for cls in classes:
        original = cls.__dict__.get("_tcnkernels_original_forward")
        if original is not None:
            cls.forward = original
            del cls._tcnkernels_original_forward


def _pytorch_tcn_classes():
    library = _module("pytorch_tcn")
    return library.conv.TemporalConv1d, library.tcn.TemporalBlock


def apply_to_pytorch_tcn():
    """Patch pytorch-tcn's TemporalConv1d and TemporalBlock so that every pytorch-tcn model runs its
    padded convs on tcnkernels.conv1d (causal, or its p//2 split), with the block's activations fused
    into them where it has no norm layer; its streaming mode (`inference=True`), embeddings and
    every other call run the library's own code. Idempotent."""
    conv_cls, block_cls = _pytorch_tcn_classes()
    with torch.random.fork_rng(devices=[]):
        probes = [(conv_cls(2, 2, 3, dilation=2, causal=causal), SELF_PADDED_CONV, padding)
                  for causal, padding in ((True, (4, 0)), (False, (2, 2)))]
        probes.append((_module("pytorch_tcn").TCN(2, [3], kernel_size=3).network[0], PYTORCH_TCN_BLOCK,
                       ((2, 0), (2, 0))))
    _check_structure("pytorch_tcn", "TemporalConv1d / TemporalBlock", probes)
    _patch(conv_cls, SELF_PADDED_CONV)
    _patch(block_cls, PYTORCH_TCN_BLOCK)


def restore_pytorch_tcn():
    """Undo apply_to_pytorch_tcn (for tests and comparisons in one process)."""
    _restore(*_pytorch_tcn_classes())


def _darts_classes():
    return (_module("darts.models.forecasting.tcn_model")._ResidualBlock,)


def apply_to_darts():
    """Patch Darts' _ResidualBlock so that every TCNModel runs its residual blocks fused: both convs
    with their ReLUs on tcnkernels.conv1d with no F.pad copies, its MonteCarloDropout modules called
    as Darts calls them (active at predict time when Darts asks). Idempotent."""
    (cls,) = _darts_classes()
    with torch.random.fork_rng(devices=[]):  # the probe's init leaves the user's random stream alone
        probes = [(cls(num_filters=2, kernel_size=3, dilation_base=2, dropout=0.0, weight_norm=norm,
                       nr_blocks_below=1, num_layers=2, input_size=2, target_size=1), DARTS_BLOCK, (4, True, True))
                  for norm in (False, True)]
    _check_structure("darts", "_ResidualBlock", probes)
    _patch(cls, DARTS_BLOCK)


def restore_darts():
    """Undo apply_to_darts."""
    _restore(*_darts_classes())


def _neuralforecast_classes():
    modules = _module("neuralforecast.common._modules")
    return modules.CausalConv1d, modules.TemporalConvolutionEncoder


def apply_to_neuralforecast():
    """Patch NeuralForecast's CausalConv1d (conv + chomp + activation in one kernel; an activation the
    kernels do not have runs as its module after the fused conv) and TemporalConvolutionEncoder
    ([N, T, C] read as it is: no permute copies), so that its TCN model trains fused. Idempotent."""
    conv_cls, encoder_cls = _neuralforecast_classes()
    with torch.random.fork_rng(devices=[]):
        probes = [(conv_cls(2, 2, 3, padding=4, dilation=2, activation="ReLU"), NF_CAUSAL_CONV, (True,)),
                  (encoder_cls(2, 3, 2, [1, 2], activation="Tanh"), NF_ENCODER, ())]
    _check_structure("neuralforecast", "CausalConv1d / TemporalConvolutionEncoder", probes)
    _patch(conv_cls, NF_CAUSAL_CONV)
    _patch(encoder_cls, NF_ENCODER)


def restore_neuralforecast():
    """Undo apply_to_neuralforecast."""
    _restore(*_neuralforecast_classes())
