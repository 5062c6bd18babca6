"""The speed report: paper configurations, providers, honest timing, roofline floors, result files.

Shared by `python -m tcnkernels bench` and the pytest-benchmark suites in benchmarks/.
Providers are compared at equal semantics: same weights, dtype, TF32 setting and dropout p.
"""
import dataclasses
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from ._backend import use_backend
from .nn import CausalConv1d, TemporalBlock, TemporalConvNet
from .ops.reference import Chomp1d, ReferenceTemporalBlock, ReferenceTemporalConvNet

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
GPU_PROVIDERS = ("tcnkernels", "cudnn", "cudnn-deterministic", "compiled", "compiled-max-autotune", "lstm", "gru")
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


# ------------------------------------------------------------------------------------------------
# Models of each provider, all with the same weights.

def reference_model(shape):
    """The reference as users run it: Conv1d padded both sides + chomp + separate ops."""
    if shape.level == "conv":
        pad = (shape.K - 1) * shape.dilation
        conv = nn.Conv1d(shape.c_in, shape.channels[0], shape.K, padding=pad, dilation=shape.dilation)
        return nn.Sequential(conv, Chomp1d(pad), nn.ReLU())
    if shape.level == "block":
        n_in, n_out, d = shape.blocks()[0]
        return ReferenceTemporalBlock(n_in, n_out, shape.K, 1, d, (shape.K - 1) * d, shape.dropout)
    return ReferenceTemporalConvNet(shape.c_in, list(shape.channels), shape.K, shape.dropout)


def tcnkernels_model(shape, reference):
    if shape.level == "conv":
        model = CausalConv1d(shape.c_in, shape.channels[0], shape.K, shape.dilation, activation="relu")
        model.load_state_dict(reference[0].state_dict())
        return model
    if shape.level == "block":
        n_in, n_out, d = shape.blocks()[0]
        model = TemporalBlock(n_in, n_out, shape.K, 1, d, (shape.K - 1) * d, shape.dropout)
    else:
        model = TemporalConvNet(shape.c_in, list(shape.channels), shape.K, shape.dropout)
    model.load_state_dict(reference.state_dict())
    return model


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())


class RecurrentBaseline(nn.Module):
    """A one-layer cuDNN LSTM/GRU on the same (B, C_in, L) input, sized to the TCN's parameter count."""

    def __init__(self, kind, c_in, n_params):
        super().__init__()
        gates = 4 if kind == "lstm" else 3
        # gates * (h*c_in + h*h + 2h) = n_params, solved for the hidden size h
        hidden = max(1, round((-(c_in + 2) + math.sqrt((c_in + 2) ** 2 + 4 * n_params / gates)) / 2))
        self.rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(c_in, hidden)

    def forward(self, x):
        return self.rnn(x.permute(2, 0, 1))[0]


def build_model(provider, shape, device):
    """(model, description) of `provider` for `shape`, on `device`, in train mode."""
    torch.manual_seed(0)
    reference = reference_model(shape)
    if provider in RECURRENT:
        model = RecurrentBaseline(provider, shape.c_in, parameter_count(reference))
    elif provider == "tcnkernels":
        model = tcnkernels_model(shape, reference)
    else:
        model = reference
    model = model.to(device)
    if provider.startswith("compiled"):
        mode = "max-autotune" if provider.endswith("max-autotune") else None
        model = torch.compile(model, mode=mode)
    return model


