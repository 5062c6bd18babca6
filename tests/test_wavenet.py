"""tcnkernels.WaveNetBlock against Parallel WaveGAN's own residual block (the real library, 0.6.1
from the package registry): same Parameters' shapes and state_dict keys, outputs and every gradient
equal, the fused convs the ones that run; convert on its generator; a stack of causal blocks
stepped exactly by the Streamer."""
import math

import pytest
import scipy.signal
import scipy.signal.windows
import torch

import tcnkernels
from helpers import BigOps, LaunchRecorder

scipy.signal.kaiser = scipy.signal.windows.kaiser  # parallel_wavegan 0.6.1 imports it from where scipy 1.13 removed it
from parallel_wavegan.layers import WaveNetResidualBlock  # noqa: E402
from parallel_wavegan.models import ParallelWaveGANGenerator  # noqa: E402

CASES = [  # kernel_size, dilation, aux_channels, causal, bias
    (3, 2, 4, True, True), (3, 4, 0, False, True), (2, 3, 5, True, False), (5, 1, 3, False, False)]


def _theirs(kernel_size, dilation, aux, causal, bias):
    torch.manual_seed(kernel_size * 10 + dilation)
    return WaveNetResidualBlock(kernel_size=kernel_size, residual_channels=6, gate_channels=10, skip_channels=7,
                                aux_channels=aux, dropout=0.0, dilation=dilation, bias=bias, use_causal_conv=causal)


