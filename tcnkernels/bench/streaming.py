"""Streaming inference, timed: the cost of one new time step of a paper network, per provider.

  tcnkernels (C++)     Streamer with the C++ step: one call advances the whole network
  naive streamer       Streamer with the PyTorch step: per-conv PyTorch ops, one cache per conv,
                       weight norm folded once (what a careful user writes by hand)
  recompute window     the full forward over the receptive field, keeping the last output
  onnxruntime step     `tcnkernels.export.to_onnx(..., streaming=True)` run by onnxruntime, the
                       states fed back as numpy arrays (what a deployment does); left out when
                       onnx, onnxscript or onnxruntime is absent
  pytorch-tcn          the `pytorch-tcn` package's streaming mode (`inference=True`), the same
                       sizes (its own weights); it takes one sequence at a time, so beyond batch 1
                       one model per row, each stepped in turn (up to PYTORCH_TCN_MAX_BATCH rows);
                       a benchmark-only extra (`pip install pytorch-tcn`), left out when absent
  lstm                 a one-layer nn.LSTM with the TCN's parameter count, stepping one token

Every provider runs in this process on the same inputs, timed in blocks of back-to-back steps with
the providers' blocks interleaved; the numbers are CPU timings (the fastest block's time per step).
The recompute-window provider only runs where one step costs under WINDOW_BUDGET_S (at B=1024 it
is seconds a step).
"""
import copy
import time

import torch

from .._backend import use_backend
from ..conversion import convert
from ..ops.reference import ReferenceTemporalConvNet
from ..streaming import Streamer
from . import markdown
from .configs import PAPER_CONFIGS
from .providers import RecurrentBaseline, parameter_count
from .timer import block_us

STREAM_CONFIGS = ("adding", "seq-mnist")
BATCHES = (1, 64, 1024)
PROVIDERS = ("tcnkernels (C++)", "naive streamer", "recompute window", "onnxruntime step", "pytorch-tcn", "lstm")
WINDOW_BUDGET_S = 0.2
PYTORCH_TCN_MAX_BATCH = 64


def _model(config):
    _, c_in, channels, K, _, _ = PAPER_CONFIGS[config]
    torch.manual_seed(0)
    return ReferenceTemporalConvNet(c_in, list(channels), K, 0.0).eval(), c_in


def receptive_field(model):
    blocks = list(model.network)
    K = blocks[0].conv1.kernel_size[0]
    return 1 + 2 * (K - 1) * (2 ** len(blocks) - 1)


def steppers(config, batch):
    """{provider: a callable that advances one time step}."""
    reference, c_in = _model(config)
    model = convert(reference)
    x_t = torch.randn(batch, c_in, 1)
    fns = {}
    for provider, backend in (("tcnkernels (C++)", "cpp"), ("naive streamer", "torch")):
        try:
            stream = Streamer(model, batch, backend=backend)
        except ValueError:  # no C++ compiler here: the provider is left out, not faked
            continue
        fns[provider] = lambda s=stream: s.step(x_t)
    window = torch.randn(batch, c_in, receptive_field(model))

    def recompute():
        with torch.no_grad():
            return model(window)[:, :, -1]

    fns["recompute window"] = recompute
    from .deployment import onnx_missing, ort_stepper  # deployment imports this module's timer
    if onnx_missing() is None:
        fns["onnxruntime step"] = ort_stepper(model, x_t)
    pytorch_tcn = _pytorch_tcn_stepper(config, batch)
    if pytorch_tcn is not None:
        fns["pytorch-tcn"] = pytorch_tcn
    lstm = RecurrentBaseline("lstm", c_in, parameter_count(model)).rnn.eval()
    state = [None]
    token = torch.randn(1, batch, c_in)

    def lstm_step():
        with torch.no_grad():
            out, state[0] = lstm(token, state[0])
        return out

    fns["lstm"] = lstm_step
    return fns


def _pytorch_tcn_stepper(config, batch):
    """One streaming step of pytorch-tcn's TCN of the same sizes for `batch` rows, or None (not
    installed, or batch > PYTORCH_TCN_MAX_BATCH). Its streaming mode keeps one sequence's buffers
    in the model: `batch` rows are `batch` models, stepped one after the other."""
    try:
        from pytorch_tcn import TCN
    except ImportError:
        return None
    if batch > PYTORCH_TCN_MAX_BATCH:
        return None
    _, c_in, channels, K, _, _ = PAPER_CONFIGS[config]
    torch.manual_seed(0)
    model = TCN(c_in, list(channels), kernel_size=K, dilations=[2**i for i in range(len(channels))], dropout=0.0,
                causal=True, use_norm="weight_norm", activation="relu").eval()
    models = [model] + [copy.deepcopy(model) for _ in range(batch - 1)]
    x_t = torch.randn(batch, c_in, 1)
    rows = list(x_t.split(1))

    def step():
        with torch.no_grad():
            return [m(row, inference=True) for m, row in zip(models, rows)]

    return step


def measure(configs=STREAM_CONFIGS, batches=BATCHES, blocks=5, threads=None):
    """[{config, batch, provider, us_per_step, steps_per_s, block_us}]: each provider timed in `blocks`
    blocks of back-to-back steps, the providers' blocks interleaved; `us_per_step` is the fastest
    block. Blocks rather than alternating single calls: a call right after another provider's pays
    for that one's cache footprint and its idle worker threads, which is not its own cost."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    rows = []
    try:
        with use_backend("torch"):  # the recompute-window provider: the PyTorch path, as on a CPU
            for config in configs:
                for batch in batches:
                    fns = steppers(config, batch)
                    start = time.perf_counter()
                    fns["recompute window"]()
                    if time.perf_counter() - start > WINDOW_BUDGET_S:
                        del fns["recompute window"]
                    samples = {p: [] for p in fns}
                    for _ in range(blocks):
                        for provider, fn in fns.items():
                            fn()  # warm: this provider's weights back in cache
                            samples[provider].append(block_us(fn))
                    for provider, times in samples.items():
                        us = min(times)
                        rows.append(dict(config=config, batch=batch, provider=provider, us_per_step=us,
                                         steps_per_s=batch * 1e6 / us, block_us=times))
    finally:
        torch.set_num_threads(previous)
    return rows


def streaming_table(rows):
    """Markdown: microseconds per step (and rows x steps per second), the C++ step's speed-up."""
    if not rows:
        return []
    cases = {}
    for r in rows:
        cases.setdefault((r["config"], r["batch"]), {})[r["provider"]] = r
    body = []
    for (config, batch), by in cases.items():
        ours = by.get(PROVIDERS[0])
        cells = []
        for p in PROVIDERS:
            r = by.get(p)
            if r is None:
                cells.append("not run")
            elif ours is None or p == PROVIDERS[0]:
                cells.append(f"{r['us_per_step']:.0f}")
            else:
                cells.append(f"{r['us_per_step']:.0f} (x{r['us_per_step'] / ours['us_per_step']:.1f})")
        body.append([config, batch, *cells])
    return ["", "## Streaming inference (CPU timing: one new step of every row, microseconds per step, fastest of 5 "
            "interleaved blocks)", ""] + markdown.table(["config", "batch", *PROVIDERS], body)
