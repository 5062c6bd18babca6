"""Streaming inference: the outputs of Streamer.step over any chunking equal the full forward, with
the C++ step, the Triton step (in the interpreter) and the PyTorch step."""
import pytest
import torch
from torch import nn

import tcnkernels
from tcnkernels.ops.reference import ReferenceTemporalConvNet


def full_forward(model, x):
    with torch.no_grad(), tcnkernels.use_backend("torch"):
        return model(x)


def streamed(stream, x, sizes):
    outputs, t = [], 0
    for n in sizes:
        outputs.append(stream.step(x[:, :, t:t + n]))
        t += n
    assert t == x.shape[2]
    return torch.cat(outputs, dim=2)


def random_chunks(length, generator):
    sizes = []
    while sum(sizes) < length:
        sizes.append(min(int(torch.randint(1, 9, (1,), generator=generator)), length - sum(sizes)))
    return sizes


def tcn(dtype=torch.float32, c_in=3, widths=(6, 6, 5), kernel_size=3):
    torch.manual_seed(0)
    model = tcnkernels.TemporalConvNet(c_in, list(widths), kernel_size=kernel_size, dropout=0.1).to(dtype).eval()
    with torch.no_grad():  # biases away from zero so that every ReLU gates something
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


STEPS = ["cpp", "triton", "torch"]
# The Triton step runs in the interpreter (seconds a test): the fast loop keeps it in the reference
# models' tests, the longer sequences of the others are the slow tier's.
TRITON_SLOW = pytest.param("triton", marks=pytest.mark.slow)
STEPS_TRITON_SLOW = ["cpp", TRITON_SLOW, "torch"]


# the Triton step: fp32/fp16/bf16 only, and one chunking (the interpreter is slow)
CHUNKINGS = [pytest.param(torch.float32, 0, "triton", marks=pytest.mark.slow, id="triton-float32-seed0")] + [
    pytest.param(dtype, seed, backend, id=f"{backend}-{str(dtype)[6:]}-seed{seed}") for backend in ("cpp", "torch")
    for dtype in (torch.float32, torch.float64) for seed in (0, 1, 2)]


@pytest.mark.parametrize("dtype,seed,backend", CHUNKINGS)
def test_random_chunkings_match_the_full_forward(dtype, seed, backend):
    model = tcn(dtype)
    x = torch.randn(2, 3, 70, dtype=dtype)
    generator = torch.Generator().manual_seed(seed)
    stream = tcnkernels.Streamer(model, batch_size=2, backend=backend)
    assert stream.backend == backend
    got = streamed(stream, x, random_chunks(70, generator))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, full_forward(model, x), **tol)


@pytest.mark.parametrize("backend", STEPS_TRITON_SLOW)
def test_one_step_at_a_time_and_any_strides(backend):
    model = tcn()
    x = torch.randn(30, 3, 2).permute(2, 1, 0)  # (2, 3, 30), time the slowest axis
    stream = tcnkernels.Streamer(model, batch_size=2, backend=backend)
    torch.testing.assert_close(streamed(stream, x, [1] * 30), full_forward(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", STEPS)
@pytest.mark.parametrize("api", ["legacy", "parametrizations"])
@pytest.mark.parametrize("converted", [True, False], ids=["converted", "reference"])
def test_reference_models_stream(api, converted, backend):
    torch.manual_seed(0)
    model = ReferenceTemporalConvNet(2, [4, 4], kernel_size=3, dropout=0.2, weight_norm_api=api).eval()
    x = torch.randn(1, 2, 40)
    want = full_forward(model, x)
    if converted:
        model = tcnkernels.convert(model)
    got = streamed(tcnkernels.Streamer(model, batch_size=1, backend=backend), x, [5, 1, 30, 4])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pointwise,backend", [(nn.Tanh, "torch"), (nn.ReLU, "cpp"),
                                               pytest.param(nn.ReLU, "triton", marks=pytest.mark.slow),
                                               (nn.ReLU, "torch")])
