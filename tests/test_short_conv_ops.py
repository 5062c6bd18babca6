"""causal-conv1d's API on its kernels and registered ops (tcnkernels.ops.short_conv): the state
paths on the depthwise kernels against the torch path and the formula, the decode update kernel
against the torch path (circular buffers, state pools, mixed dtypes), packed sequences with states
against per-segment calls, determinism, outputs modified in place, opcheck and torch.compile."""
import pytest
import torch
from test_short_conv import _close, _view, reference

import tcnkernels
from helpers import BigOps, LaunchRecorder, assert_close_to_reference
from tcnkernels.ops import launching
from tcnkernels.ops import short_conv as ops
from tcnkernels.short_conv import causal_conv1d_fn, causal_conv1d_update


@pytest.fixture(autouse=True)
def _on_the_test_device(device):
    """Every tensor a test makes is on the test device (CUDA in the GPU tier: compiled kernels)."""
    with device:
        yield


def _randn(shape, generator):
    """Seeded numbers that are the same on every device (drawn on the CPU)."""
    return torch.randn(shape, generator=generator, device="cpu").to(torch.get_default_device())


def _grads(x, w, b, init, dilation, dtype_out=None):
    """out, final and the gradients of a fixed function of both, through causal_conv1d_fn."""
    leaves = [t for t in (x, w, b, init) if t is not None]
    out, final = causal_conv1d_fn(x, w, b, initial_states=init, return_final_states=True, activation="silu",
                                  dilation=dilation)
    gen = torch.Generator().manual_seed(7)
    dout = _randn(out.shape, gen).to(out.dtype)
    dfinal = _randn(final.shape, gen).to(final.dtype)
    grads = torch.autograd.grad((out.float() * dout.float()).sum() + (final.float() * dfinal.float()).sum(), leaves)
    return out.detach(), final.detach(), grads


