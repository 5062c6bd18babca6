"""pytest-benchmark suites run on whatever device is present, with compiled kernels (no interpreter)."""
import pytest
import torch

from tcnkernels.bench.report import environment as bench_environment
from tcnkernels.bench.timing import measure_ceilings


@pytest.fixture(scope="session")
def device():
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@pytest.fixture(scope="session")
def ceilings(device):
    """Copy bandwidth and matmul rates measured on this machine, for the roofline floor."""
    return measure_ceilings(device)


@pytest.fixture(scope="session")
def environment(device):
    return bench_environment(device)
