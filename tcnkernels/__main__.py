"""The command line: `python -m tcnkernels info | check | bench | train` (also installed as `tcnkernels`)."""
import argparse
import os
import platform
import subprocess
import sys

import torch

from . import _backend
from ._native import native_ops, native_status
from ._version import __version__
from .ops import triton as triton_kernels

# Outside the repository's committed results, so a run in a clone never overwrites them.
DEFAULT_BENCH_OUT = "tcnkernels-results"
# `train`'s choices (tcnkernels.tasks.train.TASKS and MODELS, checked equal by the tests), spelled out
# here so that only `train` imports the tasks and their data.
TRAIN_TASKS = ("adding", "copy", "music", "mnist1d")
PRESETS = ("auto", "jsb", "nottingham", "general")  # tcnkernels.tasks.presets (imported only to train)
TRAIN_MODELS = ("tcn", "lstm", "gru")


def _device():
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def cmd_info(args):
    """Versions, device, usable backends, interpreter or not."""
    device = _device()
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    print(f"tcnkernels {__version__}")
    print(f"python     {platform.python_version()} ({platform.platform()})")
    print(f"torch      {torch.__version__} (CUDA {torch.version.cuda or 'none'})")
    print(f"triton     {triton_version}")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        print(f"device     {props.name}, sm_{props.major}{props.minor}, {props.multi_processor_count} SMs, "
              f"{props.total_memory / 2**30:.0f} GiB; TF32 for fp32 convs: {torch.backends.cudnn.allow_tf32}")
    else:
        print(f"device     CPU only ({os.cpu_count()} cores, torch uses {torch.get_num_threads()} threads)")
    interpreter = "on (TRITON_INTERPRET=1): kernels run on CPU tensors" if triton_kernels.INTERPRETER else "off"
    print(f"interpreter {interpreter}")
    native_ops()  # builds the C++ CPU helpers on first use (about 10 s once), so the line below is a fact
    print(f"native     {native_status()}")
    cpp_step = "C++ (csrc/stream_step.cpp)" if native_ops() is not None else "PyTorch (no C++ helpers)"
    print(f"streaming  tcnkernels.Streamer steps fp32/fp64 CPU models with: {cpp_step}; anything else: PyTorch")
    requested = _backend.requested_backend()
    print(f"backend    requested: {requested}")
    for dev in ["cpu"] + (["cuda"] if device.type == "cuda" else []):
        reason = triton_kernels.unusable_reason(torch.device(dev))
        triton_state = "usable" if reason is None else f"not usable ({reason})"
        print(f"  {dev:5s}  triton: {triton_state}; torch: usable; auto picks "
              f"{'triton' if reason is None else 'torch'}")
    return 0


def cmd_check(args):
    """Parity of the kernels with the reference on this device."""
    from .selfcheck import run_checks

    device = _device()
    if device.type == "cpu" and not triton_kernels.INTERPRETER:
        if triton_kernels.IMPORT_ERROR is not None:
            print(f"triton is not importable ({triton_kernels.IMPORT_ERROR}): only the torch path exists here")
            return 0
        # On a CPU the Triton kernels run only in Triton's interpreter, which must be on before import.
        print("no GPU: checking the Triton kernels in Triton's interpreter on the CPU")
        env = dict(os.environ, TRITON_INTERPRET="1")
        return subprocess.call([sys.executable, "-m", "tcnkernels", "check"], env=env)
    print(f"checking the Triton kernels on {torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'} "
          "against the fp64 reference.\n`err` is the kernel's largest absolute error against fp64; `bound` the largest "
          "the rule allows: 2x PyTorch's own error in that dtype, plus 4 ulps of the output's scale.")
    failures = 0
    for case, errors in run_checks(device):
        ok = all(err <= bound for err, bound in errors.values())
        failures += not ok
        detail = "  ".join(f"{k} err {e:.1e} (bound {b:.1e})" for k, (e, b) in errors.items())
        print(f"{'ok  ' if ok else 'FAIL'} {case}: {detail}")
    print("all checks passed" if not failures else f"{failures} check(s) FAILED")
    return 1 if failures else 0