@pytest.mark.parametrize("width, dilation", [(4, 1), (4, 8), (16, 1), (3, 5)], ids=str)
@pytest.mark.parametrize("channel_last", [False, True], ids=["ncl", "nlc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_state_path_on_the_kernels(width, dilation, channel_last, dtype):
    """Initial states on the depthwise kernels (a copy with the history in front): output, final
    states and every gradient against the formula in fp64, and the kernels really run."""
    torch.manual_seed(width * dilation)
    batch, dim, L = 2, 12, 37
    S = (width - 1) * dilation
    x = _view(torch.randn(batch, dim, L).to(dtype), channel_last).requires_grad_(True)
    w = torch.randn(dim, width).to(dtype).requires_grad_(True)
    b = torch.randn(dim).to(dtype).requires_grad_(True)
    init = torch.randn(batch, dim, S).to(dtype).requires_grad_(True)
    with LaunchRecorder() as rec:
        out, final, grads = _grads(x, w, b, init, dilation)
    assert "depthwise_conv1d_kernel" in rec.launches and "depthwise_weight_grad_kernel" in rec.launches
    assert out.dtype == dtype and (out.stride(1) == 1) == channel_last
    ins = [t.detach().double().requires_grad_(True) for t in (x, w, b, init)]
    ref, xs = reference(ins[0], ins[1], ins[2], dilation, ins[3], activation="silu")
    gen = torch.Generator().manual_seed(7)
    dout, dfinal = _randn(out.shape, gen), _randn(final.shape, gen)
    dout, dfinal = dout.to(dtype).double(), dfinal.to(dtype).double()
    ref_final = xs[..., xs.shape[-1] - S:]
    ref_grads = torch.autograd.grad((ref * dout).sum() + (ref_final * dfinal).sum(), ins)
    with tcnkernels.use_backend("torch"):  # PyTorch's own error in this dtype, for the bound
        same = _grads(*[t.detach().requires_grad_(True) for t in (x, w, b, init)], dilation)
    for name, got, want, torch_same in zip(["out", "final", "dx", "dweight", "dbias", "dinit"], (out, final, *grads),
                                           (ref, ref_final, *ref_grads), (same[0], same[1], *same[2])):
        assert_close_to_reference(name, got, want.detach(), torch_same)



def _segments(batch, L, lengths):
    """(batch, L) int32 sequence ids: consecutive segments of the given lengths, -1 (padding) after."""
    rows = []
    for b in range(batch):
        ids = torch.cat([torch.full((n,), i, dtype=torch.int32) for i, n in enumerate(lengths[b])])
        rows.append(torch.cat([ids, torch.full((L - len(ids),), -1, dtype=torch.int32)]))
    return torch.stack(rows)


@pytest.mark.parametrize("width, dilation", [(4, 1), (4, 8), (16, 1), (3, 5), (9, 2)], ids=str)
@pytest.mark.parametrize("channel_last", [False, True], ids=["ncl", "nlc"])
@pytest.mark.parametrize("options", ["states", "seq_idx", "both"])
def test_forward_reads_states_and_seq_idx_in_place(width, dilation, channel_last, options):
    """The forward with initial states and/or seq_idx is one depthwise launch that reads them where
    they are (states a slice of a wider tensor, seq_idx a strided view): no copy of x, against the
    formula in fp64; outputs at padding positions (seq_idx -1) are 0."""
    gen = torch.Generator().manual_seed(width * 10 + dilation)
    batch, dim, L = 2, 11, 41
    S = (width - 1) * dilation
    x = _view(_randn((batch, dim, L), gen), channel_last)
    w, b = _randn((dim, width), gen), _randn((dim,), gen)
    init = seq_idx = None
    if options != "seq_idx":
        init = _randn((batch, dim, S + 3), gen)[..., 2:S + 2]  # a non-contiguous slice
    if options != "states":
        ids = _segments(batch, L, [[7, 20, 10], [41]])
        seq_idx = torch.stack([ids, ids], -1)[..., 0]  # time stride 2
    with LaunchRecorder() as rec:
        out = causal_conv1d_fn(x, w, b, seq_idx=seq_idx, initial_states=init, activation="silu", dilation=dilation)
    assert rec.launches == ["depthwise_conv1d_kernel"]
    assert (out.stride(1) == 1) == channel_last
    ref, _ = reference(x, w, b, dilation, init, seq_idx=seq_idx, activation="silu")
    _close("out", out, ref, torch.float32)
    if seq_idx is not None:
        assert torch.all(out[0, :, 37:] == 0)



@pytest.mark.parametrize("width, dilation", [(4, 1), (3, 5), (16, 1)], ids=str)
@pytest.mark.parametrize("channel_last", [False, True], ids=["ncl", "nlc"])
@pytest.mark.parametrize("states", [False, True], ids=["no-states", "states"])
def test_backward_with_seq_idx_on_the_kernels(width, dilation, channel_last, states):
    """Packed sequences with padding (-1) through the depthwise kernels both ways: dx, dweight,
    dbias and dinitial_states against the formula in fp64."""
    gen = torch.Generator().manual_seed(width + dilation)
    batch, dim, L = 2, 9, 45
    S = (width - 1) * dilation
    x = _view(_randn((batch, dim, L), gen), channel_last).requires_grad_(True)
    w, b = _randn((dim, width), gen).requires_grad_(True), _randn((dim,), gen).requires_grad_(True)
    init = _randn((batch, dim, S), gen).requires_grad_(True) if states else None
    seq_idx = _segments(batch, L, [[5, 30, 6], [12, 33]])
    dout = _randn((batch, dim, L), gen)
    leaves = [t for t in (x, w, b, init) if t is not None]
    with LaunchRecorder() as rec:
        out = causal_conv1d_fn(x, w, b, seq_idx=seq_idx, initial_states=init, activation="silu", dilation=dilation)
        grads = torch.autograd.grad(out, leaves, dout)
    # forward, (recompute,) input gradient (and with states the states' gradient); the weight gradient
    # recomputes the pre-activation itself up to width 16 channel-first, 8 channel-last
    recomputed = width <= (8 if channel_last else 16)
    assert rec.launches.count("depthwise_conv1d_kernel") == 2 + (not recomputed) + states
    weight_grads = [s for name, s in zip(rec.launches, rec.statics) if name == "depthwise_weight_grad_kernel"]
    assert weight_grads[0].get("RECOMPUTE", 0) == (7 if recomputed else 0) and weight_grads[0]["SEQ_IDX"]
    ins = [t.detach().double().requires_grad_(True) for t in leaves]
    ref, _ = reference(ins[0], ins[1], ins[2], dilation, ins[3] if states else None, seq_idx=seq_idx,
                       activation="silu")
    want = torch.autograd.grad(ref, ins, dout.double())
    for name, got, ref_grad in zip(["dx", "dweight", "dbias", "dinit"], grads, want):
        _close(name, got, ref_grad, torch.float32)


@pytest.mark.parametrize("channel_last", [False, True], ids=["ncl", "nlc"])
@pytest.mark.parametrize("seqlen", [5, 40])
def test_backward_reads_the_initial_states_in_place(channel_last, seqlen):
    """With initial states the backward's recompute reads them beside x and their taps run on
    their own few columns: no PyTorch op copies a tensor as large as x (not x, its gradient or dx),
    and the gradients, dinit's included, meet the formula (seqlen 5 < S: the states' gradient from
    a gradient shorter than they are)."""
    gen = torch.Generator().manual_seed(seqlen)
    batch, dim, width, dilation = 2, 20, 4, 3
    S = (width - 1) * dilation
    x = _view(_randn((batch, dim, seqlen), gen), channel_last).requires_grad_(True)
    w, b = _randn((dim, width), gen).requires_grad_(True), _randn((dim,), gen).requires_grad_(True)
    init = _randn((batch, dim, S), gen).requires_grad_(True)
    out = causal_conv1d_fn(x, w, b, initial_states=init, activation="silu", dilation=dilation)
    dout = torch.empty_like(out).copy_(_randn(out.shape, gen))
    with BigOps(x.numel()) as big:
        grads = torch.autograd.grad(out, (x, w, b, init), dout)
    copies = [op for op in big.ops if op.startswith(("aten.copy", "aten.cat", "aten.clone", "aten.constant_pad"))]
    assert copies == [] or seqlen < 2 * S, big.ops  # (below 2S the states' 2S columns outnumber x's)
    ins = [t.detach().double().requires_grad_(True) for t in (x, w, b, init)]
    ref, _ = reference(*ins[:3], dilation, ins[3], activation="silu")
    want = torch.autograd.grad(ref, ins, dout.double())
    for name, got, ref_grad in zip(["dx", "dweight", "dbias", "dinit"], grads, want):
        _close(name, got, ref_grad, torch.float32)


def test_backward_is_bitwise_deterministic():
    torch.manual_seed(0)
    x = torch.randn(3, 16, 300, requires_grad=True)
    w, b = torch.randn(16, 4, requires_grad=True), torch.randn(16, requires_grad=True)
    init = torch.randn(3, 16, 6, requires_grad=True)
    seq_idx = torch.tensor([[0] * 100 + [1] * 200] * 3, dtype=torch.int32)
    for kwargs in (dict(initial_states=init), dict(seq_idx=seq_idx, initial_states=init)):
        runs = [torch.autograd.grad(causal_conv1d_fn(x, w, b, activation="silu", dilation=2, **kwargs).square().sum(),
                                    [x, w, b, init]) for _ in range(3)]
        for run in runs[1:]:
            for got, first in zip(run, runs[0]):
                assert torch.equal(got, first)


@pytest.mark.parametrize("states", [False, True], ids=["stateless", "states"])
def test_output_modified_in_place_before_the_backward(states):
    """The backward recomputes what it needs: modifying the output in place changes nothing."""
    torch.manual_seed(1)
    x = torch.randn(2, 8, 30, requires_grad=True)
    w = torch.randn(8, 4, requires_grad=True)
    init = torch.randn(2, 8, 3) if states else None
    dout = torch.randn(2, 8, 30)
    want = torch.autograd.grad(causal_conv1d_fn(x, w, initial_states=init, activation="silu"), [x, w], dout)
    out = causal_conv1d_fn(x, w, initial_states=init, activation="silu")
    out.mul_(2.0)  # d(2 out) = 2 dout
    got = torch.autograd.grad(out, [x, w], dout / 2)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r)


def test_packed_sequences_with_states_equal_per_segment_calls():
    """seq_idx with initial and final states: the states continue the first sequence, the final
    states are the last sequence's (zeros in front where it is shorter than S)."""
    torch.manual_seed(2)
    dim, width, dilation = 5, 4, 2
    S = (width - 1) * dilation
    lengths = [9, 13, 4]  # the last shorter than S
    seq_idx = torch.cat([torch.full((n,), i, dtype=torch.int32) for i, n in enumerate(lengths)])[None]
    x = _view(torch.randn(1, dim, sum(lengths)), True)
    w, b, init = torch.randn(dim, width), torch.randn(dim), torch.randn(1, dim, S)
    out, final = causal_conv1d_fn(x, w, b, seq_idx=seq_idx, initial_states=init, return_final_states=True,
                                  activation="silu", dilation=dilation)
    ref, _ = reference(x, w, b, dilation, init, seq_idx=seq_idx, activation="silu")
    _close("out", out, ref, torch.float32)
    start = 0
    for i, n in enumerate(lengths):
        alone, alone_final = causal_conv1d_fn(x[..., start:start + n], w, b, initial_states=init if i == 0 else None,
                                              return_final_states=True, activation="silu", dilation=dilation)
        torch.testing.assert_close(out[..., start:start + n], alone, rtol=1e-6, atol=1e-6)
        start += n
    torch.testing.assert_close(final, alone_final)


def _pool(seed, pool, dim, state_len, dtype):
    return _randn((pool, dim, state_len), torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("seqlen", [1, 4, 15])
@pytest.mark.parametrize("mode", ["shift", "circular", "pool", "circular-pool"])
@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float32), (torch.bfloat16, torch.float32)],
                         ids=["fp32", "bf16-x-fp32-state"])
