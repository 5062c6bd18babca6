"""Recording what the launchers launch, and compiling it exactly as the runtime would, on a CPU.

Run the real public functions on `meta` tensors with recorders in place of the Triton kernels, so
grids, tiles and constexprs are exactly what the launchers pick on an H100 (or A100); pass each
recorded launch through Triton's own argument binder (ints equal to 1 become constexprs, ints
divisible by 16 and 16-byte aligned pointers get their attributes, as at run time); compile it for
sm_90 (or sm_80) with the ptxas Triton bundles. Used by the static profile and the compile-only tier.
"""
import contextlib
import dataclasses
import functools

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import JITFunction, create_function_from_signature

from tcnkernels import WaveNetBlock, use_backend
from tcnkernels.functional import causal_conv1d, conv1d
from tcnkernels.nn import TemporalBlock, TemporalConvNet
from tcnkernels.ops import launching
from tcnkernels.streaming import Streamer

PRECISIONS = {"tf32": (torch.float32, True), "ieee": (torch.float32, False), "bf16": (torch.bfloat16, False)}
LAUNCH_OPTIONS = ("num_warps", "num_stages")


@dataclasses.dataclass(frozen=True)
class Arch:
    cc: int
    sm_count: int
    smem_per_sm: int  # bytes a CTA can be given on one SM, plus 1 KB reserved per CTA


ARCHS = {90: Arch(90, 132, 233472), 80: Arch(80, 108, 167936)}  # H100 SXM, A100


@dataclasses.dataclass
class Launch:
    """One recorded kernel launch: the JITFunction, its grid, and its arguments by name."""
    kernel: object
    grid: tuple
    named: dict

    @property
    def kwargs(self):
        """The constexprs and launch options: what selects one compiled configuration."""
        constexprs = {p.name for p in self.kernel.params if p.is_constexpr}
        return {k: v for k, v in self.named.items() if k in constexprs or k in LAUNCH_OPTIONS}


# ------------------------------------------------------------------------------------------------
# Recording what the launchers launch.

@contextlib.contextmanager
def recorded_launches(arch, tf32):
    """Inside: the launchers record instead of launching (through their one launch point), plan for
    `arch`, and the triton backend accepts meta tensors. Yields the list of launches."""
    launches = []

    def record(kernel, grid, device_of, tensors, static):
        if not isinstance(kernel, JITFunction):
            raise RuntimeError("no compiled Triton kernels to record: run without TRITON_INTERPRET")
        launches.append(Launch(kernel, grid, {**tensors, **static}))

    target = launching.Target(gpu=True, sm_count=ARCHS[arch].sm_count, capability=arch)
    saved_tf32 = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = tf32
        with launching.launches_replaced(record, target):
            yield launches
    finally:
        torch.backends.cudnn.allow_tf32 = saved_tf32


def network_launches(shape, precision, arch=90, dropout=0.0):
    """Every launch of one TemporalConvNet training step (forward + backward) of `shape` (B, C_in,
    channels per level, K, L) in `precision`, with `dropout`."""

    B, c_in, channels, K, L = shape
    dtype, tf32 = PRECISIONS[precision]
    with recorded_launches(arch, tf32) as launches, use_backend("triton"):
        with torch.device("meta"):
            model = TemporalConvNet(c_in, list(channels), K, dropout=dropout).to(dtype)
        x = torch.empty(B, c_in, L, device="meta", dtype=dtype, requires_grad=True)
        y = model(x)
        y.backward(torch.empty_like(y))
    return launches


# ------------------------------------------------------------------------------------------------
# Compiling a launch exactly as the runtime would.

@functools.lru_cache(maxsize=None)
def _backend_for(arch):
    target = GPUTarget("cuda", arch, 32)
    return target, make_backend(target)


def specialize(launch, arch):
    """(signature, constexprs, attrs, options) the runtime derives from this launch's arguments."""
    _, backend = _backend_for(arch)
    kernel = launch.kernel
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(**launch.named)
    return kernel._pack_args(backend, dict(launch.named), bound, specialization, options)


