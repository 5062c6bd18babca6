"""Drop-in modules: `TemporalConv1d`, `CausalConv1d`, `TemporalBlock`, `TemporalConvNet` (swapping a
model's blocks for them: tcnkernels.conversion)."""
import functools

import torch
from torch import nn
from torch.nn.utils import parametrize

from .functional import (
    block_activation_of,
    causal_conv1d,
    check_flags,
    check_groups,
    check_recompute,
    conv1d,
    padding_of,
    temporal_block,
)
from .ops.activations import RELU, activation_of
from .ops.reference import TemporalBlockBase, draw_dropout_seeds, temporal_levels
from .ops.specs import DROPOUT_MODES

# Legacy `torch.nn.utils.weight_norm` state_dict names -> `parametrizations.weight_norm` names.
_LEGACY_WEIGHT_NORM_KEYS = {"weight_g": "parametrizations.weight.original0",
                            "weight_v": "parametrizations.weight.original1"}


def _check_sizes(**sizes):
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


class TemporalConv1d(nn.Conv1d):
    """`nn.Conv1d` that keeps the length, padded by mode, with a fused activation: `tcnkernels.conv1d`.

    Same parameters (`weight` (C_out, C_in // groups, K), `bias` (C_out,)) and state_dict as
    `nn.Conv1d` (plus `activation.weight` for an nn.PReLU activation), so it loads Conv1d weights
    and works with both weight-norm APIs. `padding`: "causal" (output step t sees input steps
    <= t), "same" (as `nn.Conv1d(padding="same")`), "anticausal", or a (left, right) pair summing to
    (K-1)*dilation. `activation`: as `tcnkernels.conv1d`'s (a name, a torch.nn module instance, or a
    gated unit "glu"/"gated_tanh", which halves the output channels).

    Example:
        >>> conv = tcnkernels.TemporalConv1d(16, 32, kernel_size=3, dilation=4, padding="same", activation="gelu")
        >>> y = conv(torch.randn(8, 16, 1000))  # (8, 32, 1000)
    """

    def __init__(self, in_channels, out_channels, kernel_size, dilation=1, groups=1, bias=True, padding="causal",
                 activation=None, device=None, dtype=None):
        _check_sizes(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size, dilation=dilation)
        check_groups(groups, in_channels, out_channels)
        act, slope = activation_of(activation)
        if act is not None and act.gated and out_channels % 2:
            raise ValueError(f"activation {act.name!r} halves the channels: out_channels must be even, "
                             f"got {out_channels}")
        if slope is not None and slope.numel() not in (1, out_channels):
            raise ValueError(f"nn.PReLU needs num_parameters 1 or out_channels={out_channels}, got {slope.numel()}")
        pad_right = padding_of(padding, kernel_size, dilation)
        super().__init__(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=dilation,
                         groups=groups, bias=bias, device=device, dtype=dtype)
        self.activation = activation  # a module instance becomes a child (PReLU's weight in the state_dict)
        self.temporal_padding = padding
        self.pad_right = pad_right

    def forward(self, x):
        return conv1d(x, self.weight, self.bias, self.dilation[0], self.groups,
                      ((self.kernel_size[0] - 1) * self.dilation[0] - self.pad_right, self.pad_right), self.activation)

    def extra_repr(self):
        return super().extra_repr() + f", temporal_padding={self.temporal_padding!r}, activation={self.activation!r}"

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A reference checkpoint written with the legacy weight-norm API loads into a module that
        # uses the parametrizations API (this one in TemporalBlock) under strict=True.
        if parametrize.is_parametrized(self, "weight"):
            for legacy, current in _LEGACY_WEIGHT_NORM_KEYS.items():
                if prefix + legacy in state_dict and prefix + current not in state_dict:
                    state_dict[prefix + current] = state_dict.pop(prefix + legacy)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class CausalConv1d(TemporalConv1d):
    """`nn.Conv1d` made causal: output step t sees input steps <= t, output length = input length.

    Same parameters (`weight` (C_out, C_in, K), `bias` (C_out,)) and state_dict as `nn.Conv1d`, so
    it loads Conv1d weights and works with both weight-norm APIs. Equivalent to
    `nn.Conv1d(..., padding=(K-1)*dilation)` + chomp, optionally followed by a fused activation:
    `TemporalConv1d(..., padding="causal")`.

    Example:
        >>> conv = tcnkernels.CausalConv1d(16, 32, kernel_size=3, dilation=4, activation="relu")
        >>> y = conv(torch.randn(8, 16, 1000))  # (8, 32, 1000)
    """

    def __init__(self, in_channels, out_channels, kernel_size, dilation=1, bias=True, activation=None,
                 device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, dilation, 1, bias, "causal", activation, device,
                         dtype)

    def forward(self, x):
        return causal_conv1d(x, self.weight, self.bias, self.dilation[0], self.activation)