def test_update_kernel_against_the_torch_path(seqlen, mode, dtypes):
    """The update kernel (one launch) against the PyTorch ops, at state_len above S and random
    cache_seqlens (below S too); a padding slot's state is exactly unchanged."""
    torch.manual_seed(seqlen)
    x_dtype, state_dtype = dtypes
    batch, dim, width, dilation = 4, 19, 4, 3
    S = (width - 1) * dilation
    state_len = S + 3  # seqlen 15 > state_len: the last tokens win
    pooled, circular = "pool" in mode, "circular" in mode
    idx = torch.tensor([5, -1, 0, 2], dtype=torch.int32) if pooled else None
    n = 7 if pooled else batch
    x = _view(torch.randn(batch, dim, seqlen).to(x_dtype), seqlen % 2 == 0)
    w, b = torch.randn(dim, width), torch.randn(dim).to(x_dtype)
    cache = torch.randint(0, 3 * state_len, (batch,), dtype=torch.int32) if circular else None
    state, before = _pool(seqlen, n, dim, state_len, state_dtype), _pool(seqlen, n, dim, state_len, state_dtype)
    with LaunchRecorder() as rec:
        out = causal_conv1d_update(x, state, w, b, "silu", cache, idx, dilation=dilation)
    assert rec.launches == ["causal_conv1d_update_kernel"]
    ref_state = before.clone()
    with tcnkernels.use_backend("torch"):
        ref = causal_conv1d_update(x, ref_state, w, b, "silu", cache, idx, dilation=dilation)
    assert out.dtype == x_dtype and out.shape == x.shape
    torch.testing.assert_close(out, ref, rtol=1e-5 if x_dtype == torch.float32 else 1e-2, atol=1e-5)
    assert torch.equal(state, ref_state)
    if pooled:
        assert (out[1] == 0).all()
        untouched = [i for i in range(n) if i not in (5, 0, 2)]
        assert torch.equal(state[untouched], before[untouched])