def build(launch, arch):
    """Triton's CompiledKernel of `launch` for sm_<arch>, specialised as the runtime would."""
    options, signature, constexprs, attrs = specialize(launch, arch)
    target, _ = _backend_for(arch)
    return triton.compile(ASTSource(launch.kernel, signature, constexprs, attrs), target=target,
                          options=options.__dict__), options


# ------------------------------------------------------------------------------------------------
# Every configuration the launchers can ship: their tile heuristics swept across every breakpoint.

SWEEP_CHANNELS = (1, 17, 33, 65, 1000)   # channel blocks 16 / 32 / 64 / wide
SWEEP_LENGTHS = (48, 97, 2064, 2049)     # time blocks 32 / 64 / 128; 2049: no alignment at all
SWEEP_TAPS = (1, 2, 5)                   # pipelining depth follows the iteration count
SWEEP_DILATIONS = (1, 16)                # ALIGN 1 and ALIGN = a whole 16-byte vector


def conv_launches(c_in, c_out, L, K, dilation, precision, arch, batch=2):
    """The launches of one causal_conv1d (bias, ReLU) forward + backward on meta tensors."""
    dtype, tf32 = PRECISIONS[precision] if precision in PRECISIONS else (precision, False)
    with recorded_launches(arch, tf32) as launches, use_backend("triton"):
        x = torch.empty(batch, c_in, L, device="meta", dtype=dtype, requires_grad=True)
        w = torch.empty(c_out, c_in, K, device="meta", dtype=dtype, requires_grad=True)
        b = torch.empty(c_out, device="meta", dtype=dtype, requires_grad=True)
        y = causal_conv1d(x, w, b, dilation, "relu")
        y.backward(torch.empty_like(y))
    return launches