def _grads(module):
    return {name: p.grad for name, p in module.named_parameters()}


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_wavenet_block_matches_parallel_wavegan(case):
    kernel_size, dilation, aux, causal, bias = case
    theirs = _theirs(*case).train()
    ours = tcnkernels.WaveNetBlock(6, 10, 7, kernel_size, dilation, aux_channels=aux, causal=causal, bias=bias).train()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 6, 19)
    c = torch.randn(2, aux, 19) if aux else None
    with LaunchRecorder() as rec:
        got, got_skip = ours(x, c)
    assert rec.launches.count("causal_conv1d_kernel") == 2, "the gated conv with its conditioning, then both 1x1s"
    want, want_skip = theirs(x, c)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_skip, want_skip, rtol=1e-5, atol=1e-5)
    dy, ds = torch.randn_like(want), torch.randn_like(want_skip)
    torch.autograd.backward([got, got_skip], [dy, ds])
    torch.autograd.backward([want, want_skip], [dy, ds])
    for name, grad in _grads(theirs).items():
        torch.testing.assert_close(_grads(ours)[name], grad, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")
    theirs.load_state_dict(ours.state_dict(), strict=True)


def test_wavenet_block_dropout_and_checks():
    block = tcnkernels.WaveNetBlock(4, 8, 4, 3, 2, aux_channels=2, dropout=0.5)
    x, c = torch.randn(2, 4, 9), torch.randn(2, 2, 9)
    assert not torch.equal(block(x, c)[0], block(x, c)[0]), "dropout on the input in training mode"
    block.eval()
    torch.testing.assert_close(block(x, c)[0], block(x, c)[0])
    with pytest.raises(ValueError, match="aux_channels=2"):
        block(x, torch.randn(2, 3, 9))
    with pytest.raises(ValueError, match="residual_channels=4"):
        block(torch.randn(2, 5, 9), c)
    with pytest.raises(ValueError, match="no conditioning"):
        tcnkernels.WaveNetBlock(4, 8, 4, 3, 2)(x, c)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        tcnkernels.WaveNetBlock(4, 8, 4, 2, 1, causal=False)
    with pytest.raises(ValueError, match="gate_channels must be even"):
        tcnkernels.WaveNetBlock(4, 7, 4, 3, 1)


@pytest.mark.parametrize("aux", [5, 0])
def test_the_fused_block_reads_c_beside_x_and_adds_the_residual_in_its_epilogue(aux):
    """Forward: one weight preparation and two conv launches, and no PyTorch pass over an
    activation (no cat(x, c), no residual add or scale). Backward: six launches and no PyTorch op
    on an activation: two weight-gradient launches (the 1x1s'; the gated conv's with the
    conditioning's as one more tap), one finalisation, three input gradients (two without c)."""
    torch.manual_seed(0)
    block = tcnkernels.WaveNetBlock(6, 10, 7, 3, 2, aux_channels=aux).train()
    B, T = 2, 300  # activations larger than any weight
    x = torch.randn(B, 6, T, requires_grad=True)
    c = torch.randn(B, aux, T, requires_grad=True) if aux else None
    with LaunchRecorder() as forward, BigOps(B * T) as big:
        out, skip = block(x, c)
    assert sorted(forward.launches) == ["causal_conv1d_kernel"] * 2 + ["weight_prep_kernel"]
    assert big.ops == [], big.ops
    with LaunchRecorder() as backward, BigOps(B * T) as big:
        torch.autograd.backward((out, skip), (torch.randn_like(out), torch.randn_like(skip)))
    assert sorted(backward.launches) == (["causal_conv1d_kernel"] * (3 if aux else 2)
                                         + ["causal_conv1d_weight_grad_kernel"] * 2
                                         + ["weight_grad_finalize_kernel"])
    assert [op for op in big.ops if not op.startswith("aten.randn")] == [], big.ops


def _block_grads(block, x, c, used):
    out, skip = block(x, c)
    outputs = [o for o, u in zip((out, skip), used) if u]
    grads = [torch.ones_like(o) * torch.linspace(-1, 1, o.shape[-1]) for o in outputs]
    torch.autograd.backward(outputs, grads)
    return (out, skip), {name: p.grad for name, p in block.named_parameters()}


def _assert_same(got, want, inputs, got_grads, want_grads):
    """Outputs, the gradients of (x, c) (inputs: ours, then theirs) and of every Parameter equal."""
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(inputs[:2], inputs[2:]):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4)
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("used", [(True, True), (False, True), (True, False)], ids=["both", "skip", "x"])
@pytest.mark.parametrize("layout", ["contiguous", "channel-last"])
def test_the_fused_block_matches_the_library_with_either_output_unused(used, layout):
    """Gradients of x, c and every Parameter equal Parallel WaveGAN's, where only the skip (a
    stack's last block) or only x_out carries a gradient; a Parameter that gets none there (None)
    gets none here. Channel-last x and c are read as they are."""
    theirs = _theirs(3, 2, 4, True, True).train()
    ours = tcnkernels.WaveNetBlock(6, 10, 7, 3, 2, aux_channels=4).train()
    ours.load_state_dict(theirs.state_dict())
    x, c = torch.randn(2, 6, 33), torch.randn(2, 4, 33)
    if layout == "channel-last":
        x, c = x.transpose(1, 2).contiguous().transpose(1, 2), c.transpose(1, 2).contiguous().transpose(1, 2)
    inputs = [t.detach().clone().requires_grad_() for t in (x, c, x, c)]
    got, got_grads = _block_grads(ours, *inputs[:2], used)
    want, want_grads = _block_grads(theirs, *inputs[2:], used)
    _assert_same(got, want, inputs, got_grads, want_grads)


def _laid_out(t, layout):
    if layout == "channel-last":
        return t.transpose(1, 2).contiguous().transpose(1, 2)
    if layout == "sliced":  # channels of a wider tensor, time steps of a longer one
        return torch.cat([t, t], dim=1).repeat(1, 1, 2)[:, 1:t.shape[1] + 1, 3:t.shape[2] + 3].copy_(t)
    return t


@pytest.mark.parametrize("residual, aux, x_layout, c_layout", [
    (6, 40, "contiguous", "channel-last"), (40, 3, "channel-last", "contiguous"), (6, 40, "sliced", "sliced"),
    (40, 3, "contiguous", "contiguous")])