def test_update_is_one_launch_for_a_large_batch():
    """Batch 64 x dim 4096, planned on meta tensors: one launch whose grid covers every row and channel."""
    grids = []

    def record(kernel, grid, device_of, tensors, static):
        grids.append((kernel.fn.__name__, grid, static["BLOCK_C"]))

    with launching.launches_replaced(record), torch.device("meta"):
        x, state = torch.empty(64, 4096, 1), torch.empty(64, 4096, 3)
        ops.update(x, state, torch.empty(4096, 4), None, None, None, 1, True)
    [(name, grid, block_c)] = grids
    assert name == "causal_conv1d_update_kernel" and grid[0] == 64 and grid[1] * block_c >= 4096


def _op_cases():
    torch.manual_seed(3)
    x, w, b = torch.randn(2, 6, 11), torch.randn(6, 3), torch.randn(6)
    init, seq = torch.randn(2, 6, 4), torch.tensor([[0] * 5 + [1] * 6, [0] * 11], dtype=torch.int32)
    return x, w, b, init, seq


@pytest.mark.parametrize("case", ["plain", "states", "seq_idx", "channel-last"])
def test_registered_ops_pass_opcheck(case):
    x, w, b, init, seq = _op_cases()
    if case == "channel-last":
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
    args = (x.requires_grad_(True), w.requires_grad_(True), b, seq if case == "seq_idx" else None,
            init.requires_grad_(True) if case == "states" else None, 2, True)
    torch.library.opcheck(torch.ops.tcnkernels.causal_conv1d, args)
    torch.library.opcheck(torch.ops.tcnkernels.causal_conv1d_backward,
                          (torch.randn(2, 6, 11), *[a.detach() if isinstance(a, torch.Tensor) else a for a in args]))


