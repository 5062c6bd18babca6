"""Test setup: Triton's interpreter on (before tcnkernels is imported), seeds, NaN-poisoned outputs.

TCNKERNELS_TEST_DEVICE=cuda runs the same suite with compiled kernels on a GPU (and enables the
`gpu` tier); by default every kernel runs in Triton's interpreter on CPU tensors.
"""
import os
import tempfile

TEST_DEVICE = os.environ.get("TCNKERNELS_TEST_DEVICE", "cpu")
if TEST_DEVICE == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"
os.environ.pop("TCNKERNELS_BACKEND", None)
# torch.compile's on-disk caches key a backward graph on its forward, not on the registered ops'
# schemas: a cache left by an older checkout can replay a call with the old signature.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"tcnkernels-inductor-{os.getpid()}"))

import pytest  # noqa: E402
import torch  # noqa: E402

from tcnkernels.ops import triton as triton_kernels  # noqa: E402

if triton_kernels.IMPORT_ERROR is None:
    from tcnkernels.ops import launching  # noqa: E402
else:  # no triton (the torch path alone): nothing to poison
    launching = None

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per worker: two workers of two threads each on a 2-core machine spin against each
    # other in every GEMM (a training test measured 15 s alone and 285 s beside another).
    torch.set_num_threads(1)

