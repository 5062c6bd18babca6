"""tcnkernels.conv1d, the general op: every activation and gate, padding mode, groups (depthwise
included) and layout, against an fp64 oracle of F.pad + F.conv1d(groups=...) + the torch activation,
forward and every gradient (PReLU's weight included), in the interpreter with NaN-poisoned outputs."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tcnkernels
from helpers import LaunchRecorder, OpRecorder, assert_close_to_reference, guarded
from tcnkernels.ops.activations import NAMES

ACTIVATIONS = [None, *NAMES]
MODULES = [nn.LeakyReLU(0.2), nn.ELU(0.5), nn.Softplus(beta=2.0, threshold=5.0), nn.GELU(approximate="tanh"),
           nn.PReLU(), nn.PReLU(6, init=-0.3), nn.Mish(), nn.GLU(dim=1)]
PADDINGS = ["causal", "same", "anticausal", "pair"]  # "pair": (1, total - 1), the test's own split


def _gated_tanh(z):
    a, b = z.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


# torch's own functions (the oracle), independent of tcnkernels.ops.activations
TORCH_FUNCTIONS = {None: lambda z: z, "relu": F.relu, "leaky_relu": F.leaky_relu, "elu": F.elu, "selu": F.selu,
                   "gelu": F.gelu, "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"), "silu": F.silu,
                   "mish": F.mish, "softplus": F.softplus, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
                   "glu": lambda z: F.glu(z, dim=1), "gated_tanh": _gated_tanh}


def _torch_activation(activation):
    """What the oracle applies after F.conv1d: the torch module itself, or torch's function of the name."""
    return activation if isinstance(activation, nn.Module) else TORCH_FUNCTIONS[activation]