@pytest.mark.parametrize("mode", ["shift", "circular", "pool"])
def test_update_op_passes_opcheck(mode):
    torch.manual_seed(4)
    cache = torch.tensor([3, 9], dtype=torch.int32) if mode == "circular" else None
    idx = torch.tensor([2, -1], dtype=torch.int32) if mode == "pool" else None
    state = torch.randn(3 if mode == "pool" else 2, 6, 5)
    args = (torch.randn(2, 6, 2), state, torch.randn(6, 3), torch.randn(6), cache, idx, 2, True)
    torch.library.opcheck(torch.ops.tcnkernels.causal_conv1d_update_functional, args)
    torch.library.opcheck(torch.ops.tcnkernels.causal_conv1d_update, args)
    # the pure variant gives the update's output and the state it leaves
    before = state.clone()
    out, new_state = torch.ops.tcnkernels.causal_conv1d_update_functional(*args)
    torch.testing.assert_close(state, before)
    torch.testing.assert_close(out, torch.ops.tcnkernels.causal_conv1d_update(*args))
    torch.testing.assert_close(new_state, state)


@pytest.mark.slow
def test_packed_states_and_the_update_compile_without_graph_breaks():
    torch._dynamo.reset()
    torch.manual_seed(5)
    x, w, b, init, seq = _op_cases()
    x.requires_grad_(True)

    def fn(x, w, b, init, seq):
        out, final = causal_conv1d_fn(x, w, b, seq_idx=seq, initial_states=init, return_final_states=True,
                                      activation="silu", dilation=2)
        return out.square().sum() + final.sum()

    got = torch.autograd.grad(torch.compile(fn, fullgraph=True)(x, w, b, init, seq), x)
    want = torch.autograd.grad(fn(x, w, b, init, seq), x)
    torch.testing.assert_close(got, want)

    def step(x, state, w, b, cache):
        return causal_conv1d_update(x, state, w, b, "silu", cache, dilation=2)

    cache = torch.tensor([3, 9], dtype=torch.int32)
    state = torch.randn(2, 6, 5)
    ref_state = state.clone()
    got = torch.compile(step, fullgraph=True)(x[..., :2].detach(), state, w, b, cache)
    want = step(x[..., :2].detach(), ref_state, w, b, cache)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(state, ref_state)


