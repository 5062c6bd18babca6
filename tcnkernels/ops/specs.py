"""The frozen specs that travel from the public functions to the kernels.

A spec holds an op's static configuration: everything that is not a tensor and that decides which
kernel variant runs. The autograd Functions take `(spec, *tensors)`, the launchers take a spec as a
keyword, and the launch plans are cached on it. Specs are NamedTuples: immutable, hashed in C (a plan
lookup costs one dict probe per call, measured in benchmarks/host_overhead.py) and readable when
printed. An option of an op is one field here and one branch where the kernels read it.
"""
import functools
from typing import NamedTuple, Optional, Tuple

from .activations import RELU, Activation

DROPOUT_MODES = ("element", "channel")
PADDING_MODES = ("causal", "same", "anticausal")


class ConvSpec(NamedTuple):
    """One dilated conv, L steps in, L out:
        y[o, t] = act(bias[o] + sum_{i,k} W[o, i, k] x[g(o) C_in/groups + i, t - (K-1-k)*dilation + pad_right])
    with x zero outside [0, L): causal when pad_right is 0, the left padding is (K-1)*dilation - pad_right."""
    kernel_size: int
    dilation: int = 1
    activation: Optional[Activation] = None
    groups: int = 1
    pad_right: int = 0
    depthwise: bool = False  # groups == C_in == C_out > 1: the depthwise kernels (memory-bound, no GEMM)

    def epilogue(self) -> "Epilogue":
        """The conv's own epilogue: its activation (storing the pre-activation where the derivative needs it)."""
        return _conv_epilogue(self.activation)

    @property
    def pad_left(self) -> int:
        return (self.kernel_size - 1) * self.dilation - self.pad_right


class Dropout(NamedTuple):
    """Dropout in a conv's epilogue: probability, "element" or "channel", which of the op's seeds."""
    p: float
    mode: str
    seed_index: int

    @property
    def scale(self) -> float:
        """What a kept activation is multiplied by: 1/(1-p) (0 when everything is dropped)."""
        return 0.0 if self.p >= 1 else 1.0 / (1.0 - self.p)


class GateRule(NamedTuple):
    """How a backward kernel takes a gradient back through an earlier layer's activation and dropout,
    out = keep * scale * act(z): g * keep * scale * act'(z), from the saved tensor (the
    pre-activation z when `from_input`, else out itself, scale undone), the keep mask drawn again
    from its seed (`dropout`; None without)."""
    activation: Optional[Activation]  # None: dropout alone
    from_input: bool
    dropout: Optional[Dropout]
    scale: float = 1.0


class Epilogue(NamedTuple):
    """What the conv kernel does after its GEMM, in this order, each step compiled in only when on.

    The forward of a plain conv uses `activation` alone; a TemporalBlock's convs and their input
    gradients use the rest (see tcnkernels/ops/block.py)."""
    activation: int = 0                 # activations.CODES code, after the bias
    act_params: Tuple[float, float] = (0.0, 0.0)  # its parameters (activations.Activation.kernel_params)
    store_pre: bool = False             # also store the pre-activation (for the backward)
    dropout: Optional[Dropout] = None   # Philox mask of seeds[dropout.seed_index], kept * 1/(1-p)
    gate_scale: Optional[float] = None  # * (gate > 0) * gate_scale: a backward's ReLU-and-dropout gate
    gate_rule: Optional[GateRule] = None  # or this gate, for any activation (gate_scale then unused)
    store_branch: bool = False          # also store the output so far (a block's pre-residual branch)
    residual: int = 0                   # + res (1), or + a 1x1 conv of res in the same program (2)
    final_activation: int = 0           # activations.CODES code, after the residual (act_params its parameters)
    final_pre: bool = False             # store the value before the final activation (for the backward)
    aux: bool = False                   # + a 1x1 conv of a conditioning input, before the bias (WaveNet's c)
    res_scale: float = 1.0              # the residual (1) added times this
    split_rows: int = 0                 # > 0: rows from here on go to a second output, with the residual


PLAIN = Epilogue()


class BlockSpec(NamedTuple):
    """One TemporalBlock: relu(D2(relu(conv2(D1(relu(conv1(x)))))) + res), res = x or a 1x1 conv."""
    kernel_size: int
    dilation: int
    dropout: Tuple[float, float] = (0.0, 0.0)  # (p1, p2), applied only when `training`
    dropout_mode: str = "element"              # one of DROPOUT_MODES
    training: bool = False                     # dropout on (seeds are given)
    recompute: bool = True                     # conv2's output recomputed in the backward, not kept
    activation: Activation = RELU              # after each conv (and after the residual)
    final_activation: bool = True              # False: none after the residual add (Darts' block)
    conv2_activation: bool = True              # False: none after conv2 (Darts' last block)
    pad_right: int = 0                         # of each conv (0: causal)

    @property
    def conv(self) -> ConvSpec:
        """Both convs' geometry (the block's ReLUs are in its epilogues)."""
        return ConvSpec(self.kernel_size, self.dilation)

    @property
    def fused_relu(self) -> bool:
        """The reference block's options (ReLU after each conv and the residual): its gates come from
        the signs of the kept outputs; any other activation's from GateRules."""
        return self.activation == RELU and self.final_activation and self.conv2_activation

    def dropouts(self) -> Tuple[Optional[Dropout], Optional[Dropout]]:
        """conv1's and conv2's epilogue dropout (None where off)."""
        p1, p2 = self.dropout
        on = self.training
        return (Dropout(p1, self.dropout_mode, 0) if on and p1 > 0 else None,
                Dropout(p2, self.dropout_mode, 1) if on and p2 > 0 else None)


@functools.lru_cache(maxsize=None)
@functools.lru_cache(maxsize=4096)
def inference_epilogue(spec) -> "Epilogue":
    """The spec's epilogue without the pre-activation store: nothing is kept for a backward."""
    return spec.epilogue()._replace(store_pre=False)


def _conv_epilogue(act: Optional[Activation]) -> Epilogue:
    # cached: every call of the op asks for it
    if act is None:
        return PLAIN
    return Epilogue(activation=act.code, act_params=act.kernel_params(), store_pre=not act.from_output)
