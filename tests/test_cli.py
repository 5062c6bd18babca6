"""The command line (`python -m tcnkernels info | check | bench`) and the benchmark helpers, on a CPU."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tcnkernels
from tcnkernels.__main__ import DEFAULT_BENCH_OUT
from tcnkernels.bench import configs, providers, timing
from tcnkernels.bench import report as bench_report

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, timeout=600, cwd=ROOT):
    proc = subprocess.run([sys.executable, "-m", "tcnkernels", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_info_names_versions_device_and_backends():
    out = run_cli("info")
    for needle in ("tcnkernels 0.1.0", f"torch      {torch.__version__}", "triton", "device", "interpreter",
                   "auto picks", "C++ CPU helpers: in use"):
        assert needle in out, out


@pytest.mark.slow
def test_check_runs_the_kernels_and_passes():
    out = run_cli("check")
    assert "all checks passed" in out and "FAIL" not in out, out
    assert out.count("ok ") >= 7
    # every number is labelled: "dx err 1.2e-07 (bound 3.4e-06)"
    assert "`err` is the kernel's largest absolute error" in out and " err " in out and "(bound " in out


@pytest.mark.slow
def test_bench_quick_writes_the_report(tmp_path):
    # Run from an empty folder with no --out: the files land in ./tcnkernels-results, never in a
    # clone's committed benchmarks/results.
    proc = subprocess.run([sys.executable, "-m", "tcnkernels", "bench", "--quick", "--structure", "--batch-size", "2",
                           "--max-length", "48", "--rounds", "2", "--warmup", "1"], capture_output=True, text=True,
                          timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "CPU providers" in out
    # progress reaches a log, not only a terminal: one line per finished case
    assert "seq-mnist network forward fp32: tcnkernels " in proc.stderr, proc.stderr[-2000:]
    [json_path] = (tmp_path / DEFAULT_BENCH_OUT).glob("*.json")
    assert f"wrote {DEFAULT_BENCH_OUT}/" in out and not (tmp_path / "benchmarks").exists()
    report = json.loads(json_path.read_text())
    assert report["environment"]["device"].startswith("CPU")
    configs_seen = {r["config"] for r in report["results"]}
    assert configs_seen == set(configs.PAPER_CONFIGS)
    for r in report["results"]:
        assert r["median_ms"] > 0 and r["floor_multiple"] > 0 and r["provider"] in configs.CPU_PROVIDERS
    markdown = json_path.with_suffix(".md").read_text()
    assert "| seq-mnist | network | forward |" in markdown and "## Goals" in markdown
    assert "## One training step" in markdown and report["structure"]
    # the long tables not asked for are left out, and the report says how to get them
    assert "host_overhead" not in report and "streaming" not in report
    assert "Not in this report: --host, --streaming, --onnx" in markdown
    assert json_path.with_suffix(".png").exists()
    # A rerun at the same shapes compares every case with the stored report...
    again = run_cli("bench", "--batch-size", "2", "--max-length", "48", "--rounds", "1", "--warmup", "1",
                    "--out", str(tmp_path / "again"), "--compare", str(json_path), "--no-progress")
    assert again.count("of stored") == len(report["results"]) and "not compared" not in again
    # ...and one at another length compares none of them.
    other = run_cli("bench", "--batch-size", "2", "--max-length", "40", "--rounds", "1", "--warmup", "1",
                    "--out", str(tmp_path / "other"), "--compare", str(json_path), "--no-progress")
    assert "of stored" not in other and f"{len(report['results'])} case(s) have no stored result" in other


def test_default_bench_plan_is_the_short_one():
    """The default report: the paper networks in fp32, forward and training, tcnkernels against the
    reference, and none of the long tables (they need --full or their own flag)."""
    cases = configs.plan(torch.device("cpu"), full=False)
    assert len(cases) == 2 * len(configs.PAPER_CONFIGS)
    assert {(s.level, d) for s, _, d, _ in cases} == {("network", "fp32")}
    assert all(p == list(configs.CPU_PROVIDERS) for *_, p in cases)


def test_streaming_table_from_a_short_measurement():
    from tcnkernels.bench import streaming
    rows = streaming.measure(configs=("adding",), batches=(1,), blocks=1)
    assert {r["provider"] for r in rows} >= {"tcnkernels (C++)", "naive streamer", "onnxruntime step", "pytorch-tcn",
                                             "lstm"}
    assert all(r["us_per_step"] > 0 for r in rows)
    lines = streaming.streaming_table(rows)
    assert any(line.startswith("| adding | 1 | ") for line in lines)


def test_pytorch_tcn_streams_one_model_per_row():
    """pytorch-tcn's streaming mode takes one sequence: beyond batch 1 the bench steps one model per
    row, each with its own buffers, and leaves it out past PYTORCH_TCN_MAX_BATCH rows."""
    from tcnkernels.bench import streaming
    step = streaming._pytorch_tcn_stepper("adding", 3)
    outs = [step() for _ in range(4)]
    assert [tuple(o.shape) for o in outs[-1]] == [(1, 24, 1)] * 3
    assert not torch.equal(outs[0][0], outs[-1][0])  # the buffers fill: a step depends on the past ones
    assert streaming._pytorch_tcn_stepper("adding", streaming.PYTORCH_TCN_MAX_BATCH + 1) is None


@pytest.mark.slow
def test_onnx_forward_table_from_a_short_measurement():
    """The ONNX forward table times all three providers on one network, and each one's output is the
    reference's; the onnxruntime step the streaming table times is the model's forward, step by step."""
    from tcnkernels.bench import deployment
    rows = deployment.measure(configs=("nottingham",), blocks=1)
    assert [r["provider"] for r in rows] == list(deployment.FORWARD_PROVIDERS)
    assert all(r["ms"] > 0 and r["max_abs_diff"] < 1e-4 for r in rows)
    [line] = [line for line in deployment.onnx_table(rows) if line.startswith("| nottingham | ")]
    assert line.count("(x") == 2
    torch.manual_seed(1)
    model = tcnkernels.TemporalConvNet(3, [8, 8], kernel_size=3).eval()
    x_t = torch.randn(2, 3, 1)
    step = deployment.ort_stepper(model, x_t)
    ys = np.concatenate([step() for _ in range(6)], axis=2)
    with torch.no_grad():
        expected = model(x_t.repeat(1, 1, 6)).numpy()
    np.testing.assert_allclose(ys, expected, rtol=1e-5, atol=1e-5)


def test_onnx_forward_table_says_what_is_missing(monkeypatch):
    from tcnkernels.bench import deployment
    monkeypatch.setattr(deployment, "onnx_missing", lambda: "onnxruntime is not installed")
    rows = deployment.measure()
    assert rows == [dict(skipped="onnxruntime is not installed")]
    assert deployment.onnx_table(rows)[-1] == "Not run: onnxruntime is not installed."


def _report(results, device="GPU"):
    return {"environment": {"device": device, "date": "today", "tcnkernels": "0", "torch": "0", "triton": "0",
                            "cuda": "13", "driver": "1", "tf32": True},
            "ceilings": {"bandwidth_Bps": 3e12, "dense_flops": {"fp32": 4e14, "bf16": 8e14}}, "results": results}


def test_chart_plots_the_speedups():
    """The bars are tcnkernels' speed-ups over each baseline, one group per network case."""
    results = [_fake_result("tcnkernels", "adding", "forward", 1.0), _fake_result("cudnn", "adding", "forward", 3.0),
               _fake_result("lstm", "adding", "forward", 5.0),
               _fake_result("tcnkernels", "seq-mnist", "forward", 2.0),
               _fake_result("cudnn", "seq-mnist", "forward", 3.0),
               dict(_fake_result("compiled", "adding", "forward", 1.0), error="RuntimeError: boom")]
    fig = bench_report.draw_chart(_report(results))
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights[:2] == [3.0, 1.5]  # cudnn: adding, seq-mnist
    assert heights[2] == 5.0 and heights[3] != heights[3]  # lstm: adding, no seq-mnist result (NaN: no bar)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cudnn", "lstm"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["adding\nforward", "seq-mnist\nforward"]
    assert "- compiled, adding network forward fp32: RuntimeError: boom" in bench_report.render_markdown(
        _report(results))


