"""causal-conv1d's API (tcnkernels.short_conv) against references written from its formula: a
gather of every tap's source position (not F.conv1d), token-by-token decode loops, and
causal-conv1d's own grid shape: odd dims, seqlens 1 to 784, widths 1 to 8 and 16, dilations 1, 2
and 5, non-contiguous channel-first and channel-last views, states and their gradients."""
import pytest
import torch
import torch.nn.functional as F

import tcnkernels
from helpers import LaunchRecorder, assert_close_to_reference
from tcnkernels.short_conv import ShortConvolution, causal_conv1d_fn, causal_conv1d_update, causal_conv1d_varlen_states


def reference(x, weight, bias, dilation, initial_states=None, seq_idx=None, activation=None):
    """out[b, c, t] = act(bias + sum_k w[c, k] xs[b, c, S + t - (W-1-k) d]), xs = cat(states, x), by gathering
    each tap's source index; fp64. Returns (out, xs)."""
    x, weight = x.double(), weight.double()
    batch, dim, L = x.shape
    W = weight.shape[1]
    S = (W - 1) * dilation
    states = torch.zeros(batch, dim, S, dtype=x.dtype) if initial_states is None else initial_states.double()
    xs = torch.cat([states, x], -1)
    src = S + torch.arange(L)[:, None] - (W - 1 - torch.arange(W))[None, :] * dilation  # (L, W)
    taps = xs[:, :, src]  # (batch, dim, L, W)
    if seq_idx is not None:
        # the history continues each row's first sequence
        seq_src = torch.cat([seq_idx[:, :1].expand(-1, S), seq_idx], -1)[:, src]  # (batch, L, W)
        taps = taps * (seq_src == seq_idx[:, :, None]).unsqueeze(1)
    out = (taps * weight[None, :, None, :]).sum(-1)
    if bias is not None:
        out = out + bias.double()[:, None]
    if activation in ("silu", "swish"):
        out = F.silu(out)
    if seq_idx is not None:
        out = out * (seq_idx >= 0).unsqueeze(1)
    return out, xs


@pytest.fixture(autouse=True)
def _on_the_test_device(device):
    """Every tensor a test makes is on the test device (CUDA in the GPU tier: compiled kernels)."""
    with device:
        yield


def _view(t, channel_last):
    """A non-contiguous view of t (batch, dim, L): a slice of a wider tensor, in either layout."""
    batch, dim, L = t.shape
    if channel_last:
        wide = torch.full((batch, L, dim + 3), float("nan"), dtype=t.dtype)
        wide[..., 1:dim + 1] = t.transpose(1, 2)
        return wide[..., 1:dim + 1].transpose(1, 2)
    wide = torch.full((batch, dim, L + 5), float("nan"), dtype=t.dtype)
    wide[..., 2:L + 2] = t
    return wide[..., 2:L + 2]


def _close(name, got, ref64, dtype):
    same = ref64.to(dtype) if dtype != torch.float64 else ref64
    assert_close_to_reference(name, got, ref64, same)


GRID = [  # dim, seqlen, width, dilation
    (7, 1, 4, 1), (20, 2, 3, 2), (5, 8, 16, 1), (12, 129, 8, 5), (9, 151, 2, 2), (4, 784, 5, 1), (3, 37, 1, 5)]


@pytest.mark.parametrize("dim, seqlen, width, dilation", GRID, ids=str)
@pytest.mark.parametrize("channel_last", [False, True], ids=["ncl", "nlc"])
@pytest.mark.parametrize("states", [False, True], ids=["no-states", "states"])
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_fn_against_the_formula(dim, seqlen, width, dilation, channel_last, states, backend):
    """The kernels (auto: Triton's interpreter here) and the PyTorch ops alike."""
    with tcnkernels.use_backend(backend):
        _fn_against_the_formula(dim, seqlen, width, dilation, channel_last, states)