def cmd_bench(args):
    """The speed report; writes <out>/<device>.json, .md and .png."""
    import json

    from .bench import report as bench_report
    from .bench.timing import run_report

    device = _device()
    if device.type == "cpu":
        print("no GPU: running the CPU providers (tcnkernels' torch path vs the reference on CPU); "
              f"{torch.get_num_threads()} threads", flush=True)
    sections = [name for name, on in (("host_overhead", args.host), ("structure", args.structure),
                                      ("streaming", args.streaming), ("onnx", args.onnx)) if on]
    report = run_report(device, full=args.full, sections=sections, batch_size=args.batch_size,
                        max_length=args.max_length, rounds=args.rounds, warmup=args.warmup,
                        progress=not args.no_progress,
                        on_case=lambda partial: bench_report.write_report(partial, args.out))
    print(bench_report.render_markdown(report))
    if args.compare:
        with open(args.compare) as f:
            print("\n".join(bench_report.compare(report, json.load(f))))
    for path in bench_report.write_report(report, args.out):
        print(f"wrote {path}")
    return 0


def cmd_train(args):
    """Train the TCN (or an LSTM/GRU baseline) on one of the paper's tasks; under torchrun, with DDP."""
    from .tasks.train import train
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    results = train(args.task, args.model, args.data, args.epochs, args.T, device, args.quick, args.out, args.seed,
                    progress=not args.no_progress, minutes=args.minutes, preset=args.preset)
    if int(os.environ.get("RANK", "0")) == 0:
        best = results["best"]
        print(f"best epoch {best['epoch']}: valid {results['config']['metric']} {best['valid_metric']:.5g}, "
              f"test {best['test_metric']:.5g}; wrote {args.out}/{args.task}-{args.model}-{results['device']}.json")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="tcnkernels", description="Fused Triton kernels for TCNs.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help=cmd_info.__doc__)
    sub.add_parser("check", help=cmd_check.__doc__)
    bench = sub.add_parser("bench", help=cmd_bench.__doc__)
    scope = bench.add_mutually_exclusive_group()
    scope.add_argument("--quick", action="store_true",
                       help="whole paper networks, fp32, forward and training (the default: about 2 minutes on 2 CPU "
                            "cores)")
    scope.add_argument("--full", action="store_true",
                       help="conv/block/network levels, all modes, fp32+bf16, sweeps, and every table below")
    bench.add_argument("--host", action="store_true", help="also the host-overhead table (launches stubbed)")
    bench.add_argument("--structure", action="store_true",
                       help="also launches and saved activations per training step (counted on meta tensors)")
    bench.add_argument("--streaming", action="store_true",
                       help="also streaming latency per step (batch 1, 64, 1024: several minutes on a CPU)")
    bench.add_argument("--onnx", action="store_true",
                       help="also the paper networks' forward in onnxruntime against PyTorch (needs the export extra "
                            "and onnxruntime)")
    bench.add_argument("--out", default=DEFAULT_BENCH_OUT,
                       help=f"results folder (default: ./{DEFAULT_BENCH_OUT}; the committed reports live in "
                            "benchmarks/results of a clone: write there only on purpose)")
    bench.add_argument("--compare", metavar="JSON", help="a stored report to compare with")
    bench.add_argument("--batch-size", type=int, help="override every configuration's batch size")
    bench.add_argument("--max-length", type=int, help="cap every sequence length (small smoke runs)")
    bench.add_argument("--rounds", type=int, help="timed rounds per provider (default 30 GPU, 5 CPU)")
    bench.add_argument("--warmup", type=int, help="untimed calls first (default 10 GPU, 2 CPU)")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    train = sub.add_parser("train", help=cmd_train.__doc__)
    train.add_argument("task", choices=TRAIN_TASKS)
    train.add_argument("--model", choices=TRAIN_MODELS, default="tcn", help="the TCN (default) or a matched baseline")
    train.add_argument("--data", help="music: a .mat dataset (default: the JSB Chorales shipped)")
    train.add_argument("--preset", choices=PRESETS, default="auto",
                       help="music: the settings; auto (default) takes the dataset's own (JSB Chorales, Nottingham, "
                            "recognised by their splits) and the TCN authors' script defaults for any other")
    train.add_argument("--epochs", type=int, help="override the paper's epoch count")
    train.add_argument("--T", type=int, help="sequence length of adding / copy (paper: 600 / 1000)")
    train.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    train.add_argument("--quick", action="store_true", help="less data, fewer epochs: a smoke run")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--minutes", type=float, help="wall-time budget: start no epoch that would end past it")
    train.add_argument("--out", default="results", help="results folder (default ./results)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar or per-epoch lines")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("batch_size", "max_length", "rounds", "warmup", "epochs", "T"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if getattr(args, "minutes", None) is not None and not args.minutes > 0:
        parser.error("--minutes must be > 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    return {"info": cmd_info, "check": cmd_check, "bench": cmd_bench, "train": cmd_train}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
