"""The streaming step on a GPU: one launch advances a whole TCN by n time steps, every layer,
residual and cache, for every batch row (one program per row: rows are independent).

Tables (built once by tcnkernels.ops.stream_launch, read here):
  stages   int32 (N_STAGES, 4): [kind, a, b, c], kind 0: conv a; 1: block relu(conv b(conv a(x))
           + (x or conv c(x))); 2: ReLU (the C++ step's encoding, tcnkernels.stream_stages). Kind 3
           (a block without the final ReLU, Darts') is not run here: the Streamer sends it to the
           C++ or PyTorch step, as a branch on it made this kernel spill on sm_80 (static profile)
  convs    int32 (n, 4): K, dilation, slots, relu; ring_off int64 (n,): where each conv's ring starts
  weights  fp32 (n, CP, KMAX, CP): (C_out, tap, C_in), zero-padded to CP channels; bias fp32 (n, CP)
  rings    fp32 (B, row_stride): conv c's last `slots` inputs of the row at ring_off[c], (slots, CP)
  counter  int64 (1,): steps taken so far, on the device: the slot of step s is s % slots. The last
           program to finish advances it (a ticket in `done`), so no value ever goes through the
           host and a step can be captured in a CUDA graph.
A conv's input is written to its ring, the program synchronises, and the K taps are read back from
the ring in BLOCK_CI-wide chunks: activations between layers stay in registers as CP-vectors.
"""
import triton
import triton.language as tl


@triton.jit
def _conv_step(w_ptr, bias_ptr, conv_ptr, ring_off_ptr, ring_row, conv, inp, step, offs,
               CP: tl.constexpr, KMAX: tl.constexpr, BLOCK_CI: tl.constexpr):
    """conv's output (CP,) for one step of one row; inp (CP,) is its input at that step."""
    K = tl.load(conv_ptr + conv * 4)
    dilation = tl.load(conv_ptr + conv * 4 + 1)
    slots = tl.load(conv_ptr + conv * 4 + 2)
    relu = tl.load(conv_ptr + conv * 4 + 3)
    ring = ring_row + tl.load(ring_off_ptr + conv)
    p = (step % slots).to(tl.int32)
    tl.store(ring + p * CP + offs, inp)
    tl.debug_barrier()  # the input just stored is read back below by other threads of the program
    acc = tl.load(bias_ptr + conv * CP + offs)
    weights = w_ptr + conv.to(tl.int64) * (CP * KMAX * CP)
    offs_ci = tl.arange(0, BLOCK_CI)
    for k in range(K):
        slot = (p - (K - 1 - k) * dilation + slots) % slots  # the lag is at most slots - 1
        for c0 in range(0, CP, BLOCK_CI):
            h = tl.load(ring + slot * CP + c0 + offs_ci)
            w = tl.load(weights + offs[:, None] * (KMAX * CP) + k * CP + c0 + offs_ci[None, :])
            acc += tl.sum(w * h[None, :], axis=1)
    if relu != 0:
        acc = tl.maximum(acc, 0.0)
    return acc


@triton.jit
def stream_step_kernel(
    # Tensors: the new steps and their outputs; the tables (see above); the rings and the counter
    x_ptr, out_ptr, w_ptr, bias_ptr, conv_ptr, ring_off_ptr, stage_ptr, ring_ptr, counter_ptr, done_ptr,
    # Sizes
    B, N_STEPS, N_STAGES, C_IN, C_OUT, ROW_STRIDE,
    # Strides of x and out, in elements
    s_x_b, s_x_c, s_x_t, s_o_b, s_o_c, s_o_t,
    # Tiles: CP every layer's padded width, KMAX the widest kernel, BLOCK_CI the reduction chunk
    CP: tl.constexpr, KMAX: tl.constexpr, BLOCK_CI: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, CP)
    step0 = tl.load(counter_ptr)
    ring_row = ring_ptr + b * ROW_STRIDE
    for t in range(N_STEPS):
        cur = tl.load(x_ptr + b * s_x_b + offs * s_x_c + t * s_x_t, mask=offs < C_IN, other=0.0).to(tl.float32)
        for s in range(N_STAGES):
            kind = tl.load(stage_ptr + s * 4)
            a = tl.load(stage_ptr + s * 4 + 1)
            if kind == 2:
                cur = tl.maximum(cur, 0.0)
            elif kind == 0:
                cur = _conv_step(w_ptr, bias_ptr, conv_ptr, ring_off_ptr, ring_row, a, cur, step0 + t, offs,
                                 CP, KMAX, BLOCK_CI)
            else:
                second = tl.load(stage_ptr + s * 4 + 2)
                down = tl.load(stage_ptr + s * 4 + 3)
                mid = _conv_step(w_ptr, bias_ptr, conv_ptr, ring_off_ptr, ring_row, a, cur, step0 + t, offs,
                                 CP, KMAX, BLOCK_CI)
                y = _conv_step(w_ptr, bias_ptr, conv_ptr, ring_off_ptr, ring_row, second, mid, step0 + t, offs,
                               CP, KMAX, BLOCK_CI)
                res = cur
                if down >= 0:
                    res = _conv_step(w_ptr, bias_ptr, conv_ptr, ring_off_ptr, ring_row, down, cur, step0 + t, offs,
                                     CP, KMAX, BLOCK_CI)
                cur = tl.maximum(y + res, 0.0)
        tl.store(out_ptr + b * s_o_b + offs * s_o_c + t * s_o_t, cur, mask=offs < C_OUT)
    # Every program read the counter before taking its ticket: the last one advances it.
    ticket = tl.atomic_add(done_ptr, 1)
    if ticket == B - 1:
        tl.store(counter_ptr, step0 + N_STEPS)
        tl.store(done_ptr, 0)
