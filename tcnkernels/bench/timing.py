"""Honest timing: measured ceilings, providers alternated round by round, medians and spreads; the report loop."""
import dataclasses
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import streaming
from .configs import plan, work
from .providers import prepare, unsupported_reason
from .report import environment
from .timer import call_seconds

# The long tables: in `--full`, or one flag each (`tcnkernels bench --host --structure --streaming`).
SECTIONS = ("host_overhead", "structure", "streaming", "onnx")


def best_seconds(fn, device, warmup, rounds):
    return min(call_seconds(fn, rounds, warmup, device))


def measure_ceilings(device, dtypes=("fp32", "bf16")):
    """Copy bandwidth (read + write bytes/s) and dense FLOP/s (fp32 as configured, and bf16 when
    asked) measured here. Best of several rounds: a ceiling is what the machine can reach, not what
    it usually does. On a CPU without bf16 units a bf16 GEMM takes many seconds: measured only
    for reports with bf16 cases."""
    n = (256 if device.type == "cuda" else 64) * 2**20 // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    copy_s = best_seconds(lambda: dst.copy_(src), device, warmup=3, rounds=10)
    m = 8192 if device.type == "cuda" else 2048
    c, length = (1024, 8192) if device.type == "cuda" else (512, 1024)
    rates = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if name not in dtypes:
            continue
        a = torch.randn(m, m, device=device, dtype=dtype)
        b = torch.randn(m, m, device=device, dtype=dtype)
        matmul = 2 * m**3 / best_seconds(lambda: a @ b, device, warmup=2, rounds=5)
        # A large conv too: on CPUs oneDNN's conv outruns torch.matmul (0.33 vs 0.20 TFLOP/s measured
        # on a 2-core EPYC), and a ceiling below what a baseline reaches would be no ceiling.
        x = torch.randn(8, c, length, device=device, dtype=dtype)
        w = torch.randn(c, c, 3, device=device, dtype=dtype)
        conv = 2 * 8 * c * c * 3 * (length - 2) / best_seconds(lambda: F.conv1d(x, w), device, warmup=2, rounds=5)
        rates[name] = max(matmul, conv)
    return {"bandwidth_Bps": 2 * src.numel() * 4 / copy_s, "dense_flops": rates}


