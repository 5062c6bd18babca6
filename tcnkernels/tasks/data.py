"""The paper's tasks as seeded data sources: tensors ready to train on, nothing downloaded.

adding_problem   (n, 2, T) inputs (values U[0,1), a mask with two ones) -> (n, 1) the marked sum
copy_memory      (n, 1, T+20) digits to recall after T-1 blanks -> (n, T+20) class targets
load_music       88-key piano rolls from a `.mat` file (traindata/validdata/testdata), or the JSB
                 Chorales shipped with the package
mnist1d          MNIST-1D from the `mnist1d` package's local generator (an optional extra)

Every generator takes a seed and draws from its own torch.Generator: the same seed gives the same
data on every machine, whatever else used the global RNG (the reference scripts' data was unseeded).
"""
import io
from pathlib import Path

import numpy as np
import torch

SPLITS = ("train", "valid", "test")
JSB_FILE = Path(__file__).with_name("jsb_chorales.npz")
MUSIC_KEYS = 88


def _check_count(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def adding_problem(n, T, seed=0):
    """(x, y): x (n, 2, T), channel 0 values in U[0,1), channel 1 a mask with one 1 in each half of
    the sequence; y (n, 1) = the sum of the two marked values. Predicting 1 scores MSE 1/6."""
    _check_count("n", n)
    _check_count("T", T, 2)
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(n, T, generator=g)
    first = torch.randint(0, T // 2, (n,), generator=g)
    second = torch.randint(T // 2, T, (n,), generator=g)
    mask = torch.zeros(n, T)
    rows = torch.arange(n)
    mask[rows, first] = 1.0
    mask[rows, second] = 1.0
    y = (values[rows, first] + values[rows, second]).unsqueeze(1)
    return torch.stack([values, mask], dim=1), y


def copy_memory(n, T, seed=0, digits=10):
    """(x, y) of the copy-memory task: x (n, 1, T + 2*digits) float, `digits` random symbols in 1..8,
    T-1 blanks (0), then `digits + 1` nines (the first is the delimiter); y (n, T + 2*digits) long:
    blanks (0) everywhere but the last `digits` steps, which repeat the symbols. Guessing blanks and
    then uniformly among the 8 symbols scores cross-entropy digits*ln(8)/(T + 2*digits)."""
    _check_count("n", n)
    _check_count("T", T)
    _check_count("digits", digits)
    g = torch.Generator().manual_seed(seed)
    symbols = torch.randint(1, 9, (n, digits), generator=g)
    length = T + 2 * digits
    x = torch.zeros(n, length, dtype=torch.long)
    x[:, :digits] = symbols
    x[:, digits + T - 1:] = 9
    y = torch.zeros(n, length, dtype=torch.long)
    y[:, -digits:] = symbols
    return x.unsqueeze(1).float(), y


def copy_memory_blank_loss(T, digits=10):
    """The cross-entropy of the memoryless strategy: the level LSTMs and GRUs stay at."""
    return digits * float(np.log(8)) / (T + 2 * digits)


def load_music(path=None):
    """{"train", "valid", "test"}: lists of float32 (T_i, 88) piano rolls (1 = a key held).

    `path`: a `.mat` file in the polyphonic-music benchmark's format (keys traindata, validdata,
    testdata; Nottingham, MuseData and Piano-midi.de load unchanged); None: JSB Chorales as the TCN
    paper's authors distributed it with their code (MIT licence, Copyright (c) 2018 CMU Locus Lab;
    Boulanger-Lewandowski, Bengio & Vincent 2012), shipped in this package bit-packed."""
    if path is None:
        packed = np.load(JSB_FILE)
        return {split: _unpack(packed[f"{split}data_bits"], packed[f"{split}data_lengths"]) for split in SPLITS}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no music dataset at {path}: give a .mat file with traindata/validdata/testdata")
    try:
        from scipy.io import loadmat
        mat = loadmat(io.BytesIO(path.read_bytes()))
    except ImportError as exc:
        raise ImportError("reading a .mat file needs scipy: pip install scipy") from exc
    except Exception as exc:  # scipy raises several types for a file that is not MATLAB
        raise ValueError(f"{path} is not a readable MATLAB .mat file ({type(exc).__name__}: {exc})") from exc
    missing = [f"{split}data" for split in SPLITS if f"{split}data" not in mat]
    if missing:
        raise ValueError(f"{path} has no {', '.join(missing)}: a music dataset holds traindata, validdata, testdata")
    data = {}
    for split in SPLITS:
        cells = np.asarray(mat[f"{split}data"]).reshape(-1)
        rolls = [np.asarray(cell, dtype=np.float32) for cell in cells]
        bad = [r.shape for r in rolls if r.ndim != 2 or r.shape[1] != MUSIC_KEYS or r.shape[0] < 2]
        if bad:
            raise ValueError(f"{path}: {split}data must hold (T, {MUSIC_KEYS}) piano rolls with T >= 2, got {bad[0]}")
        data[split] = [torch.from_numpy(r) for r in rolls]
    return data


def _unpack(bits, lengths):
    frames = np.unpackbits(bits, axis=1, count=MUSIC_KEYS).astype(np.float32)
    return [torch.from_numpy(chunk.copy()) for chunk in np.split(frames, np.cumsum(lengths)[:-1])]


def mnist1d(seed=0):
    """{"train": (x, y), "test": (x, y)}: MNIST-1D (4000 / 1000 sequences of 40 steps, 10 classes)
    from the `mnist1d` package's local generator (never its download), x (n, 1, 40) float32."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise ImportError("the mnist1d task needs the optional extra: pip install 'tcnkernels[tasks]'") from exc
    args = get_dataset_args()
    args.seed = seed
    data = make_dataset(args)
    as_x = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32).unsqueeze(1)  # noqa: E731
    as_y = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.long)  # noqa: E731
    return {"train": (as_x(data["x"]), as_y(data["y"])), "test": (as_x(data["x_test"]), as_y(data["y_test"]))}
