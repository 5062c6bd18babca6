"""The TCN libraries' own training on tcnkernels: a Darts TCNModel and a NeuralForecast TCN fit with
and without the integration, and the structure of their training steps.

    python benchmarks/zoo.py                        # writes benchmarks/results/cpu-zoo.md and .json
    python benchmarks/zoo.py --repeats 1 --md F --json F

Fit (CPU timing, one process): each fit is the library's `fit` on the same data, seed and settings,
with `tcnkernels.integrations` applied or not, the two interleaved `--repeats` times in ABBA order;
the table gives the fastest of each and their ratio. A tiny model spends its step in the
libraries' training loop, not in its convs: one more fit, under the PyTorch profiler, gives the
share of the fit's time in tensor ops and in convolutions. On a CPU both variants run PyTorch's
convolutions (tcnkernels' torch path), so the ratio measures what the integration adds or saves
around them. The data is a synthetic series (a sine and noise; the time does not depend on the
values).

Structure (counted on meta tensors, not timed): kernel launches and bytes saved for the backward
of one training step of each library's TCN module (and of a stack of Parallel WaveGAN's
WaveNet blocks), converted by `tcnkernels.convert` (the Triton
path, launches recorded) against the library's own, as `tcnkernels bench --structure` counts them.
"""
import argparse
import copy
import json
import logging
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import tcnkernels
from tcnkernels import integrations
from tcnkernels.bench import markdown
from tcnkernels.bench.structure import count_training_step

RESULTS = Path(__file__).resolve().parent / "results"
SERIES_LENGTH = 1000
QUIET = dict(enable_progress_bar=False, enable_model_summary=False, logger=False, enable_checkpointing=False)

# (name, library, settings): the libraries' defaults (with a window to train on) and a larger TCN
SIZES = [
    ("Darts TCNModel, defaults (3 filters, K=3, 4 levels)", "darts",
     dict(input_chunk_length=24, output_chunk_length=12)),
    ("Darts TCNModel, 8 levels x 64 filters", "darts",
     dict(input_chunk_length=24, output_chunk_length=12, num_layers=8, num_filters=64)),
    ("NeuralForecast TCN, defaults (128 ch, K=2, 5 levels)", "neuralforecast", dict(h=12, input_size=48)),
    ("NeuralForecast TCN, 8 levels x 64 ch", "neuralforecast",
     dict(h=12, input_size=48, encoder_hidden_size=64, dilations=[2**i for i in range(8)])),
]


def _values():
    rng = np.random.default_rng(0)
    t = np.arange(SERIES_LENGTH)
    return (np.sin(t / 8) + 0.1 * rng.standard_normal(SERIES_LENGTH)).astype(np.float32)


