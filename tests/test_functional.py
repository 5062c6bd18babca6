"""Input checking and backend choice of the public `causal_conv1d`."""
import pytest
import torch

import tcnkernels
from tcnkernels import _backend
from tcnkernels.ops import launching
from tcnkernels.ops import triton as triton_kernels
from tcnkernels.ops.reference import causal_conv1d_reference


def _args(**over):
    args = dict(x=torch.randn(2, 3, 10), weight=torch.randn(4, 3, 2), bias=torch.randn(4), dilation=1,
                activation=None)
    args.update(over)
    return args


BAD_INPUTS = [
    ("x-not-tensor", dict(x=[[1.0]]), TypeError, "x must be a torch.Tensor"),
    ("x-rank-4", dict(x=torch.randn(2, 3, 10, 1)), ValueError, "x must be 2-D or 3-D"),
    ("x-rank-1", dict(x=torch.randn(10)), ValueError, "x must be 2-D or 3-D"),
    ("weight-rank-2", dict(weight=torch.randn(4, 3)), ValueError, "weight must be 3-D"),
    ("channel-mismatch", dict(x=torch.randn(2, 5, 10)), ValueError, "expects C_in=3"),
    ("K-zero", dict(weight=torch.randn(4, 3, 0)), ValueError, "every size >= 1"),
    ("dilation-zero", dict(dilation=0), ValueError, "dilation must be >= 1"),
    ("dilation-float", dict(dilation=2.0), TypeError, "dilation must be an int"),
    ("dilation-bool", dict(dilation=True), TypeError, "dilation must be an int"),
    ("int-dtype", dict(x=torch.ones(2, 3, 10, dtype=torch.int64)), TypeError, "x must be float16"),
    ("complex-dtype", dict(weight=torch.randn(4, 3, 2, dtype=torch.complex64)), TypeError,
     "weight must be float16"),
    ("dtype-mismatch", dict(weight=torch.randn(4, 3, 2, dtype=torch.float64)), TypeError,
     "weight has dtype torch.float64 but x has torch.float32"),
    ("bias-dtype-mismatch", dict(bias=torch.randn(4, dtype=torch.float16)), TypeError, "bias has dtype"),
    ("bias-shape", dict(bias=torch.randn(5)), ValueError, "bias must have shape (4,)"),
    ("bias-rank", dict(bias=torch.randn(4, 1)), ValueError, "bias must be 1-D"),
    ("device-mismatch", dict(bias=torch.randn(4, device="meta")), ValueError, "bias is on meta"),
    ("activation", dict(activation="swish"), ValueError, "activation must be None, one of 'relu'"),
]


@pytest.mark.parametrize("over,exc,message", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_raises_before_any_kernel(over, exc, message, monkeypatch):
    def no_kernel(*args):
        raise AssertionError("a kernel ran on bad input")

    monkeypatch.setattr(launching, "launch", no_kernel)
    with pytest.raises(exc, match=message.replace("(", r"\(").replace(")", r"\)")):
        with tcnkernels.use_backend("triton"):
            tcnkernels.causal_conv1d(**_args(**over))


def test_unknown_backend_names():
    with pytest.raises(ValueError, match="backend must be one of auto, triton, torch"):
        with tcnkernels.use_backend("cudnn"):
            pass


def test_unknown_backend_in_environment(monkeypatch):
    monkeypatch.setenv("TCNKERNELS_BACKEND", "fast")
    with pytest.raises(ValueError, match=r"\$TCNKERNELS_BACKEND must be one of"):
        tcnkernels.causal_conv1d(**_args())


def test_backend_precedence(monkeypatch, device):
    assert _backend.select_backend(device) == "triton"  # auto: interpreter on CPU, compiled on CUDA
    monkeypatch.setenv("TCNKERNELS_BACKEND", "torch")
    assert _backend.select_backend(device) == "torch"
    with tcnkernels.use_backend("triton"):
        assert _backend.select_backend(device) == "triton"
        with tcnkernels.use_backend("auto"):
            assert _backend.select_backend(device) == "triton"
    assert _backend.select_backend(device) == "torch"


def test_cpu_without_interpreter_uses_torch_or_says_why(monkeypatch):
    monkeypatch.setattr(triton_kernels, "INTERPRETER", False)
    cpu = torch.device("cpu")
    assert _backend.select_backend(cpu) == "torch"
    with tcnkernels.use_backend("triton"), pytest.raises(ValueError, match="need Triton's interpreter"):
        _backend.select_backend(cpu)


def test_torch_backend_runs_the_reference(monkeypatch):
    monkeypatch.setattr(launching, "launch", lambda *a: (_ for _ in ()).throw(AssertionError("kernel ran")))
    args = _args(activation="relu", dilation=3)
    with tcnkernels.use_backend("torch"):
        y = tcnkernels.causal_conv1d(**args)
    torch.testing.assert_close(y, causal_conv1d_reference(**args), rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_output_is_causal(backend, device):
    """Changing x at step t changes no output before t."""
    x = torch.randn(1, 3, 50, device=device)
    w = torch.randn(4, 3, 3, device=device)
    with tcnkernels.use_backend(backend):
        y1 = tcnkernels.causal_conv1d(x, w, dilation=4)
        x[:, :, 30] += 1.0
        y2 = tcnkernels.causal_conv1d(x, w, dilation=4)
    assert torch.equal(y1[:, :, :30], y2[:, :, :30])
    assert not torch.equal(y1[:, :, 30], y2[:, :, 30])


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_autocast_runs_in_the_autocast_dtype(backend, device):
    x = torch.randn(2, 3, 40, device=device)
    w = torch.randn(4, 3, 3, device=device, requires_grad=True)
    b = torch.randn(4, device=device, requires_grad=True)
    with tcnkernels.use_backend(backend), torch.autocast(device.type, dtype=torch.bfloat16):
        y = tcnkernels.causal_conv1d(x, w, b, dilation=2, activation="relu")
    assert y.dtype == torch.bfloat16
    expected = causal_conv1d_reference(x.bfloat16(), w.bfloat16(), b.bfloat16(), 2, "relu")
    torch.testing.assert_close(y, expected, rtol=2e-2, atol=2e-2)
    y.float().sum().backward()
    assert w.grad.dtype == torch.float32 and b.grad is not None
