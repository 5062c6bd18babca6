"""The speed report's outputs: environment record, Markdown table with goals, chart, comparison, files."""
import json
import platform
import subprocess
import time
from pathlib import Path

import torch

from .._version import __version__
from . import markdown
from .configs import CPU_PROVIDERS, GPU_PROVIDERS, SMALL_CHANNEL_CONFIGS
from .deployment import onnx_table
from .streaming import streaming_table


def environment(device):
    import numpy

    env = {"tcnkernels": __version__, "torch": torch.__version__, "python": platform.python_version(),
           "numpy": numpy.__version__, "platform": platform.platform(), "date": time.strftime("%Y-%m-%d")}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device=props.name, cuda=torch.version.cuda, sm=f"{props.major}{props.minor}",
                   sms=props.multi_processor_count, tf32=torch.backends.cudnn.allow_tf32,
                   driver=_nvidia_driver())
    else:
        env.update(device=_cpu_name(), threads=torch.get_num_threads())
    try:
        env["commit"] = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                                       cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["commit"] = None
    return env


def _nvidia_driver():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


def _cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"CPU {platform.processor() or platform.machine()}"


def device_slug(name):
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def timed_results(report):
    """The results that have timings (a provider that failed to run has an `error` instead, one
    this device cannot run a `skipped` reason)."""
    return [r for r in report["results"] if "error" not in r and "skipped" not in r]


def group_by_case(results):
    """{(config, level, mode, dtype): {provider: result}}."""
    table = {}
    for r in results:
        table.setdefault((r["config"], r["level"], r["mode"], r["dtype"]), {})[r["provider"]] = r
    return table


def providers_in(rows):
    """The providers present in `rows` ({provider: result} dicts), in the canonical order."""
    rows = list(rows)  # may be a generator: it is scanned once per provider
    return [p for p in dict.fromkeys((*GPU_PROVIDERS, *CPU_PROVIDERS)) if any(p in row for row in rows)]


def _rate(ceil, dtype):
    rate = ceil["dense_flops"].get(dtype)
    return f"{rate / 1e12:.2f} TFLOP/s {dtype}" if rate else f"{dtype} not measured (no {dtype} case)"


def render_markdown(report):
    env = report["environment"]
    ceil = report["ceilings"]
    lines = [f"# tcnkernels speed report: {env['device']}", "",
             f"{env['date']}, tcnkernels {env['tcnkernels']} (commit {env.get('commit')}), torch {env['torch']}, "
             f"triton {env['triton']}" + (f", CUDA {env['cuda']}, driver {env['driver']}, TF32 {env['tf32']}"
                                          if "cuda" in env else f", {env['threads']} threads"), "",
             f"Measured ceilings: copy {ceil['bandwidth_Bps'] / 1e9:.1f} GB/s, dense (best of matmul and conv) "
             f"{_rate(ceil, 'fp32')}, {_rate(ceil, 'bf16')}. Times are medians (ms); `xN` is the speed-up of "
             "tcnkernels over that provider; `floor` is tcnkernels' time as a multiple of max(bytes/bandwidth, "
             "FLOPs/dense rate).", ""]
    table = group_by_case(timed_results(report))
    providers = providers_in(table.values())
    rows = []
    for (config, level, mode, dtype), row in table.items():
        ours = row.get("tcnkernels")
        cells = []
        for p in providers:
            r = row.get(p)
            if r is None:
                cells.append("")
            elif p == "tcnkernels" or ours is None:
                cells.append(f"{r['median_ms']:.3f}")
            else:
                cells.append(f"{r['median_ms']:.3f} (x{r['median_ms'] / ours['median_ms']:.2f})")
        rows.append([config, level, mode, dtype, *cells, f"{ours['floor_multiple']:.1f}x" if ours else ""])
    lines += markdown.table(["config", "level", "mode", "dtype", *providers, "floor"], rows)
    for title, key in (("Providers this device cannot run (skipped)", "skipped"),
                       ("Providers that failed to run", "error")):
        listed = [r for r in report["results"] if key in r]
        if listed:
            lines += ["", f"## {title}", ""]
            lines += [f"- {r['provider']}, {r['config']} {r['level']} {r['mode']} {r['dtype']}: {r[key]}"
                      for r in listed]
    host = report.get("host_overhead")
    if host:
        lines += ["", "## Host overhead (CPU timing: Triton launches stubbed out, CPU tensors, microseconds per call)",
                  ""]
        lines += markdown.table(["call", "us per call", "goal"],
                                [[r["name"], f"{r['us']:.1f}", r.get("goal_us") or ""] for r in host])
    lines += structure_table(report.get("structure"))
    lines += streaming_table(report.get("streaming"))
    lines += onnx_table(report.get("onnx"))
    absent = [flag for flag, key in (("--host", "host_overhead"), ("--structure", "structure"),
                                     ("--streaming", "streaming"), ("--onnx", "onnx")) if not report.get(key)]
    if absent:
        lines += ["", f"Not in this report: {', '.join(absent)} (`tcnkernels bench {' '.join(absent)}`, or `--full`)."]
    lines += ["", "The static profile of the GPU binaries (instructions per output, registers, spills, of the plain "
              "and the fused block kernels) is its own report: `python benchmarks/sass_profile.py` in a clone."]
    lines += ["", "## Goals (for H100/H200-class GPUs)", ""]
    lines += markdown.table(["goal", "status", "detail"], goals(report))
    return "\n".join(lines) + "\n"


