"""Drop-in modules against the reference TCN (tcnkernels.ops.reference, transcribed from the paper's code)."""
import pytest
import torch
from torch import nn

import tcnkernels
from helpers import LaunchRecorder, OpRecorder
from tcnkernels.ops.reference import ReferenceTemporalBlock, ReferenceTemporalConvNet, causal_conv1d_reference

WEIGHT_NORM_APIS = ["legacy", "parametrizations"]


def _grads_by_tensor(module):
    """Parameter gradients keyed by state_dict name, with legacy weight-norm names mapped to the
    parametrizations names, so reference and fused modules can be compared key by key."""
    rename = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
    out = {}
    for name, p in module.named_parameters():
        prefix, _, last = name.rpartition(".")
        key = f"{prefix}.{rename[last]}" if last in rename else name
        out[key.lstrip(".")] = p.grad
    return out


def test_causal_conv1d_module_is_a_conv1d(device):
    conv = tcnkernels.CausalConv1d(3, 5, kernel_size=4, dilation=2, device=device)
    plain = nn.Conv1d(3, 5, 4, dilation=2, padding=6, device=device)
    assert isinstance(conv, nn.Conv1d)
    assert conv.state_dict().keys() == plain.state_dict().keys()
    conv.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(2, 3, 70, device=device)
    torch.testing.assert_close(conv(x), plain(x)[:, :, :-6])  # the reference's pad + chomp


@pytest.mark.parametrize("api", WEIGHT_NORM_APIS)
def test_causal_conv1d_module_with_weight_norm(api, device):
    conv = tcnkernels.CausalConv1d(3, 5, kernel_size=3, dilation=2, activation="relu", device=device)
    wn = nn.utils.weight_norm if api == "legacy" else nn.utils.parametrizations.weight_norm
    conv = wn(conv)
    x = torch.randn(2, 3, 40, device=device)
    y = conv(x)
    torch.testing.assert_close(y, causal_conv1d_reference(x, conv.weight, conv.bias, 2, "relu"))
    y.sum().backward()
    g_name = "weight_g" if api == "legacy" else "parametrizations.weight.original0"
    assert dict(conv.named_parameters())[g_name].grad is not None


def test_module_rejects_bad_constructor_arguments():
    with pytest.raises(ValueError, match="activation"):
        tcnkernels.CausalConv1d(3, 5, 3, activation="swish")
    with pytest.raises(ValueError, match="dilation must be an int >= 1"):
        tcnkernels.CausalConv1d(3, 5, 3, dilation=0)
    with pytest.raises(ValueError, match="stride must be 1"):
        tcnkernels.TemporalBlock(3, 5, 3, stride=2, dilation=1, padding=2)
    with pytest.raises(ValueError, match="padding must be"):
        tcnkernels.TemporalBlock(3, 5, 3, stride=1, dilation=2, padding=2)
    with pytest.raises(ValueError, match="num_channels must be a non-empty list"):
        tcnkernels.TemporalConvNet(3, [])
    with pytest.raises(ValueError, match="out_channels must be an int >= 1"):
        tcnkernels.TemporalConvNet(3, [4, 0])


def test_modules_reject_bad_input_with_clear_errors():
    block = tcnkernels.TemporalBlock(3, 5, 3, stride=1, dilation=1, padding=2)
    with pytest.raises(ValueError, match="x has 4 channels"):
        block(torch.randn(2, 4, 10))
    with pytest.raises(TypeError, match="x must be float16, bfloat16, float32 or float64"):
        block(torch.ones(2, 3, 10, dtype=torch.int32))


@pytest.mark.parametrize("api", WEIGHT_NORM_APIS)
def test_same_seed_gives_the_reference_initialisation(api):
    torch.manual_seed(3)
    ref = ReferenceTemporalBlock(3, 6, 3, stride=1, dilation=2, padding=4, weight_norm_api=api)
    torch.manual_seed(3)
    ours = tcnkernels.TemporalBlock(3, 6, 3, stride=1, dilation=2, padding=4)
    ours.load_state_dict(ref.state_dict(), strict=True)  # (also checks the keys line up)
    torch.manual_seed(3)
    fresh = tcnkernels.TemporalBlock(3, 6, 3, stride=1, dilation=2, padding=4)
    for key, value in ours.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