def test_fp64_runs_the_kernels_in_fp64():
    torch.manual_seed(6)
    x = torch.randn(2, 5, 21, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    init = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    with LaunchRecorder() as rec:
        out = causal_conv1d_fn(x, w, initial_states=init, activation="silu", dilation=2)
        grads = torch.autograd.grad(out.sum(), [x, w, init])
    assert "depthwise_conv1d_kernel" in rec.launches
    ref, _ = reference(x, w, None, 2, init, activation="silu")
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, torch.autograd.grad(ref.sum(), [x, w, init])):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    state = torch.randn(2, 5, 6, dtype=torch.float64)
    ref_state = state.clone()
    got = causal_conv1d_update(x[..., :3].detach(), state, w.detach(), activation="silu", dilation=2)
    with tcnkernels.use_backend("torch"):
        want = causal_conv1d_update(x[..., :3].detach(), ref_state, w.detach(), activation="silu", dilation=2)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.equal(state, ref_state)


@pytest.mark.parametrize("itype", [torch.bfloat16, pytest.param(torch.float16, marks=pytest.mark.slow),
                                   pytest.param(torch.float32, marks=pytest.mark.slow)], ids=str)
def test_causal_conv1d_tolerances_with_fp32_weights(itype):
    """causal-conv1d's own check of one grid point: 16-bit x with fp32 weight and bias, channel-last
    x and initial states, SiLU, final states feeding the loss, out += ... in place, then its
    tolerances (dweight and dbias within rtol = atol = 1e-3 of a wide reference)."""
    torch.manual_seed(0)
    rtol, atol = {torch.float32: (3e-4, 1e-3), torch.float16: (3e-3, 5e-3), torch.bfloat16: (1e-2, 5e-2)}[itype]
    batch, dim, seqlen, width = 2, 72, 1134, 4
    x = torch.randn(batch, seqlen, dim + 8).to(itype)[:, :, 4:4 + dim].transpose(1, 2).requires_grad_(True)
    w = torch.randn(dim, width, requires_grad=True)
    b = torch.randn(dim, requires_grad=True)
    init = torch.randn(batch, width - 1, dim).to(itype).transpose(1, 2).requires_grad_(True)
    with LaunchRecorder() as rec:
        out, final = causal_conv1d_fn(x, w, b, initial_states=init, return_final_states=True, activation="silu")
        out = out + 0  # a copy the loss may modify in place, as causal-conv1d's test does with out +=
        out += torch.sigmoid(final).sum(dim=-1, keepdim=True)
        g = torch.randn_like(out)
        grads = torch.autograd.grad(out, [x, w, b, init], g)
    assert "depthwise_weight_grad_kernel" in rec.launches
    ins = [t.detach().double().requires_grad_(True) for t in (x, w, b, init)]
    ref, xs = reference(*ins[:3], 1, ins[3], activation="silu")
    ref = ref.to(itype).double() + torch.sigmoid(xs[..., -3:].to(itype).double()).sum(dim=-1, keepdim=True)
    ref_grads = torch.autograd.grad(ref, ins, g.double())
    assert torch.allclose(out.double(), ref, rtol=rtol, atol=atol)
    for name, got, want, (r, a) in zip(["dx", "dweight", "dbias", "dinit"], grads, ref_grads,
                                       [(rtol, atol), (1e-3, 1e-3), (1e-3, 1e-3), (rtol, atol)]):
        want = want.to(got.dtype).double()
        assert torch.allclose(got.double(), want, rtol=r, atol=a), f"{name}: {(got.double() - want).abs().max()}"


@pytest.mark.parametrize("state_len", [0, 1, 2])
@pytest.mark.parametrize("circular", [False, True], ids=["shift", "circular"])
def test_update_of_a_one_tap_conv(state_len, circular):
    """Width 1 keeps no history: any state_len (0 included) works, and the state still records x."""
    torch.manual_seed(8)
    x, w, b = torch.randn(2, 3, 3), torch.randn(3, 1), torch.randn(3)
    state = torch.randn(2, 3, state_len)
    ref_state = state.clone()
    cache = torch.tensor([4, 1], dtype=torch.int32) if circular else None
    out = causal_conv1d_update(x, state, w, b, cache_seqlens=cache)
    with tcnkernels.use_backend("torch"):
        ref = causal_conv1d_update(x, ref_state, w, b, cache_seqlens=cache)
    torch.testing.assert_close(out, x * w[:, :1] + b[:, None])
    torch.testing.assert_close(ref, out)
    assert torch.equal(state, ref_state)


