"""onnxruntime against PyTorch on this CPU: the whole forward of the paper networks, and the
streaming ONNX step (`tcnkernels bench --onnx`; the step is a provider of the streaming table).

Whole forward, the paper networks at their batch sizes, inference (no_grad):
  reference     the authors' TemporalConvNet (nn.Conv1d padded on both sides, chomp, weight
                norm recomputed every call) in PyTorch eager
  tcnkernels    `convert` of it on tcnkernels' torch path (what a CPU user runs)
  onnxruntime   `tcnkernels.export.to_onnx` of the converted model, run by an onnxruntime
                InferenceSession (graph optimisations on, as many intra-op threads as torch has,
                not spinning when idle: they would slow the provider timed next)

Each provider is timed in blocks of back-to-back calls, the providers' blocks interleaved; the
table gives the median block's time per call (CPU timing, one process) and the largest difference
of each provider's output from the reference's, so that a fast wrong graph cannot pass unseen.
Needs onnx, onnxscript and onnxruntime (`pip install tcnkernels[export] onnxruntime`): without
them the table says so and nothing is timed.
"""
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from .._backend import use_backend
from ..conversion import convert
from ..ops.reference import ReferenceTemporalConvNet
from . import markdown
from .configs import PAPER_CONFIGS
from .timer import block_us

FORWARD_PROVIDERS = ("tcnkernels", "reference", "onnxruntime")


def onnx_missing():
    """None when onnx, onnxscript and onnxruntime import; else what to install."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install tcnkernels[export] onnxruntime)"
    return None


def session(model, example, streaming=False, threads=None):
    """An onnxruntime InferenceSession of `to_onnx(model, example, streaming=streaming)`, with
    `threads` intra-op threads (torch's count by default) and one inter-op thread."""
    import onnxruntime

    from ..export import to_onnx
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    # Its idle threads would spin on after a run and slow the provider timed next in this process.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        to_onnx(model, example, path, streaming=streaming)
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_stepper(model, x_t):
    """One streaming step of `model` in onnxruntime, as a deployment runs it: the exported step
    called with the chunk and the states it returned last time (numpy arrays, fed back)."""
    run = session(model, x_t, streaming=True)
    inputs = run.get_inputs()
    names = [i.name for i in inputs[1:]]
    state = {i.name: np.zeros([x_t.shape[0], *i.shape[1:]], np.float32) for i in inputs[1:]}
    x = x_t.numpy()

    def step():
        y, *new = run.run(None, {"x": x, **state})
        state.update(zip(names, new))
        return y

    return step


def forward_callables(config):
    """{provider: a callable returning the output as a numpy array} for one paper network."""
    B, c_in, channels, K, L, _ = PAPER_CONFIGS[config]
    torch.manual_seed(0)
    reference = ReferenceTemporalConvNet(c_in, list(channels), K, 0.0).eval()
    ours = convert(ReferenceTemporalConvNet(c_in, list(channels), K, 0.0)).eval()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(B, c_in, L)

    def torch_call(model):
        def call():
            with torch.no_grad():
                return model(x).numpy()
        return call

    run = session(ours, x)
    x_np = x.numpy()
    return {"tcnkernels": torch_call(ours), "reference": torch_call(reference),
            "onnxruntime": lambda: run.run(None, {"x": x_np})[0]}


def measure(configs=tuple(PAPER_CONFIGS), blocks=5):
    """[{config, provider, ms, block_ms, max_abs_diff}] (or one row with `skipped` when the ONNX
    packages are missing)."""
    missing = onnx_missing()
    if missing:
        return [dict(skipped=missing)]
    rows = []
    with use_backend("torch"):
        for config in configs:
            fns = forward_callables(config)
            expected = fns["reference"]()
            diffs = {p: float(np.abs(fn() - expected).max()) for p, fn in fns.items()}
            samples = {p: [] for p in fns}
            for _ in range(blocks):
                for provider, fn in fns.items():
                    fn()  # warm: this provider's weights back in cache
                    samples[provider].append(block_us(fn) / 1e3)
            rows += [dict(config=config, provider=p, ms=statistics.median(ms), block_ms=ms, max_abs_diff=diffs[p])
                     for p, ms in samples.items()]
    return rows


def onnx_table(rows):
    """Markdown: ms per forward, each provider's time as a multiple of tcnkernels'."""
    if not rows:
        return []
    title = ["", "## Whole forward in onnxruntime (CPU timing: the paper networks, inference, ms per forward, median "
             "of 5 interleaved blocks; `xN`: that provider's time over tcnkernels' torch path)", ""]
    if "skipped" in rows[0]:
        return title + [f"Not run: {rows[0]['skipped']}."]
    by_config = {}
    for r in rows:
        by_config.setdefault(r["config"], {})[r["provider"]] = r
    body = []
    for config, by in by_config.items():
        ours = by["tcnkernels"]["ms"]
        cells = [f"{by[p]['ms']:.2f}" + ("" if p == "tcnkernels" else f" (x{by[p]['ms'] / ours:.2f})")
                 for p in FORWARD_PROVIDERS]
        worst = max(by[p]["max_abs_diff"] for p in FORWARD_PROVIDERS)
        body.append([config, *cells, f"{worst:.1e}"])
    return title + markdown.table(["config", *FORWARD_PROVIDERS, "max abs difference from the reference"], body)
