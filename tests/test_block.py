"""Interpreter tier: the fused TemporalBlock (weight kernel, two conv kernels, five backward launches,
six with conv2's output recomputed) against the PyTorch reference of the block, outputs and every
gradient, g and v included."""
import pytest
import torch

import tcnkernels
from helpers import assert_close_to_reference, guarded
from tcnkernels.ops.reference import temporal_block_reference

# (B, C_in, C_out, L, K, dilation): awkward sizes first; C_in != C_out has a downsample.
CASES = [
    (2, 3, 5, 1, 3, 1),
    (2, 5, 5, 7, 2, 8),
    (1, 17, 17, 65, 3, 4),
    (2, 4, 33, 130, 5, 2),
    (2, 33, 6, 63, 2, 64),
    (1, 8, 8, 64, 1, 1),
    (2, 20, 70, 96, 3, 16),
]
IDS = [f"B{b}-ci{ci}-co{co}-L{L}-K{k}-d{d}" for b, ci, co, L, k, d in CASES]
NAMES = ("x", "v1", "g1", "b1", "v2", "g2", "b2", "wd", "bd")


def make_block_inputs(case, dtype, device, requires_grad=True):
    B, c_in, c_out, L, K, _ = case
    torch.manual_seed(1)
    tensors = [torch.randn(B, c_in, L), torch.randn(c_out, c_in, K) / (c_in * K) ** 0.5, torch.rand(c_out, 1, 1) + 0.5,
               torch.randn(c_out) * 0.1, torch.randn(c_out, c_out, K) / (c_out * K) ** 0.5,
               torch.rand(c_out, 1, 1) + 0.5, torch.randn(c_out) * 0.1]
    tensors += [torch.randn(c_out, c_in, 1) / c_in ** 0.5, torch.randn(c_out) * 0.1] if c_in != c_out else [None, None]
    return [None if t is None else guarded(t.to(device=device, dtype=dtype)).requires_grad_(requires_grad)
            for t in tensors]


def reference(inputs, dilation, dtype, p=0.0, seeds=None):
    x, v1, g1, b1, v2, g2, b2, wd, bd = [None if t is None else t.detach().to(dtype).requires_grad_() for t in inputs]
    leaves = [x, v1, g1, b1, v2, g2, b2, wd, bd]
    y = temporal_block_reference(x, torch._weight_norm(v1, g1, 0), b1, torch._weight_norm(v2, g2, 0), b2, wd, bd,
                                 dilation, p, "element", seeds)
    return y, leaves


def fused(inputs, dilation, p=0.0, seeds=None, mode="element", recompute=True):
    with tcnkernels.use_backend("triton"):
        return tcnkernels.functional.temporal_block(*inputs, dilation=dilation, dropout=(p, p), dropout_mode=mode,
                                                    training=seeds is not None, seeds=seeds, recompute=recompute)


def check_block(case, dtype, device, p=0.0, seeds=None, recompute=True):
    inputs = make_block_inputs(case, dtype, device)
    dilation = case[5]
    y = fused(inputs, dilation, p, seeds, recompute=recompute)
    y64, leaves64 = reference(inputs, dilation, torch.float64, p, seeds)
    y_same, leaves_same = reference(inputs, dilation, dtype, p, seeds)
    assert_close_to_reference("y", y.detach(), y64.detach(), y_same.detach())
    dy = torch.randn_like(y)
    present = [i for i, t in enumerate(inputs) if t is not None]
    got = torch.autograd.grad(y, [inputs[i] for i in present], dy)
    want64 = torch.autograd.grad(y64, [leaves64[i] for i in present], dy.double())
    want = torch.autograd.grad(y_same, [leaves_same[i] for i in present], dy)
    for i, g, r64, r in zip(present, got, want64, want):
        assert g.dtype == inputs[i].dtype and g.shape == inputs[i].shape, NAMES[i]
        assert_close_to_reference(f"d{NAMES[i]}", g, r64, r)


@pytest.mark.parametrize("case", [pytest.param(c, id=i, marks=[pytest.mark.slow] if c[2] == 70 else [])
                                  for c, i in zip(CASES, IDS)])
def test_fp32_block_matches_reference(case, device):
    check_block(case, torch.float32, device)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("case", [CASES[2], pytest.param(CASES[3], marks=pytest.mark.slow)], ids=[IDS[2], IDS[3]])
def test_low_precision_block_matches_reference(case, dtype, device):
    check_block(case, dtype, device)


@pytest.mark.parametrize("case", [CASES[1], pytest.param(CASES[3], marks=pytest.mark.slow),
                                  pytest.param(CASES[6], marks=pytest.mark.slow)], ids=[IDS[1], IDS[3], IDS[6]])
def test_block_with_dropout_matches_reference_on_the_same_seeds(case, device):
    check_block(case, torch.float32, device, p=0.3, seeds=torch.tensor([5, 6], device=device))


@pytest.mark.parametrize("p", [0.0, 0.3], ids=["no-dropout", "dropout"])
@pytest.mark.parametrize("case", [CASES[1], CASES[3]], ids=[IDS[1], IDS[3]])
def test_block_keeping_conv2_output_matches_reference(case, p, device):
    """recompute=False: conv2's output saved in the forward rather than recomputed in the backward."""
    check_block(case, torch.float32, device, p=p, seeds=torch.tensor([5, 6], device=device) if p else None,
                recompute=False)


