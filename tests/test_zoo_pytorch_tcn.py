"""convert on pytorch-tcn's TCN (the real library, installed from the package registry): its padded
convs and 1x1 convs fused in place, everything else of the library kept. Outputs and gradients equal
the library's own, the fused kernels are the ones that run, the Parameters and state_dict keys (its
padders' buffers included) are the library's, checkpoints load strictly both ways, and its
streaming mode still works."""
import copy

import pytest
import pytorch_tcn
import torch

import tcnkernels
from helpers import LaunchRecorder, OpRecorder, assert_same_as_library
from tcnkernels import zoo

CASES = [  # kernel_size, causal, use_norm, activation, use_skip_connections, input_shape, output_projection, gate
    (3, True, "weight_norm", "relu", False, "NCL", None, False),
    (4, False, "weight_norm", "gelu", True, "NLC", 3, False),
    (2, True, None, "tanh", True, "NCL", None, True),
    (3, True, "batch_norm", "relu", False, "NLC", 2, False),
    (5, False, None, "leaky_relu", False, "NCL", None, False),
    (3, True, "layer_norm", "elu", False, "NCL", None, True),
    (2, True, "weight_norm", "selu", True, "NLC", None, False),
    (3, True, None, "sigmoid", False, "NCL", 2, False),
]


def _tcn(kernel_size, causal, use_norm, activation, skips, input_shape, projection, gate=False):
    torch.manual_seed(kernel_size)
    return pytorch_tcn.TCN(3, [6, 6, 4], kernel_size=kernel_size, dropout=0.0, causal=causal, use_norm=use_norm,
                           activation=activation, use_skip_connections=skips, input_shape=input_shape,
                           output_projection=projection, use_gate=gate)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_convert_fuses_pytorch_tcn_in_place(case):
    ours = _tcn(*case)
    theirs = copy.deepcopy(ours)
    x = torch.randn(2, 3, 21)
    if case[5] == "NLC":
        x = x.transpose(1, 2)
    params = list(ours.parameters())
    keys = list(ours.state_dict())
    ours = tcnkernels.convert(ours, strict=True)  # every conv fused: strict passes
    assert list(ours.parameters()) == params and all(a is b for a, b in zip(ours.parameters(), params))
    assert list(ours.state_dict()) == keys and any(k.endswith("padder.buffer") for k in keys)
    assert not isinstance(ours.network[0], tcnkernels.TemporalBlock), "the library's own block, fused in place"
    # without norm layers or with batch norm the whole block is fused (its activations in the convs,
    # batch norm folded into them in eval mode), with layer norm its convs alone
    block_fused = getattr(ours.network[0], "_tcnkernels_fused", (None,))[0] is zoo.PYTORCH_TCN_BLOCK
    assert block_fused == (case[2] != "layer_norm")
    for model in (ours, theirs):
        model.eval() if case[2] == "batch_norm" else model.train()
    with LaunchRecorder() as rec:
        got = ours(x)
    assert rec.launches.count("causal_conv1d_kernel") >= 6, "the fused convs run"
    want = theirs(x)
    assert_same_as_library(ours, theirs, got, want, lambda: _tcn(*case))


def test_streaming_mode_still_runs_the_library():
    """inference=True is pytorch-tcn's own streaming (its buffers, batch 1): unchanged by convert."""
    model = _tcn(3, True, "weight_norm", "relu", False, "NCL", None).eval()
    reference = copy.deepcopy(model)
    tcnkernels.convert(model)
    x = torch.randn(1, 3, 12)
    with torch.no_grad():
        whole = model(x)
        steps = torch.cat([model(x[..., t:t + 4], inference=True) for t in range(0, 12, 4)], -1)
        ref_steps = torch.cat([reference(x[..., t:t + 4], inference=True) for t in range(0, 12, 4)], -1)
    torch.testing.assert_close(steps, ref_steps)
    torch.testing.assert_close(steps, whole, rtol=1e-5, atol=1e-5)


