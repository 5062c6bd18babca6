"""`tcnkernels train`: short runs of every task learn with the tcnkernels TCN, the baselines match its
parameter count, results and curves are written, and DDP over two CPU processes matches one process."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from tcnkernels.tasks import copy_memory_blank_loss
from tcnkernels.tasks.models import parameter_count
from tcnkernels.tasks.train import PAPER, build_model, task_config, train

FIELDS = {"task", "model", "device", "versions", "params", "config", "epochs", "best"}


def _run(task, tmp_path, **kwargs):
    return train(task, quick=True, out_dir=tmp_path, progress=False, **kwargs)


@pytest.mark.slow
def test_adding_learns(tmp_path):
    results = _run("adding", tmp_path)
    assert results["best"]["test_metric"] < 0.167 / 5  # predicting 1 scores 1/6
    assert set(results) >= FIELDS and len(results["epochs"]) == 8
    stored = json.loads((tmp_path / "adding-tcn-cpu.json").read_text())
    assert stored["best"] == results["best"] and stored["params"] == parameter_count(build_model(PAPER["adding"],
                                                                                                  "tcn"))
    assert set(stored["epochs"][0]) == {"epoch", "train_loss", "valid_metric", "test_metric", "seconds"}
    assert (tmp_path / "adding-tcn-cpu.pt").is_file() and (tmp_path / "adding-cpu.png").is_file()


@pytest.mark.slow
def test_copy_memory_learns(tmp_path):
    results = _run("copy", tmp_path)
    assert results["epochs"][-1]["test_metric"] < copy_memory_blank_loss(20) / 2


@pytest.mark.slow
def test_music_learns_on_jsb(tmp_path):
    results = _run("music", tmp_path)
    first, best = results["epochs"][0]["test_metric"], results["best"]["test_metric"]
    assert best < first - 1.0, results["epochs"]


@pytest.mark.slow
def test_mnist1d_learns(tmp_path):
    pytest.importorskip("mnist1d")
    results = _run("mnist1d", tmp_path)
    assert results["best"]["test_metric"] > 0.3  # chance: 0.1


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("task", ["adding", "music"])
def test_baselines_match_the_tcn_parameter_count(task, kind):
    tcn = parameter_count(build_model(PAPER[task], "tcn"))
    assert abs(parameter_count(build_model(PAPER[task], kind)) - tcn) < 0.02 * tcn


def test_baselines_drop_out_at_the_tcn_rate():
    """The recurrent baselines get the task's dropout on their outputs: random in training, none in
    evaluation."""
    cfg = PAPER["music"]
    model = build_model(cfg, "gru")
    assert model.dropout.p == cfg.dropout > 0
    x = torch.rand(1, cfg.c_in, 12)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


@pytest.mark.slow
def test_baseline_run_and_the_shared_curves(tmp_path):
    _run("adding", tmp_path, epochs=1)
    results = _run("adding", tmp_path, model_kind="gru", epochs=1)
    assert results["model"] == "gru" and (tmp_path / "adding-gru-cpu.json").is_file()
    assert (tmp_path / "adding-cpu.png").stat().st_size > 1000


@pytest.mark.slow
def test_time_budget_stops_between_epochs(tmp_path):
    """A budget shorter than one epoch: the first epoch runs whole, no second starts, and the results
    say so; without a budget every epoch runs."""
    cut = _run("adding", tmp_path, epochs=3, minutes=1e-4)
    assert len(cut["epochs"]) == 1 and cut["budget_reached"] is True and cut["config"]["minutes"] == 1e-4
    assert cut["best"]["epoch"] == 1
    full = _run("music", tmp_path, epochs=2)
    assert len(full["epochs"]) == 2 and full["budget_reached"] is False


def test_bad_arguments():
    with pytest.raises(ValueError, match="task must be one of"):
        task_config("seq-mnist")
    with pytest.raises(ValueError, match="--T applies"):
        task_config("music", T=100)
    with pytest.raises(ValueError, match="model must be one of"):
        build_model(PAPER["adding"], "transformer")
    with pytest.raises(ValueError, match="minutes must be a positive number"):
        train("adding", quick=True, minutes=0)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
def test_ddp_two_processes_match_one(tmp_path):
    """torchrun with two gloo processes, half the batch each: the same epoch loss as one process on
    the same global batches, both ranks' parameters bitwise identical, results written once."""
    common = ["train", "adding", "--quick", "--epochs", "1", "--no-progress"]
    one = subprocess.run([sys.executable, "-m", "tcnkernels", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(["torchrun", "--nproc_per_node", "2", "-m", "tcnkernels", *common, "--out",
                          str(tmp_path / "two")], capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("best epoch") == 1  # rank 0 reports and writes
    single, ddp = (json.loads((tmp_path / d / "adding-tcn-cpu.json").read_text()) for d in ("one", "two"))
    assert ddp["config"]["world_size"] == 2 and ddp["ranks_in_sync"] is True
    assert abs(ddp["epochs"][0]["train_loss"] - single["epochs"][0]["train_loss"]) < 1e-6
    weights = [torch.load(tmp_path / d / "adding-tcn-cpu.pt") for d in ("one", "two")]
    for name in weights[0]:
        torch.testing.assert_close(weights[1][name], weights[0][name], rtol=1e-3, atol=1e-4)
