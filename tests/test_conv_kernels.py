"""Interpreter tier: the real Triton kernels (forward, input and weight gradients) against the reference."""
import pytest
import torch

import tcnkernels
from helpers import LaunchRecorder, OpRecorder, check_conv_parity, guarded, reference_grads
from tcnkernels.ops import conv, launching
from tcnkernels.ops.reference import causal_conv1d_reference

# (B, C_in, C_out, L, K, dilation, bias, relu): awkward sizes first. Tiles are 64 steps and up to 64
# channels / 64 reduction columns (C_in*K), so 63/65/130/257 cross tile edges, 33*7 and 70 make
# several channel blocks, and dilation*(K-1) reaches beyond L and beyond a tile.
CASES = [
    (2, 1, 1, 1, 1, 1, True, False),
    (2, 3, 5, 1, 3, 2, True, True),
    (3, 5, 3, 7, 2, 8, False, True),
    (2, 17, 33, 63, 3, 1, True, True),
    (2, 33, 17, 65, 5, 2, False, False),
    (2, 3, 33, 130, 7, 8, True, True),
    (1, 33, 33, 257, 2, 64, True, True),
    (2, 5, 1, 257, 7, 64, False, True),
    (2, 1, 17, 130, 5, 1, True, False),
    (2, 17, 5, 65, 1, 64, True, True),
    (2, 5, 70, 65, 3, 2, True, True),
    (1, 33, 5, 130, 7, 2, False, False),
    # Aligned shapes: L, dilation and strides multiples of 4 and 8 elements, so the kernels take
    # their 16-byte (ALIGN = 4 fp32, 8 bf16) paths; 128 channels for the wide 128-row tiles.
    (2, 8, 24, 128, 3, 8, True, True),
    (2, 16, 16, 64, 5, 4, True, False),
    (1, 20, 128, 96, 3, 16, True, True),
    (2, 8, 16, 64, 1, 1, True, False),  # a 1x1 conv (the downsample) on aligned rows
]
CASE_IDS = [f"B{c[0]}-ci{c[1]}-co{c[2]}-L{c[3]}-K{c[4]}-d{c[5]}-{'b' if c[6] else 'nob'}-{'relu' if c[7] else 'lin'}"
            for c in CASES]

def _random_cases(n, seed=2024):
    """Shapes drawn once from a fixed seed: beyond the hand-picked table, the same every run."""
    g = torch.Generator().manual_seed(seed)
    draw = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    return [(draw(1, 3), draw(1, 40), draw(1, 80), draw(1, 300), draw(1, 8), draw(1, 40), bool(draw(0, 1)),
             bool(draw(0, 1))) for _ in range(n)]


RANDOM_CASES = _random_cases(6)
LOW_PRECISION_CASES = [CASES[i] for i in (1, 3, 5, 6, 10, 12, 13)]
LOW_PRECISION_IDS = [CASE_IDS[i] for i in (1, 3, 5, 6, 10, 12, 13)]


def make_inputs(case, dtype, device, requires_grad=True):
    B, c_in, c_out, L, K, dilation, has_bias, relu = case
    x = guarded(torch.randn(B, c_in, L, dtype=dtype, device=device))
    w = guarded(torch.randn(c_out, c_in, K, dtype=dtype, device=device) / (c_in * K) ** 0.5)
    b = guarded(torch.randn(c_out, dtype=dtype, device=device)) if has_bias else None
    for t in (x, w, b):
        if t is not None:
            t.requires_grad_(requires_grad)
    return x, w, b, dilation, "relu" if relu else None


def check_case(case, dtype, device):
    x, w, b, dilation, act = make_inputs(case, dtype, device)
    dy = guarded(torch.randn(x.shape[0], w.shape[0], x.shape[2], dtype=dtype, device=device))
    check_conv_parity(x, w, b, dilation, act, dy)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_fp32_matches_reference(case, device):
    check_case(case, torch.float32, device)


@pytest.mark.parametrize("case", RANDOM_CASES, ids=[f"random{i}" for i in range(len(RANDOM_CASES))])
def test_random_shapes_match_reference(case, device):
    check_case(case, torch.float32, device)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("case", LOW_PRECISION_CASES, ids=LOW_PRECISION_IDS)
def test_low_precision_matches_reference(case, dtype, device):
    check_case(case, dtype, device)


# Small enough for numerical Jacobians: (B, C_in, C_out, L, K, dilation, bias, relu).
GRADCHECK_CASES = [(2, 3, 4, 9, 3, 2, True, True), (1, 2, 3, 5, 2, 8, False, False),
                   (2, 3, 2, 8, 1, 4, True, True), (1, 2, 18, 7, 4, 1, True, False)]