def oracle(x, w, b, dilation, groups, padding, activation):
    """F.pad + F.conv1d + the torch activation (module), in whatever dtype the inputs are."""
    K = w.shape[2]
    total = (K - 1) * dilation
    left = {"causal": total, "same": total // 2, "anticausal": 0}[padding] if isinstance(padding, str) else padding[0]
    z = F.conv1d(F.pad(x, (left, total - left)), w, b, dilation=dilation, groups=groups)
    return _torch_activation(activation)(z)


def _layout(t, channel_last):
    return t.transpose(1, 2).contiguous().transpose(1, 2) if channel_last else t


def check(B, C_in, C_out, L, K, dilation, groups, padding, activation, dtype=torch.float32, channel_last=False,
          bias=True, guard=3):
    """The fused op against the fp64 oracle: y, dx, dw, db (and PReLU's dweight), each within the
    tolerance rule (2x PyTorch's own error in the same dtype). A channel-first x lives inside a NaN
    buffer `guard` elements wider on every side."""
    act_module = activation.to(torch.float32) if isinstance(activation, nn.PReLU) else activation
    x = _layout(torch.randn(B, C_in, L), channel_last).to(dtype)
    x = guarded(x, guard) if not channel_last else x
    w = (torch.randn(C_out, C_in // groups, K) / (C_in // groups * K) ** 0.5).to(dtype)
    b = (torch.randn(C_out) * 0.5).to(dtype) if bias else None
    leaves = [t.requires_grad_(True) for t in (x, w, b) if t is not None]
    slope = act_module.weight if isinstance(act_module, nn.PReLU) else None
    if slope is not None:
        slope.grad = None
        leaves.append(slope)
    if padding == "pair":
        total = (K - 1) * dilation
        padding = (min(1, total), total - min(1, total))
    with tcnkernels.use_backend("triton"):
        y = tcnkernels.conv1d(x, w, b, dilation, groups, padding, act_module)
    if channel_last and C_out > 2:
        assert y.stride(1) == 1, "a channel-last input gives a channel-last output"
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, leaves, dy)

    def reference(cast):
        ins = [t.detach().to(cast).requires_grad_(True) for t in leaves]
        act = act_module
        if slope is not None:
            act = nn.PReLU(slope.numel()).to(cast)
            act.weight.data.copy_(ins[-1].detach())
            ins[-1] = act.weight
        xr, wr = ins[0], ins[1]
        br = ins[2] if bias else None
        out = oracle(xr, wr, br, dilation, groups, padding, act)
        return out.detach(), [g for g in torch.autograd.grad(out, ins, dy.to(cast))]

    y64, g64 = reference(torch.float64)
    y_same, g_same = reference(dtype)
    assert_close_to_reference("y", y.detach(), y64, y_same)
    names = ["dx", "dweight", "dbias"][:3 if bias else 2] + (["dslope"] if slope is not None else [])
    for name, got, ref64, ref_same in zip(names, grads, g64, g_same):
        assert_close_to_reference(name, got, ref64.to(got.dtype).double() if name == "dslope" else ref64,
                                  ref_same.to(got.dtype))


# An awkward table: 1-channel, prime widths, L shorter than the receptive field, K = 1.
SHAPES = [(2, 6, 8, 37, 3, 2), (1, 4, 6, 5, 4, 3), (3, 10, 12, 19, 1, 1), (2, 8, 10, 64, 2, 8)]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
def test_every_activation(activation):
    B, C_in, C_out, L, K, d = SHAPES[0]
    check(B, C_in, C_out, L, K, d, 1, "causal", activation)


@pytest.mark.parametrize("activation", MODULES, ids=repr)
def test_module_activations_use_their_parameters(activation):
    check(2, 4, 6, 23, 3, 2, 1, "same", activation)


@pytest.mark.parametrize("padding", PADDINGS, ids=str)
@pytest.mark.parametrize("groups", [1, 2, "depthwise"])
@pytest.mark.parametrize("channel_last", [False, True], ids=["ncl", "nlc"])
def test_paddings_groups_layouts(padding, groups, channel_last):
    B, C_in, C_out, L, K, d = 2, 8, 8, 29, 3, 3
    g = C_in if groups == "depthwise" else groups
    activation = {"causal": "relu", "same": "gelu", "anticausal": "tanh"}.get(padding, "silu") if g != 2 else "glu"
    check(B, C_in, C_out, L, K, d, g, padding, activation, channel_last=channel_last)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("activation", ["gelu", "gated_tanh", nn.PReLU(8), "selu"], ids=str)
def test_half_precision(dtype, activation):
    check(2, 8, 8, 33, 3, 2, 1, "same", activation, dtype=dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_awkward_shapes(shape):
    B, C_in, C_out, L, K, d = shape
    check(B, C_in, C_out, L, K, d, 2, "same", "mish", bias=False)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ACTIVATIONS + [nn.PReLU(8)], ids=str)
@pytest.mark.parametrize("padding", PADDINGS, ids=str)
@pytest.mark.parametrize("groups", [1, 2, 8])
@pytest.mark.parametrize("channel_last", [False, True], ids=["ncl", "nlc"])
def test_the_whole_grid(activation, padding, groups, channel_last):
    check(2, 8, 8, 21, 3, 2, groups, padding, activation, channel_last=channel_last)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("groups", [1, 8])
def test_the_half_precision_grid(dtype, activation, groups):
    check(2, 8, 8, 21, 3, 2, groups, "same", activation, dtype=dtype, channel_last=groups == 8)


@pytest.mark.parametrize("activation", ["gelu", "softplus", "glu", "elu", nn.PReLU(4)], ids=str)
def test_gradcheck_fp64(activation):
    if isinstance(activation, nn.PReLU):
        activation = activation.double()
    x = torch.randn(2, 4, 11, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def f(x, w, b):
        with tcnkernels.use_backend("triton"):
            return tcnkernels.conv1d(x, w, b, 2, 2, "same", activation)

    assert torch.autograd.gradcheck(f, (x, w, b))


def test_torch_path_is_the_reference():
    x, w, b = torch.randn(2, 6, 30), torch.randn(6, 3, 3), torch.randn(6)
    with tcnkernels.use_backend("torch"):
        y = tcnkernels.conv1d(x, w, b, 2, 2, "same", "gelu")
    torch.testing.assert_close(y, F.gelu(F.conv1d(x, w, b, padding="same", dilation=2, groups=2)), rtol=0, atol=0)


def test_depthwise_and_grouped_convs_launch_their_kernels():
    x = torch.randn(2, 8, 40, requires_grad=True)
    w = torch.randn(8, 1, 4, requires_grad=True)
    with LaunchRecorder() as rec, tcnkernels.use_backend("triton"):
        tcnkernels.conv1d(x, w, None, 2, 8, "causal", "silu").sum().backward()
    assert rec.launches == ["depthwise_conv1d_kernel", "depthwise_weight_grad_kernel", "weight_grad_finalize_kernel",
                            "depthwise_conv1d_kernel"]
    with LaunchRecorder() as rec, tcnkernels.use_backend("triton"):
        tcnkernels.conv1d(x.detach(), torch.randn(8, 2, 4), None, 2, 4, "causal", "silu")
    assert rec.launches == ["weight_prep_kernel", "causal_conv1d_kernel"]


@pytest.mark.parametrize("K", [2, 9, 17])
@pytest.mark.parametrize("channel_last", [False, True], ids=["ncl", "nlc"])
def test_depthwise_taps_unrolled_and_looped(K, channel_last):
    """Taps unrolled (up to 16, with constexpr shifts; channel-first ones' weights one tile) or looped."""
    with LaunchRecorder() as rec:
        check(2, 12, 12, 45, K, 3, 12, "same", nn.PReLU(12), channel_last=channel_last)
    unrolled = {static["UNROLL"] for name, static in zip(rec.launches, rec.statics)
                if name == "depthwise_conv1d_kernel"}
    assert unrolled == {K <= 16}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("K, dilation, padding", [(8, 1, "causal"), (3, 2, "same"), (4, 3, "anticausal"),
                                                  (3, 2, "pair"), (16, 1, "causal")])
def test_depthwise_window_path(dtype, K, dilation, padding):
    """Channel-first rows aligned to 16 bytes at dilations below a vector: every tap's operand comes
    from the lanes of the aligned blocks (forward, input gradient, weight gradient). The NaN guard is
    8 elements wide, so that the rows stay aligned and a read past a row's edge still shows. (PReLU's
    slope gradient, one bf16 number per channel, is checked in fp32: in bf16 its rounding alone can
    exceed the tolerance rule's bound.)"""
    activation = nn.PReLU(6) if dtype == torch.float32 else "gelu_tanh"
    with LaunchRecorder() as rec:
        check(2, 6, 6, 48, K, dilation, 6, padding, activation, dtype=dtype, guard=8)
    windows = [static.get("WINDOW", 0) for name, static in zip(rec.launches, rec.statics) if "depthwise" in name]
    assert windows == [16 // dtype.itemsize] * 3, windows


@pytest.mark.parametrize("dtype, C, K, dilation, padding, activation", [
    (torch.float32, 8, 3, 8, "causal", "silu"), (torch.bfloat16, 8, 16, 8, "causal", "gelu_tanh"),
    (torch.float32, 8, 3, 8, "same", "prelu"), (torch.float32, 6, 4, 12, "anticausal", None),
    (torch.bfloat16, 8, 2, 24, "causal", "tanh")], ids=str)
def test_depthwise_strip_path(dtype, C, K, dilation, padding, activation):
    """Channel-first rows aligned to 16 bytes at dilations that are whole vectors, right padding in
    whole steps: each program computes output steps `dilation` apart, from input steps each loaded
    once for every tap that reads them (forward and input gradient; dilations 12 and 24 split each
    step into 3 column chunks). Programs inside the sequence and channels load unmasked, the others
    mask (6 channels: all of them). Against the oracle, inside a NaN buffer 8 elements wide: a read
    past a row's edge would show."""
    from tools.static_profile.profile import depthwise_interior

    L = 400
    if activation == "prelu":
        activation = nn.PReLU(C)
    with LaunchRecorder() as rec:
        check(2, C, C, L, K, dilation, C, padding, activation, dtype=dtype, guard=8)
    strips = [static for name, static in zip(rec.launches, rec.statics) if name == "depthwise_conv1d_kernel"]
    assert [static.get("STRIP", 0) for static in strips] == [8, 8]
    inside = [depthwise_interior(dict(static, L=L, C=C)) for static in strips]
    assert all(0 < f < 1 for f in inside) if C == 8 else inside == [0, 0], inside


def test_gated_units_halve_the_channels():
    x, w = torch.randn(2, 4, 16), torch.randn(6, 4, 3)
    with tcnkernels.use_backend("triton"):
        y = tcnkernels.conv1d(x, w, activation="glu")
        z = tcnkernels.conv1d(x, w, activation="gated_tanh", padding="same")
    assert y.shape == (2, 3, 16)
    torch.testing.assert_close(y, F.glu(oracle(x, w, None, 1, 1, "causal", None), dim=1))
    a, g = oracle(x, w, None, 1, 1, "same", None).chunk(2, 1)
    torch.testing.assert_close(z, torch.tanh(a) * torch.sigmoid(g))


@pytest.mark.parametrize("kwargs, message", [
    (dict(activation="swish"), "activation must be None, one of 'relu'"),
    (dict(activation=nn.GLU()), "dim=1"),
    (dict(groups=3), "groups must be >= 1 and divide"),
    (dict(groups=0), "groups must be >= 1"),
    (dict(padding=(1, 1)), "must sum to"),
    (dict(padding="full"), "padding must be one of"),
    (dict(padding=(-1, 5)), "padding must be one of"),
    (dict(activation="glu", out=5), "C_out must be even"),
    (dict(activation=nn.PReLU(3)), "num_parameters 1 or C_out"),
])
def test_bad_arguments_raise_before_any_kernel(kwargs, message):
    out = kwargs.pop("out", 4)
    x, w = torch.randn(2, 4, 10), torch.randn(out, 4 // kwargs.get("groups", 1) if kwargs.get("groups") else 4, 3)
    with LaunchRecorder() as rec, pytest.raises((ValueError, TypeError), match=message):
        with tcnkernels.use_backend("triton"):
            tcnkernels.conv1d(x, w, dilation=2, **kwargs)
    assert rec.launches == []


def test_temporal_conv1d_module_is_an_nn_conv1d():
    conv = tcnkernels.TemporalConv1d(4, 6, 3, dilation=2, groups=2, padding="same", activation="gelu")
    ref = nn.Conv1d(4, 6, 3, dilation=2, groups=2, padding="same")
    assert isinstance(conv, nn.Conv1d)
    assert conv.state_dict().keys() == ref.state_dict().keys()
    ref.load_state_dict(conv.state_dict(), strict=True)
    x = torch.randn(3, 4, 25)
    with tcnkernels.use_backend("triton"):
        y = conv(x)
    torch.testing.assert_close(y, F.gelu(ref(x)), rtol=1e-5, atol=1e-5)
    prelu = tcnkernels.TemporalConv1d(4, 6, 3, activation=nn.PReLU(6))
    assert set(prelu.state_dict()) == {"weight", "bias", "activation.weight"}
    with pytest.raises(ValueError, match="padding"):
        tcnkernels.TemporalConv1d(4, 6, 3, padding=(0, 0))
    with pytest.raises(ValueError, match="groups"):
        tcnkernels.TemporalConv1d(4, 6, 3, groups=4)


def test_channel_last_input_is_read_without_a_copy():
    x_nlc = torch.randn(2, 40, 8)
    x = x_nlc.transpose(1, 2)
    with OpRecorder() as ops, tcnkernels.use_backend("triton"):
        y = tcnkernels.conv1d(x, torch.randn(8, 8, 3), activation="relu")
    assert "aten.clone.default" not in ops.ops and "aten.contiguous" not in " ".join(ops.ops)
    assert y.stride(1) == 1 and y.shape == (2, 8, 40)


def test_registered_op_passes_opcheck():
    x, w, b = torch.randn(2, 4, 12), torch.randn(6, 2, 3), torch.randn(6)
    code = 5  # gelu
    torch.library.opcheck(torch.ops.tcnkernels.conv1d, (x, w, b, None, 2, 2, 2, code, 0.0, 0.0))
    torch.library.opcheck(torch.ops.tcnkernels.conv1d_input_grad, (torch.randn(2, 6, 12), w, 2, 2, 2))


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["gelu", "gated_tanh", "prelu"])
def test_compiles_without_graph_breaks(activation):
    """torch.compile(fullgraph=True) of the general op, forward + backward through the registered ops."""
    torch._dynamo.reset()
    conv = tcnkernels.TemporalConv1d(4, 6, 3, dilation=2, groups=1 if activation == "gated_tanh" else 2,
                                     padding="same", activation=nn.PReLU(6) if activation == "prelu" else activation)
    x = torch.randn(2, 4, 21, requires_grad=True)
    y = torch.compile(conv, fullgraph=True)(x)
    grads = torch.autograd.grad(y.square().sum(), [x, conv.weight, conv.bias])
    with tcnkernels.use_backend("torch"):
        y_ref = conv(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, torch.autograd.grad(y_ref.square().sum(), [x, conv.weight, conv.bias])):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_depthwise_half_precision(dtype):
    check(2, 8, 8, 33, 5, 2, 8, "same", "silu", dtype=dtype)


def test_depthwise_gradcheck_fp64():
    x = torch.randn(2, 4, 11, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 1, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def f(x, w, b):
        with tcnkernels.use_backend("triton"):
            return tcnkernels.conv1d(x, w, b, 2, 4, "anticausal", "gelu")

    assert torch.autograd.gradcheck(f, (x, w, b))