@pytest.mark.parametrize("dtype, dim", [(torch.float32, 520), (torch.bfloat16, 1032)], ids=["fp32", "bf16"])
def test_channel_last_weight_gradient_in_channel_wide_tiles(dtype, dim):
    """Channel-last weight gradients run in tiles as wide along channels as four warps' vectors
    (512 fp32, 1024 bf16 channels; at width 4, 2048 elements: four or two steps), the last channel
    block partly masked."""
    gen = torch.Generator().manual_seed(dim)
    x = _randn((2, 37, dim), gen).to(dtype).transpose(1, 2).requires_grad_(True)
    w, b = _randn((dim, 4), gen).to(dtype).requires_grad_(True), _randn((dim,), gen).to(dtype).requires_grad_(True)
    with LaunchRecorder() as rec:
        out = causal_conv1d_fn(x, w, b, activation="silu", dilation=2)
        dout = torch.empty_like(out).copy_(_randn(out.shape, gen))  # out's layout: channel-last
        dx, dw, db = torch.autograd.grad(out, (x, w, b), dout)
    [tiles] = [(s["BLOCK_C"], s["BLOCK_T"]) for name, s in zip(rec.launches, rec.statics)
               if name == "depthwise_weight_grad_kernel"]
    assert tiles == (16 // dtype.itemsize * 128, dtype.itemsize)
    x64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (x, w, b))
    ref = torch.nn.functional.silu(reference(x64, w64, b64, 2)[0])
    ref_grads = torch.autograd.grad(ref, (x64, w64, b64), dout.double())
    same = [t.to(dtype) for t in ref_grads]
    for name, got, r64, r in zip(("dx", "dw", "db"), (dx, dw, db), ref_grads, same):
        assert_close_to_reference(name, got, r64, r)


FP32, BF16 = torch.float32, torch.bfloat16
SLOW = pytest.mark.slow
INTERIOR_CASES = [  # layout, dtype, dim, seqlen, width, dilation: tiles inside the sequence and channels, and at
    # edges (dims past a whole channel block of every kernel: the weight gradient's reach 128 channel-first, and
    # 512 fp32 or 1024 bf16 channel-last)
    ("ncl", FP32, 136, 400, 16, 1), ("ncl", FP32, 136, 400, 5, 3), ("nlc", FP32, 520, 200, 8, 2),
    ("nlc", BF16, 1030, 100, 4, 1),
    *(pytest.param(*case, marks=SLOW) for case in (
        ("ncl", FP32, 136, 400, 16, 8), ("ncl", FP32, 136, 400, 17, 2), ("ncl", BF16, 136, 700, 16, 1),
        ("ncl", BF16, 136, 700, 16, 8), ("nlc", FP32, 520, 200, 16, 8), ("nlc", FP32, 520, 200, 17, 1)))]