def structure_table(rows):
    """Launches and saved activations of one training step, tcnkernels against the reference."""
    if not rows:
        return []
    by_config = {}
    for r in rows:
        by_config.setdefault(r["config"], {})[r["provider"]] = r
    body = [[config, pair["tcnkernels"]["launches"], pair["reference"]["launches"],
             f"{pair['tcnkernels']['saved_bytes'] / 1e6:.1f}", f"{pair['reference']['saved_bytes'] / 1e6:.1f}",
             f"{pair['tcnkernels']['saved_bytes'] / pair['reference']['saved_bytes']:.2f}"]
            for config, pair in by_config.items()]
    return ["", "## One training step, counted on meta tensors (not timed): kernel launches and activations "
            "saved for the backward", ""] + markdown.table(
        ["config", "launches: tcnkernels", "reference", "saved MB: tcnkernels", "reference", "saved ratio"], body)


def bottleneck(result):
    """The likely limit of a measured case, from where its floor comes from and how far off it is."""
    if result["floor_multiple"] > 10:
        return "launch/latency-bound (over 10x the roofline floor: many small kernels)"
    return f"{result['floor_bound']}-bound"


def _goal(name, table, keys, baseline, target):
    """(goal, status, detail) of "tcnkernels >= target x faster than `baseline`" over the given cases."""
    rows = [(k, table[k]) for k in keys if k in table and "tcnkernels" in table[k] and baseline in table[k]]
    if not rows:
        return name, "not measured", f"needs {baseline} results (a GPU report)"
    misses = [f"{k[0]} x{r[baseline]['median_ms'] / r['tcnkernels']['median_ms']:.2f} ({bottleneck(r['tcnkernels'])})"
              for k, r in rows if r[baseline]["median_ms"] / r["tcnkernels"]["median_ms"] < target]
    return name, "met" if not misses else "missed", "; ".join(misses) or f"{len(rows)} cases"


