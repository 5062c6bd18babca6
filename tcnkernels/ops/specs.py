"""The frozen specs that travel from the public functions to the kernels.

A spec holds an op's static configuration: everything that is not a tensor and that decides which
kernel variant runs. The autograd Functions take `(spec, *tensors)`, the launchers take a spec as a
keyword, and the launch plans are cached on it. Specs are NamedTuples: immutable, hashed in C (a plan
lookup costs one dict probe per call, measured in benchmarks/host_overhead.py) and readable when
printed. An option of an op is one field here and one branch where the kernels read it.
"""
from typing import NamedTuple, Optional, Tuple

# Activation name -> the kernels' ACTIVATION constexpr (tcnkernels/ops/triton/conv_kernels.py).
ACTIVATIONS = {None: 0, "relu": 1}
DROPOUT_MODES = ("element", "channel")


class ConvSpec(NamedTuple):
    """One causal dilated conv: y = act(bias + sum_k W_k x[t - (K-1-k)*dilation])."""
    kernel_size: int
    dilation: int = 1
    activation: Optional[str] = None  # a key of ACTIVATIONS

    def epilogue(self) -> "Epilogue":
        return Epilogue(activation=ACTIVATIONS[self.activation])


class Dropout(NamedTuple):
    """Dropout in a conv's epilogue: probability, "element" or "channel", which of the op's seeds."""
    p: float
    mode: str
    seed_index: int

    @property
    def scale(self) -> float:
        """What a kept activation is multiplied by: 1/(1-p) (0 when everything is dropped)."""
        return 0.0 if self.p >= 1 else 1.0 / (1.0 - self.p)


class Epilogue(NamedTuple):
    """What the conv kernel does after its GEMM, in this order, each step compiled in only when on.

    The forward of a plain conv uses `activation` alone; a TemporalBlock's convs and their input
    gradients use the rest (see tcnkernels/ops/block.py)."""
    activation: int = 0                 # ACTIVATIONS code, after the bias
    dropout: Optional[Dropout] = None   # Philox mask of seeds[dropout.seed_index], kept * 1/(1-p)
    gate_scale: Optional[float] = None  # * (gate > 0) * gate_scale: a backward's ReLU-and-dropout gate
    store_branch: bool = False          # also store the output so far (a block's pre-residual branch)
    residual: int = 0                   # + res (1), or + a 1x1 conv of res in the same program (2)
    final_activation: int = 0           # ACTIVATIONS code, after the residual


PLAIN = Epilogue()


class BlockSpec(NamedTuple):
    """One TemporalBlock: relu(D2(relu(conv2(D1(relu(conv1(x)))))) + res), res = x or a 1x1 conv."""
    kernel_size: int
    dilation: int
    dropout: Tuple[float, float] = (0.0, 0.0)  # (p1, p2), applied only when `training`
    dropout_mode: str = "element"              # one of DROPOUT_MODES
    training: bool = False                     # dropout on (seeds are given)
    recompute: bool = True                     # conv2's output recomputed in the backward, not kept

    @property
    def conv(self) -> ConvSpec:
        """Both convs' geometry (the block's ReLUs are in its epilogues)."""
        return ConvSpec(self.kernel_size, self.dilation)

    def dropouts(self) -> Tuple[Optional[Dropout], Optional[Dropout]]:
        """conv1's and conv2's epilogue dropout (None where off)."""
        p1, p2 = self.dropout
        on = self.training
        return (Dropout(p1, self.dropout_mode, 0) if on and p1 > 0 else None,
                Dropout(p2, self.dropout_mode, 1) if on and p2 > 0 else None)
