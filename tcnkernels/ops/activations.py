"""The activations the fused conv knows: names, parameters, the PyTorch versions, the backward rules.

An activation travels as an `Activation` (name, parameters), hashable, so that it is part of a spec.
`activation_of` turns what a user passes (a name, or a `torch.nn` module instance) into one. The
kernels' code of each name is `CODES`; the kernels compute the same functions in their epilogue
(tcnkernels/ops/triton/conv_kernels.py, `_activate`).

Backward rule, per activation (measured in docs/speed.md): the derivative of ReLU, leaky ReLU
(slope >= 0), ELU (alpha >= 0), SELU, tanh and sigmoid is a function of the output, which is
kept anyway (it is what the op returns), so nothing more is stored; the others (GELU, SiLU, Mish,
softplus, PReLU, the gated units) need the pre-activation, which the forward kernel stores in the
same program (one more write of the output's size, no recompute of the conv in the backward).
"""
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

# Name -> the kernels' ACTIVATION constexpr. 0 is none; 1 is ReLU (the block kernels' too).
CODES = {None: 0, "relu": 1, "leaky_relu": 2, "elu": 3, "selu": 4, "gelu": 5, "gelu_tanh": 6, "silu": 7,
         "mish": 8, "softplus": 9, "tanh": 10, "sigmoid": 11, "prelu": 12, "glu": 13, "gated_tanh": 14}
GATES = ("glu", "gated_tanh")
NAMES = tuple(name for name in CODES if name not in (None, "prelu"))  # what a string may name
SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


class Activation(NamedTuple):
    """An activation with its parameters: leaky_relu (negative_slope,), elu (alpha,), softplus
    (beta, threshold); () for the rest. PReLU's weight is a tensor, passed beside the spec."""
    name: str
    params: Tuple[float, ...] = ()

    @property
    def code(self) -> int:
        return CODES[self.name]

    @property
    def gated(self) -> bool:
        return self.name in GATES

    @property
    def from_output(self) -> bool:
        """Whether the derivative is a function of the output (so the backward needs no pre-activation)."""
        name = self.name
        if name in ("leaky_relu", "elu"):
            return self.params[0] >= 0
        return name in ("relu", "selu", "tanh", "sigmoid")

    @property
    def weight_grad_gate(self) -> bool:
        """Whether the weight-gradient kernel applies the derivative (every activation and gate but
        PReLU, whose slope gradient is a reduction of its own); else a separate pass does."""
        return self.name != "prelu"

    def derivative_in_kernel(self, dtype) -> bool:
        """Whether the backward kernels apply the derivative for this dtype: every activation but
        PReLU, except GELU's erf and Mish's exponentials in fp64 (the gradcheck dtype), whose code
        spills inside the weight gradient's loop (GELU: hundreds of bytes, sm_80 and sm_90; Mish: 56
        to 80 bytes, sm_90); a separate pass does it there."""
        return self.weight_grad_gate and not (dtype == torch.float64 and self.name in ("gelu", "mish"))

    def kernel_params(self) -> Tuple[float, float]:
        """The kernels' ACT_P0, ACT_P1 constexprs."""
        return (tuple(float(p) for p in self.params) + (0.0, 0.0))[:2]


RELU = Activation("relu")
_DEFAULTS = {"leaky_relu": (0.01,), "elu": (1.0,), "softplus": (1.0, 20.0)}
N_PARAMS = {name: len(params) for name, params in _DEFAULTS.items()}
# nn module -> (name, its parameters); GELU and GLU are resolved by their attributes.
_MODULES = {nn.ReLU: lambda m: ("relu", ()), nn.LeakyReLU: lambda m: ("leaky_relu", (float(m.negative_slope),)),
            nn.ELU: lambda m: ("elu", (float(m.alpha),)), nn.SELU: lambda m: ("selu", ()),
            nn.SiLU: lambda m: ("silu", ()), nn.Mish: lambda m: ("mish", ()),
            nn.Softplus: lambda m: ("softplus", (float(m.beta), float(m.threshold))),
            nn.Tanh: lambda m: ("tanh", ()), nn.Sigmoid: lambda m: ("sigmoid", ()), nn.PReLU: lambda m: ("prelu", ())}


_BY_NAME = {n: Activation(n, _DEFAULTS.get(n, ())) for n in NAMES}


def known_activations() -> str:
    return ", ".join(repr(n) for n in NAMES) + ", or an nn.ReLU/LeakyReLU/ELU/SELU/GELU/SiLU/Mish/Softplus/" \
        "Tanh/Sigmoid/PReLU/GLU(dim=1) instance"


def activation_of(value, name="activation") -> Tuple[Optional[Activation], Optional[torch.Tensor]]:
    """(Activation or None, PReLU weight or None) of what a user passes; ValueError otherwise."""
    if value is None:
        return None, None
    if isinstance(value, Activation):
        return value, None
    if isinstance(value, str):
        act = _BY_NAME.get(value)
        if act is None:
            raise ValueError(f"{name} must be None, one of {known_activations()}; got {value!r}")
        return act, None
    if isinstance(value, nn.GELU):
        if value.approximate not in ("none", "tanh"):
            raise ValueError(f"{name}: nn.GELU(approximate={value.approximate!r}) is not supported")
        return Activation("gelu" if value.approximate == "none" else "gelu_tanh"), None
    if isinstance(value, nn.GLU):
        if value.dim not in (1, -2):
            raise ValueError(f"{name}: nn.GLU must gate the channel dimension (dim=1), got dim={value.dim}")
        return Activation("glu"), None
    for cls, read in _MODULES.items():
        # the class itself, or a subclass that keeps its forward (torch.export's module proxies)
        if type(value) is cls or (isinstance(value, cls) and type(value).forward is cls.forward):
            act_name, params = read(value)
            return Activation(act_name, params), value.weight if cls is nn.PReLU else None
    raise ValueError(f"{name} must be None, one of {known_activations()}; got {value!r}")