# ------------------------------------------------------------------------------------------------
# Counting: the floor is max(bytes / measured bandwidth, FLOPs / measured dense (matmul or conv) rate).

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


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_ceilings(device):
    """Copy bandwidth (read + write bytes/s) and dense FLOP/s (fp32 as configured, bf16) measured
    here. Best of several rounds: a ceiling is what the machine can reach, not what it usually does."""
    n = (256 if device.type == "cuda" else 64) * 2**20 // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    copy_s = _best_seconds(lambda: dst.copy_(src), device, warmup=3, rounds=10)
    m = 8192 if device.type == "cuda" else 2048
    c, length = (1024, 8192) if device.type == "cuda" else (512, 1024)
    rates = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(m, m, device=device, dtype=dtype)
        b = torch.randn(m, m, device=device, dtype=dtype)
        matmul = 2 * m**3 / _best_seconds(lambda: a @ b, device, warmup=2, rounds=5)
        # A large conv too: on CPUs oneDNN's conv outruns torch.matmul (0.33 vs 0.20 TFLOP/s measured
        # on a 2-core EPYC), and a ceiling below what a baseline reaches would be no ceiling.
        x = torch.randn(8, c, length, device=device, dtype=dtype)
        w = torch.randn(c, c, 3, device=device, dtype=dtype)
        conv = 2 * 8 * c * c * 3 * (length - 2) / _best_seconds(lambda: F.conv1d(x, w), device, warmup=2, rounds=5)
        rates[name] = max(matmul, conv)
    return {"bandwidth_Bps": 2 * src.numel() * 4 / copy_s, "dense_flops": rates}


def _best_seconds(fn, device, warmup, rounds):
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


# ------------------------------------------------------------------------------------------------
# Running one case (shape x mode x dtype) for several providers, alternating them round by round.

def make_step(model, shape, mode, dtype, device, n_inputs=4):
    """A zero-argument callable doing one forward / forward+backward / optimizer step.

    Cycles through `n_inputs` random input sets so small inputs do not just measure the L2 cache."""
    xs = [torch.randn(shape.B, shape.c_in, shape.L, device=device) for _ in range(n_inputs)]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4) if mode == "step" else None
    state = {"i": 0}
    model.train(mode != "forward")

    def step():
        x = xs[state["i"] % n_inputs]
        state["i"] += 1
        if mode == "forward":
            with torch.no_grad(), autocast:
                return model(x)
        with autocast:
            y = model(x)
        y.float().square().mean().backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        else:
            model.zero_grad(set_to_none=True)
    return step


def cudnn_settings(provider):
    deterministic = provider == "cudnn-deterministic"
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def prepare(provider, shape, mode, dtype, device, warmup):
    """(timed, peak memory bytes): a zero-argument call that runs one step of `provider` under its
    backend and cuDNN settings and waits for the device; warmed up (autotune, compile) already."""
    backend = "auto" if device.type == "cuda" or provider != "tcnkernels" else "torch"
    cudnn_settings(provider)
    with use_backend(backend):
        step = make_step(build_model(provider, shape, device), shape, mode, dtype, device)

    def timed():
        cudnn_settings(provider)
        with use_backend(backend):
            step()
            _sync(device)

    _sync(device)
    return timed, _warm_and_peak_memory(timed, device, warmup)