@pytest.mark.parametrize("layout, dtype, dim, seqlen, width, dilation", INTERIOR_CASES, ids=str)
def test_programs_inside_the_sequence_take_unmasked_taps(layout, dtype, dim, seqlen, width, dilation):
    """Programs (the weight gradient's: items) whose taps read only columns inside [0, L) and whose
    channels are all inside C load unmasked; the others mask. Both meet the formula in one launch
    (forward, input and weight gradients), on slices of wider NaN-filled tensors (a read past a
    row's edge would show). Up to width 16 channel-first and 8 channel-last, the weight gradient
    recomputes the pre-activation itself; beyond, a forward launch does."""
    from tools.static_profile.profile import depthwise_interior

    gen = torch.Generator().manual_seed(seqlen + width)
    x = _view(_randn((2, dim, seqlen), gen).to(dtype), layout == "nlc").requires_grad_(True)
    w, b = _randn((dim, width), gen).to(dtype).requires_grad_(True), _randn((dim,), gen).to(dtype).requires_grad_(True)
    with LaunchRecorder() as rec:
        out = causal_conv1d_fn(x, w, b, activation="silu", dilation=dilation)
        dout = torch.empty_like(out).copy_(_randn(out.shape, gen))  # out's layout
        dx, dw, db = torch.autograd.grad(out, (x, w, b), dout)
    launched = [(name, s) for name, s in zip(rec.launches, rec.statics) if name.startswith("depthwise")]
    recomputed = width <= (16 if layout == "ncl" else 8)
    assert [s.get("RECOMPUTE", 0) for name, s in launched if name == "depthwise_weight_grad_kernel"] == [
        7 if recomputed else 0]
    assert len(launched) == (3 if recomputed else 4)  # forward, (recompute,) input and weight gradients
    inside = [depthwise_interior(dict(s, L=seqlen, C=dim)) for _, s in launched]
    assert all(0 < f < 1 for f in inside), inside
    x64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (x, w, b))
    ref = torch.nn.functional.silu(reference(x64, w64, b64, dilation)[0])
    ref_grads = torch.autograd.grad(ref, (x64, w64, b64), dout.double())
    _close("out", out, ref.detach(), dtype)
    for name, got, r64 in zip(("dx", "dw", "db"), (dx, dw, db), ref_grads):
        _close(name, got, r64, dtype)


RECOMPUTED_CASES = [  # x layout, dout layout, dtype, bias, width, dilation
    ("ncl", "ncl", FP32, True, 4, 1), ("ncl", "nlc", BF16, False, 16, 2), ("nlc", "ncl", FP32, True, 8, 3),
    ("nlc", "nlc", BF16, True, 3, 1), ("ncl", "ncl", torch.float64, False, 5, 2)]


@pytest.mark.parametrize("x_layout, dout_layout, dtype, bias, width, dilation", RECOMPUTED_CASES, ids=str)
def test_weight_gradient_recomputes_the_pre_activation(x_layout, dout_layout, dtype, bias, width, dilation):
    """Up to width 16 channel-first and 8 channel-last, the SiLU backward is three launches: the
    weight gradient recomputes z from the taps it loads, writes dz for the input gradient, then
    the finalize and the input gradient; no PyTorch pass over the activations. dout in either
    layout (its own strides), with or without a bias, against the formula in fp64."""
    gen = torch.Generator().manual_seed(width * 10 + dilation)
    dim, seqlen = 20, 150
    x = _view(_randn((2, dim, seqlen), gen).to(dtype), x_layout == "nlc").requires_grad_(True)
    w = _randn((dim, width), gen).to(dtype).requires_grad_(True)
    b = _randn((dim,), gen).to(dtype).requires_grad_(True) if bias else None
    out = causal_conv1d_fn(x, w, b, activation="silu", dilation=dilation)
    dout = _view(_randn((2, dim, seqlen), gen).to(dtype), dout_layout == "nlc")
    leaves = [t for t in (x, w, b) if t is not None]
    with LaunchRecorder() as rec, BigOps(dim * seqlen) as big:
        grads = torch.autograd.grad(out, leaves, dout)
    assert rec.launches == ["depthwise_weight_grad_kernel", "weight_grad_finalize_kernel", "depthwise_conv1d_kernel"]
    assert rec.statics[0]["RECOMPUTE"] == 7 and rec.statics[0].get("HAS_BIAS", False) == bias
    assert not big.ops, big.ops
    assert (grads[0].stride(1) == 1) == (dout_layout == "nlc")  # dx in dout's layout
    ins = [t.detach().double().requires_grad_(True) for t in leaves]
    ref = torch.nn.functional.silu(reference(ins[0], ins[1], ins[2] if bias else None, dilation)[0])
    for name, got, r64 in zip(("dx", "dw", "db"), grads, torch.autograd.grad(ref, ins, dout.double())):
        _close(name, got, r64, dtype)
