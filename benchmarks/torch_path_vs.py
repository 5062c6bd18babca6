"""The torch path (what CPU users run) of this checkout against another revision's, in one process.

    python benchmarks/torch_path_vs.py REV                  # e.g. a release tag, or main~5
    python benchmarks/torch_path_vs.py REV --md FILE --json FILE --cases seq-mnist

REV's `tcnkernels/` is exported with `git archive` and imported as the package `tcnkernels_base`
(every `tcnkernels` name in it renamed, its registered ops included), so both versions run side by
side: the same models (the paper networks at a reduced batch, and single convs), the same weights
and inputs, timed in interleaved blocks of calls (CPU timing, median of the blocks' medians).
`new / base` below 1 means this checkout is faster.
"""
import argparse
import importlib
import io
import json
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

import tcnkernels
from tcnkernels.bench.configs import PAPER_CONFIGS
from tcnkernels.bench.timer import call_seconds

ROOT = Path(__file__).resolve().parents[1]


def import_base(rev, into):
    """REV's package, renamed tcnkernels_base, imported from the directory `into`."""
    tar = subprocess.run(["git", "archive", rev, "tcnkernels"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        for member in archive.getmembers():
            if not member.isfile():
                continue
            target = Path(into) / member.name.replace("tcnkernels", "tcnkernels_base", 1)
            target.parent.mkdir(parents=True, exist_ok=True)
            data = archive.extractfile(member).read()
            if member.name.endswith(".py"):
                data = re.sub(rb"\btcnkernels\b", b"tcnkernels_base", data)
            target.write_bytes(data)
    sys.path.insert(0, str(into))
    return importlib.import_module("tcnkernels_base")


def cases(batch):
    """(name, build(package) -> (model, input)) for the paper networks at `batch` rows and single convs."""
    out = []
    for name, (_, c_in, channels, K, L, _) in PAPER_CONFIGS.items():
        def network(pkg, c_in=c_in, channels=channels, K=K, L=L):
            torch.manual_seed(0)
            return pkg.TemporalConvNet(c_in, list(channels), K, 0.0), torch.randn(batch, c_in, L)
        out.append((f"{name} network", network))
    for C, L, K, d in ((64, 1024, 3, 4), (25, 784, 7, 16)):
        def conv(pkg, C=C, L=L, K=K, d=d):
            torch.manual_seed(0)
            return pkg.CausalConv1d(C, C, K, d, activation="relu"), torch.randn(batch, C, L)
        out.append((f"conv {C}ch K={K} d={d} L={L}", conv))
    return out


def step(model, x, mode):
    if mode == "forward":
        model.eval()

        def run():
            with torch.no_grad():
                model(x)
    else:
        model.train()
        x = x.clone().requires_grad_(True)

        def run():
            model(x).sum().backward()
    return run


def compare(base, batch, blocks, calls, only=None):
    rows = []
    for name, build in cases(batch):
        if only and only not in name:
            continue
        for mode in ("forward", "forward+backward"):
            (new_model, x), (base_model, _) = build(tcnkernels), build(base)
            base_model.load_state_dict(new_model.state_dict())
            runs = {"new": step(new_model, x, mode), "base": step(base_model, x, mode)}
            medians = {"new": [], "base": []}
            for run in runs.values():
                call_seconds(run, 0, warmup=2)
            for _ in range(blocks):
                for key, run in runs.items():
                    medians[key].append(statistics.median(call_seconds(run, calls)))
            new_ms, base_ms = (1e3 * statistics.median(medians[k]) for k in ("new", "base"))
            rows.append(dict(case=name, mode=mode, new_ms=round(new_ms, 3), base_ms=round(base_ms, 3),
                             ratio=round(new_ms / base_ms, 3)))
            print(rows[-1], flush=True)
    return rows


def render(rows, rev, head, threads, batch):
    lines = [f"# The torch path: this checkout ({head}) against {rev}", "",
             f"CPU timing, one process, torch {torch.__version__}, {threads} threads, batch {batch}; "
             "median of interleaved blocks' medians (`python benchmarks/torch_path_vs.py`).", "",
             "| case | mode | new (ms) | base (ms) | new / base |", "|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['mode']} | {r['new_ms']} | {r['base_ms']} | {r['ratio']:.3f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the revision to compare with")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--cases", help="only the cases whose name contains this")
    parser.add_argument("--md", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp, tcnkernels.use_backend("torch"):
        base = import_base(args.rev, tmp)
        with base.use_backend("torch"):
            rows = compare(base, args.batch, args.blocks, args.calls, args.cases)
    text = render(rows, args.rev, head, args.threads, args.batch)
    print(text)
    if args.md:
        args.md.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(dict(rev=args.rev, head=head, threads=args.threads, batch=args.batch,
                                             torch=torch.__version__, rows=rows), indent=1))


if __name__ == "__main__":
    main()