def _fn_against_the_formula(dim, seqlen, width, dilation, channel_last, states):
    torch.manual_seed(seqlen + width)
    batch, S = 2, (width - 1) * dilation
    x = _view(torch.randn(batch, dim, seqlen), channel_last).requires_grad_(True)
    w = torch.randn(dim, width, requires_grad=True)
    b = torch.randn(dim, requires_grad=True)
    init = torch.randn(batch, dim, S, requires_grad=True) if states else None
    out, final = causal_conv1d_fn(x, w, b, initial_states=init, return_final_states=True, activation="silu",
                                  dilation=dilation)
    leaves = [x, w, b] + ([init] if states else [])
    ref, xs = reference(*[t.detach().double().requires_grad_(True) if t is not None else None for t in (x, w, b)],
                        dilation, None if init is None else init.detach().double(), activation="silu")
    _close("out", out.detach(), ref.detach(), torch.float32)
    _close("final states", final.detach(), xs[..., xs.shape[-1] - S:].detach(), torch.float32)
    # gradients, a gradient on the final states included
    dout, dfinal = torch.randn_like(out), torch.randn_like(final)
    grads = torch.autograd.grad((out * dout).sum() + (final * dfinal).sum(), leaves)
    ins = [t.detach().double().requires_grad_(True) for t in leaves]
    ref, xs = reference(ins[0], ins[1], ins[2], dilation, ins[3] if states else None, activation="silu")
    ref_grads = torch.autograd.grad((ref * dout.double()).sum() + (xs[..., xs.shape[-1] - S:] * dfinal.double()).sum(),
                                    ins)
    for name, got, want in zip(["dx", "dweight", "dbias", "dinitial_states"], grads, ref_grads):
        _close(name, got, want, torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("weight_dtype", ["same", torch.float32], ids=["same-dtype", "fp32-weight"])
def test_half_inputs_accumulate_in_fp32(dtype, weight_dtype):
    torch.manual_seed(0)
    weight_dtype = dtype if weight_dtype == "same" else weight_dtype
    x = torch.randn(2, 10, 67).to(dtype)
    w, b = torch.randn(10, 4).to(weight_dtype), torch.randn(10).to(weight_dtype)
    with LaunchRecorder() as rec:
        out = causal_conv1d_fn(x, w, b, activation="swish", dilation=2)
    assert rec.launches == ["depthwise_conv1d_kernel"], "weights in their own dtype run the kernels"
    assert out.dtype == dtype
    ref, _ = reference(x, w, b, 2, activation="silu")
    torch_same = F.silu(F.conv1d(F.pad(x.float(), (6, 0)), w.float().unsqueeze(1), b.float(), dilation=2,
                                 groups=10)).to(dtype)
    assert_close_to_reference("out", out, ref, torch_same)


@pytest.mark.parametrize("dilation", [1, 2, 5])
def test_packed_sequences(dilation):
    torch.manual_seed(dilation)
    batch, dim, L, width = 2, 6, 40, 4
    seq_idx = torch.tensor([[0] * 9 + [1] * 20 + [2] * 11, [0] * 30 + [-1] * 10], dtype=torch.int32)
    x = _view(torch.randn(batch, dim, L), dilation == 2).requires_grad_(True)
    w, b = torch.randn(dim, width, requires_grad=True), torch.randn(dim, requires_grad=True)
    out = causal_conv1d_fn(x, w, b, seq_idx=seq_idx, activation="silu", dilation=dilation)
    ref, _ = reference(x, w, b, dilation, seq_idx=seq_idx, activation="silu")
    _close("out", out.detach(), ref.detach(), torch.float32)
    assert (out[1, :, 30:] == 0).all(), "positions with seq_idx < 0 give 0"
    # each sequence alone gives the same outputs: nothing leaks across a boundary
    alone = causal_conv1d_fn(x[:1, :, 9:29], w, b, activation="silu", dilation=dilation)
    torch.testing.assert_close(out[:1, :, 9:29], alone, rtol=1e-6, atol=1e-6)
    dx, dw = torch.autograd.grad(out.sum(), [x, w])
    rx, rw = torch.autograd.grad(ref.sum(), [x, w])
    _close("dx", dx, rx, torch.float32)
    _close("dweight", dw, rw, torch.float32)


def test_stateless_calls_run_the_depthwise_kernels():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 48, requires_grad=True)
    w, b = torch.randn(8, 4, requires_grad=True), torch.randn(8, requires_grad=True)
    with LaunchRecorder() as rec, tcnkernels.use_backend("triton"):
        out, final = causal_conv1d_fn(x, w, b, return_final_states=True, activation="silu", dilation=3)
        out.sum().backward()
    assert rec.launches[0] == "depthwise_conv1d_kernel" and "depthwise_weight_grad_kernel" in rec.launches
    ref, xs = reference(x.detach(), w.detach(), b.detach(), 3, activation="silu")
    _close("out", out.detach(), ref, torch.float32)
    torch.testing.assert_close(final, x.detach()[..., -9:])


def test_final_states_out_and_short_inputs():
    x = torch.randn(1, 3, 2)
    w = torch.randn(3, 4)
    buf = torch.full((1, 3, 6), float("nan"))
    out, final = causal_conv1d_fn(x, w, return_final_states=True, final_states_out=buf, dilation=2)
    assert final is buf
    torch.testing.assert_close(buf, torch.cat([torch.zeros(1, 3, 4), x], -1))  # zeros where x is shorter