def summarize(seconds, shape, mode, dtype, ceilings):
    """Median, spread, throughput and roofline multiple of one provider's timings."""
    t = sorted(seconds)
    median = statistics.median(t)
    q1, q3 = t[len(t) // 4], t[(3 * len(t)) // 4]
    flops, bytes_ = work(shape, mode, dtype)
    rate = ceilings["dense_flops"]["bf16" if dtype == "bf16" else "fp32"]
    memory_s, compute_s = bytes_ / ceilings["bandwidth_Bps"], flops / rate
    floor_s = max(memory_s, compute_s)
    return dict(case_fields(shape, mode, dtype), median_ms=median * 1e3, iqr_ms=(q3 - q1) * 1e3, rounds=len(t),
                flops=flops, bytes=bytes_, gb_per_s=bytes_ / median / 1e9, tflop_per_s=flops / median / 1e12,
                floor_ms=floor_s * 1e3, floor_multiple=median / floor_s,
                floor_bound="memory" if memory_s >= compute_s else "compute")


def case_fields(shape, mode, dtype):
    return dict(config=shape.name, level=shape.level, shape=dataclasses.asdict(shape), mode=mode, dtype=dtype)


def warm_and_peak_memory(timed, device, warmup):
    for _ in range(warmup):
        timed()
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    timed()
    return torch.cuda.max_memory_allocated(device) - base


def run_case(shape, mode, dtype, providers, device, ceilings, rounds, warmup):
    """Time every provider on one case, alternating them round by round (A B A B ...), so drift
    and noise hit every provider alike; returns one result dict per provider. A provider this
    device cannot run gets a result with its `skipped` reason; one that fails to build or warm up
    (say, a CUDA graph capture) a result with its `error`."""
    prepared, results = {}, []
    for provider in providers:
        reason = unsupported_reason(provider, mode, dtype, device)
        if reason is not None:
            results.append(dict(case_fields(shape, mode, dtype), provider=provider, skipped=reason))
            continue
        try:
            timed = prepare(provider, shape, mode, dtype, device)
            prepared[provider] = timed, warm_and_peak_memory(timed, device, warmup)
        except Exception as exc:  # reported in the results, never silently dropped
            results.append(dict(case_fields(shape, mode, dtype), provider=provider,
                                error=f"{type(exc).__name__}: {exc}"[:500]))
    times = {p: [] for p in prepared}
    for _ in range(rounds):
        for provider, (timed, _) in prepared.items():
            start = time.perf_counter()
            timed()
            times[provider].append(time.perf_counter() - start)
    for provider, (timed, peak) in prepared.items():
        result = dict(provider=provider, peak_memory_bytes=peak,
                      **summarize(times[provider], shape, mode, dtype, ceilings))
        if device.type == "cuda":
            from triton.testing import do_bench  # cross-check: CUDA events, L2 flushed between calls
            result["do_bench_ms"] = do_bench(timed, warmup=5, rep=50, return_mode="median")
        results.append(result)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, False
    order = {p: i for i, p in enumerate(providers)}
    return sorted(results, key=lambda r: order[r["provider"]])


def _section(name, batch_size, max_length):
    """One long table's rows."""
    if name == "streaming":
        return streaming.measure()
    if name == "onnx":
        from . import deployment  # imported when asked for: it exports the models first
        return deployment.measure()
    # Imported when asked for: these two stub or record Triton launches, so they need triton (a
    # machine without it still times the torch path).
    if name == "host_overhead":
        from . import host
        return host.measure()
    from . import structure
    return structure.structure_rows(batch_size, max_length) + structure.variant_rows(batch_size, max_length)


def _case_line(results):
    """One line per finished case, for logs (the bar itself redraws in place on a terminal)."""
    first = results[0]
    cells = [f"{r['provider']} {r['median_ms']:.3f} ms" if "median_ms" in r else f"{r['provider']} "
             f"{'skipped' if 'skipped' in r else 'failed'}" for r in results]
    return f"{first['config']} {first['level']} {first['mode']} {first['dtype']}: " + ", ".join(cells)


def run_report(device, full=False, sections=(), batch_size=None, max_length=None, rounds=None, warmup=None,
               progress=True, on_case=None):
    """Run the quick (default) or full report, plus the long tables in `sections` (every one of
    SECTIONS with `full`). `on_case(report)` is called after every case and table with the report
    so far (the command line rewrites its files then, so an interrupted run keeps what it measured)."""
    gpu = device.type == "cuda"
    rounds = rounds or (30 if gpu else 5)
    warmup = warmup or (10 if gpu else 2)
    cases = plan(device, full, batch_size, max_length)
    sections = SECTIONS if full else tuple(s for s in SECTIONS if s in sections)
    report = {"environment": environment(device), "full": full, "results": []}
    with tqdm(total=1 + len(cases) + len(sections), desc="bench", unit="step", disable=not progress,
              dynamic_ncols=True) as bar:
        bar.set_postfix_str("ceilings")
        report["ceilings"] = measure_ceilings(device, dtypes={dtype for _, _, dtype, _ in cases})
        bar.update()
        for shape, mode, dtype, providers in cases:
            bar.set_postfix_str(f"{shape.name} {shape.level} {mode} {dtype}")
            results = run_case(shape, mode, dtype, providers, device, report["ceilings"], rounds, warmup)
            report["results"] += results
            bar.update()
            if progress:
                bar.write(_case_line(results), file=sys.stderr)
            if on_case is not None:
                on_case(report)
        for name in sections:
            bar.set_postfix_str(name)
            report[name] = _section(name, batch_size, max_length)
            bar.update()
            if on_case is not None:
                on_case(report)
    return report
