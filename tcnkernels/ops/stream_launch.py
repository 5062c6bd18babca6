"""The Triton streaming step's state and launcher: the tables stream_step_kernel reads (see
tcnkernels/ops/triton/stream_kernels.py), the per-row rings, the device step counter."""
import torch
import triton

from . import launching
from .launching import new_output
from .triton.stream_kernels import stream_step_kernel

MAX_CHANNELS = 256  # widest layer the step keeps in registers (a CP-vector per thread group)


def stream_channels(convs):
    """CP: every layer's width, padded to a power of two (at least 16)."""
    return max(16, triton.next_power_of_2(max(max(c.c_in, c.c_out) for c in convs)))


class TritonStream:
    """Rings, tables and packed weights of one streamer; `step` is one launch."""

    def __init__(self, convs, stages, batch_size, device):
        self.convs, self.batch_size, self.device = convs, batch_size, device
        self.cp = stream_channels(convs)
        self.kmax = max(c.K for c in convs)
        self.slots = [c.history + 1 for c in convs]
        offsets, total = [], 0
        for slots in self.slots:
            offsets.append(total)
            total += slots * self.cp
        self.row_stride = total
        self.ring_off = torch.tensor(offsets, dtype=torch.int64, device=device)
        self.conv_table = torch.tensor([[c.K, c.dilation, s, int(c.activation == "relu")]
                                        for c, s in zip(convs, self.slots)], dtype=torch.int32, device=device)
        self.stage_table = torch.tensor(stages, dtype=torch.int32, device=device).view(-1, 4)
        self.rings = torch.zeros(batch_size, total, dtype=torch.float32, device=device)
        self.counter = torch.zeros(1, dtype=torch.int64, device=device)
        self.done = torch.zeros(1, dtype=torch.int32, device=device)
        self.pack()

    def pack(self):
        """Every conv's folded weight and bias into the zero-padded fp32 tables."""
        n, cp, kmax = len(self.convs), self.cp, self.kmax
        weights = torch.zeros(n, cp, kmax, cp, dtype=torch.float32, device=self.device)
        biases = torch.zeros(n, cp, dtype=torch.float32, device=self.device)
        for i, c in enumerate(self.convs):
            weights[i, :c.c_out, :c.K, :c.c_in] = c.taps_major
            if c.bias is not None:
                biases[i, :c.c_out] = c.bias
        self.weights, self.biases = weights, biases

    def step(self, x, c_out):
        """x (B, C_in, n) -> (B, c_out, n) in x's dtype; rings and counter advance on the device."""
        B, c_in, n = x.shape
        out = new_output(x, (B, c_out, n))
        block_ci = min(self.cp, max(16, 8192 // self.cp))
        sx, so = x.stride(), out.stride()
        launching.launch(stream_step_kernel, (B,), x, dict(
            x_ptr=x, out_ptr=out, w_ptr=self.weights, bias_ptr=self.biases, conv_ptr=self.conv_table,
            ring_off_ptr=self.ring_off, stage_ptr=self.stage_table, ring_ptr=self.rings, counter_ptr=self.counter,
            done_ptr=self.done), dict(
            B=B, N_STEPS=n, N_STAGES=self.stage_table.shape[0], C_IN=c_in, C_OUT=c_out, ROW_STRIDE=self.row_stride,
            s_x_b=sx[0], s_x_c=sx[1], s_x_t=sx[2], s_o_b=so[0], s_o_c=so[1], s_o_t=so[2],
            CP=self.cp, KMAX=self.kmax, BLOCK_CI=block_ci, num_warps=4 if self.cp <= 64 else 8))
        return out

    def ring_view(self, i):
        """Conv i's rings, (B, slots, CP)."""
        start = int(self.ring_off[i])
        return self.rings[:, start:start + self.slots[i] * self.cp].view(self.batch_size, self.slots[i], self.cp)

    def position(self, i):
        """The slot of conv i's ring the next input goes to (reads the step counter back)."""
        return int(self.counter) % self.slots[i]
