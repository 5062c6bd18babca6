"""Shared test helpers: NaN-guarded inputs and the tolerance rule against an fp64 reference."""
import torch

from tcnkernels.ops.reference import causal_conv1d_reference


def guarded(t, pad=3):
    """A copy of `t` living inside a NaN-filled buffer (a non-contiguous view): a kernel that reads
    past any edge of the tensor pulls NaN into its result."""
    big = torch.full([s + 2 * pad for s in t.shape], float("nan"), dtype=t.dtype, device=t.device)
    view = big[tuple(slice(pad, pad + s) for s in t.shape)]
    view.copy_(t)
    return view


def max_error(actual, expected):
    return (actual.double() - expected.double()).abs().max().item() if actual.numel() else 0.0


def assert_close_to_reference(name, actual, ref64, torch_same_dtype):
    """Kernel error vs fp64 <= 2x PyTorch's own error in the same dtype + a few ulps of the scale."""
    assert actual.shape == ref64.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(ref64.shape)}"
    if actual.numel() == 0:
        return
    finite = torch.isfinite(actual)
    assert finite.all(), f"{name}: non-finite at {tuple(torch.nonzero(~finite)[0].tolist())}"
    scale = ref64.abs().max().item()
    atol = 4 * torch.finfo(actual.dtype).eps * scale + 1e-30
    bound = 2 * max_error(torch_same_dtype, ref64) + atol
    err = (actual.double() - ref64).abs()
    if err.max().item() > bound:
        idx = tuple(torch.nonzero(err > bound)[0].tolist())
        raise AssertionError(f"{name}: error {err.max().item():.3g} > bound {bound:.3g}; first mismatch at "
                             f"{idx}: got {actual[idx].item()!r}, expected {ref64[idx].item()!r}")


def reference_grads(x, weight, bias, dilation, y, dy, dtype):
    """Output-side truth for the backward: the conv's gradients in `dtype`, with the ReLU mask taken
    from the kernel's own output y, so a pre-activation rounding to the other side of 0 cannot make
    the comparison flaky. Returns (dx, dw, db)."""
    g = dy if y is None else dy * (y > 0)
    leaves = [t.detach().to(dtype).requires_grad_() for t in (x, weight, bias) if t is not None]
    b = leaves[2] if bias is not None else None
    out = causal_conv1d_reference(leaves[0], leaves[1], b, dilation)
    grads = torch.autograd.grad(out, leaves, g.to(dtype))
    return grads if bias is not None else (*grads, None)
