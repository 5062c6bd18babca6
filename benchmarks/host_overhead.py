"""Host overhead of tcnkernels calls: Python and dispatch time with every Triton launch stubbed out.

    python benchmarks/host_overhead.py            # prints a table; --json FILE to save it

CPU tensors, the triton backend forced, small shapes: the number is overhead alone (no device time,
not Triton's own launcher). `tcnkernels bench` puts the same table in its report.
"""
import argparse
import json
import platform

import torch

from tcnkernels.bench.host import measure


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--json", help="write the rows and the machine to this file")
    args = parser.parse_args()
    rows = measure(rounds=args.rounds)
    print(f"host overhead per call (CPU timing), {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}, 1 thread, Triton launches stubbed; microseconds, median of the fastest of 5 "
          "interleaved blocks (all blocks in brackets)")
    for r in rows:
        goal = f"  goal <= {r['goal_us']:.0f}" if r["goal_us"] else ""
        blocks = ", ".join(f"{b:.0f}" for b in r["block_us"])
        print(f"  {r['name']:42s} {r['us']:7.1f}  [{blocks}]{goal}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(torch=torch.__version__, machine=platform.machine(), rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
