"""Philox dropout: the same bits in the Triton kernels, the PyTorch fallback and the C++ CPU helper;
right statistics; one mask per call shared by forward and backward; new masks each call."""
import pytest
import torch

import tcnkernels
from tcnkernels import _native
from tcnkernels.ops.reference import (
    dropout_keep_mask,
    dropout_reference,
    dropout_threshold,
    philox4x32,
    temporal_block_reference,
)


@pytest.mark.parametrize("L", [1, 7, 64, 130])
@pytest.mark.parametrize("channel", [False, True], ids=["element", "channel"])
def test_native_and_pytorch_masks_agree(L, channel):
    seed = torch.tensor([0x0123456789ABCDEF])
    rows, quads = 37, -(-L // 4)
    if channel:
        keep = philox4x32(seed.reshape(()), torch.arange(rows))[0] >= dropout_threshold(0.3)
    else:
        draws = torch.stack(philox4x32(seed.reshape(()), torch.arange(rows * quads)), -1).view(rows, quads * 4)
        keep = draws[:, :L] >= dropout_threshold(0.3)
    native = _native.native_ops()
    assert native is not None, _native.native_status()  # CI machines have a compiler: the helper builds
    got = native.philox_keep_mask(seed, rows, L, dropout_threshold(0.3), channel)
    assert torch.equal(got.flatten(), keep.flatten())


def test_triton_draws_match_the_pytorch_philox():
    """tl.randint4x (the kernels' generator, run in the interpreter) against the PyTorch Philox."""
    import triton
    import triton.language as tl

    @triton.jit
    def draws_kernel(seed_ptr, out_ptr, N, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        r0, r1, r2, r3 = tl.randint4x(tl.load(seed_ptr), offs.to(tl.int64) + (1 << 33))
        tl.store(out_ptr + offs * 4, r0.to(tl.int64) & 0xFFFFFFFF, mask=offs < N)
        tl.store(out_ptr + offs * 4 + 1, r1.to(tl.int64) & 0xFFFFFFFF, mask=offs < N)
        tl.store(out_ptr + offs * 4 + 2, r2.to(tl.int64) & 0xFFFFFFFF, mask=offs < N)
        tl.store(out_ptr + offs * 4 + 3, r3.to(tl.int64) & 0xFFFFFFFF, mask=offs < N)

    seed = torch.tensor([0x0123456789ABCDEF])
    out = torch.zeros(300, 4, dtype=torch.int64)
    draws_kernel[(3,)](seed, out, 300, BLOCK=128)
    want = torch.stack(philox4x32(seed.reshape(()), torch.arange(300) + (1 << 33)), -1)
    assert torch.equal(out, want)


def test_pytorch_fallback_without_the_native_helper():
    """TCNKERNELS_NO_NATIVE=1 (as on a machine without a compiler): the same mask from PyTorch ops."""
    import os
    import subprocess
    import sys
    code = ("import torch; from tcnkernels.ops.reference import dropout_keep_mask; "
            "from tcnkernels._native import native_status; "
            "mask = dropout_keep_mask(torch.tensor([9]), (2, 3, 50), 0.3).flatten().tolist(); "
            "print(native_status()); print(mask)")
    env = dict(os.environ, TCNKERNELS_NO_NATIVE="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    status, mask = proc.stdout.strip().splitlines()
    assert "not in use (disabled by TCNKERNELS_NO_NATIVE=1)" in status
    assert eval(mask) == dropout_keep_mask(torch.tensor([9]), (2, 3, 50), 0.3).flatten().tolist()


@pytest.mark.parametrize("p", [0.05, 0.3, 0.8])
def test_keep_rate_and_scale(p):
    seed = torch.tensor([7])
    x = torch.ones(8, 16, 1000)
    y = dropout_reference(x, seed, p)
    kept = y != 0
    n = kept.numel()
    assert abs(kept.float().mean().item() - (1 - p)) < 4 * ((p * (1 - p) / n) ** 0.5)  # 4 sigma
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - p)))


def test_channel_mode_drops_whole_channels():
    keep = dropout_keep_mask(torch.tensor([3]), (4, 32, 50), 0.5, "channel")
    assert keep.shape == (4, 32, 1)
    y = dropout_reference(torch.ones(4, 32, 50), torch.tensor([3]), 0.5, "channel")
    assert torch.equal((y != 0).all(2), (y != 0).any(2))  # each (b, c) row all kept or all dropped
    assert 0 < (y != 0).all(2).float().mean() < 1


def _block(dropout_mode="element"):
    torch.manual_seed(0)
    return tcnkernels.TemporalBlock(3, 6, 3, stride=1, dilation=2, padding=4, dropout=0.4, dropout_mode=dropout_mode)


@pytest.mark.parametrize("mode", ["element", "channel"])
def test_same_seed_same_output_on_both_backends(mode, device):
    block = _block(mode).to(device).train()
    x = torch.randn(2, 3, 60, device=device)
    outputs = []
    for backend in ("triton", "torch"):
        torch.manual_seed(123)
        with tcnkernels.use_backend(backend):
            outputs.append(block(x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    torch.manual_seed(123)
    again = block(x)
    torch.testing.assert_close(again, outputs[0], rtol=0, atol=0)  # torch.manual_seed reproduces runs
    assert not torch.equal(block(x), again)  # the next call draws new masks


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_forward_and_backward_share_one_mask(backend, device):
    """Gradients equal those of the PyTorch reference run on the same seeds: one mask serves both."""
    block = _block().to(device).train()
    x = torch.randn(2, 3, 60, device=device, requires_grad=True)
    seeds = torch.tensor([11, 22], device=device)
    with tcnkernels.use_backend(backend):
        y = block(x, seeds)
    dy = torch.randn_like(y)
    got = torch.autograd.grad(y, [x] + list(block.parameters()), dy)
    leaves = [t.detach().clone().requires_grad_() for t in [x] + list(block.parameters())]
    p = dict(zip([n for n, _ in block.named_parameters()], leaves[1:]))
    w1 = torch._weight_norm(p["conv1.weight_v"], p["conv1.weight_g"], 0)
    w2 = torch._weight_norm(p["conv2.weight_v"], p["conv2.weight_g"], 0)
    y_ref = temporal_block_reference(leaves[0], w1, p["conv1.bias"], w2, p["conv2.bias"], p["downsample.weight"],
                                     p["downsample.bias"], 2, 0.4, "element", seeds)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    want = torch.autograd.grad(y_ref, leaves, dy)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_eval_mode_and_p0_draw_nothing(device):
    block = _block().to(device)
    x = torch.randn(2, 3, 40, device=device)
    block.eval()
    state = torch.get_rng_state()
    block(x)
    assert torch.equal(torch.get_rng_state(), state)
    block.train()
    block.dropout1.p = block.dropout2.p = 0.0
    block(x)
    assert torch.equal(torch.get_rng_state(), state)