# fast_mode checks the Jacobian along random directions (two evaluations per input, not one per
# element): the fast loop's; the full Jacobian is the slow tier's.
GRADCHECK_MODES = [pytest.param(True, id="fast-mode"), pytest.param(False, id="full", marks=pytest.mark.slow)]


@pytest.mark.parametrize("fast", GRADCHECK_MODES)
@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=lambda c: f"ci{c[1]}-co{c[2]}-L{c[3]}-K{c[4]}-d{c[5]}")
def test_fp64_gradcheck(case, fast, device):
    x, w, b, dilation, act = make_inputs(case, torch.float64, device)
    inputs = (x, w, b) if b is not None else (x, w)

    def fn(*args):
        return tcnkernels.causal_conv1d(args[0], args[1], args[2] if len(args) > 2 else None, dilation, act)

    with tcnkernels.use_backend("triton"):
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, fast_mode=fast)


def test_channel_last_and_sliced_inputs(device):
    """x as a transposed (B, L, C) tensor sliced every other step; weight permuted from (K, C_in, C_out)."""
    x_btc = torch.randn(2, 200, 6, device=device)
    x = x_btc.transpose(1, 2)[:, 1:, ::2].requires_grad_()  # (2, 5, 100), strides (1200, 1, 12)
    w = torch.randn(3, 5, 9, device=device).permute(2, 1, 0).requires_grad_()  # (9, 5, 3) non-contiguous
    b = torch.randn(18, device=device)[::2].requires_grad_()
    assert not x.is_contiguous() and not w.is_contiguous() and not b.is_contiguous()
    with tcnkernels.use_backend("triton"):
        y = tcnkernels.causal_conv1d(x, w, b, dilation=3, activation="relu")
    y_ref = causal_conv1d_reference(x, w, b, 3, "relu")
    torch.testing.assert_close(y, y_ref)
    dy = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, w, b), dy)
    want = reference_grads(x, w, b, 3, y.detach(), dy, torch.float32)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", [CASES[5], CASES[11]], ids=["relu", "linear"])
@pytest.mark.parametrize("grad_kind", ["expanded", "transposed"])
def test_non_contiguous_output_gradients(grad_kind, case, device):
    x, w, b, dilation, act = make_inputs(case, torch.float32, device)
    with tcnkernels.use_backend("triton"):
        y = tcnkernels.causal_conv1d(x, w, b, dilation, act)
    if grad_kind == "expanded":
        dy = torch.ones(1, 1, 1, device=device).expand_as(y)  # what y.sum().backward() sends: stride 0
    else:
        dy = torch.randn(y.shape[2], y.shape[1], y.shape[0], device=device).permute(2, 1, 0)
    assert not dy.is_contiguous()
    leaves = (x, w) if b is None else (x, w, b)
    got = torch.autograd.grad(y, leaves, dy)
    want = reference_grads(x, w, b, dilation, y.detach() if act else None, dy.contiguous(), torch.float32)
    for name, g, r in zip(("dx", "dweight", "dbias"), got, want):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


def test_sum_backward_matches_reference(device):
    x, w, b, dilation, act = make_inputs(CASES[3], torch.float32, device)
    with tcnkernels.use_backend("triton"):
        tcnkernels.causal_conv1d(x, w, b, dilation, act).sum().backward()
    x2, w2, b2 = (t.detach().clone().requires_grad_() for t in (x, w, b))
    causal_conv1d_reference(x2, w2, b2, dilation, act).sum().backward()
    for got, want in ((x.grad, x2.grad), (w.grad, w2.grad), (b.grad, b2.grad)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_weight_gradients_are_bitwise_deterministic(device):
    # B * time blocks = 4 * 5 = 20 items over several chunks: the partial-sum path is exercised.
    x, w, b, dilation, act = make_inputs((4, 5, 17, 300, 3, 4, True, True), torch.float32, device)
    dy = torch.randn(4, 17, 300, device=device)
    runs = []
    for _ in range(2):
        with tcnkernels.use_backend("triton"):
            y = tcnkernels.causal_conv1d(x, w, b, dilation, act)
        runs.append(torch.autograd.grad(y, (w, b), dy))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_input_gradient_skipped_when_not_needed(device, monkeypatch):
    calls = []
    original = conv.conv_input_grad
    monkeypatch.setattr(conv, "conv_input_grad", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    x, w, b, dilation, act = make_inputs(CASES[3], torch.float32, device)
    x.requires_grad_(False)
    with tcnkernels.use_backend("triton"):
        tcnkernels.causal_conv1d(x, w, b, dilation, act).sum().backward()
    assert calls == [] and w.grad is not None and b.grad is not None
    x.requires_grad_(True)
    with tcnkernels.use_backend("triton"):
        tcnkernels.causal_conv1d(x, w, b, dilation, act).sum().backward()
    assert calls == [1] and x.grad is not None


@pytest.mark.parametrize("shape", [(0, 3, 10), (2, 3, 0)], ids=["B0", "L0"])
def test_empty_inputs(shape, device):
    x = torch.randn(*shape, device=device, requires_grad=True)
    w = torch.randn(4, 3, 2, device=device, requires_grad=True)
    b = torch.randn(4, device=device, requires_grad=True)
    with tcnkernels.use_backend("triton"):
        y = tcnkernels.causal_conv1d(x, w, b, dilation=2)
    assert y.shape == (shape[0], 4, shape[2])
    y.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))
    assert x.grad.shape == x.shape


