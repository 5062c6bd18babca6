"""pytest-benchmark suites run on whatever device is present, with compiled kernels (no interpreter)."""
import pytest
import torch

from tcnkernels import benchmark


@pytest.fixture(scope="session")
def device():
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@pytest.fixture(scope="session")
def ceilings(device):
    """Copy bandwidth and matmul rates measured on this machine, for the roofline floor."""
    return benchmark.measure_ceilings(device)


@pytest.fixture(scope="session")
def environment(device):
    return benchmark.environment(device)
