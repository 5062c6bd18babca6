"""GPU tier: parity with compiled kernels at realistic sizes. Skipped unless CUDA is present and the
suite runs with TCNKERNELS_TEST_DEVICE=cuda (see conftest.py); run it whenever a GPU is lent."""
import pytest
import torch

import tcnkernels
from helpers import assert_close_to_reference, check_conv_parity
from tcnkernels.ops.reference import causal_conv1d_reference

pytestmark = pytest.mark.gpu


@pytest.fixture
def tf32(request):
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = request.param
    yield request.param
    torch.backends.cudnn.allow_tf32 = previous


def _parity(B, C, L, K, dilation, dtype, relu=True):
    x = torch.randn(B, C, L, device="cuda", dtype=dtype, requires_grad=True)
    w = (torch.randn(C, C, K, device="cuda", dtype=dtype) / (C * K) ** 0.5).requires_grad_()
    b = torch.randn(C, device="cuda", dtype=dtype, requires_grad=True)
    check_conv_parity(x, w, b, dilation, "relu" if relu else None)


@pytest.mark.parametrize("tf32", [True, False], indirect=True, ids=["tf32", "ieee"])
@pytest.mark.parametrize("dilation", [1, 16, 512])
def test_fp32_parity_realistic(tf32, dilation):
    _parity(32, 128, 4096, 3, dilation, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("dilation", [1, 512])
def test_half_parity_realistic(dtype, dilation):
    _parity(32, 128, 4096, 3, dilation, dtype)


def test_small_channel_paper_shape():
    _parity(64, 25, 784, 7, 64, torch.float32)


def test_offsets_past_2_31_elements():
    """A (64, 512, 65537) bf16 input has more than 2^31 elements; the last batch row must be right."""
    B, C, L = 64, 512, 65537
    assert B * C * L > 2**31
    x = torch.randn(B, C, L, device="cuda", dtype=torch.bfloat16)
    w = (torch.randn(8, C, 2, device="cuda", dtype=torch.bfloat16) / C**0.5)
    with tcnkernels.use_backend("triton"):
        y = tcnkernels.causal_conv1d(x, w, dilation=4)
    tail = causal_conv1d_reference(x[-2:].double(), w.double(), None, 4)
    assert_close_to_reference("y[-2:]", y[-2:], tail, causal_conv1d_reference(x[-2:], w, None, 4))


def test_training_step_captures_in_a_cuda_graph():
    """Forward and backward never read back to the host: a training step captures and replays."""
    torch.manual_seed(0)
    model = tcnkernels.TemporalConvNet(4, [16, 16], kernel_size=3, dropout=0.0).cuda()
    x = torch.randn(8, 4, 256, device="cuda")
    static_x = x.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # Triton compiles and the allocator warms up outside the capture
            model(static_x).square().mean().backward()
    torch.cuda.current_stream().wait_stream(side)
    model.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model(static_x).square().mean().backward()
    graph.replay()
    torch.cuda.synchronize()
    replayed = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    model(x).square().mean().backward()
    for got, want in zip(replayed, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want)


def test_streaming_triton_step_matches_the_full_forward_and_captures_in_a_cuda_graph():
    """The Triton streaming step of the adding-problem network at batch 64: chunked steps equal the
    full forward, and one step replays from a CUDA graph (no host synchronisation inside)."""
    torch.manual_seed(0)
    model = tcnkernels.TemporalConvNet(2, [24] * 8, kernel_size=8, dropout=0.0).cuda().eval()
    x = torch.randn(64, 2, 300, device="cuda")
    stream = tcnkernels.Streamer(model, batch_size=64)
    assert stream.backend == "triton"
    got = torch.cat([stream.step(x[:, :, :100]), stream.step(x[:, :, 100:101]), stream.step(x[:, :, 101:])], dim=2)
    with torch.no_grad():
        want = model(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    stream.reset()
    x_t = torch.zeros(64, 2, 1, device="cuda")
    graph = torch.cuda.CUDAGraph()
    stream.step(x_t)  # warm (compiles) outside the capture
    stream.reset()
    with torch.cuda.graph(graph):
        y_t = stream.step(x_t)
    stream.reset()
    outputs = []
    for t in range(300):
        x_t.copy_(x[:, :, t:t + 1])
        graph.replay()
        outputs.append(y_t.clone())
    torch.testing.assert_close(torch.cat(outputs, dim=2), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tf32", [False], indirect=True, ids=["ieee"])
def test_torch_export_on_cuda_keeps_the_kernels_and_decomposes(tf32):
    """On CUDA the exported program runs tcnkernels' registered ops (the fast program), at another
    batch and length than traced; decomposed, it gives the same outputs from ATen ops alone (IEEE
    fp32 on both sides, so that the two agree to fp32 rounding)."""
    from tcnkernels import export
    torch.manual_seed(0)
    model = tcnkernels.TemporalConvNet(4, [16, 16], kernel_size=3, dropout=0.0).cuda().eval()
    x, other = torch.randn(2, 4, 64, device="cuda"), torch.randn(5, 4, 300, device="cuda")
    with torch.no_grad():
        program = torch.export.export(model, (x,), dynamic_shapes=export.dynamic_shapes(model, (x,)))
        ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
        assert any(op.startswith("tcnkernels.") for op in ops), ops
        want = model(other)
        torch.testing.assert_close(program.module()(other), want)
        plain = export.decompose(program)
        assert not any(str(n.target).startswith("tcnkernels.") for n in plain.graph.nodes)
        torch.testing.assert_close(plain.module()(other), want, rtol=1e-4, atol=1e-4)
