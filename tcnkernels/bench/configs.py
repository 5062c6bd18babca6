"""What the speed report measures: the paper's TCNs, sweeps, modes, providers, and the work of each case."""
import dataclasses

# The paper's TCNs (reference-tcn.md): (B, C_in, channels per level, K, L, dropout).
PAPER_CONFIGS = {
    "adding": (32, 2, (24,) * 8, 8, 600, 0.0),
    "seq-mnist": (64, 1, (25,) * 8, 7, 784, 0.05),
    "copy-memory": (32, 1, (10,) * 8, 8, 1020, 0.05),
    "nottingham": (1, 88, (150,) * 4, 6, 200, 0.2),
    "char-ptb": (32, 100, (450, 450, 100), 3, 400, 0.1),
    "word-ptb": (16, 600, (600,) * 4, 3, 80, 0.45),
}
SMALL_CHANNEL_CONFIGS = ("adding", "seq-mnist", "copy-memory", "nottingham")
MODES = ("forward", "forward+backward", "step")
DTYPES = ("fp32", "bf16")
# "+graph": the same step captured once in a CUDA graph and replayed (launch overhead removed).
GPU_PROVIDERS = ("tcnkernels", "tcnkernels+graph", "cudnn", "cudnn+graph", "cudnn-deterministic", "compiled",
                 "compiled-max-autotune", "lstm", "gru")
CPU_PROVIDERS = ("tcnkernels", "reference")
RECURRENT = ("lstm", "gru")


@dataclasses.dataclass(frozen=True)
class Shape:
    """One benchmarked model: a single conv (+bias+ReLU), one TemporalBlock, or a whole TCN."""
    name: str
    level: str  # conv | block | network
    B: int
    c_in: int
    channels: tuple
    K: int
    L: int
    dropout: float = 0.0
    dilation: int = 1  # of the conv / block levels; a network's level i has 2**i

    def blocks(self):
        """(n_in, n_out, dilation) of every TemporalBlock (conv level: one conv)."""
        if self.level == "network":
            ins = (self.c_in,) + self.channels[:-1]
            return [(i, o, 2**lvl) for lvl, (i, o) in enumerate(zip(ins, self.channels))]
        return [(self.c_in, self.channels[0], self.dilation)]


def paper_shapes(levels=("network",), batch_size=None, max_length=None):
    """Each paper configuration at each level; the conv and block levels take the widest middle level."""
    shapes = []
    for name, (B, c_in, channels, K, L, p) in PAPER_CONFIGS.items():
        B, L = batch_size or B, min(L, max_length or L)
        mid = len(channels) // 2
        for level in levels:
            if level == "network":
                shapes.append(Shape(name, "network", B, c_in, channels, K, L, p))
            else:
                shapes.append(Shape(name, level, B, channels[mid - 1], (channels[mid],), K, L, p, 2**mid))
    return shapes


def sweep_shapes(batch_size=None, max_length=None):
    """The single conv (+bias+ReLU) over L (128 .. 65536) and channels (16 .. 1024)."""
    shapes = [Shape(f"sweep-L{L}", "conv", batch_size or 8, 64, (64,), 3, L, dilation=8)
              for L in (128, 1024, 8192, 65536) if L <= (max_length or L)]
    shapes += [Shape(f"sweep-C{c}", "conv", batch_size or 16, c, (c,), 3, min(1024, max_length or 1024), dilation=4)
               for c in (16, 64, 256, 1024)]
    return shapes


def work(shape, mode, dtype):
    """(FLOPs, fewest bytes) of one call: every conv GEMM; every block input read and output
    written once (a fused block), plus weights; backward adds the input- and weight-gradient GEMMs
    and reads dy and x and writes dx per block; a step adds Adam's pass over the parameters."""
    act = 2 if dtype == "bf16" else 4
    flops, acts, params = 0, 0, 0
    for n_in, n_out, _ in shape.blocks():
        convs = [(n_in, n_out, shape.K)] if shape.level == "conv" else [(n_in, n_out, shape.K),
                                                                         (n_out, n_out, shape.K)]
        if shape.level != "conv" and n_in != n_out:
            convs.append((n_in, n_out, 1))
        for ci, co, k in convs:
            flops += 2 * shape.B * co * ci * k * shape.L
            params += co * ci * k + co
        acts += shape.B * shape.L * (n_in + n_out)
    bytes_ = acts * act + params * 4
    if mode != "forward":
        flops *= 3
        bytes_ += acts * act * 3 // 2 + params * 4
    if mode == "step":
        bytes_ += params * 4 * 6  # Adam: read p, g, m, v; write p, m, v
    return flops, bytes_


def plan(device, full, batch_size=None, max_length=None):
    """[(shape, mode, dtype, providers)] of the quick (default) or full report on `device`."""
    gpu = device.type == "cuda"
    levels = ("conv", "block", "network") if full else ("network",)
    modes = MODES if full else ("forward", "forward+backward")
    dtypes = DTYPES if full and gpu else ("fp32",)
    shapes = paper_shapes(levels, batch_size, max_length) + (sweep_shapes(batch_size, max_length) if full else [])
    return [(shape, mode, dtype, providers_for(device, shape, mode, dtype, full))
            for shape in shapes for mode in modes for dtype in dtypes]


def providers_for(device, shape, mode, dtype, full):
    if device.type != "cuda":
        return list(CPU_PROVIDERS)
    chosen = ["tcnkernels", "cudnn", "compiled"]
    if shape.level == "network":
        # Small TCNs are launch-bound: the graph-captured variants show what launches cost.
        chosen[1:1] = ["tcnkernels+graph"]
        chosen.insert(3, "cudnn+graph")
    if full:
        chosen.insert(chosen.index("compiled"), "cudnn-deterministic")
        # max-autotune compiles for minutes per model: whole networks in fp32 training only
        if shape.level == "network" and mode == "forward+backward" and dtype == "fp32":
            chosen.append("compiled-max-autotune")
    if shape.level == "network" and (full or dtype == "fp32"):
        chosen += ["lstm", "gru"] if full else ["lstm"]
    return chosen