def test_sequential_of_convs_and_activations(pointwise, backend):
    torch.manual_seed(0)
    model = nn.Sequential(tcnkernels.CausalConv1d(3, 8, 4, dilation=2), pointwise(), nn.Identity(),
                          tcnkernels.CausalConv1d(8, 2, 1), tcnkernels.TemporalBlock(2, 5, 2, 1, 4, 4, dropout=0.1),
                          tcnkernels.CausalConv1d(5, 4, 3, dilation=3, activation="relu", bias=False)).eval()
    x = torch.randn(3, 3, 25)
    stream = tcnkernels.Streamer(model, batch_size=3)
    assert stream.backend == ("cpp" if pointwise is nn.ReLU else "torch")  # C++: ReLU, Identity, Dropout only
    got = streamed(tcnkernels.Streamer(model, batch_size=3, backend=backend), x, [7, 7, 11])
    torch.testing.assert_close(got, full_forward(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", STEPS_TRITON_SLOW)
def test_partial_reset_restarts_only_those_rows(backend):
    model = tcn()
    x, tail = torch.randn(3, 3, 40), torch.randn(3, 3, 15)
    stream = tcnkernels.Streamer(model, batch_size=3, backend=backend)
    stream.step(x)
    stream.reset([1])
    got = stream.step(tail)
    continued = full_forward(model, torch.cat([x, tail], dim=2))[:, :, 40:]
    fresh = full_forward(model, tail)
    torch.testing.assert_close(got[[0, 2]], continued[[0, 2]], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], fresh[1], rtol=1e-5, atol=1e-5)
    stream.reset(torch.tensor([True, False, True]))
    stream.reset()
    torch.testing.assert_close(stream.step(tail), fresh, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("saver,loader", [("cpp", "cpp"), pytest.param("cpp", "triton", marks=pytest.mark.slow),
                                          pytest.param("triton", "torch", marks=pytest.mark.slow), ("torch", "cpp")])
def test_state_dict_round_trip_across_steps(saver, loader):
    model = tcn()
    x = torch.randn(2, 3, 50)
    stream = tcnkernels.Streamer(model, batch_size=2, backend=saver)
    stream.step(x[:, :, :23])
    state = stream.state_dict()
    assert state["0"].shape == (2, 3, 2 * 1)  # conv1 of block 0: (K-1)*dilation = 2 inputs of 3 channels
    rest = stream.step(x[:, :, 23:])
    other = tcnkernels.Streamer(model, batch_size=2, backend=loader)
    other.load_state_dict(state)
    torch.testing.assert_close(other.step(x[:, :, 23:]), rest, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="keys"):
        other.load_state_dict({"0": state["0"]})
    bad = dict(state, **{"0": state["0"][:1]})
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict(bad)


@pytest.mark.parametrize("backend", STEPS_TRITON_SLOW)
def test_follows_parameter_updates(backend):
    model = tcn()
    x = torch.randn(2, 3, 30)
    stream = tcnkernels.Streamer(model, batch_size=2, backend=backend)
    with torch.no_grad():
        model.network[1].conv2.weight_g.mul_(1.5)  # in place: the version counter moves
    model.network[0].conv1.bias = nn.Parameter(torch.randn(6))  # replaced: a new object
    torch.testing.assert_close(stream.step(x), full_forward(model, x), rtol=1e-5, atol=1e-5)


def test_eval_or_dropout_zero_is_required():
    model = tcn().train()
    with pytest.raises(ValueError, match="training mode"):
        tcnkernels.Streamer(model, batch_size=1)
    model.eval()
    stream = tcnkernels.Streamer(model, batch_size=1)
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        stream.step(torch.randn(1, 3, 4))
    tcnkernels.Streamer(tcnkernels.TemporalConvNet(3, [4], dropout=0.0).train(), batch_size=1)


BAD_MODELS = [
    ("bare-conv1d", nn.Conv1d(3, 4, 3, padding=1), "not causal"),
    ("linear", nn.Linear(3, 4), "cannot stream a Linear"),
    ("strided", nn.Sequential(tcnkernels.CausalConv1d(3, 4, 3)), None),
    ("widths", nn.Sequential(tcnkernels.CausalConv1d(3, 4, 3), tcnkernels.CausalConv1d(5, 4, 3)), "channels"),
]


@pytest.mark.parametrize("model,message", [b[1:] for b in BAD_MODELS], ids=[b[0] for b in BAD_MODELS])
def test_models_it_cannot_stream(model, message):
    if message is None:
        model[0].stride = (2,)
        message = "stride 1"
    with pytest.raises(ValueError, match=message):
        tcnkernels.Streamer(model, batch_size=1)


@pytest.mark.parametrize("x,exc,message", [
    (torch.randn(2, 3, 5), ValueError, "batch_size=1"),
    (torch.randn(1, 4, 5), ValueError, "C_in=3"),
    (torch.randn(1, 3, 0), ValueError, "n >= 1"),
    (torch.randn(3, 5), ValueError, "must be"),
    (torch.randn(1, 3, 5, dtype=torch.float64), TypeError, "float32"),
    ([1.0], TypeError, "torch.Tensor"),
], ids=["batch", "channels", "empty", "2-D", "dtype", "list"])
def test_bad_step_inputs(x, exc, message):
    stream = tcnkernels.Streamer(tcn(), batch_size=1)
    with pytest.raises(exc, match=message):
        stream.step(x)


def test_bad_constructor_and_reset_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        tcnkernels.Streamer(tcn(), batch_size=0)
    with pytest.raises(TypeError, match="nn.Module"):
        tcnkernels.Streamer("tcn", batch_size=1)
    stream = tcnkernels.Streamer(tcn(), batch_size=2)
    with pytest.raises(ValueError, match="in \\[0, 2\\)"):
        stream.reset([2])
    with pytest.raises(ValueError, match="row mask"):
        stream.reset(torch.tensor([True]))


@pytest.mark.parametrize("batch", [67, 130], ids=["row-groups", "gemm"])  # the C++ step's two paths
def test_cpp_step_matches_the_torch_step_at_a_large_batch(batch):
    model = tcn(c_in=4, widths=(16, 16, 16, 8), kernel_size=5)
    model.network[1].conv2.bias = None  # a conv without bias too
    x = torch.randn(batch, 4, 90)
    steps = [tcnkernels.Streamer(model, batch_size=batch, backend=b) for b in ("cpp", "torch")]
    for t0, t1 in ((0, 1), (1, 40), (40, 41), (41, 90)):
        got, want = (s.step(x[:, :, t0:t1]) for s in steps)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_without_the_cpp_helpers_the_torch_step_serves(monkeypatch):
    from tcnkernels import streaming
    monkeypatch.setattr(streaming, "native_ops", lambda: None)
    model = tcn()
    assert tcnkernels.Streamer(model, batch_size=1).backend == "torch"
    with pytest.raises(ValueError, match="not available"):
        tcnkernels.Streamer(model, batch_size=1, backend="cpp")
    with pytest.raises(ValueError, match="fp32 or fp64 CPU"):
        tcnkernels.Streamer(tcn(torch.bfloat16), batch_size=1, backend="cpp")
    with pytest.raises(ValueError, match="backend must be"):
        tcnkernels.Streamer(model, batch_size=1, backend="cuda")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_triton_step_in_half_precision(dtype):
    """The Triton step keeps fp32 rings and accumulators for fp16/bf16 models: within the model
    dtype's rounding of the fp32 forward."""
    model = tcn()
    x = torch.randn(2, 3, 30)
    want = full_forward(model, x)
    got = streamed(tcnkernels.Streamer(model.to(dtype), batch_size=2, backend="triton"), x.to(dtype), [10, 1, 19])
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)


@pytest.mark.slow
def test_triton_step_wide_layers_and_the_device_counter():
    """Layers wider than one register chunk (CP=128: the taps read in chunks), and the step counter
    advanced on the device by the last program to finish."""
    model = tcn(c_in=5, widths=(100, 70), kernel_size=2)
    x = torch.randn(3, 5, 12)
    stream = tcnkernels.Streamer(model, batch_size=3, backend="triton")
    got = streamed(stream, x, [4, 8])
    torch.testing.assert_close(got, full_forward(model, x), rtol=1e-4, atol=1e-4)
    assert int(stream._triton.counter) == 12 and int(stream._triton.done) == 0
