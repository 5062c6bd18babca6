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