def darts_fit(settings, epochs):
    """A Darts TCNModel fitted; returns (seconds, the model, its training steps)."""
    from darts import TimeSeries
    from darts.models import TCNModel
    model = TCNModel(**settings, n_epochs=epochs, random_state=0, batch_size=32,
                     pl_trainer_kwargs=dict(accelerator="cpu", **QUIET))
    start = time.perf_counter()
    model.fit(TimeSeries.from_values(_values()), verbose=False)
    seconds = time.perf_counter() - start
    samples = SERIES_LENGTH - settings["input_chunk_length"] - settings["output_chunk_length"] + 1
    return seconds, model, epochs * -(-samples // 32)


def nf_fit(settings, steps):
    """A NeuralForecast TCN fitted; returns (seconds, the forecaster, its training steps)."""
    from neuralforecast import NeuralForecast
    from neuralforecast.models import TCN
    frame = pd.DataFrame({"unique_id": "s", "ds": pd.date_range("2000-01-01", periods=SERIES_LENGTH, freq="D"),
                          "y": _values()})
    forecaster = NeuralForecast(models=[TCN(**settings, max_steps=steps, random_seed=0, accelerator="cpu",
                                            val_check_steps=steps, **QUIET)], freq="D")
    start = time.perf_counter()
    forecaster.fit(frame)
    return time.perf_counter() - start, forecaster, steps


def _op_shares(fit, settings, budget):
    """(share of the fit's wall time in PyTorch's tensor ops, share in convolutions and pads), from
    one more, profiled, fit without the integration (the profiler slows it: its time is not used)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        fit(settings, budget)
        wall = (time.perf_counter() - start) * 1e6
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    ops = sum(e.self_cpu_time_total for e in events)
    convs = sum(e.self_cpu_time_total for e in events if "conv" in e.key or "pad" in e.key)
    return ops / wall, convs / wall


def fit_rows(repeats, epochs, steps, log):
    rows = []
    for name, library, settings in SIZES:
        fit = darts_fit if library == "darts" else nf_fit
        budget = epochs if library == "darts" else steps
        times = {"library": [], "integration": []}
        for repeat in range(repeats):
            order = list(times) if repeat % 2 == 0 else list(times)[::-1]  # ABBA: neither always goes first
            for variant in order:
                if variant == "integration":
                    getattr(integrations, f"apply_to_{library}")()
                try:
                    seconds, _, n_steps = fit(settings, budget)
                finally:
                    getattr(integrations, f"restore_{library}")()
                times[variant].append(seconds)
        ops_share, conv_share = _op_shares(fit, settings, budget)
        best = {k: min(v) for k, v in times.items()}
        row = dict(model=name, steps=n_steps, library_s=best["library"], integration_s=best["integration"],
                   ratio=best["integration"] / best["library"], ops_share=ops_share, conv_share=conv_share,
                   all_s=times)
        log(f"{name}: {row['library_s']:.2f} s library, {row['integration_s']:.2f} s integration "
            f"(x{row['ratio']:.3f}); tensor ops {ops_share:.0%} of the fit, convs and pads {conv_share:.0%}")
        rows.append(row)
    return rows


def _meta_models():
    """(name, build, forward) of each library's TCN module at the sizes above, for meta tensors."""
    import pytorch_tcn
    from darts.models.forecasting import tcn_model
    from darts.models.forecasting.pl_forecasting_module import ModuleStage
    from darts.utils.data.torch_datasets.utils import PLModuleInput
    from neuralforecast.common._modules import TemporalConvolutionEncoder

    def darts(filters, layers):
        build = lambda: tcn_model._TCNModule(  # noqa: E731
            input_size=1, kernel_size=3, num_filters=filters, num_layers=layers, dilation_base=2, weight_norm=False,
            target_size=1, nr_params=1, target_length=12, dropout=0.2, input_chunk_length=24, output_chunk_length=12)
        x = PLModuleInput(past_target=torch.empty(32, 24, 1, device="meta"), stage=ModuleStage.TRAIN)
        return build, lambda m: m(x).prediction

    def nf(channels, dilations):
        x = torch.empty(128, 48, 1, device="meta")
        return lambda: TemporalConvolutionEncoder(1, channels, 2, dilations), lambda m: m(x)

    def wavenet():
        import scipy.signal
        import scipy.signal.windows
        scipy.signal.kaiser = scipy.signal.windows.kaiser  # parallel_wavegan 0.6.1 imports it from there
        from parallel_wavegan.layers import WaveNetResidualBlock
        h, c = torch.empty(4, 64, 4096, device="meta"), torch.empty(4, 80, 4096, device="meta")

        def run(stack):
            x, skips = h, 0
            for block in stack:
                x, skip = block(x, c)
                skips = skips + skip
            return skips

        return lambda: torch.nn.ModuleList(WaveNetResidualBlock(3, 64, 128, 64, 80, dilation=2**i)
                                           for i in range(10)), run

    x = torch.empty(32, 1, 1000, device="meta")
    return [
        ("Darts, defaults (3 filters, 4 levels), B=32, L=24", *darts(3, 4)),
        ("Darts, 8 x 64, B=32, L=24", *darts(64, 8)),
        ("NeuralForecast encoder, defaults (128 ch, 5 levels), 128 windows, L=48", *nf(128, [1, 2, 4, 8, 16])),
        ("NeuralForecast encoder, 8 x 64, 128 windows, L=48", *nf(64, [2**i for i in range(8)])),
        ("pytorch-tcn TCN, 8 x 64, K=3, weight norm, B=32, L=1000",
         lambda: pytorch_tcn.TCN(1, [64] * 8, kernel_size=3, dropout=0.1, use_norm="weight_norm"), lambda m: m(x)),
        ("Parallel WaveGAN residual blocks, 10 x (64 res, 128 gate, 64 skip, 80 aux), B=4, T=4096", *wavenet()),
    ]


def structure_rows():
    rows = []
    for name, build, forward in _meta_models():
        with torch.device("meta"):
            torch.manual_seed(0)
            theirs = build()
        ours = tcnkernels.convert(copy.deepcopy(theirs), strict=True)
        for provider, model, triton in (("tcnkernels", ours, True), ("library", theirs, False)):
            model.train()
            rows.append(dict(config=name, provider=provider, **count_training_step(model, lambda: forward(model),
                                                                                   triton)))
    return rows


def render(report):
    env = report["environment"]
    lines = [f"# The TCN libraries on tcnkernels: {env['cpu']}", "",
             f"{env['date']}, tcnkernels {env['tcnkernels']}, torch {env['torch']}, darts {env['darts']}, "
             f"neuralforecast {env['neuralforecast']}, pytorch-tcn {env['pytorch_tcn']}, {env['threads']} threads.",
             "", "## Fit (CPU timing, one process)", "",
             f"The library's `fit` without and with `tcnkernels.integrations` (fastest of {report['repeats']} "
             "interleaved fits each, in ABBA order; `ratio` below 1: the integration is faster). Where the time goes, "
             "from one profiled fit without the integration: `tensor ops`, the share of the fit's wall time in "
             "PyTorch's tensor ops (the rest is the training loop, data loading and Python); `convs`, in "
             "convolutions and pads, forward and backward.", ""]
    lines += markdown.table(["model", "steps", "library (s)", "integration (s)", "ratio", "tensor ops", "convs"],
                            [[r["model"], r["steps"], f"{r['library_s']:.2f}", f"{r['integration_s']:.2f}",
                              f"{r['ratio']:.3f}", f"{r['ops_share']:.0%}", f"{r['conv_share']:.0%}"]
                             for r in report["fit"]])
    lines += ["", "## One training step of the TCN module, counted on meta tensors (not timed)", "",
              "Kernel launches (tcnkernels' Triton launches plus every PyTorch compute op) and bytes saved for "
              "the backward, `tcnkernels.convert`ed against the library's own module.", ""]
    pairs = {}
    for r in report["structure"]:
        pairs.setdefault(r["config"], {})[r["provider"]] = r
    lines += markdown.table(
        ["module", "launches: tcnkernels", "library", "saved MB: tcnkernels", "library", "saved ratio"],
        [[name, p["tcnkernels"]["launches"], p["library"]["launches"], f"{p['tcnkernels']['saved_bytes'] / 1e6:.2f}",
          f"{p['library']['saved_bytes'] / 1e6:.2f}",
          f"{p['tcnkernels']['saved_bytes'] / p['library']['saved_bytes']:.2f}"] for name, p in pairs.items()])
    return "\n".join(lines) + "\n"


def _environment():
    from importlib.metadata import version

    import darts
    import neuralforecast
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return dict(date=time.strftime("%Y-%m-%d"), cpu=cpu, tcnkernels=tcnkernels.__version__, torch=torch.__version__,
                darts=darts.__version__, neuralforecast=neuralforecast.__version__,
                pytorch_tcn=version("pytorch-tcn"), threads=torch.get_num_threads())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=6, help="interleaved fits of each variant (default 6)")
    parser.add_argument("--epochs", type=int, default=2, help="Darts epochs per fit (default 2)")
    parser.add_argument("--steps", type=int, default=60, help="NeuralForecast steps per fit (default 60)")
    parser.add_argument("--md", default=str(RESULTS / "cpu-zoo.md"))
    parser.add_argument("--json", default=str(RESULTS / "cpu-zoo.json"))
    parser.add_argument("--structure-only", action="store_true",
                        help="recount the training steps' structure; keep the fit rows of the existing --json")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "darts", "neuralforecast"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.structure_only:  # the counts do not depend on the machine; the fit timings stay those measured
        report = json.loads(Path(args.json).read_text())
        report["structure"] = structure_rows()
    else:
        report = dict(environment=_environment(), repeats=args.repeats, structure=structure_rows(),
                      fit=fit_rows(args.repeats, args.epochs, args.steps, log=lambda line: print(line, flush=True)))
    Path(args.json).write_text(json.dumps(report, indent=1))
    Path(args.md).write_text(render(report))
    print(render(report))


if __name__ == "__main__":
    main()