def goals(report):
    """The project's speed goals (on H100/H200 class GPUs), and where this report stands on each."""
    results = timed_results(report)
    table = group_by_case(results)
    net = lambda mode: [(c, "network", mode, "fp32") for c in SMALL_CHANNEL_CONFIGS]  # noqa: E731
    rows = [
        _goal("whole-TCN forward >= 3x the cuDNN reference (small-channel configs)", table, net("forward"),
              "cudnn", 3.0),
        _goal("whole-TCN forward+backward >= 2x the cuDNN reference", table, net("forward+backward"), "cudnn", 2.0),
        _goal("whole-TCN forward+backward >= 1.5x the compiled reference", table, net("forward+backward"),
              "compiled", 1.5),
        _goal("training step >= 5x the matched cuDNN LSTM at L=784 (seq-mnist)", table,
              [("seq-mnist", "network", "step", "fp32")], "lstm", 5.0),
    ]
    memory_bound = [r for r in results if r["provider"] == "tcnkernels" and r["level"] == "conv"
                    and bottleneck(r) == "memory-bound"]
    if report["environment"].get("cuda") is None or not memory_bound:
        rows.append(("memory-bound kernels >= 70 % of measured bandwidth", "not measured",
                     "needs single-conv results on a GPU (bench --full)"))
    else:
        share = [r["gb_per_s"] * 1e9 / report["ceilings"]["bandwidth_Bps"] for r in memory_bound]
        rows.append(("memory-bound kernels >= 70 % of measured bandwidth", "met" if min(share) >= 0.7 else "missed",
                     f"{min(share):.0%} .. {max(share):.0%} over {len(share)} cases"))
    return rows


def chart_data(report):
    """(case labels, {baseline: [speed-up of tcnkernels per case]}) of the whole-network fp32 cases;
    a baseline missing from a case is NaN there (no bar)."""
    table = group_by_case(timed_results(report))
    rows = [(k, v) for k, v in table.items() if k[1] == "network" and k[3] == "fp32" and "tcnkernels" in v]
    baselines = [p for p in providers_in(v for _, v in rows) if p != "tcnkernels"]
    speedups = {p: [v[p]["median_ms"] / v["tcnkernels"]["median_ms"] if p in v else float("nan") for _, v in rows]
                for p in baselines}
    return [f"{k[0]}\n{k[2]}" for k, _ in rows], speedups


def draw_chart(report):
    """A matplotlib Figure: bars of tcnkernels' speed-up over each baseline per network case."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, speedups = chart_data(report)
    fig, ax = plt.subplots(figsize=(max(6, len(labels) * 0.9), 4))
    width = 0.8 / max(1, len(speedups))
    for i, (provider, ys) in enumerate(speedups.items()):
        ax.bar([j + i * width for j in range(len(labels))], ys, width, label=provider)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))])
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("speed-up of tcnkernels (x)")
    ax.set_title(f"Whole TCN, fp32: {report['environment']['device']}", fontsize=9)
    if speedups:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def case_key(r):
    """What makes two results comparable: the whole case, its exact shape included, and the provider."""
    return (r["config"], r["level"], r["mode"], r["dtype"], r["provider"], json.dumps(r["shape"], sort_keys=True))


def compare(report, baseline):
    """Lines comparing this report's medians with a stored one, case by case (shapes must match exactly)."""
    old = {case_key(r): r for r in timed_results(baseline)}
    lines = [f"compared with {baseline['environment']['device']} ({baseline['environment']['date']}):"]
    unmatched = 0
    for r in timed_results(report):
        name = " / ".join(map(str, case_key(r)[:5]))
        if case_key(r) in old:
            ratio = r["median_ms"] / old[case_key(r)]["median_ms"]
            lines.append(f"  {name}: {r['median_ms']:.3f} ms, x{ratio:.2f} of stored")
        else:
            unmatched += 1
    if unmatched:
        lines.append(f"  {unmatched} case(s) have no stored result with the same shape (batch size or length "
                     "differ); not compared")
    return lines


def write_report(report, out_dir):
    """Write <slug>.json, <slug>.md and <slug>.png under out_dir; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / device_slug(report["environment"]["device"])
    paths = [stem.with_suffix(".json"), stem.with_suffix(".md")]
    paths[0].write_text(json.dumps(report, indent=1))
    paths[1].write_text(render_markdown(report))
    try:
        fig = draw_chart(report)
    except ImportError:  # matplotlib is optional (the [bench] extra)
        return paths
    import matplotlib.pyplot as plt
    fig.savefig(stem.with_suffix(".png"), dpi=120)
    plt.close(fig)
    return paths + [stem.with_suffix(".png")]
