"""Compile every configuration the launchers can ship for one GPU architecture, without a GPU.

Run as `python tests/compile_kernels.py 90` in a process *without* TRITON_INTERPRET (interpreted and
compiled kernels do not mix in one process). The configurations come from sweeping the launchers'
tile heuristics across their breakpoints (tcnkernels.bench.launches.shipped_launches), each compiled with
the runtime's own specialisation. Prints one JSON line per configuration:
{"kernel", "config", "shared", "registers", "stack"[, "loop_spills"]} or {"kernel", "config", "error"}.
"""
import json
import sys

import torch

from tcnkernels.bench import launches, sass


def describe(launch):
    config = {k: str(v) for k, v in launch.kwargs.items()}
    config["dtype"] = str(next(a.dtype for a in launch.args if isinstance(a, torch.Tensor)))
    # the int arguments too: their runtime specialisation (== 1, divisible by 16) changes the binary
    config["ints"] = {n: v for n, v in launch.named.items() if isinstance(v, int) and n not in launch.kwargs}
    return config


def main(arch):
    for launch in launches.shipped_launches(arch):
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


if __name__ == "__main__":
    main(int(sys.argv[1]))