def test_unbatched_input(device):
    x = torch.randn(3, 40, device=device)
    w = torch.randn(5, 3, 3, device=device)
    with tcnkernels.use_backend("triton"):
        y = tcnkernels.causal_conv1d(x, w, dilation=2)
    torch.testing.assert_close(y, causal_conv1d_reference(x[None], w, None, 2)[0])


def test_outputs_are_poisoned_before_kernels_write_them(device):
    """The poisoning the other tests rely on is on: fresh kernel buffers start as NaN."""
    x = torch.randn(1, 2, 3, device=device)
    assert torch.isnan(launching.new_output(x, (4, 5))).all()


def test_forced_triton_runs_no_pytorch_convolution(device):
    x, w, b, dilation, act = make_inputs(CASES[5], torch.float32, device)
    with tcnkernels.use_backend("triton"), OpRecorder() as rec, LaunchRecorder() as launched:
        tcnkernels.causal_conv1d(x, w, b, dilation, act).sum().backward()
    assert not rec.pytorch_convolutions(), rec.ops
    # forward: weight layout + conv; backward: weight grad + its finalize + input grad
    assert launched.launches == ["weight_prep_kernel", "causal_conv1d_kernel", "causal_conv1d_weight_grad_kernel",
                                 "weight_grad_finalize_kernel", "causal_conv1d_kernel"]


@pytest.mark.slow
@pytest.mark.parametrize("case", [CASES[1], CASES[5], CASES[8]], ids=[CASE_IDS[i] for i in (1, 5, 8)])
def test_opcheck(case, device):
    x, w, b, dilation, act = make_inputs(case, torch.float32, device)
    activation = 1 if act == "relu" else 0
    torch.library.opcheck(torch.ops.tcnkernels.conv1d, (x, w, b, None, dilation, 1, 0, activation, 0.0, 0.0))
    y = torch.ops.tcnkernels.conv1d(x, w, b, None, dilation, 1, 0, activation, 0.0, 0.0)[0].detach()
    dy = torch.randn_like(y)
    y_gate = y if activation else None
    torch.library.opcheck(torch.ops.tcnkernels.conv1d_input_grad, (dy, w.detach(), dilation, 1, 0))
    for write_g in (0, activation):
        torch.library.opcheck(torch.ops.tcnkernels.conv1d_weight_grad,
                              (dy, x.detach(), y_gate, w.detach(), dilation, 1, 0, activation, 0.0, 0.0, write_g))


def test_frozen_weight_gates_the_input_gradient(device):
    """Weights that need no gradient: no weight-gradient kernel, the ReLU gate applied on its own."""
    x, w, b, dilation, act = make_inputs(CASES[5], torch.float32, device)
    w.requires_grad_(False)
    b.requires_grad_(False)
    with tcnkernels.use_backend("triton"), LaunchRecorder() as launched:
        y = tcnkernels.causal_conv1d(x, w, b, dilation, act)
        dy = torch.randn_like(y)
        (dx,) = torch.autograd.grad(y, (x,), dy)
    assert "causal_conv1d_weight_grad_kernel" not in launched.launches
    want = reference_grads(x, w, b, dilation, y.detach(), dy, torch.float32)[0]
    torch.testing.assert_close(dx, want, rtol=1e-4, atol=1e-4)


def test_int64_row_offsets(device, monkeypatch):
    """The variant with int64 in-row offsets (picked when a row spans 2^31 elements: too big for
    CI) computes the same thing; the GPU tier runs a real input past 2^31 elements."""
    from tcnkernels.ops import conv_launch
    launching.clear_plans()
    monkeypatch.setattr(conv_launch, "needs_int64", lambda *rows: True)
    try:
        check_case(CASES[5], torch.float32, device)
    finally:
        launching.clear_plans()


@pytest.mark.slow
def test_create_graph_gives_second_derivatives(device):
    """backward(create_graph=True) runs a differentiable backward: gradgradcheck in fp64."""
    x, w, b, dilation, act = make_inputs(GRADCHECK_CASES[0], torch.float64, device)

    def fn(*args):
        return tcnkernels.causal_conv1d(*args, dilation, act)

    with tcnkernels.use_backend("triton"):
        assert torch.autograd.gradgradcheck(fn, (x, w, b), eps=1e-6, atol=1e-6)