def _update_loop(x, state, w, b, dilation, cache_seqlens=None, activation=None):
    """Token by token, from the formula: the history of each step is the S tokens before it."""
    state = state.clone().double()
    batch, dim, L = x.shape
    W = w.shape[1]
    S, state_len = (W - 1) * dilation, state.shape[-1]
    outs = []
    for t in range(L):
        for r in range(batch):
            pos = None if cache_seqlens is None else int(cache_seqlens[r]) + t
            history = state[r, :, -S:] if pos is None else state[r][:, [(pos - S + j) % state_len for j in range(S)]]
            window = torch.cat([history, x[r, :, t:t + 1].double()], -1)  # (dim, S + 1)
            taps = window[:, [S - (W - 1 - k) * dilation for k in range(W)]]
            y = (taps * w.double()).sum(-1) + (0 if b is None else b.double())
            outs.append((r, t, F.silu(y) if activation else y))
            if pos is None:
                state[r] = torch.cat([state[r, :, 1:], x[r, :, t:t + 1].double()], -1)
            else:
                state[r, :, pos % state_len] = x[r, :, t].double()
    out = torch.zeros(batch, dim, L, dtype=torch.float64)
    for r, t, y in outs:
        out[r, :, t] = y
    return out, state


@pytest.mark.parametrize("seqlen", [1, 3, 11])
@pytest.mark.parametrize("circular", [False, True], ids=["shift", "circular"])
@pytest.mark.parametrize("dilation", [1, 2])
def test_update_against_a_token_loop(seqlen, circular, dilation):
    torch.manual_seed(seqlen)
    batch, dim, width = 3, 5, 4
    S = (width - 1) * dilation
    state_len = S + 2
    x = torch.randn(batch, dim, seqlen)
    state = torch.randn(batch, dim, state_len)
    w, b = torch.randn(dim, width), torch.randn(dim)
    cache = torch.randint(0, 50, (batch,), dtype=torch.int32) if circular else None
    ref, ref_state = _update_loop(x, state, w, b, dilation, cache, "silu")
    out = causal_conv1d_update(x, state, w, b, "silu", cache, dilation=dilation)
    _close("out", out, ref, torch.float32)
    torch.testing.assert_close(state.double(), ref_state)
    one = causal_conv1d_update(x[:, :, 0], torch.zeros(batch, dim, S), w, b, dilation=dilation)
    assert one.shape == (batch, dim)


def test_update_with_a_state_pool():
    torch.manual_seed(1)
    dim, width, pool = 4, 3, 6
    states = torch.randn(pool, dim, 2)
    before = states.clone()
    idx = torch.tensor([4, -1, 1], dtype=torch.int32)
    x, w = torch.randn(3, dim), torch.randn(dim, width)
    out = causal_conv1d_update(x, states, w, conv_state_indices=idx)
    assert (out[1] == 0).all(), "a padding slot's output is 0"
    for row, entry in ((0, 4), (2, 1)):
        ref, ref_state = _update_loop(x[row:row + 1, :, None], before[entry:entry + 1], w, None, 1)
        _close("out", out[row:row + 1], ref[..., 0], torch.float32)
        torch.testing.assert_close(states[entry].double(), ref_state[0])
    untouched = [i for i in range(pool) if i not in (4, 1)]
    assert torch.equal(states[untouched], before[untouched]), "other entries are left alone"


def test_streaming_the_update_equals_the_whole_sequence():
    torch.manual_seed(2)
    dim, width, dilation, L = 6, 4, 2, 25
    x, w, b = torch.randn(1, dim, L), torch.randn(dim, width), torch.randn(dim)
    whole, final = causal_conv1d_fn(x, w, b, return_final_states=True, activation="silu", dilation=dilation)
    state = torch.zeros(1, dim, (width - 1) * dilation)
    steps = torch.stack([causal_conv1d_update(x[:, :, t], state, w, b, "silu", dilation=dilation)
                         for t in range(L)], -1)
    torch.testing.assert_close(steps, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, final)


def test_varlen_states():
    torch.manual_seed(3)
    cu = torch.tensor([0, 5, 7, 19], dtype=torch.int32)
    x = torch.randn(19, 4)
    states = causal_conv1d_varlen_states(x, cu, 6)
    assert states.shape == (3, 4, 6) and states.stride(1) == 1
    for b in range(3):
        seq = x[cu[b]:cu[b + 1]].T
        want = torch.cat([torch.zeros(4, 6), seq], -1)[:, -6:]
        torch.testing.assert_close(states[b], want)


def test_short_convolution_module():
    torch.manual_seed(4)
    conv = ShortConvolution(8, 4, dilation=2, bias=True)
    assert set(conv.state_dict()) == {"weight", "bias"} and conv.weight.shape == (8, 1, 4)
    x = torch.randn(2, 30, 8)
    y, final = conv(x, output_final_state=True)
    ref = F.silu(torch.nn.functional.conv1d(F.pad(x.transpose(1, 2), (6, 0)), conv.weight, conv.bias, dilation=2,
                                            groups=8)).transpose(1, 2)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    cache = torch.zeros(2, 8, 6)
    with torch.no_grad():
        steps = torch.cat([conv.step(x[:, t:t + 1], cache) for t in range(30)], 1)
    torch.testing.assert_close(steps, y.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cache, final.detach())