def summarize(seconds, shape, mode, dtype, ceilings):
    """Median, spread, throughput and roofline multiple of one provider's timings."""
    t = sorted(seconds)
    median = statistics.median(t)
    q1, q3 = t[len(t) // 4], t[(3 * len(t)) // 4]
    flops, bytes_ = work(shape, mode, dtype)
    rate = ceilings["dense_flops"]["bf16" if dtype == "bf16" else "fp32"]
    memory_s, compute_s = bytes_ / ceilings["bandwidth_Bps"], flops / rate
    floor_s = max(memory_s, compute_s)
    return dict(config=shape.name, level=shape.level, shape=dataclasses.asdict(shape), mode=mode, dtype=dtype,
                median_ms=median * 1e3, iqr_ms=(q3 - q1) * 1e3, rounds=len(t), flops=flops, bytes=bytes_,
                gb_per_s=bytes_ / median / 1e9, tflop_per_s=flops / median / 1e12, floor_ms=floor_s * 1e3,
                floor_multiple=median / floor_s, floor_bound="memory" if memory_s >= compute_s else "compute")


def run_case(shape, mode, dtype, providers, device, ceilings, rounds, warmup):
    """Time every provider on one case, alternating them round by round (A B A B ...), so drift
    and noise hit every provider alike; returns one result dict per provider."""
    prepared = {p: prepare(p, shape, mode, dtype, device, warmup) for p in providers}
    times = {p: [] for p in providers}
    for _ in range(rounds):
        for provider, (timed, _) in prepared.items():
            start = time.perf_counter()
            timed()
            times[provider].append(time.perf_counter() - start)
    results = []
    for provider, (timed, peak) in prepared.items():
        result = dict(provider=provider, peak_memory_bytes=peak, **summarize(times[provider], shape, mode, dtype,
                                                                                ceilings))
        if device.type == "cuda":
            from triton.testing import do_bench  # cross-check: CUDA events, L2 flushed between calls
            result["do_bench_ms"] = do_bench(timed, warmup=5, rep=50, return_mode="median")
        results.append(result)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, False
    return results


def _warm_and_peak_memory(timed, device, warmup):
    for _ in range(warmup):
        timed()
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    timed()
    return torch.cuda.max_memory_allocated(device) - base


# ------------------------------------------------------------------------------------------------
# The report.

def plan(device, full, batch_size=None, max_length=None):
    """[(shape, mode, dtype, providers)] of the quick (default) or full report on `device`."""
    gpu = device.type == "cuda"
    levels = ("conv", "block", "network") if full else ("network",)
    modes = MODES if full else ("forward", "forward+backward")
    dtypes = DTYPES if full and gpu else ("fp32",)
    shapes = paper_shapes(levels, batch_size, max_length) + (sweep_shapes(batch_size, max_length) if full else [])
    cases = []
    for shape in shapes:
        for mode in modes:
            for dtype in dtypes:
                cases.append((shape, mode, dtype, providers_for(device, shape, mode, dtype, full)))
    return cases


def providers_for(device, shape, mode, dtype, full):
    if device.type != "cuda":
        return list(CPU_PROVIDERS)
    chosen = ["tcnkernels", "cudnn", "compiled"]
    if full:
        chosen.insert(2, "cudnn-deterministic")
        # max-autotune compiles for minutes per model: whole networks in fp32 training only
        if shape.level == "network" and mode == "forward+backward" and dtype == "fp32":
            chosen.append("compiled-max-autotune")
    if shape.level == "network" and (full or dtype == "fp32"):
        chosen += ["lstm", "gru"] if full else ["lstm"]
    return chosen


def environment(device):
    import numpy

    env = {"tcnkernels": __version__, "torch": torch.__version__, "python": platform.python_version(),
           "numpy": numpy.__version__, "platform": platform.platform(), "date": time.strftime("%Y-%m-%d")}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device=props.name, cuda=torch.version.cuda, sm=f"{props.major}{props.minor}",
                   sms=props.multi_processor_count, tf32=torch.backends.cudnn.allow_tf32,
                   driver=_nvidia_driver())
    else:
        env.update(device=_cpu_name(), threads=torch.get_num_threads())
    try:
        env["commit"] = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                                       cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["commit"] = None
    return env


def _nvidia_driver():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


def _cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"CPU {platform.processor() or platform.machine()}"


def device_slug(name):
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def group_by_case(results):
    """{(config, level, mode, dtype): {provider: result}}."""
    table = {}
    for r in results:
        table.setdefault((r["config"], r["level"], r["mode"], r["dtype"]), {})[r["provider"]] = r
    return table


def _providers_in(rows):
    """The providers present in `rows` ({provider: result} dicts), in the canonical order."""
    return [p for p in dict.fromkeys((*GPU_PROVIDERS, *CPU_PROVIDERS)) if any(p in row for row in rows)]


