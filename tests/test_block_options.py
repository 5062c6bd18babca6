"""TemporalBlock / TemporalConvNet options beyond the reference's: activation, final_activation,
conv2_activation and padding, against the same block built from torch.nn modules (forward and
every gradient), in the interpreter; the streamer's refusals."""
import pytest
import torch
from torch import nn

import tcnkernels

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU,
               "selu": nn.SELU, "silu": nn.SiLU, "mish": nn.Mish, "softplus": nn.Softplus, "sigmoid": nn.Sigmoid,
               "gelu_tanh": lambda: nn.GELU(approximate="tanh")}


class TorchBlock(nn.Module):
    """The block from torch.nn modules: pad, Conv1d, activation, twice; residual; final activation."""

    def __init__(self, n_in, n_out, K, dilation, padding, activation, final_activation, conv2_activation):
        super().__init__()
        total = (K - 1) * dilation
        left = {"causal": total, "same": total // 2, "anticausal": 0}[padding]
        make = ACTIVATIONS[activation]
        self.net = nn.Sequential(nn.ConstantPad1d((left, total - left), 0.0),
                                 nn.Conv1d(n_in, n_out, K, dilation=dilation),
                                 make(), nn.ConstantPad1d((left, total - left), 0.0),
                                 nn.Conv1d(n_out, n_out, K, dilation=dilation),
                                 make() if conv2_activation else nn.Identity())
        self.downsample = nn.Conv1d(n_in, n_out, 1) if n_in != n_out else None
        self.final = make() if final_activation else nn.Identity()

    def forward(self, x):
        res = x if self.downsample is None else self.downsample(x)
        return self.final(self.net(x) + res)


def _copy_weights(ours, ref):
    ref.net[1].weight.data.copy_(ours.conv1.weight)
    ref.net[1].bias.data.copy_(ours.conv1.bias)
    ref.net[4].weight.data.copy_(ours.conv2.weight)
    ref.net[4].bias.data.copy_(ours.conv2.bias)
    if ours.downsample is not None:
        ref.downsample.weight.data.copy_(ours.downsample.weight)
        ref.downsample.bias.data.copy_(ours.downsample.bias)


@pytest.mark.parametrize("activation, final, conv2, padding, n_in", [
    ("relu", True, True, "same", 3),
    ("gelu", True, True, "causal", 4),
    ("tanh", False, True, "causal", 3),      # Darts' block
    ("relu", False, False, "causal", 3),     # Darts' last block
    ("leaky_relu", True, False, "anticausal", 4),
    ("mish", True, True, "same", 3),
    ("elu", False, True, "same", 4),
    ("silu", True, True, "causal", 3),
])
def test_block_option_matches_torch_nn(activation, final, conv2, padding, n_in):
    K, d = 3, 2
    ours = tcnkernels.TemporalBlock(n_in, 4, K, stride=1, dilation=d, padding=padding, dropout=0.0, weight_norm=False,
                                    activation=activation, final_activation=final, conv2_activation=conv2)
    ref = TorchBlock(n_in, 4, K, d, padding, activation, final, conv2)
    _copy_weights(ours, ref)
    x = torch.randn(2, n_in, 23, requires_grad=True)
    with tcnkernels.use_backend("triton"):
        y = ours(x)
    y_ref = ref(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    dy = torch.randn_like(y)
    params = [ours.conv1.weight, ours.conv1.bias, ours.conv2.weight, ours.conv2.bias]
    ref_params = [ref.net[1].weight, ref.net[1].bias, ref.net[4].weight, ref.net[4].bias]
    grads = torch.autograd.grad(y, [x] + params, dy)
    grads_ref = torch.autograd.grad(y_ref, [x] + ref_params, dy)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def _on_both_backends(block, x, seeds):
    """The block's output on the triton backend and on the torch path, with the same dropout seeds."""
    with tcnkernels.use_backend("triton"):
        y = block(x, seeds)
    with tcnkernels.use_backend("torch"):
        return y, block(x, seeds)


def test_block_with_weight_norm_and_dropout_matches_the_torch_path():
    block = tcnkernels.TemporalBlock(3, 5, 2, stride=1, dilation=4, padding="same", dropout=0.3,
                                     activation=nn.GELU(), final_activation=False).train()
    x = torch.randn(2, 3, 30, requires_grad=True)
    y, y_ref = _on_both_backends(block, x, torch.tensor([11, 12]))
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    # y.sum(): a stride-0 output gradient
    g = torch.autograd.grad(y.sum(), [x, block.conv1.weight_v])
    g_ref = torch.autograd.grad(y_ref.sum(), [x, block.conv1.weight_v])
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_network_options_reach_every_block():
    tcn = tcnkernels.TemporalConvNet(2, [4, 4, 3], kernel_size=3, dropout=0.0, activation="gelu",
                                     final_activation=False, padding="same").eval()
    for block in tcn.network:
        assert block.block_activation.name == "gelu" and not block.final_activation and block.padding == "same"
    x = torch.randn(2, 2, 40)
    with tcnkernels.use_backend("triton"):
        y = tcn(x)
    with tcnkernels.use_backend("torch"):
        y_ref = tcn(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    # "same" padding sees the future: changing the last step changes earlier outputs
    x2 = x.clone()
    x2[..., -1] += 1
    with tcnkernels.use_backend("torch"):
        assert not torch.equal(tcn(x2)[..., -5], y_ref[..., -5])


def test_the_reference_block_state_dict_is_kept():
    ours = tcnkernels.TemporalBlock(3, 4, 2, stride=1, dilation=1, padding=1, activation="gelu")
    ref = tcnkernels.ops.reference.ReferenceTemporalBlock(3, 4, 2, stride=1, dilation=1, padding=1)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    ref.load_state_dict(ours.state_dict(), strict=True)


@pytest.mark.parametrize("kwargs, message", [
    (dict(activation="glu"), "elementwise activation"),
    (dict(activation=nn.PReLU()), "elementwise activation"),
    (dict(activation="swish"), "activation must be None, one of"),
    (dict(final_activation=1), "final_activation must be a bool"),
    (dict(padding="full"), "padding must be one of"),
    (dict(padding=3), "padding must be \\(kernel_size-1\\)\\*dilation"),
])
def test_block_options_are_checked(kwargs, message):
    args = dict(stride=1, dilation=2, padding=2)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message):
        tcnkernels.TemporalBlock(3, 4, 2, **args)


def test_network_padding_must_be_a_mode():
    with pytest.raises(ValueError, match="padding must be a mode string"):
        tcnkernels.TemporalConvNet(2, [4], padding=(1, 0))


@pytest.mark.parametrize("kwargs, message", [
    (dict(padding="same"), "future steps"),
    (dict(activation="gelu"), "reference block"),
    (dict(final_activation=False), "reference block"),
])
def test_streamer_refuses_what_it_cannot_stream_exactly(kwargs, message):
    tcn = tcnkernels.TemporalConvNet(2, [4, 4], kernel_size=3, dropout=0.0, **kwargs).eval()
    with pytest.raises(ValueError, match=message):
        tcnkernels.Streamer(tcn, batch_size=1)


def test_streamer_refuses_a_non_causal_conv():
    with pytest.raises(ValueError, match="future steps"):
        tcnkernels.Streamer(tcnkernels.TemporalConv1d(2, 3, 3, padding="same").eval(), batch_size=1)
    with pytest.raises(ValueError, match="fuse ReLU or no activation"):
        tcnkernels.Streamer(tcnkernels.TemporalConv1d(2, 3, 3, activation="tanh").eval(), batch_size=1)


def _fused_against_torch_path(activation, final, conv2, p, recompute, padding, channel_last=False, n_in=3):
    """The fused block against the same block on the torch backend (the same Philox masks), fp64:
    forward and every gradient."""
    block = tcnkernels.TemporalBlock(n_in, 5, 3, stride=1, dilation=2, padding=padding, dropout=p,
                                     activation=activation, final_activation=final, conv2_activation=conv2,
                                     recompute=recompute).train().double()
    x = torch.randn(2, 31, n_in, dtype=torch.float64).transpose(1, 2) if channel_last else \
        torch.randn(2, n_in, 31, dtype=torch.float64)
    y, y_ref = _on_both_backends(block, x.requires_grad_(True), torch.tensor([5, 6]))
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y_ref)
    leaves = [x] + [t for t in block.parameters()]
    for got, want in zip(torch.autograd.grad(y, leaves, dy), torch.autograd.grad(y_ref, leaves, dy)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("activation, final, conv2, p, recompute, padding, channel_last", [
    ("gelu", True, True, 0.3, True, "causal", False),
    ("tanh", False, True, 0.3, False, "same", True),       # kept branch, from the output
    ("mish", False, False, 0.2, False, "anticausal", False),  # recomputed anyway (its derivative reads z)
    ("relu", False, True, 0.3, True, (1, 3), False),
    ("relu", True, True, 0.3, False, "same", True),         # the reference block's gates, shifted taps
    ("softplus", True, False, 0.0, True, "causal", True),
])
def test_fused_block_options_match_the_torch_path(activation, final, conv2, p, recompute, padding, channel_last):
    _fused_against_torch_path(activation, final, conv2, p, recompute, padding, channel_last)


@pytest.mark.slow
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("final, conv2", [(True, True), (False, True), (False, False)])
@pytest.mark.parametrize("recompute", [True, False])
def test_fused_block_grid(activation, final, conv2, recompute):
    _fused_against_torch_path(activation, final, conv2, 0.25, recompute, "same", n_in=5)