def test_the_conditioning_tap_reads_c_of_any_width_and_layout(residual, aux, x_layout, c_layout):
    """The gated conv's weight-gradient launch also gives the conditioning's, with c wider or
    narrower than x (more or fewer input-channel blocks) and in another layout than x."""
    torch.manual_seed(2)
    theirs = WaveNetResidualBlock(kernel_size=3, residual_channels=residual, gate_channels=10, skip_channels=7,
                                  aux_channels=aux, dropout=0.0, dilation=2, bias=True, use_causal_conv=True).train()
    ours = tcnkernels.WaveNetBlock(residual, 10, 7, 3, 2, aux_channels=aux).train()
    ours.load_state_dict(theirs.state_dict())
    x, c = _laid_out(torch.randn(2, residual, 37), x_layout), _laid_out(torch.randn(2, aux, 37), c_layout)
    inputs = [t.detach().requires_grad_() for t in (x, c, x, c)]  # (views: a clone of a slice is contiguous)
    assert inputs[0].stride() == x.stride() and inputs[1].stride() == c.stride()
    got, got_grads = _block_grads(ours, *inputs[:2], (True, True))
    want, want_grads = _block_grads(theirs, *inputs[2:], (True, True))
    _assert_same(got, want, inputs, got_grads, want_grads)


def test_the_fused_block_with_dropout_matches_the_library():
    """Dropout on the input (the same torch draw as the library's): the residual reads x itself."""
    theirs = WaveNetResidualBlock(kernel_size=3, residual_channels=6, gate_channels=10, skip_channels=7,
                                  aux_channels=4, dropout=0.3, dilation=3, bias=True, use_causal_conv=True).train()
    ours = tcnkernels.WaveNetBlock(6, 10, 7, 3, 3, aux_channels=4, dropout=0.3).train()
    ours.load_state_dict(theirs.state_dict())
    x, c = torch.randn(2, 6, 29), torch.randn(2, 4, 29)
    inputs = [t.clone().requires_grad_() for t in (x, c, x, c)]
    torch.manual_seed(5)
    got, got_grads = _block_grads(ours, *inputs[:2], (True, True))
    torch.manual_seed(5)
    want, want_grads = _block_grads(theirs, *inputs[2:], (True, True))
    _assert_same(got, want, inputs, got_grads, want_grads)


@pytest.mark.parametrize("causal", [True, False])
def test_the_fused_block_passes_gradcheck(causal):
    """fp64 through the kernels: the fused backward is the derivative of the fused forward."""
    torch.manual_seed(1)
    block = tcnkernels.WaveNetBlock(3, 4, 2, 3, 2, aux_channels=2, causal=causal).double()
    x = torch.randn(1, 3, 11, dtype=torch.float64, requires_grad=True)
    c = torch.randn(1, 2, 11, dtype=torch.float64, requires_grad=True)
    weights = [p.detach().clone().requires_grad_() for p in block.parameters()]
    # fast mode (random projections of the Jacobian): each full-Jacobian column is a kernel run here
    assert torch.autograd.gradcheck(lambda x, c, *w: tcnkernels.wavenet.wavenet_block(
        x, c, w[0], w[1], w[2], w[5], w[6], w[3], w[4], 2, causal), (x, c, *weights), eps=1e-6, atol=1e-6,
        fast_mode=True)