def render_markdown(report):
    env = report["environment"]
    ceil = report["ceilings"]
    lines = [f"# tcnkernels speed report: {env['device']}", "",
             f"{env['date']}, tcnkernels {env['tcnkernels']} (commit {env.get('commit')}), torch {env['torch']}, "
             f"triton {env['triton']}" + (f", CUDA {env['cuda']}, driver {env['driver']}, TF32 {env['tf32']}"
                                          if "cuda" in env else f", {env['threads']} threads"), "",
             f"Measured ceilings: copy {ceil['bandwidth_Bps'] / 1e9:.1f} GB/s, dense (best of matmul and conv) "
             f"{ceil['dense_flops']['fp32'] / 1e12:.2f} TFLOP/s fp32, {ceil['dense_flops']['bf16'] / 1e12:.2f} "
             "TFLOP/s bf16. Times are medians (ms); `xN` is the speed-up of tcnkernels over that provider; "
             "`floor` is tcnkernels' time as a multiple of max(bytes/bandwidth, FLOPs/dense rate).", ""]
    table = group_by_case(report["results"])
    providers = _providers_in(table.values())
    lines.append("| config | level | mode | dtype | " + " | ".join(providers) + " | floor |")
    lines.append("|" + "---|" * (5 + len(providers)))
    for (config, level, mode, dtype), row in table.items():
        ours = row.get("tcnkernels")
        cells = []
        for p in providers:
            r = row.get(p)
            if r is None:
                cells.append("")
            elif p == "tcnkernels" or ours is None:
                cells.append(f"{r['median_ms']:.3f}")
            else:
                cells.append(f"{r['median_ms']:.3f} (x{r['median_ms'] / ours['median_ms']:.2f})")
        floor = f"{ours['floor_multiple']:.1f}x" if ours else ""
        lines.append(f"| {config} | {level} | {mode} | {dtype} | " + " | ".join(cells) + f" | {floor} |")
    lines += ["", "## Goals (for H100/H200-class GPUs)", "", "| goal | status | detail |", "|---|---|---|"]
    lines += [f"| {name} | {status} | {detail} |" for name, status, detail in goals(report)]
    return "\n".join(lines) + "\n"


def bottleneck(result):
    """The likely limit of a measured case, from where its floor comes from and how far off it is."""
    if result["floor_multiple"] > 10:
        return "launch/latency-bound (over 10x the roofline floor: many small kernels)"
    return f"{result['floor_bound']}-bound"


def _goal(name, table, keys, baseline, target):
    """(goal, status, detail) of "tcnkernels >= target x faster than `baseline`" over the given cases."""
    rows = [(k, table[k]) for k in keys if k in table and "tcnkernels" in table[k] and baseline in table[k]]
    if not rows:
        return name, "not measured", f"needs {baseline} results (a GPU report)"
    misses = [f"{k[0]} x{r[baseline]['median_ms'] / r['tcnkernels']['median_ms']:.2f} ({bottleneck(r['tcnkernels'])})"
              for k, r in rows if r[baseline]["median_ms"] / r["tcnkernels"]["median_ms"] < target]
    return name, "met" if not misses else "missed", "; ".join(misses) or f"{len(rows)} cases"


def goals(report):
    """The project's speed goals (on H100/H200 class GPUs), and where this report stands on each."""
    table = group_by_case(report["results"])
    net = lambda mode: [(c, "network", mode, "fp32") for c in SMALL_CHANNEL_CONFIGS]  # noqa: E731
    rows = [
        _goal("whole-TCN forward >= 3x the cuDNN reference (small-channel configs)", table, net("forward"),
              "cudnn", 3.0),
        _goal("whole-TCN forward+backward >= 2x the cuDNN reference", table, net("forward+backward"), "cudnn", 2.0),
        _goal("whole-TCN forward+backward >= 1.5x the compiled reference", table, net("forward+backward"),
              "compiled", 1.5),
        _goal("training step >= 5x the matched cuDNN LSTM at L=784 (seq-mnist)", table,
              [("seq-mnist", "network", "step", "fp32")], "lstm", 5.0),
    ]
    memory_bound = [r for r in report["results"] if r["provider"] == "tcnkernels" and r["level"] == "conv"
                    and bottleneck(r) == "memory-bound"]
    if report["environment"].get("cuda") is None or not memory_bound:
        rows.append(("memory-bound kernels >= 70 % of measured bandwidth", "not measured",
                     "needs single-conv results on a GPU (bench --full)"))
    else:
        share = [r["gb_per_s"] * 1e9 / report["ceilings"]["bandwidth_Bps"] for r in memory_bound]
        rows.append(("memory-bound kernels >= 70 % of measured bandwidth", "met" if min(share) >= 0.7 else "missed",
                     f"{min(share):.0%} .. {max(share):.0%} over {len(share)} cases"))
    return rows