def activate(z: torch.Tensor, act: Optional[Activation], weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The activation in PyTorch ops, on (B, C, L) z: what the kernels' epilogue computes."""
    if act is None:
        return z
    name, p = act
    if name == "relu":
        return torch.relu(z)
    if name == "leaky_relu":
        return F.leaky_relu(z, p[0])
    if name == "elu":
        return F.elu(z, p[0])
    if name == "selu":
        return F.selu(z)
    if name in ("gelu", "gelu_tanh"):
        return F.gelu(z, approximate="none" if name == "gelu" else "tanh")
    if name == "silu":
        return F.silu(z)
    if name == "mish":
        return F.mish(z)
    if name == "softplus":
        return F.softplus(z, p[0], p[1])
    if name == "tanh":
        return torch.tanh(z)
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "prelu":
        return F.prelu(z, weight.to(z.dtype))
    a, b = z.chunk(2, dim=1)
    return (a if name == "glu" else torch.tanh(a)) * torch.sigmoid(b)


def backward_from_output(dy: torch.Tensor, y: torch.Tensor, act: Activation) -> torch.Tensor:
    """dz from the output y, for the activations whose `from_output` is True."""
    name, p = act
    zero = torch.zeros((), dtype=dy.dtype, device=dy.device)
    if name == "relu":
        return torch.where(y > 0, dy, zero)
    if name == "leaky_relu":
        return torch.where(y > 0, dy, dy * p[0])
    if name == "elu":
        return torch.where(y > 0, dy, dy * (y + p[0]))
    if name == "selu":
        return torch.where(y > 0, dy * SELU_SCALE, dy * (y + SELU_SCALE * SELU_ALPHA))
    if name == "tanh":
        return dy * (1 - y * y)
    if name == "sigmoid":
        return dy * y * (1 - y)
    raise ValueError(f"{name}'s derivative needs the pre-activation")


def backward_from_input(dy, z, act: Activation, slope=None, needs_slope=False):
    """(dz, dslope) from the pre-activation z (both halves of a gated unit), computed in fp32 (fp64
    for fp64) and returned in dy's dtype; dslope is PReLU's slope gradient when `needs_slope`,
    summed over batch and time (and channels for a single slope) by PyTorch's deterministic sums."""
    name, p = act
    dtype = dy.dtype
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    g, v = dy.to(wide), z.to(wide)
    dslope = None
    if name in GATES:
        a, b = v.chunk(2, dim=1)
        sb = torch.sigmoid(b)
        first = a if name == "glu" else torch.tanh(a)
        da = g * sb if name == "glu" else g * sb * (1 - first * first)
        return torch.cat([da, g * first * sb * (1 - sb)], dim=1).to(dtype), None
    if name == "gelu":
        d = 0.5 * (1 + torch.erf(v * 0.7071067811865476)) + v * torch.exp(-0.5 * v * v) * 0.3989422804014327
    elif name == "gelu_tanh":
        c = 0.7978845608028654
        t = torch.tanh(c * (v + 0.044715 * v ** 3))
        d = 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * c * (1 + 3 * 0.044715 * v * v)
    elif name == "silu":
        s = torch.sigmoid(v)
        d = s * (1 + v * (1 - s))
    elif name == "mish":
        t = torch.tanh(F.softplus(v))
        d = t + v * (1 - t * t) * torch.sigmoid(v)
    elif name == "softplus":
        beta, threshold = p
        d = torch.where(v * beta > threshold, torch.ones_like(v), torch.sigmoid(v * beta))
    elif name == "prelu":
        w = slope.to(wide)
        w = w.view(1, -1, 1) if w.numel() > 1 else w.reshape(())
        positive = v > 0
        if needs_slope:
            part = torch.where(positive, torch.zeros_like(v), v * g).sum(dim=(0, 2))
            dslope = (part if slope.numel() > 1 else part.sum().reshape(1)).to(slope.dtype)
        return torch.where(positive, g, g * w).to(dtype), dslope
    else:
        raise ValueError(f"{name}'s derivative is taken from its output")
    return (g * d).to(dtype), dslope


def activation_backward(dy, saved, act: Activation, slope=None, needs_slope=False):
    """(dz, dslope): the gradient through the activation, from what the forward kept (`saved`: the
    output where act.from_output, else the pre-activation)."""
    if act.from_output:
        if act.name == "relu":
            return backward_from_output(dy, saved, act), None
        wide = torch.float64 if dy.dtype == torch.float64 else torch.float32
        return backward_from_output(dy.to(wide), saved.to(wide), act).to(dy.dtype), None
    return backward_from_input(dy, saved, act, slope, needs_slope)