@pytest.mark.parametrize("causal", [False, True])
def test_convert_fuses_parallel_wavegan_generator(causal):
    """The generator's residual blocks (weight norm on, legacy API, as the library builds them) fused
    in place, called with their conditioning as the generator calls them."""
    def build():
        torch.manual_seed(0)
        return ParallelWaveGANGenerator(kernel_size=3, layers=4, stacks=2, residual_channels=6, gate_channels=8,
                                        skip_channels=5, aux_channels=3, aux_context_window=0, use_causal_conv=causal,
                                        upsample_params={"upsample_scales": [2]})

    theirs, ours = build(), build()  # (a legacy weight-normed model cannot be deep-copied)
    keys = list(ours.state_dict())
    tcnkernels.convert(ours, strict=True)  # its 1x1 convs too (the library's Conv1d1x1: nn.Conv1d's forward)
    assert list(ours.state_dict()) == keys
    z, c = torch.randn(2, 1, 16), torch.randn(2, 3, 8)
    with LaunchRecorder() as rec:
        got = ours(z, c)
    assert rec.launches.count("causal_conv1d_kernel") >= 2 * 4
    want = theirs(z, c)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    dy = torch.randn_like(want)
    got.backward(dy)
    want.backward(dy)
    last = f"conv_layers.{len(theirs.conv_layers) - 1}.conv1x1_out"
    assert all(p.grad is None for name, p in theirs.named_parameters() if name.startswith(last))
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        # the generator drops the last block's residual output: its conv1x1_out gets no gradient
        # (None), there and here
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")


@pytest.mark.slow
def test_a_converted_parallel_wavegan_generator_exports_to_onnx(tmp_path):
    """The whole generator, converted: its conditioning has its own length (upsampled 4x inside, less
    the context window), which export relates to the noise's; onnxruntime gives the model's output
    at another batch and length, and the file names the axes by them."""
    import numpy as np
    import onnx
    import onnxruntime

    from tcnkernels import export
    torch.manual_seed(0)
    generator = ParallelWaveGANGenerator(kernel_size=3, layers=6, stacks=2, residual_channels=8, gate_channels=16,
                                         skip_channels=8, aux_channels=5, aux_context_window=2,
                                         upsample_params={"upsample_scales": [2, 2]}).eval()
    tcnkernels.convert(generator)  # (its upsampler's unpadded conv_in stays nn.Conv1d)
    path = tmp_path / "pwg.onnx"
    export.to_onnx(generator, (torch.randn(2, 1, 40), torch.randn(2, 5, 14)), path)
    z, c = torch.randn(3, 1, 64), torch.randn(3, 5, 20)
    with torch.no_grad():
        want = generator(z, c).numpy()
    got = onnxruntime.InferenceSession(str(path)).run(None, {"x": z.numpy(), "c": c.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    inputs = onnx.load(str(path)).graph.input
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in inputs]
    assert dims == [["batch", 1, "4*time_c - 16"], ["batch", 5, "time_c"]]


@pytest.mark.parametrize("library", [False, True], ids=["ours", "parallel_wavegan"])
def test_streamer_steps_a_wavenet_stack_exactly(library):
    torch.manual_seed(0)
    if library:
        blocks = torch.nn.ModuleList(_theirs(3, d, 4, True, True) for d in (1, 2, 4))
    else:
        blocks = torch.nn.ModuleList(tcnkernels.WaveNetBlock(6, 10, 7, 3, d, aux_channels=4) for d in (1, 2, 4))
    blocks.eval()
    x, c = torch.randn(3, 6, 23), torch.randn(3, 4, 23)
    with torch.no_grad():
        h, skips = x, 0
        for block in blocks:
            h, skip = block(h, c)
            skips = skips + skip
        stream = tcnkernels.Streamer(blocks, batch_size=3)
        chunks = [stream.step(x[..., a:b], c=c[..., a:b]) for a, b in ((0, 1), (1, 9), (9, 23))]
    assert stream.backend == "torch"
    torch.testing.assert_close(torch.cat([y for y, _ in chunks], -1), h, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([s for _, s in chunks], -1), skips, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="aux_channels=4"):
        stream.step(x[..., :2], c=c[:, :3, :2])
    blocks.train()
    stream.step(x[..., :1], c=c[..., :1])  # dropout 0: training mode streams too


def test_streamer_refuses_a_centred_wavenet_block():
    with pytest.raises(ValueError, match="reads future steps"):
        tcnkernels.Streamer(torch.nn.ModuleList([tcnkernels.WaveNetBlock(4, 8, 4, 3, 1, causal=False)]), 1)
    assert math.isclose(math.sqrt(0.5) ** 2, 0.5)
