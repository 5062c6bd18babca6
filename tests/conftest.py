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
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"tcnkernels-inductor-{os.getpid()}"))

import pytest  # noqa: E402
import torch  # noqa: E402

from tcnkernels import _backend  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per worker: two workers of two threads each on a 2-core machine spin against each
    # other in every GEMM (a training test measured 15 s alone and 285 s beside another).
    torch.set_num_threads(1)

if _backend.INTERPRETER:
    # device_assert is a no-op in the interpreter unless its debug option is on: switch it on, so the
    # kernels' own checks (alignment claims) run in every test.
    import dataclasses  # noqa: E402

    from triton.runtime import interpreter  # noqa: E402
    interpreter.interpreter_builder.options = dataclasses.replace(interpreter.interpreter_builder.options, debug=True)


def pytest_collection_modifyitems(config, items):
    gpu_ready = TEST_DEVICE == "cuda" and torch.cuda.is_available() and not _backend.INTERPRETER
    skip = pytest.mark.skip(reason="GPU tier: needs CUDA and TCNKERNELS_TEST_DEVICE=cuda")
    for item in items:
        if "gpu" in item.keywords and not gpu_ready:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_poison():
    torch.manual_seed(0)
    _backend.POISON_OUTPUTS = True
    yield
    _backend.POISON_OUTPUTS = False


@pytest.fixture
def device():
    return torch.device(TEST_DEVICE)