class _WeightNorm:
    """Makes a conv's weight `weight_g * weight_v / ||weight_v||` (norm over (C_in, K) per output
    channel), with the parameters and state_dict names of the authors' `torch.nn.utils.weight_norm`:
    `weight_g` (C_out, 1, 1), `weight_v` (C_out, C_in, K), `bias`. Plain Parameters (no parametrization
    or hook), so a whole model pickles and deep-copies. `weight` is computed on access.
    """

    def __init__(self, *args, **kwargs):
        # nn.Conv1d's own init draws the weight (and bias) first, as in the reference, then weight
        # norm splits it: g = ||weight|| per output channel, v = weight.
        super().__init__(*args, **kwargs)
        weight = self._parameters.pop("weight").detach()
        self.weight_g = nn.Parameter(torch.linalg.vector_norm(weight, dim=(1, 2), keepdim=True))
        self.weight_v = nn.Parameter(weight)

    @property
    def weight(self):
        return torch._weight_norm(self.weight_v, self.weight_g, 0)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A reference checkpoint written with the parametrizations weight-norm API loads as it is.
        for ours, parametrized in _LEGACY_WEIGHT_NORM_KEYS.items():
            if prefix + parametrized in state_dict and prefix + ours not in state_dict:
                state_dict[prefix + ours] = state_dict.pop(prefix + parametrized)
        nn.Module._load_from_state_dict(self, state_dict, prefix, *args, **kwargs)


class WeightNormTemporalConv1d(_WeightNorm, TemporalConv1d):
    """A weight-normalised TemporalConv1d (see _WeightNorm)."""


class WeightNormCausalConv1d(_WeightNorm, CausalConv1d):
    """A weight-normalised CausalConv1d (see _WeightNorm): a reference block's conv."""