def test_convert_reports_the_fused_convs(caplog):
    import logging
    model = _tcn(3, True, "weight_norm", "relu", True, "NCL", 3)
    with caplog.at_level(logging.INFO, logger="tcnkernels"):
        tcnkernels.convert(model)
    assert "6 ParametrizedTemporalConv1d -> fused in place" in caplog.text
    assert "Conv1d -> fused in place" in caplog.text  # downsamples, skip and output projections
    with pytest.warns(UserWarning, match="swapped nothing"):
        tcnkernels.convert(model)  # a second call finds nothing left to fuse


@pytest.fixture
def integration():
    from tcnkernels import integrations
    integrations.apply_to_pytorch_tcn()
    integrations.apply_to_pytorch_tcn()  # idempotent
    yield integrations
    integrations.restore_pytorch_tcn()


def test_apply_to_pytorch_tcn_runs_its_models_fused(integration, tmp_path):
    """After the one call, the library builds models whose padded convs run the fused kernels; the
    model and its checkpoint are the library's own, and load with the integration off."""
    model = _tcn(3, True, "weight_norm", "relu", True, "NLC", 3).eval()
    x = torch.randn(2, 21, 3)
    with LaunchRecorder() as rec, torch.no_grad():
        got = model(x)
    assert rec.launches.count("causal_conv1d_kernel") == 6, "conv1 and conv2 of three blocks"
    assert type(model) is pytorch_tcn.TCN
    torch.save(model.state_dict(), tmp_path / "tcn.pt")
    integration.restore_pytorch_tcn()
    plain = _tcn(3, True, "weight_norm", "relu", True, "NLC", 3).eval()
    plain.load_state_dict(torch.load(tmp_path / "tcn.pt"), strict=True)
    with LaunchRecorder() as rec, torch.no_grad():
        want = plain(x)
    assert rec.launches == [], "restored: the library's own code"
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # its streaming mode is the library's, integration or not
        integration.apply_to_pytorch_tcn()
        steps = torch.cat([model(x[:1, t:t + 7], inference=True) for t in range(0, 21, 7)], 1)
    torch.testing.assert_close(steps, got[:1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["cpp", "torch", "triton"])
@pytest.mark.parametrize("converted", [False, True], ids=["as-built", "converted"])
def test_streamer_steps_a_pytorch_tcn_exactly(backend, converted):
    """The Streamer runs pytorch-tcn's TCN (ReLU, weight norm, downsamples) at any batch size, chunk by
    chunk, equal to the library's own forward on the whole sequence."""
    model = _tcn(3, True, "weight_norm", "relu", False, "NCL", None).eval()
    if converted:
        tcnkernels.convert(model)
    x = torch.randn(3, 3, 30)
    with torch.no_grad():
        whole = model(x)
        stream = tcnkernels.Streamer(model, batch_size=3, backend=backend)
        steps = torch.cat([stream.step(x[..., t:t + n]) for t, n in ((0, 1), (1, 7), (8, 22))], -1)
    torch.testing.assert_close(steps, whole, rtol=1e-5, atol=1e-5)


STREAM_CASES = [  # use_norm, activation, skip connections, gate, input_shape, output_projection
    ("batch_norm", "relu", True, False, "NCL", None), ("layer_norm", "gelu", False, True, "NLC", 2),
    (None, "tanh", True, True, "NCL", 3), ("weight_norm", "relu", True, False, "NLC", None)]


@pytest.mark.parametrize("case", STREAM_CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("converted", [False, True], ids=["as-built", "converted"])
def test_streamer_steps_every_pytorch_tcn_option(case, converted):
    """Norms (batch norm in eval mode, layer norm), gates, any activation and skip connections, on
    the PyTorch step: the chunks equal the library's forward on the whole sequence."""
    norm, activation, skips, gate, shape, projection = case
    torch.manual_seed(0)
    model = pytorch_tcn.TCN(3, [6, 6, 4], kernel_size=3, dropout=0.0, use_norm=norm, activation=activation,
                            use_skip_connections=skips, input_shape=shape, output_projection=projection, use_gate=gate)
    x = torch.randn(2, 3, 30) if shape == "NCL" else torch.randn(2, 30, 3)
    model.train()(torch.randn_like(x) + 1)  # batch norm's running statistics move off their start
    model.eval()
    if converted:
        tcnkernels.convert(model)
    time_axis = 2 if shape == "NCL" else 1
    with torch.no_grad():
        whole = model(x)
        stream = tcnkernels.Streamer(model, batch_size=2)
        steps = torch.cat([stream.step(x.narrow(time_axis, a, b - a)) for a, b in ((0, 1), (1, 9), (9, 30))],
                          time_axis)
    assert stream.backend == "torch"
    torch.testing.assert_close(steps, whole, rtol=1e-5, atol=1e-5)
    if norm == "batch_norm":
        model.train()
        with pytest.raises(ValueError, match="batch norm in training mode"):
            stream.step(x.narrow(time_axis, 0, 1))


def test_streamer_refuses_what_it_cannot_run_exactly():
    with pytest.raises(ValueError, match="embeddings"):
        tcnkernels.Streamer(pytorch_tcn.TCN(3, [4], kernel_size=3, embedding_shapes=[(2,)]).eval(), batch_size=1)
    with pytest.raises(ValueError, match="reading future steps"):
        tcnkernels.Streamer(pytorch_tcn.TCN(3, [4], kernel_size=3, causal=False).eval(), batch_size=1)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_streamer_steps_pytorch_tcn_in_its_own_layout(backend):
    """input_shape='NLC' is stepped on [N, n, C] chunks; the output projection and activation run
    after the blocks (the ReLU one in the C++ step, GELU in the PyTorch step)."""
    activation = "relu" if backend == "cpp" else "gelu"
    torch.manual_seed(0)
    model = pytorch_tcn.TCN(3, [6, 4], kernel_size=3, output_projection=2, output_activation=activation,
                            input_shape="NLC").eval()
    tcnkernels.convert(model)
    x = torch.randn(2, 25, 3)
    with torch.no_grad():
        whole = model(x)
        stream = tcnkernels.Streamer(model, batch_size=2)
        steps = torch.cat([stream.step(x[:, t:t + n]) for t, n in ((0, 4), (4, 1), (5, 20))], 1)
    assert stream.backend == backend
    torch.testing.assert_close(steps, whole, rtol=1e-5, atol=1e-5)


def test_pytorch_tcn_blocks_fuse_their_activations():
    """A block without norm layers runs each activation inside its conv's kernel: the only
    activation op left per block is its activation_final after the residual add."""
    model = tcnkernels.convert(_tcn(3, True, "weight_norm", "relu", False, "NCL", None).eval())
    with OpRecorder() as rec, torch.no_grad():
        model(torch.randn(2, 3, 21))
    assert sum(op.startswith("aten.relu") for op in rec.ops) == len(model.network) == 3, rec.ops


def test_batch_norm_is_folded_in_eval_and_a_module_in_training():
    """Eval mode: each batch norm folded into its conv (no batch_norm op runs), outputs and the
    gradients of the convs' and norms' parameters the library's. Training mode: the norm runs as
    its module on batch statistics, and the running averages move as the library's do."""
    ours, theirs = _tcn(3, True, "batch_norm", "relu", False, "NCL", None), _tcn(3, True, "batch_norm", "relu",
                                                                             False, "NCL", None)
    tcnkernels.convert(ours)
    x = torch.randn(4, 3, 21)
    for model in (ours, theirs):
        model.train()
        model(x)  # running statistics move away from their initial values
    for a, b in zip(ours.buffers(), theirs.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    ours.eval(), theirs.eval()
    with OpRecorder() as rec:
        got = ours(x)
    assert not any("batch_norm" in op for op in rec.ops), "folded into the convs"
    assert_same_as_library(ours, theirs, got, theirs(x),
                           lambda: _tcn(3, True, "batch_norm", "relu", False, "NCL", None))