def test_a_provider_that_fails_is_reported_not_fatal(monkeypatch):
    real_prepare = timing.prepare

    def prepare(provider, *args):
        if provider == "cudnn":
            raise RuntimeError("capture failed")
        return real_prepare(provider, *args)

    monkeypatch.setattr(timing, "prepare", prepare)
    shape = configs.Shape("tiny", "network", 2, 3, (4, 4), 3, 32)
    ceilings = {"bandwidth_Bps": 1e10, "dense_flops": {"fp32": 1e11, "bf16": 1e11}}
    results = timing.run_case(shape, "forward", "fp32", ["tcnkernels", "cudnn"], torch.device("cpu"), ceilings,
                              rounds=1, warmup=1)
    assert results[0]["median_ms"] > 0 and results[1]["error"] == "RuntimeError: capture failed"


def test_bench_rejects_bad_options():
    proc = subprocess.run([sys.executable, "-m", "tcnkernels", "bench", "--rounds", "0"], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 2 and "--rounds must be >= 1" in proc.stderr


def test_train_rejects_a_budget_of_no_time():
    proc = subprocess.run([sys.executable, "-m", "tcnkernels", "train", "adding", "--minutes", "0"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "--minutes must be > 0" in proc.stderr


@pytest.mark.slow
def test_benchmark_files_are_collected():
    proc = subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "--collect-only", "-q", "-p", "no:xdist"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "test_speed.py::test_speed" in proc.stdout


def test_work_counts_conv_flops_and_bytes():
    shape = configs.Shape("s", "conv", 4, 8, (16,), 3, 100, dilation=2)
    flops, bytes_ = configs.work(shape, "forward", "fp32")
    assert flops == 2 * 4 * 16 * 8 * 3 * 100
    assert bytes_ == 4 * (4 * 100 * (8 + 16) + 16 * 8 * 3 + 16)
    assert configs.work(shape, "forward+backward", "fp32")[0] == 3 * flops


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_baseline_matches_the_tcn_parameter_count(kind):
    shape = configs.paper_shapes()[1]  # seq-mnist
    n_tcn = providers.parameter_count(providers.reference_model(shape))
    n_rnn = providers.parameter_count(providers.RecurrentBaseline(kind, shape.c_in, n_tcn))
    assert abs(n_rnn - n_tcn) / n_tcn < 0.02


def _fake_result(provider, config, mode, ms):
    shape = configs.paper_shapes()[0]
    result = timing.summarize([ms / 1e3], shape, mode, "fp32", {"bandwidth_Bps": 3e12,
                                                                   "dense_flops": {"fp32": 4e14, "bf16": 8e14}})
    return dict(result, config=config, provider=provider)


def test_goals_report_met_missed_and_unmeasured():
    results = []
    for config in configs.SMALL_CHANNEL_CONFIGS:
        results += [_fake_result("tcnkernels", config, "forward", 1.0), _fake_result("cudnn", config, "forward", 3.5)]
        results += [_fake_result("tcnkernels", config, "forward+backward", 1.0),
                    _fake_result("cudnn", config, "forward+backward", 1.5)]
    report = _report(results)
    forward, backward, compiled, lstm, bandwidth = bench_report.goals(report)
    assert forward[1] == "met"
    assert backward[1] == "missed" and "adding x1.50 (" in backward[2]
    assert compiled[1] == lstm[1] == bandwidth[1] == "not measured"
    assert "## Goals" in bench_report.render_markdown(report)


@pytest.mark.slow
@pytest.mark.parametrize("mode,dtype", [("step", "bf16"), ("forward", "fp32")])
def test_every_provider_runs_a_case(mode, dtype):
    """The GPU baselines' code paths (cuDNN settings, torch.compile, LSTM/GRU, autocast, optimizer
    step) run on a CPU too; only their timings need a GPU to mean anything. A provider this CPU
    cannot run (oneDNN's bf16 LSTM needs AVX-512) is reported as skipped, with the reason, exactly
    when a tiny model of it fails here."""
    shape = configs.Shape("tiny", "network", 2, 3, (4, 4), 3, 32, dropout=0.1)
    ceilings = {"bandwidth_Bps": 1e10, "dense_flops": {"fp32": 1e11, "bf16": 1e11}}
    names = ["tcnkernels", "cudnn", "cudnn-deterministic", "compiled", "lstm", "gru"]
    results = timing.run_case(shape, mode, dtype, names, torch.device("cpu"), ceilings, rounds=2, warmup=1)
    assert [r["provider"] for r in results] == names
    for r in results:
        reason = providers.unsupported_reason(r["provider"], mode, dtype, torch.device("cpu"))
        if reason is None:
            assert r["median_ms"] > 0 and r["rounds"] == 2 and r["floor_bound"] in ("memory", "compute"), r
        else:
            assert r["skipped"] == reason and "median_ms" not in r and "error" not in r
    assert not torch.backends.cudnn.deterministic


def test_a_provider_this_cpu_cannot_run_is_skipped_with_its_reason(monkeypatch):
    """On a CPU whose oneDNN has no bf16 LSTM, the bf16 LSTM is a skipped provider in the report,
    not an error and not a crash; the probe that decides it runs the real LSTM."""
    real = providers.unsupported_reason("lstm", "step", "bf16", torch.device("cpu"))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = torch.nn.LSTM(3, 4)(torch.randn(5, 2, 3))[0]
        out.float().sum().backward()
        runs = True
    except RuntimeError:
        runs = False
    assert (real is None) == runs
    monkeypatch.setattr(providers, "_recurrent_probe", lambda kind, device_type, dtype: f"{kind} needs AVX-512")
    shape = configs.Shape("tiny", "network", 2, 3, (4, 4), 3, 32)
    ceilings = {"bandwidth_Bps": 1e10, "dense_flops": {"fp32": 1e11, "bf16": 1e11}}
    results = timing.run_case(shape, "forward", "bf16", ["tcnkernels", "lstm"], torch.device("cpu"), ceilings,
                              rounds=1, warmup=1)
    assert results[1] == dict(timing.case_fields(shape, "forward", "bf16"), provider="lstm",
                              skipped="lstm needs AVX-512")
    markdown = bench_report.render_markdown(_report(results, device="CPU"))
    assert "## Providers this device cannot run (skipped)" in markdown and "lstm needs AVX-512" in markdown


def test_train_choices_match_the_tasks():
    from tcnkernels.__main__ import TRAIN_MODELS, TRAIN_TASKS
    from tcnkernels.tasks.train import MODELS, TASKS
    assert (TRAIN_TASKS, TRAIN_MODELS) == (TASKS, MODELS)


def test_info_imports_no_task_and_no_bench():
    code = ("import sys; from tcnkernels.__main__ import main; main(['info']); "
            "print(sorted(m for m in sys.modules if m.startswith(('tcnkernels.tasks', 'tcnkernels.bench'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
