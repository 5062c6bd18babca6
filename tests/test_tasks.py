"""The paper's tasks: generators and loaders give the right shapes, ranges and targets, reproducibly."""
import math
from pathlib import Path

import pytest
import torch

from tcnkernels import tasks

JSB_MAT = Path(__file__).resolve().parents[2] / "shared" / "data" / "JSB_Chorales.mat"


def test_adding_problem():
    x, y = tasks.adding_problem(500, 50, seed=3)
    assert x.shape == (500, 2, 50) and y.shape == (500, 1)
    values, mask = x[:, 0], x[:, 1]
    assert values.min() >= 0 and values.max() < 1
    assert torch.equal(mask.sum(1), torch.full((500,), 2.0))
    assert torch.all(mask[:, :25].sum(1) == 1) and torch.all(mask[:, 25:].sum(1) == 1)  # one mark per half
    torch.testing.assert_close(y[:, 0], (values * mask).sum(1))
    again, _ = tasks.adding_problem(500, 50, seed=3)
    other, _ = tasks.adding_problem(500, 50, seed=4)
    assert torch.equal(x, again) and not torch.equal(x, other)
    assert abs(((y - 1) ** 2).mean().item() - 1 / 6) < 0.03  # predicting 1: MSE 1/6


def test_copy_memory():
    T, digits = 30, 10
    x, y = tasks.copy_memory(200, T, seed=1)
    assert x.shape == (200, 1, T + 2 * digits) and y.shape == (200, T + 2 * digits) and y.dtype == torch.long
    symbols = x[:, 0, :digits].long()
    assert symbols.min() >= 1 and symbols.max() <= 8
    assert torch.all(x[:, 0, digits:digits + T - 1] == 0) and torch.all(x[:, 0, digits + T - 1:] == 9)
    assert torch.all(y[:, :-digits] == 0) and torch.equal(y[:, -digits:], symbols)
    assert torch.equal(tasks.copy_memory(200, T, seed=1)[0], x)
    assert math.isclose(tasks.copy_memory_blank_loss(1000), 10 * math.log(8) / 1020)


@pytest.mark.parametrize("bad", [dict(n=0, T=5), dict(n=2, T=1), dict(n=2.0, T=5)])
def test_generators_reject_bad_sizes(bad):
    with pytest.raises(ValueError):
        tasks.adding_problem(**bad)


def test_shipped_jsb_equals_the_mat_file():
    shipped = tasks.load_music()
    assert [len(shipped[s]) for s in ("train", "valid", "test")] == [229, 76, 77]
    assert all(r.shape[1] == 88 and r.dtype == torch.float32 for r in shipped["train"])
    assert set(torch.cat(shipped["test"]).unique().tolist()) == {0.0, 1.0}
    if not JSB_MAT.is_file():
        pytest.skip("../shared/data/JSB_Chorales.mat is not beside this checkout")
    from_mat = tasks.load_music(JSB_MAT)
    for split in ("train", "valid", "test"):
        assert all(torch.equal(a, b) for a, b in zip(shipped[split], from_mat[split], strict=True))


def test_music_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no music dataset"):
        tasks.load_music(tmp_path / "missing.mat")
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"not a matlab file at all")
    with pytest.raises(ValueError, match="not a readable MATLAB"):
        tasks.load_music(junk)
    from scipy.io import savemat
    partial = tmp_path / "partial.mat"
    savemat(partial, {"traindata": [[1]]})
    with pytest.raises(ValueError, match="validdata, testdata"):
        tasks.load_music(partial)


@pytest.mark.slow
def test_mnist1d_local_generator():
    pytest.importorskip("mnist1d")
    data = tasks.mnist1d(seed=0)
    (x, y), (x_test, y_test) = data["train"], data["test"]
    assert x.shape == (4000, 1, 40) and x_test.shape == (1000, 1, 40)
    assert set(y.unique().tolist()) == set(range(10)) and y_test.dtype == torch.long
    assert torch.equal(tasks.mnist1d(seed=0)["test"][0], x_test)
