"""Host overhead of tcnkernels calls: Python and dispatch time with every Triton launch stubbed out.

    python benchmarks/host_overhead.py                 # microseconds per call (CPU timing)
    python benchmarks/host_overhead.py --instructions  # instructions per call, counted under callgrind
    python benchmarks/host_overhead.py --json FILE     # also write the rows and the machine

CPU tensors, the triton backend forced, small shapes: the number is overhead alone (no device time,
not Triton's own launcher). `tcnkernels bench --host` puts the same timing table in its report.

On a shared machine a timing moves up to 3x from one hour to the next, for every case alike (the
floor rows, PyTorch's own cost for a do-nothing autograd.Function, move with it). `--instructions`
runs the same calls under valgrind's callgrind, which counts the instructions the CPU executes:
the same count for the same code and inputs whatever else the machine does, so two versions of the
code compare exactly. Each case's calls are bracketed by `time.sleep(0)`, and callgrind dumps its
counters on every entry to CPython's `time_sleep`; the cyclic garbage collector is off meanwhile.
"""
import argparse
import gc
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def timings(rounds):
    from tcnkernels.bench.host import measure
    return measure(rounds=rounds)


def _count_child(rounds):
    """Run inside callgrind: warm every case, then `rounds` calls of each between two dumps."""
    from tcnkernels.bench.host import cases, stubbed_launches
    torch.set_num_threads(1)
    with stubbed_launches():
        calls = cases()
        for _, fn in calls:
            for _ in range(50):
                fn()
        # A cyclic garbage collection costs tens of millions of instructions and falls in whichever
        # case's calls happen to cross the allocation threshold: off while counting.
        gc.collect()
        gc.disable()
        for _, fn in calls:
            time.sleep(0)  # callgrind dumps here: what follows is this case's calls alone
            for _ in range(rounds):
                fn()
        time.sleep(0)
    print(json.dumps([name for name, _ in calls]))


def instructions(rounds):
    """[{name, instructions}] per call of each case, counted by callgrind (slow: minutes)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        proc = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                               "--dump-before=time_sleep", sys.executable, __file__, "--count-child", str(rounds)],
                              capture_output=True, text=True, check=True)
        names = json.loads(proc.stdout.strip().splitlines()[-1])
        dumps = sorted(Path(tmp).glob("callgrind.out.*"), key=lambda p: int(p.suffix[1:]))
        totals = [int(re.search(r"^totals: (\d+)", p.read_text(), re.M).group(1)) for p in dumps]
    # dump 1: start-up and warm-up; dump i + 2: case i's calls
    return [dict(name=name, instructions=total / rounds) for name, total in zip(names, totals[1:])]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, help="calls per case (default 2000 timed, 200 counted)")
    parser.add_argument("--instructions", action="store_true", help="count instructions under callgrind")
    parser.add_argument("--json", help="write the rows and the machine to this file")
    parser.add_argument("--count-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count_child:
        return _count_child(args.count_child)
    if args.instructions:
        rows = instructions(args.rounds or 200)
        print(f"host overhead per call (instructions counted by callgrind), {platform.machine()}, torch "
              f"{torch.__version__}, 1 thread, Triton launches stubbed; thousands of instructions per call")
        for r in rows:
            print(f"  {r['name']:62s} {r['instructions'] / 1e3:9.1f}")
    else:
        rows = timings(args.rounds or 2000)
        print(f"host overhead per call (CPU timing), {platform.processor() or platform.machine()}, torch "
              f"{torch.__version__}, 1 thread, Triton launches stubbed; microseconds, median of the fastest of 5 "
              "interleaved blocks (all blocks in brackets)")
        for r in rows:
            goal = f"  goal <= {r['goal_us']:.0f}" if r["goal_us"] else ""
            blocks = ", ".join(f"{b:.0f}" for b in r["block_us"])
            print(f"  {r['name']:62s} {r['us']:7.1f}  [{blocks}]{goal}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(torch=torch.__version__, machine=platform.machine(), rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