def op_launches(c_in, c_out, L, K, dilation, precision, arch, groups=1, padding="causal", activation="relu",
                channel_last=False, batch=2):
    """The launches of one tcnkernels.conv1d forward + backward (x, weight, bias, and PReLU's
    weight) on meta tensors."""
    dtype, tf32 = PRECISIONS[precision] if precision in PRECISIONS else (precision, False)
    with recorded_launches(arch, tf32) as launches, use_backend("triton"):
        if channel_last:
            x = torch.empty(batch, L, c_in, device="meta", dtype=dtype).transpose(1, 2).requires_grad_(True)
        else:
            x = torch.empty(batch, c_in, L, device="meta", dtype=dtype, requires_grad=True)
        w = torch.empty(c_out, c_in // groups, K, device="meta", dtype=dtype, requires_grad=True)
        b = torch.empty(c_out, device="meta", dtype=dtype, requires_grad=True)
        if activation == "prelu":
            activation = torch.nn.PReLU(c_out, device="meta", dtype=dtype)
        y = conv1d(x, w, b, dilation, groups, padding, activation)
        y.backward(torch.empty_like(y))
    return launches


# The WaveNet block's other epilogues (aux channels, causal, dropout, bias): no conditioning; centred
# taps; dropout, whose input gradient adds no residual; no biases.
WAVENET_OPTIONS = ((0, True, 0.0, True), (80, False, 0.0, True), (80, True, 0.1, False))


def wavenet_launches(residual, gate, skip, aux, K, dilation, L, precision, arch, batch=2, causal=True, dropout=0.0,
                     bias=True, c_channel_last=False):
    """(forward launches, backward launches) of one tcnkernels.WaveNetBlock in training mode, with
    conditioning (needing a gradient, as an upsampling net's does; none with aux 0) on meta tensors;
    c channel-last beside a channel-first x with `c_channel_last`."""
    dtype, tf32 = PRECISIONS[precision] if precision in PRECISIONS else (precision, False)
    block = WaveNetBlock(residual, gate, skip, K, dilation, aux, dropout=dropout, causal=causal, bias=bias)
    block = block.to(device="meta", dtype=dtype)
    x = torch.empty(batch, residual, L, device="meta", dtype=dtype, requires_grad=True)
    c = torch.empty(batch, aux, L, device="meta", dtype=dtype, requires_grad=True) if aux else None
    if c_channel_last:
        c = torch.empty(batch, L, aux, device="meta", dtype=dtype).transpose(1, 2).requires_grad_()
    with use_backend("triton"):
        with recorded_launches(arch, tf32) as forward:
            out, skip_out = block(x, c)
        with recorded_launches(arch, tf32) as backward:
            torch.autograd.backward((out, skip_out), (torch.empty_like(out), torch.empty_like(skip_out)))
    return forward, backward


# The general op's variants: every activation and gate on the layers of the paper networks' widths,
# and every padding, grouping and layout with a cheap and a costly activation.
VARIANT_ACTIVATIONS = ("leaky_relu", "elu", "selu", "gelu", "gelu_tanh", "silu", "mish", "softplus", "tanh",
                       "sigmoid", "prelu", "glu", "gated_tanh", None)
VARIANT_SHAPES = ((25, 25, 784, 7, 64), (450, 450, 400, 3, 16), (17, 33, 97, 2, 1))  # seq-MNIST, char-PTB, odd
# Conv-TasNet-like depthwise layers (C, L, K, dilation, padding): aligned shifts; rows of odd length;
# K > 8 (a loop); the window path (aligned rows, dilations below a vector), causal and "same".
DEPTHWISE_SHAPES = ((512, 2000, 3, 16, "causal"), (128, 4001, 8, 1, "causal"), (96, 513, 11, 2, "causal"),
                    (128, 4000, 8, 1, "causal"), (64, 1024, 3, 2, "same"))
VARIANT_LAYOUTS = ((1, "same", False), (1, "anticausal", True), (2, "same", False), (1, "causal", True),
                   (2, "pair", True))  # "pair": (1, (K-1)*dilation - 1)


def op_variant_launches(arch, precision):
    """Every constexpr combination the general op's launchers ship, for one precision."""
    launches = []
    for activation in VARIANT_ACTIVATIONS:
        for c_in, c_out, L, K, dilation in VARIANT_SHAPES:
            gated = activation in ("glu", "gated_tanh")  # a gated layer's conv has twice the width
            launches += op_launches(c_in, 2 * c_out if gated else c_out, L, K, dilation, precision, arch,
                                    activation=activation)
    for c, L, K, dilation, padding in DEPTHWISE_SHAPES:
        for channel_last in (False, True):
            for activation in ("prelu", "gelu", None):
                launches += op_launches(c, c, L, K, dilation, precision, arch, c, padding, activation, channel_last)
    for groups, padding, channel_last in VARIANT_LAYOUTS:
        for activation in ("relu", "gelu"):
            for c_in, c_out, L, K, dilation in VARIANT_SHAPES[1:]:
                pad = (1, (K - 1) * dilation - 1) if padding == "pair" else padding
                launches += op_launches(c_in - c_in % 2, c_out - c_out % 2, L, K, dilation, precision, arch, groups,
                                        pad, activation, channel_last)
    return launches


BLOCK_SWEEP_CHANNELS = (17, 65)  # a one-block and a wide tile; the conv sweep covers the rest of the tiles


def block_launches(c_in, c_out, L, K, dilation, precision, arch, dropout, training, recompute=True, **options):
    """The launches of one TemporalBlock forward (+ backward when training) on meta tensors; `options`:
    the block's activation, final_activation, conv2_activation, padding."""
    dtype, tf32 = PRECISIONS[precision] if precision in PRECISIONS else (precision, False)
    options.setdefault("padding", (K - 1) * dilation)
    with recorded_launches(arch, tf32) as launches, use_backend("triton"):
        with torch.device("meta"):
            block = TemporalBlock(c_in, c_out, K, 1, dilation, dropout=dropout, recompute=recompute,
                                  **options).to(dtype).train(training)
        x = torch.empty(2, c_in, L, device="meta", dtype=dtype, requires_grad=training)
        y = block(x)
        if training:
            y.backward(torch.empty_like(y))
    return launches


# The block's options: an activation from the output (tanh) and one from the input (GELU), Darts'
# blocks, the shifted taps of "same", dropout on and off, conv2 recomputed or kept.
BLOCK_VARIANTS = (dict(activation="gelu"), dict(activation="tanh", final_activation=False),
                  dict(activation="mish", final_activation=False, conv2_activation=False),
                  dict(activation="relu", final_activation=False), dict(activation="relu", padding="same"),
                  dict(activation="gelu", padding="same"))


def block_variant_launches(arch, precision):
    launches = []
    for options in BLOCK_VARIANTS:
        for c_in, c_out in ((17, 17), (65, 65)):
            for L, dilation in ((97, 1), (2064, 16)):
                for dropout, recompute in ((0.2, True), (0.0, False)):
                    launches += block_launches(c_in, c_out, L, 3, dilation, precision, arch, dropout, True, recompute,
                                               **options)
    return launches


STREAM_SWEEP = ((3, (25, 25), 7), (2, (64,), 2), (5, (100, 70), 3), (1, (256,), 2))  # CP 32, 64, 128, 256


def stream_launches(c_in, widths, K, dtype, arch):
    """The launch of one Streamer step (the Triton step) of a TemporalConvNet, on meta tensors."""
    with recorded_launches(arch, False) as launches, torch.device("meta"):
        model = TemporalConvNet(c_in, list(widths), K, dropout=0.0).to(dtype).eval()
        Streamer(model, 2, backend="triton").step(torch.empty(2, c_in, 3, dtype=dtype))
    return launches


# decode updates: (dim, width, dilation, state_len, seqlen, x dtype, state dtype, circular, pooled, bias)
UPDATE_SWEEP = ((4096, 4, 1, 3, 1, torch.bfloat16, torch.bfloat16, False, False, True),
                (4096, 4, 1, 8, 1, torch.bfloat16, torch.float32, True, True, False),
                (1536, 4, 8, 40, 2, torch.float32, torch.float32, True, False, True),
                (768, 16, 1, 15, 1, torch.float16, torch.float16, False, True, False),
                (40, 3, 2, 4, 3, torch.float64, torch.float64, False, False, True),
                (256, 1, 1, 1, 2, torch.float32, torch.float32, True, False, False))  # state_len 1: a constexpr


def update_launches(dim, width, dilation, state_len, seqlen, dtype, state_dtype, circular, pooled, bias, arch):
    """The launch of one causal_conv1d_update (batch 64), on meta tensors."""
    from tcnkernels.short_conv import causal_conv1d_update
    with recorded_launches(arch, False) as launches, torch.device("meta"):
        index = torch.empty(64, dtype=torch.int32)
        state = torch.empty(64, dim, state_len, dtype=state_dtype)
        causal_conv1d_update(torch.empty(64, dim, seqlen, dtype=dtype), state, torch.empty(dim, width, dtype=dtype),
                             torch.empty(dim, dtype=dtype) if bias else None, "silu", index if circular else None,
                             index if pooled else None, dilation=dilation)
    return launches


def fn_launches(width, dilation, precision, channel_last, arch, dim=1536, L=2048, batch=4, weight_dtype=None,
                states=False, seq_idx=False):
    """The launches of causal_conv1d_fn(x, w, b, activation="silu") forward + backward (with initial
    states: their gradient too; with seq_idx, packed sequences), on meta tensors; weight and bias in
    weight_dtype (default x's)."""
    from tcnkernels.short_conv import causal_conv1d_fn
    dtype, tf32 = PRECISIONS[precision]
    weight_dtype = weight_dtype or dtype
    with recorded_launches(arch, tf32) as launches, use_backend("triton"), torch.device("meta"):
        x = torch.empty((batch, L, dim) if channel_last else (batch, dim, L), dtype=dtype)
        x = (x.transpose(1, 2) if channel_last else x).requires_grad_(True)
        w = torch.empty(dim, width, dtype=weight_dtype, requires_grad=True)
        b = torch.empty(dim, dtype=weight_dtype, requires_grad=True)
        init = torch.empty(batch, dim, (width - 1) * dilation, dtype=dtype, requires_grad=True) if states else None
        seq = torch.zeros(batch, L, dtype=torch.int32) if seq_idx else None
        y = causal_conv1d_fn(x, w, b, seq_idx=seq, initial_states=init, activation="silu", dilation=dilation)
        y.backward(torch.empty_like(y))
    return launches


# causal_conv1d_fn beyond what the general op's sweep reaches: weights in fp32 beside bf16 x, states,
# packed sequences (width, dilation, precision, channel-last, weight dtype, states, seq_idx)
FN_SWEEP = ((4, 1, "bf16", False, torch.float32, True, False), (4, 1, "bf16", True, torch.float32, False, False),
            (16, 8, "bf16", True, None, True, False), (16, 1, "ieee", False, None, False, False),
            (4, 8, "ieee", True, None, False, False), (4, 1, "bf16", False, None, True, True),
            (4, 2, "ieee", True, torch.float32, False, True), (16, 1, "bf16", False, None, False, True),
            (12, 3, "ieee", False, None, True, True))


def shipped_launches(arch, precisions=("tf32", "ieee", "bf16", torch.float16, torch.float64)):
    """One launch per configuration the launchers can choose (kernel, dtypes, every constexpr and
    launch option), over a sweep of shapes that crosses every breakpoint of the tile heuristics (single
    convs) and every epilogue and gate the fused block uses (blocks with and without a downsample,
    dropout, training and inference, conv2's output recomputed or kept), the WaveNet block, the streaming step at
    every register width, and causal-conv1d's API (states, fp32 weights, its decode update's modes). Each is compiled
    with the runtime specialisation of the first shape that chose it."""
    distinct = {}

    def add(launches):
        for launch in launches:
            dtypes = tuple(str(a.dtype) for a in launch.named.values() if isinstance(a, torch.Tensor))
            distinct.setdefault((launch.kernel.fn.__name__, dtypes, repr(sorted(launch.kwargs.items()))), launch)

    for precision in precisions:
        for c_in in SWEEP_CHANNELS:
            for c_out in SWEEP_CHANNELS:
                for L in SWEEP_LENGTHS:
                    for K in SWEEP_TAPS:
                        for dilation in SWEEP_DILATIONS:
                            add(conv_launches(c_in, c_out, L, K, dilation, precision, arch))
        for c_in in BLOCK_SWEEP_CHANNELS:
            for c_out in BLOCK_SWEEP_CHANNELS:
                for L in SWEEP_LENGTHS[1:3]:
                    for dilation in SWEEP_DILATIONS:
                        for dropout, training, recompute in ((0.2, True, True), (0.0, True, True), (0.2, False, True),
                                                             (0.2, True, False), (0.0, True, False)):
                            add(block_launches(c_in, c_out, L, 3, dilation, precision, arch, dropout, training,
                                               recompute))
        add(op_variant_launches(arch, precision))
        for L in SWEEP_LENGTHS[1:]:  # Parallel WaveGAN's layer: a narrow gated conv and its 1x1 heads
            for dilation in (*SWEEP_DILATIONS, 2):  # and ALIGN 2, where the gated tiles change
                add(sum(wavenet_launches(64, 128, 64, 80, 3, dilation, L, precision, arch), []))
        for aux, causal, dropout, bias in WAVENET_OPTIONS:
            for dilation in SWEEP_DILATIONS[:2]:
                add(sum(wavenet_launches(64, 128, 64, aux, 3, dilation, SWEEP_LENGTHS[1], precision, arch,
                                         causal=causal, dropout=dropout, bias=bias), []))
        # the conditioning's weight-gradient tap with c's strides switched (a channel-last c)
        add(sum(wavenet_launches(64, 128, 64, 80, 3, 1, SWEEP_LENGTHS[1], precision, arch, c_channel_last=True), []))
        add(block_variant_launches(arch, precision))
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for c_in, widths, K in STREAM_SWEEP:
            add(stream_launches(c_in, widths, K, dtype, arch))
    for case in UPDATE_SWEEP:
        add(update_launches(*case, arch))
    for width, dilation, precision, channel_last, weight_dtype, states, seq_idx in FN_SWEEP:
        add(fn_launches(width, dilation, precision, channel_last, arch, weight_dtype=weight_dtype, states=states,
                        seq_idx=seq_idx))
    return list(distinct.values())
