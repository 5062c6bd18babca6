"""Parity of the kernels with the reference on the current device: `python -m tcnkernels check`.

The tolerance rule is the one the test suite uses: the kernel's error against an fp64 reference
must be at most 2x the error of PyTorch's own op in the same dtype, plus a few ulps of the scale.
"""
import torch

from ._backend import use_backend
from .functional import causal_conv1d
from .nn import TemporalBlock
from .ops.reference import ReferenceTemporalBlock, causal_conv1d_reference


def error_and_bound(actual, ref64, torch_same_dtype):
    """(max |actual - ref64|, the largest error the tolerance rule allows)."""
    if actual.numel() == 0:
        return 0.0, 0.0
    scale = ref64.abs().max().item()
    torch_err = (torch_same_dtype.double() - ref64).abs().max().item()
    err = (actual.double() - ref64).abs().max().item()
    if not torch.isfinite(actual).all():
        err = float("inf")
    return err, 2 * torch_err + 4 * torch.finfo(actual.dtype).eps * scale + 1e-30


def conv_grads(x, weight, bias, dilation, y_relu, dy, dtype):
    """Gradients of the conv in `dtype` with the ReLU mask taken from a given output y (or none):
    a pre-activation rounded to the other side of 0 then cannot make a comparison flaky."""
    g = dy if y_relu is None else dy * (y_relu > 0)
    leaves = [t.detach().to(dtype).requires_grad_() for t in (x, weight, bias) if t is not None]
    out = causal_conv1d_reference(leaves[0], leaves[1], leaves[2] if bias is not None else None, dilation)
    grads = torch.autograd.grad(out, leaves, g.to(dtype))
    return grads if bias is not None else (*grads, None)


def check_conv(B, c_in, c_out, L, K, dilation, dtype, device, backend="triton"):
    """{name: (error, bound)} for y, dx, dweight and dbias of one fused conv (bias + ReLU)."""
    x = torch.randn(B, c_in, L, device=device, dtype=dtype, requires_grad=True)
    w = (torch.randn(c_out, c_in, K, device=device, dtype=dtype) / (c_in * K) ** 0.5).requires_grad_()
    b = torch.randn(c_out, device=device, dtype=dtype, requires_grad=True)
    with use_backend(backend):
        y = causal_conv1d(x, w, b, dilation, "relu")
    y64 = causal_conv1d_reference(x.double(), w.double(), b.double(), dilation, "relu")
    out = {"y": error_and_bound(y.detach(), y64.detach(),
                                causal_conv1d_reference(x, w, b, dilation, "relu").detach())}
    dy = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, w, b), dy)
    want64 = conv_grads(x, w, b, dilation, y.detach(), dy, torch.float64)
    want = conv_grads(x, w, b, dilation, y.detach(), dy, dtype)
    for name, g, r64, r in zip(("dx", "dweight", "dbias"), got, want64, want):
        out[name] = error_and_bound(g, r64, r)
    return out


def check_block(device, backend="triton"):
    """{name: (error, bound)} of a TemporalBlock against the reference block with the same weights."""
    torch.manual_seed(0)
    ref = ReferenceTemporalBlock(6, 12, 3, 1, 4, 8, dropout=0.0).to(device).double()
    ours = TemporalBlock(6, 12, 3, 1, 4, 8, dropout=0.0).to(device)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 6, 300, device=device)
    with use_backend(backend):
        y = ours(x)
    y64 = ref(x.double()).detach()
    y_torch = ref.float()(x).detach()
    return {"block y": error_and_bound(y.detach(), y64, y_torch)}


def run_checks(device):
    """[(case, {name: (error, bound)})] over a few TCN-like shapes and every dtype."""
    gpu = device.type == "cuda"
    shapes = [(8, 32, 64, 2048, 3, 64), (16, 25, 25, 784, 7, 16)] if gpu else [(2, 5, 17, 130, 3, 8),
                                                                                (2, 25, 25, 100, 7, 4)]
    results = []
    for B, c_in, c_out, L, K, d in shapes:
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            name = f"causal_conv1d B={B} C={c_in}->{c_out} L={L} K={K} d={d} {str(dtype)[6:]}"
            results.append((name, check_conv(B, c_in, c_out, L, K, d, dtype, device)))
    results.append(("TemporalBlock 6->12 K=3 d=4 fp32", check_block(device)))
    return results
