"""Honest timing: measured ceilings, providers alternated round by round, medians and spreads."""
import dataclasses
import statistics
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import host, streaming, structure
from .configs import plan, work
from .providers import prepare
from .report import environment


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn, device, warmup, rounds):
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def measure_ceilings(device):
    """Copy bandwidth (read + write bytes/s) and dense FLOP/s (fp32 as configured, bf16) measured
    here. Best of several rounds: a ceiling is what the machine can reach, not what it usually does."""
    n = (256 if device.type == "cuda" else 64) * 2**20 // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    copy_s = best_seconds(lambda: dst.copy_(src), device, warmup=3, rounds=10)
    m = 8192 if device.type == "cuda" else 2048
    c, length = (1024, 8192) if device.type == "cuda" else (512, 1024)
    rates = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
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
    and noise hit every provider alike; returns one result dict per provider. A provider that
    fails to build or warm up (say, a CUDA graph capture) gets a result with its `error` instead."""
    prepared, results = {}, []
    for provider in providers:
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


def run_report(device, full=False, batch_size=None, max_length=None, rounds=None, warmup=None, progress=True,
               on_case=None):
    """Run the quick or full report. `on_case(report)` is called after every case with the report so
    far (the command line rewrites its files then, so an interrupted run keeps what it measured)."""
    gpu = device.type == "cuda"
    rounds = rounds or (30 if gpu else 5)
    warmup = warmup or (10 if gpu else 2)
    cases = plan(device, full, batch_size, max_length)
    ceilings = measure_ceilings(device)
    report = {"environment": environment(device), "ceilings": ceilings, "full": full, "results": [],
              "host_overhead": host.measure(), "structure": structure.structure_rows(batch_size, max_length),
              "streaming": streaming.measure()}
    with tqdm(cases, desc="bench", unit="case", disable=not progress, dynamic_ncols=True) as bar:
        for shape, mode, dtype, providers in bar:
            bar.set_postfix_str(f"{shape.name} {shape.level} {mode} {dtype}")
            report["results"] += run_case(shape, mode, dtype, providers, device, ceilings, rounds, warmup)
            if on_case is not None:
                on_case(report)
    return report