@pytest.mark.parametrize("call, message", [
    (lambda x, w: causal_conv1d_fn(x, w, activation="gelu"), "activation"),
    (lambda x, w: causal_conv1d_fn(x, w[:3]), "dim"),
    (lambda x, w: causal_conv1d_fn(x, w, dilation=0), "dilation"),
    (lambda x, w: causal_conv1d_fn(x, w, initial_states=torch.zeros(2, 4, 2)), "initial_states"),
    (lambda x, w: causal_conv1d_fn(x, w, seq_idx=torch.zeros(2, 8, dtype=torch.int32)), "seq_idx"),
    (lambda x, w: causal_conv1d_fn(x, w, bias=torch.zeros(3)), "bias"),
    (lambda x, w: causal_conv1d_fn(x, w[:, :, None]), "weight"),
    (lambda x, w: causal_conv1d_fn(x[0], w), "x"),
    (lambda x, w: causal_conv1d_update(x[..., 0], torch.zeros(2, 3, 3), w), "conv_state"),
    (lambda x, w: causal_conv1d_update(x[..., 0], torch.zeros(2, 4, 3), w,
                                       cache_seqlens=torch.zeros(3, dtype=torch.int32)), "cache_seqlens"),
    (lambda x, w: causal_conv1d_update(x[..., 0], torch.zeros(2, 4, 3), w,
                                       conv_state_indices=torch.zeros(1, dtype=torch.int32)), "conv_state_indices"),
    (lambda x, w: causal_conv1d_fn(x, w, final_states_out=torch.zeros(2, 4, 3)), "final_states_out"),
    (lambda x, w: causal_conv1d_update(x[..., 0], torch.zeros(2, 4, 2), w), "state_len"),
    (lambda x, w: causal_conv1d_update(x[..., 0], torch.zeros(3, 4, 3), w), "rows"),
])
def test_bad_arguments_raise_before_any_work(call, message):
    x, w = torch.randn(2, 4, 9), torch.randn(4, 4)
    with pytest.raises(ValueError, match=message):
        call(x, w)


@pytest.mark.parametrize("call, message", [
    (lambda x, w: causal_conv1d_fn(x, w, seq_idx=torch.zeros(1, 5, dtype=torch.int64)), "seq_idx"),
    (lambda x, w: causal_conv1d_fn(x.long(), w), "x"),
    (lambda x, w: causal_conv1d_fn(x, w.int()), "weight"),
    (lambda x, w: causal_conv1d_update(x[..., 0], torch.zeros(1, 2, 2), w,
                                       cache_seqlens=torch.zeros(1, dtype=torch.int64)), "cache_seqlens"),
    (lambda x, w: causal_conv1d_update(x[..., 0], torch.zeros(1, 2, 2, dtype=torch.int32), w), "conv_state"),
    (lambda x, w: causal_conv1d_varlen_states(x[0].T, torch.zeros(2), 3), "cu_seqlens"),
])
def test_wrong_dtypes_raise_a_type_and_value_error(call, message):
    """A TypeError, as tcnkernels raises for dtypes, and a ValueError, as causal-conv1d's callers expect."""
    x, w = torch.randn(1, 2, 5), torch.randn(2, 3)
    for kind in (TypeError, ValueError):
        with pytest.raises(kind, match=message):
            call(x, w)


@pytest.mark.slow
@pytest.mark.parametrize("states", [False, True], ids=["stateless", "states"])
def test_compiles_without_graph_breaks(states):
    """torch.compile(fullgraph=True): the stateless call through conv1d's registered ops, the states
    through PyTorch ops; forward and backward equal the eager call's."""
    torch._dynamo.reset()
    torch.manual_seed(5)
    x = torch.randn(2, 6, 33, requires_grad=True)
    w, b = torch.randn(6, 4, requires_grad=True), torch.randn(6, requires_grad=True)
    init = torch.randn(2, 6, 6, requires_grad=True) if states else None

    def f(x, w, b, init):
        out, final = causal_conv1d_fn(x, w, b, initial_states=init, return_final_states=True, activation="silu",
                                      dilation=2)
        return out.square().sum() + final.sum()

    leaves = [x, w, b] + ([init] if states else [])
    got = torch.autograd.grad(torch.compile(f, fullgraph=True)(x, w, b, init), leaves)
    want = torch.autograd.grad(f(x, w, b, init), leaves)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