class TemporalBlock(TemporalBlockBase):
    """The reference TCN residual block with fused convolutions.

    Same constructor, parameters, state_dict, initialisation and outputs as the authors'
    `TemporalBlock`: weight-normalised causal conv -> ReLU -> dropout, twice; a 1x1 `downsample`
    conv on the residual when the widths differ; a final ReLU. Its state_dict has the authors' keys
    (`conv1.weight_g`, `conv1.weight_v`, `conv1.bias`, the `net.0.*`/`net.4.*` aliases, `downsample.*`),
    so it loads into their model under strict=True, and it loads theirs, written with either
    weight-norm API (`weight_g`/`weight_v` or `parametrizations.weight.original0/1`). Plain
    Parameters: `torch.save(model)` and `copy.deepcopy` work.

    x: (B, n_inputs, L) -> (B, n_outputs, L). stride must be 1; `padding` the reference's
    (kernel_size-1)*dilation (causal), or a mode of `tcnkernels.conv1d` ("causal", "same",
    "anticausal", a (left, right) pair). Options beyond the reference's signature:
    `weight_norm=False` builds plain convs (copies of the reference that drop weight norm);
    `activation` in place of ReLU (a name or torch.nn module of conv1d's elementwise activations,
    without PReLU); `final_activation=False` drops the activation after the residual add (Darts'
    block), `conv2_activation=False` the one after conv2 (Darts' last block). `recompute=True` (the
    default) has the fused backward run conv2's forward again rather than keep its output: a third
    less activation memory for one more launch per block; `False` trades the memory back for speed.
    Every option runs in the fused block kernels (activation, derivative and dropout in their epilogues).
    """

    def __init__(self, n_inputs, n_outputs, kernel_size, stride, dilation, padding, dropout=0.2, weight_norm=True,
                 dropout_mode="element", recompute=True, activation="relu", final_activation=True,
                 conv2_activation=True):
        super().__init__()
        check_recompute(recompute)
        check_flags(final_activation=final_activation, conv2_activation=conv2_activation, weight_norm=weight_norm)
        act = block_activation_of(activation)
        if dropout_mode not in DROPOUT_MODES:
            raise ValueError(f"dropout_mode must be one of {DROPOUT_MODES}, got {dropout_mode!r}")
        if stride != 1:
            raise ValueError(f"stride must be 1 (a TCN block keeps the length), got {stride}")
        _check_sizes(kernel_size=kernel_size, dilation=dilation)
        if isinstance(padding, int) and not isinstance(padding, bool):
            if padding != (kernel_size - 1) * dilation:
                raise ValueError(f"padding must be (kernel_size-1)*dilation = {(kernel_size - 1) * dilation} "
                                 f"for a causal block, or a mode ('causal', 'same', 'anticausal', (left, right)), "
                                 f"got {padding}")
            padding = "causal"
        padding_of(padding, kernel_size, dilation)
        if padding == "causal":  # the reference block's convs: CausalConv1d
            conv = WeightNormCausalConv1d if weight_norm else CausalConv1d
        else:
            conv = functools.partial(WeightNormTemporalConv1d if weight_norm else TemporalConv1d, padding=padding)
        self.conv1 = conv(n_inputs, n_outputs, kernel_size, dilation, activation=activation)
        self.dropout1 = nn.Dropout(dropout)
        self.conv2 = conv(n_outputs, n_outputs, kernel_size, dilation,
                          activation=activation if conv2_activation else None)
        self.dropout2 = nn.Dropout(dropout)
        # The reference's net is (conv1, chomp1, relu1, dropout1, conv2, chomp2, relu2, dropout2).
        # Chomp and ReLU are fused into the convs here; Identity keeps their slots, so conv2 stays
        # `net.4` (the state_dict aliases) and `net(x)` still computes the same thing.
        self.net = nn.Sequential(self.conv1, nn.Identity(), nn.Identity(), self.dropout1,
                                 self.conv2, nn.Identity(), nn.Identity(), self.dropout2)
        self.downsample = CausalConv1d(n_inputs, n_outputs, 1) if n_inputs != n_outputs else None
        # the final activation (named `relu`, the reference's attribute)
        self.relu = _activation_module(act) if final_activation else nn.Identity()
        self.dropout_mode = dropout_mode
        self.recompute = recompute
        self.block_activation = act
        self.final_activation = final_activation
        self.conv2_activation = conv2_activation
        self.padding = padding
        # The reference's init, RNG draws included, so the same seed gives the reference's weights.
        self.init_weights()

    def forward(self, x, seeds=None):
        """x: (B, n_inputs, L) -> (B, n_outputs, L). `seeds`: two int64 dropout seeds (a network
        draws them for all its blocks at once); drawn here when None."""
        # Straight dict reads: nn.Module.__getattr__ costs about 0.3 us a lookup, a dozen per call.
        modules, attrs = self._modules, self.__dict__
        conv1, conv2, d = modules["conv1"], modules["conv2"], modules.get("downsample")
        return temporal_block(x, *_weight_and_gain(conv1), _tensor(conv1, "bias"), *_weight_and_gain(conv2),
                              _tensor(conv2, "bias"), None if d is None else _tensor(d, "weight"),
                              None if d is None else _tensor(d, "bias"), conv1.dilation[0],
                              (modules["dropout1"].p, modules["dropout2"].p), self.dropout_mode, self.training, seeds,
                              # defaults: a block pickled before the options existed
                              attrs.get("recompute", True), attrs.get("block_activation", RELU),
                              attrs.get("final_activation", True), attrs.get("conv2_activation", True),
                              attrs.get("padding", "causal"))


