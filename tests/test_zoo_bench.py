"""benchmarks/zoo.py: the libraries' training steps counted on meta tensors (converted against their
own), and its fit timing and report on a tiny budget."""
import importlib.util
import json
from pathlib import Path

import pytest

import tcnkernels

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo.py"


@pytest.fixture(scope="module")
def zoo_bench():
    spec = importlib.util.spec_from_file_location("zoo_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_converted_library_modules_keep_less_and_launch_no_more(zoo_bench):
    """The TCN libraries' modules converted keep fewer activations and launch no more kernels."""
    rows = zoo_bench.structure_rows()
    pairs = {}
    for r in rows:
        pairs.setdefault(r["config"], {})[r["provider"]] = r
    assert len(pairs) == 6 and all(set(p) == {"tcnkernels", "library"} for p in pairs.values())
    for name, p in pairs.items():
        ours, theirs = p["tcnkernels"], p["library"]
        if not name.startswith("Parallel WaveGAN"):  # its conditioned blocks keep cat(x, c) each (docs/speed.md)
            assert ours["saved_bytes"] < theirs["saved_bytes"], name
        assert ours["launches"] <= theirs["launches"], name
        assert ours["launches"] > 0 and ours["saved_bytes"] > 0, name


@pytest.mark.slow
def test_fit_rows_and_report(zoo_bench, tmp_path):
    # the torch path, as on a CPU without the interpreter (the interpreter would take minutes here)
    with tcnkernels.use_backend("torch"):
        zoo_bench.main(["--repeats", "1", "--epochs", "1", "--steps", "2", "--md", str(tmp_path / "zoo.md"),
                        "--json", str(tmp_path / "zoo.json")])
    report = json.loads((tmp_path / "zoo.json").read_text())
    assert [r["model"] for r in report["fit"]] == [name for name, _, _ in zoo_bench.SIZES]
    for row in report["fit"]:
        assert row["library_s"] > 0 and row["integration_s"] > 0 and 0 < row["ops_share"] <= 1.5
    assert "| Darts TCNModel, defaults" in (tmp_path / "zoo.md").read_text()