@pytest.mark.parametrize("mode", ["element", "channel"])
def test_dropout_modes_match_the_reference(mode, device):
    inputs = make_block_inputs(CASES[3], torch.float32, device, requires_grad=False)
    seeds = torch.tensor([3, 4], device=device)
    y = fused(inputs, CASES[3][5], 0.5, seeds, mode)
    x, v1, g1, b1, v2, g2, b2, wd, bd = inputs
    want = temporal_block_reference(x, torch._weight_norm(v1, g1, 0), b1, torch._weight_norm(v2, g2, 0), b2, wd, bd,
                                     CASES[3][5], 0.5, mode, seeds)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fast", [pytest.param(True, id="fast-mode"),
                                  pytest.param(False, id="full", marks=pytest.mark.slow)])
def test_fp64_gradcheck_with_dropout(fast, device):
    """fast_mode: the Jacobian along random directions (the fast loop's); full: every element."""
    inputs = make_block_inputs((2, 3, 4, 9, 2, 2), torch.float64, device)
    seeds = torch.tensor([21, 22], device=device)

    def fn(*args):
        return fused(list(args), 2, 0.4, seeds)

    assert torch.autograd.gradcheck(fn, tuple(inputs), eps=1e-6, atol=1e-6, fast_mode=fast)


def test_create_graph_second_derivatives(device):
    """backward(create_graph=True) runs through the PyTorch reference on the same seeds: first and
    second derivatives equal the reference's own."""
    inputs = make_block_inputs((1, 2, 2, 6, 2, 1), torch.float64, device)[:7]  # identity residual
    seeds = torch.tensor([1, 2], device=device)
    x, v1, g1, b1, v2, g2, b2 = inputs
    y_ref = temporal_block_reference(x, torch._weight_norm(v1, g1, 0), b1, torch._weight_norm(v2, g2, 0), b2, None,
                                     None, 1, 0.3, "element", seeds)
    y = fused(inputs + [None, None], 1, 0.3, seeds)
    dy = torch.randn_like(y)
    results = []
    for out in (y, y_ref):
        first = torch.autograd.grad(out, inputs, dy, create_graph=True)
        probe = sum((f * torch.cos(torch.arange(f.numel(), dtype=f.dtype).view(f.shape))).sum() for f in first)
        results.append((first, torch.autograd.grad(probe, inputs, allow_unused=True)))
    for got, want in zip(results[0][0] + results[0][1], results[1][0] + results[1][1]):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_autocast_runs_bf16_with_fp32_parameter_gradients(device):
    inputs = make_block_inputs(CASES[3], torch.float32, device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        y = fused(inputs, CASES[3][5])
    assert y.dtype == torch.bfloat16
    y64, _ = reference(inputs, CASES[3][5], torch.float64)
    torch.testing.assert_close(y.double(), y64.detach(), rtol=5e-2, atol=5e-2)
    grads = torch.autograd.grad(y.float().sum(), inputs[1:7])
    assert all(g.dtype == torch.float32 for g in grads)


@pytest.mark.parametrize("shape", [(0, 3, 10), (2, 3, 0)], ids=["B0", "L0"])
def test_empty_block_inputs(shape, device):
    block = tcnkernels.TemporalBlock(3, 4, 2, stride=1, dilation=1, padding=1, dropout=0.0).to(device)
    x = torch.randn(*shape, device=device, requires_grad=True)
    with tcnkernels.use_backend("triton"):
        y = block(x)
    assert y.shape == (shape[0], 4, shape[2])
    y.sum().backward()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in block.parameters())
    assert x.grad.shape == x.shape


BAD = [
    ("v2-shape", dict(v2=torch.randn(4, 3, 2)), ValueError, "conv2's weight must have shape"),
    ("g-shape", dict(g1=torch.randn(4)), ValueError, "must be 3-D"),
    ("no-downsample", dict(wd=None, bd=None), ValueError, "needs a 1x1 downsample"),
    ("wd-shape", dict(wd=torch.randn(4, 3, 2)), ValueError, "downsample weight must have shape"),
    ("dropout", dict(dropout=(1.5, 0.0)), ValueError, "dropout must be a probability"),
    ("mode", dict(dropout_mode="time"), ValueError, "dropout_mode must be one of"),
    ("seeds", dict(seeds=torch.tensor([1.0, 2.0])), ValueError, "seeds must be an int64 tensor"),
    ("x-dtype", dict(x=torch.randn(2, 3, 10, dtype=torch.float64)), TypeError, "has dtype"),
    ("recompute", dict(recompute="yes"), TypeError, "recompute must be a bool"),
]


@pytest.mark.parametrize("over,exc,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_block_bad_input(over, exc, message, monkeypatch):
    from tcnkernels.ops import launching
    monkeypatch.setattr(launching, "launch", lambda *a: (_ for _ in ()).throw(AssertionError("a kernel ran")))
    args = dict(x=torch.randn(2, 3, 10), v1=torch.randn(4, 3, 2), g1=torch.rand(4, 1, 1), b1=torch.randn(4),
                v2=torch.randn(4, 4, 2), g2=torch.rand(4, 1, 1), b2=torch.randn(4), wd=torch.randn(4, 3, 1),
                bd=torch.randn(4))
    args.update(over)
    with pytest.raises(exc, match=message), tcnkernels.use_backend("triton"):
        tcnkernels.functional.temporal_block(**args)