@pytest.mark.parametrize("api", WEIGHT_NORM_APIS)
@pytest.mark.parametrize("widths", [(3, 6), (6, 6)], ids=["downsample", "identity-residual"])
def test_temporal_block_matches_reference(api, widths, device):
    """Dropout 0 in training mode (and dropout on in eval mode): outputs and every gradient, g and v
    included, match the authors' block with the same state_dict."""
    n_in, n_out = widths
    ref = ReferenceTemporalBlock(n_in, n_out, 3, stride=1, dilation=4, padding=8, dropout=0.0,
                                 weight_norm_api=api).to(device)
    ours = tcnkernels.TemporalBlock(n_in, n_out, 3, stride=1, dilation=4, padding=8, dropout=0.0).to(device)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, n_in, 70, device=device)
    x_ref = x.clone().requires_grad_()
    x_ours = x.clone().requires_grad_()
    y_ref = ref(x_ref)
    y_ours = ours(x_ours)
    torch.testing.assert_close(y_ours, y_ref, rtol=1e-5, atol=1e-5)
    dy = torch.randn_like(y_ref)
    y_ref.backward(dy)
    y_ours.backward(dy)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    ref_grads, our_grads = _grads_by_tensor(ref), _grads_by_tensor(ours)
    assert ref_grads.keys() == our_grads.keys()
    for key in ref_grads:
        torch.testing.assert_close(our_grads[key], ref_grads[key], rtol=1e-4, atol=1e-5, msg=key)
    ref.dropout1.p = ref.dropout2.p = ours.dropout1.p = ours.dropout2.p = 0.3
    ref.eval(), ours.eval()
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("api", WEIGHT_NORM_APIS)
def test_temporal_conv_net_loads_reference_state_dict(api, device):
    ref = ReferenceTemporalConvNet(2, [5, 5, 4], kernel_size=3, dropout=0.0, weight_norm_api=api).to(device)
    ours = tcnkernels.TemporalConvNet(2, [5, 5, 4], kernel_size=3, dropout=0.0).to(device)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 2, 40, device=device)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_convert_swaps_reference_blocks_in_place(device):
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.tcn = ReferenceTemporalConvNet(2, [4, 4], kernel_size=2, dropout=0.1)
            self.head = nn.Linear(4, 1)

        def forward(self, x):
            return self.head(self.tcn(x)[:, :, -1])

    model = Model().to(device).eval()
    x = torch.randn(3, 2, 30, device=device)
    expected = model(x)
    rng_before = torch.get_rng_state()
    assert tcnkernels.convert(model) is model
    assert torch.equal(torch.get_rng_state(), rng_before)
    blocks = list(model.tcn.network)
    assert all(isinstance(b, tcnkernels.TemporalBlock) for b in blocks)
    assert not blocks[0].training and blocks[0].dropout1.p == 0.1
    assert next(blocks[0].parameters()).device.type == device.type
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    block = ReferenceTemporalBlock(2, 3, 2, 1, 1, 1)
    assert isinstance(tcnkernels.convert(block), tcnkernels.TemporalBlock)
    with pytest.raises(TypeError, match="nn.Module"):
        tcnkernels.convert("model")


@pytest.mark.slow
def test_block_compiles_without_graph_breaks(device):
    """One torch.compile(fullgraph=True) forward + backward through the registered ops."""
    torch._dynamo.reset()
    block = tcnkernels.TemporalBlock(3, 4, 2, stride=1, dilation=2, padding=2, dropout=0.0).to(device)
    x = torch.randn(2, 3, 20, device=device, requires_grad=True)
    compiled = torch.compile(block, fullgraph=True)
    y = compiled(x)
    y.sum().backward()
    x2 = x.detach().clone().requires_grad_()
    with tcnkernels.use_backend("torch"):
        y2 = block(x2)
    torch.testing.assert_close(y, y2, rtol=1e-5, atol=1e-5)
    y2.sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("widths", [(3, 5), (5, 5)], ids=["downsample", "identity-residual"])
def test_block_launches_and_no_other_compute(widths, monkeypatch):
    """A training step of one block, traced on meta tensors with the triton backend forced and the
    launches recorded: forward = the weight kernel + 2 convs, backward = conv2's recompute + 5 launches
    (the downsample's weight gradient shares conv1's), and no PyTorch compute op besides the dropout
    seeds' draw (allocations and views only)."""
    from tcnkernels.bench.host import stubbed_launches  # (NaN poisoning is off while launches are stubbed)
    allocations = ("aten.new_empty.", "aten.empty_like.", "aten.as_strided.", "aten.detach.")
    with stubbed_launches(), torch.device("meta"):
        block = tcnkernels.TemporalBlock(*widths, 3, stride=1, dilation=2, padding=4, dropout=0.2).train()
        x = torch.empty(2, widths[0], 30, requires_grad=True)
        with LaunchRecorder() as forward, OpRecorder() as forward_ops:
            y = block(x)
        with LaunchRecorder() as backward, OpRecorder() as backward_ops:
            y.backward(torch.empty_like(y))
    assert forward.launches == ["weight_prep_kernel", "causal_conv1d_kernel", "causal_conv1d_kernel"]
    assert [op for op in forward_ops.ops if not op.startswith(allocations)] == ["aten.randint.low"]
    assert backward.launches == ["causal_conv1d_kernel", "causal_conv1d_weight_grad_kernel", "causal_conv1d_kernel",
                                 "causal_conv1d_weight_grad_kernel", "causal_conv1d_kernel",
                                 "weight_grad_finalize_kernel"]
    assert [op for op in backward_ops.ops if not op.startswith(allocations)] == []