def _activation_module(act):
    """A torch.nn module computing an elementwise Activation (the block's final one, for `net`-style use)."""
    name, p = act
    return {"relu": lambda: nn.ReLU(), "leaky_relu": lambda: nn.LeakyReLU(*p), "elu": lambda: nn.ELU(*p),
            "selu": lambda: nn.SELU(), "gelu": lambda: nn.GELU(), "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
            "silu": lambda: nn.SiLU(), "mish": lambda: nn.Mish(), "softplus": lambda: nn.Softplus(*p),
            "tanh": lambda: nn.Tanh(), "sigmoid": lambda: nn.Sigmoid()}[name]()


def _weight_and_gain(conv):
    """(v, g) of a weight-normalised conv, (weight, None) of a plain one."""
    params = conv._parameters
    if "weight_v" in params:
        return params["weight_v"], params["weight_g"]
    return _tensor(conv, "weight"), None


def _tensor(module, name):
    """module.<name>, read from its parameter dict when it is there (a parametrized weight is not)."""
    params = module._parameters
    return params[name] if name in params else getattr(module, name)


class TemporalConvNet(nn.Module):
    """The reference TemporalConvNet: `len(num_channels)` TemporalBlocks, level i with dilation 2**i.

    x: (B, num_inputs, L) -> (B, num_channels[-1], L). Receptive field 1 + 2*(k-1)*(2**levels - 1).
    `activation`, `final_activation` and `padding` (a mode string) are every block's (see TemporalBlock).

    Dropout is Philox-based (the same masks on every backend for the same seed); `dropout_mode`
    "element" (the reference's) or "channel" (the paper's spatial dropout). In training, the network
    draws the dropout seeds of all its blocks in one go.

    Example:
        >>> tcn = tcnkernels.TemporalConvNet(1, [25] * 8, kernel_size=7, dropout=0.05)
        >>> y = tcn(torch.randn(64, 1, 784))  # (64, 25, 784)
    """

    def __init__(self, num_inputs, num_channels, kernel_size=2, dropout=0.2, dropout_mode="element", recompute=True,
                 activation="relu", final_activation=True, padding="causal"):
        super().__init__()
        if isinstance(num_channels, (str, bytes)) or not hasattr(num_channels, "__len__") or not num_channels:
            raise ValueError(f"num_channels must be a non-empty list of widths, got {num_channels!r}")
        if not isinstance(padding, str):
            raise ValueError(f"padding must be a mode string ('causal', 'same', 'anticausal'), got {padding!r}")
        self.network = temporal_levels(TemporalBlock, num_inputs, num_channels, kernel_size, dropout,
                                       padding=None if padding == "causal" else padding, dropout_mode=dropout_mode,
                                       recompute=recompute, activation=activation, final_activation=final_activation)

    def forward(self, x):
        blocks = list(self.network)
        seeds = None
        if self.training and isinstance(x, torch.Tensor) and any(
                isinstance(b, TemporalBlock) and (b.dropout1.p > 0 or b.dropout2.p > 0) for b in blocks):
            seeds = draw_dropout_seeds(2 * len(blocks), x.device)  # one draw (one launch) for every block
        for i, block in enumerate(blocks):
            x = block(x, seeds[2 * i:2 * i + 2]) if seeds is not None and isinstance(block, TemporalBlock) else block(x)
        return x
