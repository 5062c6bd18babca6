"""Compile every configuration the launchers can ship for one GPU architecture, without a GPU.

    python -m tools.static_profile.compile_kernels 90              # every configuration for sm_90
    python -m tools.static_profile.compile_kernels 90 --shard 2/4  # every 4th one, from the 3rd
    python -m tools.static_profile.compile_kernels 90 --list       # count them by kernel, compile none

Run from the repository root, in a process *without* TRITON_INTERPRET (interpreted and compiled
kernels do not mix in one process). The configurations come from sweeping the launchers' tile
heuristics across their breakpoints (tools.static_profile.launches.shipped_launches), each compiled
with the runtime's own specialisation. Prints one JSON line per configuration: {"kernel", "config",
"shared", "registers", "stack"[, "loop_spills"]} or {"kernel", "config", "error"}; with --list, one
line {"kernels": {name: count}}. Shards split the configurations evenly (every n-th), so that each
compiles in a fraction of the time and can run in its own process.
"""
import argparse
import collections
import json

import torch

from tools.static_profile import launches, sass


def describe(launch):
    config = {k: str(v) for k, v in launch.kwargs.items()}
    config["dtype"] = str(next(a.dtype for a in launch.named.values() if isinstance(a, torch.Tensor)))
    # the int arguments too: their runtime specialisation (== 1, divisible by 16) changes the binary
    config["ints"] = {n: v for n, v in launch.named.items() if isinstance(v, int) and n not in launch.kwargs}
    return config


def main(arch, shard=0, shards=1, list_only=False):
    shipped = launches.shipped_launches(arch)
    if list_only:
        print(json.dumps({"kernels": dict(collections.Counter(launch.kernel.fn.__name__ for launch in shipped))}))
        return
    for launch in shipped[shard::shards]:
        row = {"kernel": launch.kernel.fn.__name__, "config": describe(launch)}
        try:
            ck, _ = launches.build(launch, arch)
            usage = sass.resource_usage(ck)
            row.update(shared=ck.metadata.shared, registers=usage.get("REG"), stack=usage.get("STACK", 0))
            if row["stack"]:
                row["loop_spills"] = sass.local_memory_in_loop(ck)
        except Exception as exc:  # reported per configuration, asserted on by the test
            row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        print(json.dumps(row), flush=True)


def _shard(text):
    index, count = (int(part) for part in text.split("/"))
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"a shard is i/n with 0 <= i < n, got {text}")
    return index, count


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arch", type=int, choices=sorted(launches.ARCHS))
    parser.add_argument("--shard", type=_shard, default=(0, 1), help="i/n: every n-th configuration from the i-th")
    parser.add_argument("--list", action="store_true", help="count the configurations by kernel, compile none")
    args = parser.parse_args()
    main(args.arch, *args.shard, list_only=args.list)
