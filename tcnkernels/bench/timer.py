"""The one timer of the speed report: warm-up calls, then the wall time of each timed call."""
import time

import torch


def sync(device):
    """Wait for the device: CUDA work is asynchronous, so a call's time ends when its kernels do."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def call_seconds(fn, rounds, warmup=0, device=None):
    """[seconds of each of `rounds` calls of fn()] after `warmup` untimed calls, every call ending
    when `device` (None: the host alone) has finished its work."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def block_us(fn, budget_s=0.05, min_calls=3, max_calls=200):
    """Microseconds per call over one block of back-to-back calls (about `budget_s` long)."""
    calls, start = 0, time.perf_counter()
    while calls < min_calls or (calls < max_calls and time.perf_counter() - start < budget_s):
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls * 1e6