if triton_kernels.INTERPRETER:
    # device_assert is a no-op in the interpreter unless its debug option is on: switch it on, so the
    # kernels' own checks (alignment claims) run in every test.
    import dataclasses  # noqa: E402

    from triton.runtime import interpreter  # noqa: E402
    interpreter.interpreter_builder.options = dataclasses.replace(interpreter.interpreter_builder.options, debug=True)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`-n 2` steals queued tests from a busy worker rather than leave the other idle: the compile
    tier's shards take minutes each, and xdist's default hands them out in batches up front."""
    if config.getvalue("dist") == "load":
        from xdist.scheduler import WorkStealingScheduling
        return WorkStealingScheduling(config, log)
    return None


def pytest_collection_modifyitems(config, items):
    gpu_ready = TEST_DEVICE == "cuda" and torch.cuda.is_available() and not triton_kernels.INTERPRETER
    skip = pytest.mark.skip(reason="GPU tier: needs CUDA and TCNKERNELS_TEST_DEVICE=cuda")
    for item in items:
        if "gpu" in item.keywords and not gpu_ready:
            item.add_marker(skip)
    # Longest first (the compile tier, then the slow tests): two workers then finish together.
    items.sort(key=lambda item: 0 if "compile" in item.keywords else 1 if "slow" in item.keywords else 2)


# ------------------------------------------------------------------------------------------------
# The fast loop (-m "not slow and not compile") must still run every kernel and every epilogue in the
# interpreter. Launches made by fast tests are recorded as "kernel" and "kernel:FEATURE=value"
# variants (xdist workers send theirs to the controller); a run of the whole fast loop, or of the
# whole suite, fails when a variant below was never launched by a fast test.
FAST_LOOP_MARKEXPR = "not slow and not compile"
FEATURES = {
    "causal_conv1d_kernel": ("ANTI_CAUSAL", "SHIFTED", "GROUPED", "HAS_BIAS", "ACTIVATION", "GATED", "STORE_PRE",
                             "DROPOUT", "DROP_CHANNEL", "GATE", "GATE_FROM_INPUT", "GATE_DROPOUT", "STORE_BRANCH",
                             "RESIDUAL", "FINAL_ACTIVATION", "FINAL_PRE", "ROW_INT64", "ACC_FP64", "AUX", "SPLIT"),
    "causal_conv1d_weight_grad_kernel": ("SHIFTED", "GROUPED", "GATE_BY_RELU", "GATE_ACTIVATION", "GATED_GRAD", "GATE2",
                                         "GATE2_DROPOUT", "WRITE_G", "WRITE_DS", "RES_TAP", "ACC_FP64", "AUX_TAP",
                                         "AUX_SWITCH_C", "AUX_SWITCH_T", "SPLIT_DY"),
    "depthwise_conv1d_kernel": ("UNROLL", "ANTI_CAUSAL", "HAS_BIAS", "ACTIVATION", "STORE_PRE", "ACC_FP64", "WINDOW",
                                "W_TAPS", "CONST_SHIFTS", "HISTORY", "SEQ_IDX", "STRIP"),
    "depthwise_weight_grad_kernel": ("ACC_FP64", "WINDOW", "CONST_SHIFTS", "SEQ_IDX", "RECOMPUTE", "HAS_BIAS", "TILES",
                                     "HISTORY"),
    "weight_prep_kernel": ("HAS_NORM0", "N_SEGMENTS"),
    "weight_grad_finalize_kernel": ("HAS_NORM0", "N_SEGMENTS"),
    "stream_step_kernel": (),
    "causal_conv1d_update_kernel": ("HAS_BIAS", "SILU", "CIRCULAR", "HAS_INDICES", "ACC_FP64"),
}
REQUIRED = {
    "causal_conv1d_kernel", "causal_conv1d_kernel:ANTI_CAUSAL=True", "causal_conv1d_kernel:HAS_BIAS=True",
    "causal_conv1d_kernel:ACTIVATION=1", "causal_conv1d_kernel:DROPOUT=True", "causal_conv1d_kernel:DROP_CHANNEL=True",
    "causal_conv1d_kernel:GATE=True", "causal_conv1d_kernel:STORE_BRANCH=True", "causal_conv1d_kernel:RESIDUAL=1",
    "causal_conv1d_kernel:RESIDUAL=2", "causal_conv1d_kernel:FINAL_ACTIVATION=1", "causal_conv1d_kernel:ROW_INT64=True",
    "causal_conv1d_kernel:ACC_FP64=True", "causal_conv1d_kernel:SHIFTED=True", "causal_conv1d_kernel:GROUPED=True",
    "causal_conv1d_kernel:GATED=True", "causal_conv1d_kernel:STORE_PRE=True",
    *(f"causal_conv1d_kernel:ACTIVATION={code}" for code in range(1, 15)),
    "causal_conv1d_weight_grad_kernel:SHIFTED=True", "causal_conv1d_weight_grad_kernel:GROUPED=True",
    *(f"causal_conv1d_weight_grad_kernel:GATE_ACTIVATION={code}" for code in range(2, 12)),
    "causal_conv1d_weight_grad_kernel:GATED_GRAD=13", "causal_conv1d_weight_grad_kernel:GATED_GRAD=14",
    "causal_conv1d_weight_grad_kernel:GATE2=2", "causal_conv1d_weight_grad_kernel:GATE2_DROPOUT=True",
    "causal_conv1d_kernel:GATE=2", "causal_conv1d_kernel:GATE_FROM_INPUT=True",
    "causal_conv1d_kernel:GATE_DROPOUT=True", "causal_conv1d_kernel:FINAL_PRE=True",
    "causal_conv1d_kernel:dtype=torch.float16", "causal_conv1d_kernel:dtype=torch.bfloat16",
    "causal_conv1d_weight_grad_kernel", "causal_conv1d_weight_grad_kernel:GATE_BY_RELU=True",
    "causal_conv1d_weight_grad_kernel:GATE2=True", "causal_conv1d_weight_grad_kernel:WRITE_G=True",
    "causal_conv1d_weight_grad_kernel:WRITE_DS=True", "causal_conv1d_weight_grad_kernel:RES_TAP=True",
    "causal_conv1d_weight_grad_kernel:AUX_TAP=True", "causal_conv1d_weight_grad_kernel:AUX_SWITCH_C=True",
    "causal_conv1d_weight_grad_kernel:AUX_SWITCH_T=True", "causal_conv1d_weight_grad_kernel:SPLIT_DY=True",
    "causal_conv1d_kernel:AUX=True", "causal_conv1d_kernel:SPLIT=True",
    "depthwise_conv1d_kernel:UNROLL=True", "depthwise_conv1d_kernel:W_TAPS=True",
    "depthwise_conv1d_kernel:ANTI_CAUSAL=True",
    "depthwise_conv1d_kernel:HAS_BIAS=True", "depthwise_conv1d_kernel:STORE_PRE=True",
    "depthwise_conv1d_kernel:ACTIVATION=12", "depthwise_conv1d_kernel:dtype=torch.bfloat16",
    "depthwise_conv1d_kernel:WINDOW=4", "depthwise_conv1d_kernel:WINDOW=8", "depthwise_conv1d_kernel:STRIP=8",
    "depthwise_weight_grad_kernel:WINDOW=4",
    "depthwise_weight_grad_kernel:WINDOW=8", "depthwise_conv1d_kernel:CONST_SHIFTS=True",
    "depthwise_weight_grad_kernel:CONST_SHIFTS=True", "depthwise_weight_grad_kernel:SEQ_IDX=True",
    "depthwise_conv1d_kernel:HISTORY=True", "depthwise_conv1d_kernel:SEQ_IDX=True",
    "depthwise_weight_grad_kernel", "depthwise_weight_grad_kernel:ACC_FP64=True",
    "depthwise_weight_grad_kernel:RECOMPUTE=7", "depthwise_weight_grad_kernel:HAS_BIAS=True",
    "depthwise_weight_grad_kernel:TILES=2", "depthwise_weight_grad_kernel:HISTORY=True",
    "weight_prep_kernel:HAS_NORM0=True", "weight_prep_kernel:N_SEGMENTS=3",
    "weight_grad_finalize_kernel:HAS_NORM0=True", "weight_grad_finalize_kernel:N_SEGMENTS=3",
    "stream_step_kernel", "causal_conv1d_update_kernel:CIRCULAR=True", "causal_conv1d_update_kernel:HAS_INDICES=True",
}
_fast_launches = set()
_in_fast_test = [False]


def _variants(kernel, tensors, static):
    name = kernel.fn.__name__
    dtype = next((t.dtype for t in tensors.values() if isinstance(t, torch.Tensor)), None)
    found = {name, f"{name}:dtype={dtype}"}
    found.update(f"{name}:{key}={static[key]}" for key in FEATURES.get(name, ()) if static.get(key))
    return found


def _recording_launch(launch):
    def record(kernel, grid, device_of, tensors, static):
        if _in_fast_test[0]:
            _fast_launches.update(_variants(kernel, tensors, static))
        return launch(kernel, grid, device_of, tensors, static)
    return record


if launching is not None:
    launching.launch = _recording_launch(launching.launch)


def _runs_the_whole_fast_loop(config):
    markexpr = config.getoption("markexpr") or ""
    default_paths = [str(p) for p in config.getini("testpaths")] or ["."]
    paths = [os.path.relpath(os.path.abspath(a), str(config.rootpath)) for a in config.args]
    return (markexpr in ("", FAST_LOOP_MARKEXPR) and not config.getoption("keyword")
            and not config.getoption("lf", False) and sorted(paths) == sorted(default_paths))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):  # the xdist controller collects each worker's launches
    _fast_launches.update(getattr(node, "workeroutput", {}).get("fast_launches", ()))


def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workeroutput"):  # an xdist worker: the controller decides
        session.config.workeroutput["fast_launches"] = sorted(_fast_launches)
        return
    if launching is None or not triton_kernels.INTERPRETER or not _runs_the_whole_fast_loop(session.config):
        return
    missing = sorted(REQUIRED - _fast_launches)
    if missing:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write("\n")
            reporter.write_line(f"FAILED: the fast loop ({FAST_LOOP_MARKEXPR}) launched no {', '.join(missing)}: "
                                "give one of its tests such a case", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _seed_and_poison(request):
    torch.manual_seed(0)
    _in_fast_test[0] = not any(request.node.get_closest_marker(m) for m in ("slow", "compile", "gpu"))
    if launching is not None:
        launching.POISON_OUTPUTS = True
    yield
    _in_fast_test[0] = False
    if launching is not None:
        launching.POISON_OUTPUTS = False


@pytest.fixture
def device():
    return torch.device(TEST_DEVICE)