def test_forced_triton_block_runs_no_pytorch_convolution(device):
    block = tcnkernels.TemporalBlock(3, 5, 3, stride=1, dilation=2, padding=4).to(device)  # with downsample
    x = torch.randn(2, 3, 30, device=device, requires_grad=True)
    with tcnkernels.use_backend("triton"), OpRecorder() as rec:
        block(x).sum().backward()
    assert not rec.pytorch_convolutions(), rec.ops


def test_forward_backward_never_reads_back_to_the_host():
    """A whole network's forward and backward on meta tensors, launches stubbed: any host read
    (.item(), .tolist(), a data-dependent branch) would raise, so a step can be captured in a CUDA graph."""
    from tcnkernels.bench.host import stubbed_launches
    with stubbed_launches(), torch.device("meta"):
        model = tcnkernels.TemporalConvNet(3, [8, 8, 4], kernel_size=3, dropout=0.1)
        x = torch.empty(2, 3, 100, requires_grad=True)
        model(x).sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in model.parameters())


def _block_pair(api="legacy", widths=(3, 6), dropout=0.0):
    torch.manual_seed(5)
    ref = ReferenceTemporalBlock(*widths, 3, stride=1, dilation=2, padding=4, dropout=dropout, weight_norm_api=api)
    ours = tcnkernels.TemporalBlock(*widths, 3, stride=1, dilation=2, padding=4, dropout=dropout)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


@pytest.mark.parametrize("widths", [(3, 6), (6, 6)], ids=["downsample", "identity-residual"])
def test_our_state_dict_loads_into_the_authors_block(widths):
    """Ours uses the authors' keys (legacy weight norm, net.0/net.4 aliases): it loads into their model strictly."""
    ref, ours = _block_pair("legacy", widths)
    assert set(ours.state_dict()) == set(ref.state_dict())
    theirs = ReferenceTemporalBlock(*widths, 3, stride=1, dilation=2, padding=4, dropout=0.0)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, widths[0], 30)
    torch.testing.assert_close(theirs(x), ours.eval()(x), rtol=1e-5, atol=1e-5)


def test_whole_models_pickle_and_deepcopy(tmp_path):
    import copy
    model = nn.Sequential(tcnkernels.TemporalConvNet(2, [4, 4], kernel_size=3, dropout=0.0), nn.Flatten())
    model[0].network[0].conv1  # noqa: B018 (a weight-normalised conv inside)
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    twin = copy.deepcopy(model)
    x = torch.randn(2, 2, 25)
    for other in (loaded, twin):
        torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)
        assert all(a is not b for a, b in zip(other.parameters(), model.parameters()))


@pytest.mark.parametrize("api", WEIGHT_NORM_APIS)
def test_convert_keeps_the_models_parameter_objects(api):
    """convert() after the optimizer was built: the optimizer's parameters are the network's, so it trains."""
    model = nn.Sequential(ReferenceTemporalConvNet(2, [4, 5], kernel_size=2, dropout=0.0, weight_norm_api=api))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    ids = {id(p) for p in model.parameters()}
    tcnkernels.convert(model)
    assert all(isinstance(b, tcnkernels.TemporalBlock) for b in model[0].network)
    assert {id(p) for p in model.parameters()} == ids
    model(torch.randn(3, 2, 20)).square().mean().backward()
    optimizer.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_convert_a_block_without_weight_norm():
    class PlainBlock(ReferenceTemporalBlock):  # a copy of the reference that drops weight norm
        def __init__(self):
            nn.Module.__init__(self)
            self.conv1, self.conv2 = nn.Conv1d(3, 4, 2, padding=1), nn.Conv1d(4, 4, 2, padding=1)
            self.chomp1, self.dropout1 = nn.Identity(), nn.Dropout(0.0)
            self.net = nn.Sequential(self.conv1, Chomp(1), nn.ReLU(), self.dropout1,
                                     self.conv2, Chomp(1), nn.ReLU(), nn.Dropout(0.0))
            self.downsample, self.relu = nn.Conv1d(3, 4, 1), nn.ReLU()

    class Chomp(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.n = n

        def forward(self, x):
            return x[:, :, :-self.n]

    ref = PlainBlock().eval()
    x = torch.randn(2, 3, 20)
    expected = ref(x)
    ours = tcnkernels.convert(ref)
    assert isinstance(ours.conv1, tcnkernels.CausalConv1d) and ours.conv1.weight is ref.conv1.weight
    torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-5)