def render_chart(report, path):
    """A bar chart of tcnkernels' speed-up over each baseline per network config; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    table = group_by_case(report["results"])
    rows = [(k, v) for k, v in table.items() if k[1] == "network" and k[3] == "fp32" and "tcnkernels" in v]
    baselines = [p for p in _providers_in(v for _, v in rows) if p != "tcnkernels"]
    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.9), 4))
    width = 0.8 / max(1, len(baselines))
    for i, p in enumerate(baselines):
        ys = [v[p]["median_ms"] / v["tcnkernels"]["median_ms"] if p in v else 0 for _, v in rows]
        ax.bar([j + i * width for j in range(len(rows))], ys, width, label=p)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))])
    ax.set_xticklabels([f"{k[0]}\n{k[2]}" for k, _ in rows], fontsize=7)
    ax.set_ylabel("speed-up of tcnkernels (x)")
    ax.set_title(f"Whole TCN, fp32: {report['environment']['device']}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def compare(report, baseline):
    """Lines comparing this report's medians with a stored one (same config/level/mode/dtype/provider)."""
    key = lambda r: (r["config"], r["level"], r["mode"], r["dtype"], r["provider"])  # noqa: E731
    old = {key(r): r for r in baseline["results"]}
    lines = [f"compared with {baseline['environment']['device']} ({baseline['environment']['date']}):"]
    for r in report["results"]:
        if key(r) in old:
            ratio = r["median_ms"] / old[key(r)]["median_ms"]
            lines.append(f"  {' / '.join(map(str, key(r)))}: {r['median_ms']:.3f} ms, x{ratio:.2f} of stored")
    return lines


class Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, total, enabled=True):
        self.total, self.done, self.enabled = total, 0, enabled
        self.tty = sys.stderr.isatty()  # a log file gets one line per case instead of \r redraws

    def update(self, label):
        self.done += 1
        if self.enabled:
            filled = int(30 * self.done / self.total)
            line = f"[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {label[:60]:60s}"
            sys.stderr.write(f"\r{line}" if self.tty else f"{line.rstrip()}\n")
            if self.tty and self.done == self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def run_report(device, full=False, batch_size=None, max_length=None, rounds=None, warmup=None, progress=True,
               on_case=None):
    """Run the quick or full report. `on_case(report)` is called after every case with the report so
    far (the command line rewrites its files then, so an interrupted run keeps what it measured)."""
    gpu = device.type == "cuda"
    rounds = rounds or (30 if gpu else 5)
    warmup = warmup or (10 if gpu else 2)
    cases = plan(device, full, batch_size, max_length)
    bar = Progress(len(cases), progress)
    ceilings = measure_ceilings(device)
    report = {"environment": environment(device), "ceilings": ceilings, "full": full, "results": []}
    for shape, mode, dtype, providers in cases:
        report["results"] += run_case(shape, mode, dtype, providers, device, ceilings, rounds, warmup)
        bar.update(f"{shape.name} {shape.level} {mode} {dtype}")
        if on_case is not None:
            on_case(report)
    return report


def write_report(report, out_dir):
    """Write <slug>.json, <slug>.md and <slug>.png under out_dir; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / device_slug(report["environment"]["device"])
    paths = [stem.with_suffix(".json"), stem.with_suffix(".md")]
    paths[0].write_text(json.dumps(report, indent=1))
    paths[1].write_text(render_markdown(report))
    if render_chart(report, stem.with_suffix(".png")):
        paths.append(stem.with_suffix(".png"))
    return paths
