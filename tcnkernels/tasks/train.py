"""One training loop for every task: the paper's optimiser, learning rate, clipping (after backward,
unlike the reference scripts), batch size and epochs; validation and test every epoch; the best
validation epoch's checkpoint kept; results as JSON and learning curves as PNG.

Under `torchrun --nproc_per_node N` the same call trains with DistributedDataParallel (gloo on a
CPU, nccl on GPUs): the global batch is split across ranks by a DistributedSampler, gradients are
averaged, and only rank 0 writes.
"""
import contextlib
import copy
import dataclasses
import json
import math
import os
import platform
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset
from tqdm import tqdm

from .._backend import use_backend
from .._version import __version__
from . import data as task_data
from . import presets
from .models import parameter_count, recurrent_model, tcn_model

TASKS = ("adding", "copy", "music", "mnist1d")
MODELS = ("tcn", "lstm", "gru")


@dataclasses.dataclass
class TaskConfig:
    task: str
    c_in: int
    channels: tuple
    kernel_size: int
    dropout: float
    out_features: int
    every_step: bool      # the head on every step (copy, music) or on the last one
    optimizer: str        # "adam" or "rmsprop"
    lr: float
    clip: float           # max gradient norm after backward; 0: none
    batch_size: int
    epochs: int
    metric: str           # "mse", "ce", "nll" (lower is better) or "accuracy"
    T: int = 0            # sequence length of the synthetic tasks
    n_train: int = 0
    n_eval: int = 0       # validation and test sizes of the synthetic tasks


# The paper's settings (Bai, Kolter & Koltun 2018, and the authors' TCN scripts; docs/tasks.md).
# JSB: the authors' script defaults (4 levels x 150, K=5, dropout 0.25, clip 0.2) reach 8.42 here;
# 3 levels x 256, K=2, dropout 0.5, clip 0.4 had the best validation NLL of twelve variants tried
# (docs/tasks.md). MNIST-1D is not in the paper: a TCN whose receptive field (121 steps) covers the
# 40-step sequence; dropout 0.2 had the best validation accuracy of five variants tried (dropout 0,
# 0.1, 0.2, 0.3 at lr 1e-3, 5 levels of K=3).
PAPER = {
    "adding": TaskConfig("adding", 2, (24,) * 8, 8, 0.0, 1, False, "adam", 2e-3, 0.0, 32, 10, "mse",
                         T=600, n_train=50000, n_eval=1000),
    "copy": TaskConfig("copy", 1, (10,) * 8, 8, 0.05, 10, True, "rmsprop", 5e-4, 1.0, 32, 50, "ce",
                       T=1000, n_train=10000, n_eval=1000),
    # music: JSB's preset here; the dataset's own is applied once the data is read (tasks/presets.py)
    "music": TaskConfig("music", task_data.MUSIC_KEYS, (256,) * 3, 2, 0.5, task_data.MUSIC_KEYS, True, "adam",
                        1e-3, 0.4, 1, 100, "nll"),
    "mnist1d": TaskConfig("mnist1d", 1, (64,) * 4, 5, 0.2, 10, False, "adam", 2e-3, 0.0, 64, 60, "accuracy"),
}
# --quick: the same models on less data for fewer epochs (a minute or two on a CPU): a smoke run.
QUICK = {"adding": dict(T=50, n_train=4000, n_eval=500, epochs=8),
         "copy": dict(T=20, n_train=4000, n_eval=500, epochs=8),
         "music": dict(epochs=6), "mnist1d": dict(epochs=4)}
QUICK_MUSIC_SEQUENCES = 100


def task_config(task, T=None, epochs=None, quick=False):
    if task not in PAPER:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    cfg = dataclasses.replace(PAPER[task], **(QUICK[task] if quick else {}))
    if T is not None:
        if task not in ("adding", "copy"):
            raise ValueError(f"--T applies to the synthetic tasks (adding, copy), not {task}")
        cfg = dataclasses.replace(cfg, T=T)
    if epochs is not None:
        cfg = dataclasses.replace(cfg, epochs=epochs)
    return cfg


class _Sequences(Dataset):
    """Music: one (x (88, T-1), y (T-1, 88)) pair per piano roll, predicting the next frame."""

    def __init__(self, rolls):
        self.rolls = rolls

    def __len__(self):
        return len(self.rolls)

    def __getitem__(self, i):
        roll = self.rolls[i]
        return roll[:-1].t(), roll[1:]


def music_config(cfg, rolls, preset="auto"):
    """(cfg with the music preset the data calls for applied, {name, why, source})."""
    chosen, why = presets.choose(rolls, preset)
    cfg = dataclasses.replace(cfg, channels=chosen.channels, kernel_size=chosen.kernel_size, dropout=chosen.dropout,
                              clip=chosen.clip, lr=chosen.lr)
    return cfg, dict(name=chosen.name, why=why, source=chosen.source)


def make_datasets(cfg, data_path=None, seed=0, quick=False, rolls=None):
    """{"train", "valid", "test"}: torch Datasets of the task (music: from `rolls` when given)."""
    make = {"adding": task_data.adding_problem, "copy": task_data.copy_memory}.get(cfg.task)
    if make is not None:
        return {"train": TensorDataset(*make(cfg.n_train, cfg.T, seed)),
                "valid": TensorDataset(*make(cfg.n_eval, cfg.T, seed + 1)),
                "test": TensorDataset(*make(cfg.n_eval, cfg.T, seed + 2))}
    if cfg.task == "music":
        rolls = task_data.load_music(data_path) if rolls is None else rolls
        if quick:
            rolls = {split: r[:QUICK_MUSIC_SEQUENCES] for split, r in rolls.items()}
        return {split: _Sequences(r) for split, r in rolls.items()}
    splits = task_data.mnist1d(seed)
    (x, y), test = splits["train"], splits["test"]
    n_valid = len(y) // 10
    return {"train": TensorDataset(x[n_valid:], y[n_valid:]), "valid": TensorDataset(x[:n_valid], y[:n_valid]),
            "test": TensorDataset(*test)}


def build_model(cfg, kind):
    tcn = tcn_model(cfg.c_in, cfg.channels, cfg.kernel_size, cfg.dropout, cfg.out_features, cfg.every_step)
    if kind == "tcn":
        return tcn
    if kind not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {kind!r}")
    return recurrent_model(kind, cfg.c_in, cfg.out_features, cfg.every_step, parameter_count(tcn), cfg.dropout)


def batch_loss(cfg, out, y):
    """(loss to backpropagate, metric sum over the batch, the count the metric averages over)."""
    if cfg.metric == "mse":
        loss = F.mse_loss(out, y)
        return loss, loss.item() * y.shape[0], y.shape[0]
    if cfg.metric == "nll":  # summed over keys and frames, as the authors train; reported per frame
        loss = F.binary_cross_entropy_with_logits(out, y, reduction="sum")
        return loss, loss.item(), y.shape[0] * y.shape[1]
    if cfg.metric == "ce":  # every step of the copy task
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        return loss, loss.item() * y.numel(), y.numel()
    loss = F.cross_entropy(out, y)
    return loss, (out.argmax(1) == y).sum().item(), y.shape[0]


def evaluate(cfg, model, loader, device):
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            _, metric_sum, n = batch_loss(cfg, model(x.to(device)), y.to(device))
            total, count = total + metric_sum, count + n
    return total / count


def _distributed(device):
    """(rank, world size): the process group started when torchrun launched this process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def train(task, model_kind="tcn", data_path=None, epochs=None, T=None, device="cpu", quick=False,
          out_dir="results", seed=0, progress=True, minutes=None, preset="auto"):
    """Train one model on one task; returns the results dict (also written by rank 0 as
    <out_dir>/<task>-<model>-<device>.json, with the best checkpoint as .pt and the task's PNG).

    minutes: a wall-time budget; no epoch starts that the last epoch's duration says would end
    past it (results["budget_reached"] says whether it cut the run short).

    preset (music): "auto" takes the settings of the dataset the data is (JSB Chorales, Nottingham)
    and the TCN authors' script defaults for any other; "jsb", "nottingham" or "general" forces one
    (tcnkernels/tasks/presets.py). The run prints the settings it uses and records them in
    results["config"]["preset"].

    Under torchrun, the process group this call starts is shut down before it returns: left to the
    interpreter's teardown, gloo's threads can abort a rank ("terminate called without an active
    exception", exit code -6)."""
    owns_group = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    try:
        results = _train(task, model_kind, data_path, epochs, T, device, quick, out_dir, seed, progress, minutes,
                         preset)
        if owns_group:
            dist.barrier()  # every rank done before any shuts the group down
        return results
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(task, model_kind, data_path, epochs, T, device, quick, out_dir, seed, progress, minutes, preset):
    if minutes is not None and not minutes > 0:
        raise ValueError(f"minutes must be a positive number, got {minutes!r}")
    cfg = task_config(task, T, epochs, quick)
    if preset != "auto" and task != "music":
        raise ValueError(f"--preset applies to the music task, not {task}")
    rolls = chosen = None
    if task == "music":
        rolls = task_data.load_music(data_path)
        cfg, chosen = music_config(cfg, rolls, preset)
    device = torch.device(device)
    rank, world = _distributed(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if cfg.batch_size % world and cfg.task != "music":  # music: one piano roll per process and step
        raise ValueError(f"the global batch ({cfg.batch_size}) must split evenly over {world} processes")
    if chosen is not None and rank == 0:
        print(f"music settings: {chosen['name']}, {len(cfg.channels)} levels x {cfg.channels[0]}, K={cfg.kernel_size}, "
              f"dropout {cfg.dropout}, clip {cfg.clip}, Adam {cfg.lr:g}; {chosen['why']}; source: {chosen['source']}")
    torch.manual_seed(seed)
    datasets = make_datasets(cfg, data_path, seed, quick, rolls)
    model = build_model(cfg, model_kind).to(device)
    params = parameter_count(model)
    trained = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = (torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.RMSprop)(model.parameters(), lr=cfg.lr)
    # A DistributedSampler even in one process: its permutation of the data is the same whatever the
    # world size, and rank r takes every world-th item of it, so N processes with batch B/N see
    # exactly the global batches one process with batch B sees.
    sampler = DistributedSampler(datasets["train"], world, rank, shuffle=True, seed=seed)
    music = cfg.task == "music"  # one piano roll per step, as the authors train and evaluate

    def loader(split, ds):
        train_split = split == "train"
        return DataLoader(ds, batch_size=1 if music else cfg.batch_size // world if train_split else 256,
                          sampler=sampler if train_split else None, collate_fn=_first if music else None)

    loaders = {split: loader(split, ds) for split, ds in datasets.items()}
    history, best, best_state, budget_reached = [], None, None, False
    higher = cfg.metric == "accuracy"
    run_start = time.perf_counter()
    with use_backend("torch") if device.type == "cpu" else contextlib.nullcontext():  # never the interpreter
        for epoch in range(1, cfg.epochs + 1):
            start = time.perf_counter()
            sampler.set_epoch(epoch)
            trained.train()
            total, count = 0.0, 0
            bar = tqdm(loaders["train"], desc=f"{task} {model_kind} epoch {epoch}/{cfg.epochs}", unit="batch",
                       disable=not progress or rank != 0, dynamic_ncols=True, leave=False)
            for x, y in bar:
                optimizer.zero_grad(set_to_none=True)
                loss, metric_sum, n = batch_loss(cfg, trained(x.to(device)), y.to(device))
                loss.backward()
                if cfg.clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
                optimizer.step()
                total, count = total + (metric_sum if cfg.metric != "accuracy" else loss.item() * n), count + n
                bar.set_postfix(loss=f"{total / count:.4g}")
            if world > 1:  # the epoch's training loss over every rank's share
                sums = torch.tensor([total, count], dtype=torch.float64, device=device)
                dist.all_reduce(sums)
                total, count = sums.tolist()
            row = dict(epoch=epoch, train_loss=total / count,
                       valid_metric=evaluate(cfg, model, loaders["valid"], device),
                       test_metric=evaluate(cfg, model, loaders["test"], device),
                       seconds=time.perf_counter() - start)
            history.append(row)
            if best is None or (row["valid_metric"] > best["valid_metric"] if higher
                                else row["valid_metric"] < best["valid_metric"]):
                best = dict(epoch=epoch, valid_metric=row["valid_metric"], test_metric=row["test_metric"])
                best_state = copy.deepcopy(model.state_dict())
            if progress and rank == 0:
                print(f"{task} {model_kind} epoch {epoch}: train {row['train_loss']:.4g}, valid {cfg.metric} "
                      f"{row['valid_metric']:.4g}, test {row['test_metric']:.4g} ({row['seconds']:.1f} s)", flush=True)
            if minutes is not None and epoch < cfg.epochs and _out_of_time(run_start, row["seconds"], minutes,
                                                                           world, device):
                budget_reached = True
                break
    results = dict(task=task, model=model_kind, device=device.type, device_name=_device_name(device),
                   versions=_versions(), params=params,
                   config=dict(dataclasses.asdict(cfg), quick=quick, seed=seed, world_size=world,
                               data=str(data_path) if data_path else None, minutes=minutes, preset=chosen),
                   epochs=history, best=best, budget_reached=budget_reached)
    if world > 1:
        results["ranks_in_sync"] = _ranks_in_sync(model)
    if rank == 0:
        write_results(results, best_state, out_dir)
    return results


def _out_of_time(run_start, epoch_seconds, minutes, world, device):
    """Whether another epoch as long as the last would end past the budget; rank 0's clock decides
    for every rank, so that all stop after the same epoch."""
    late = torch.tensor([float(time.perf_counter() - run_start + epoch_seconds > 60 * minutes)], device=device)
    if world > 1:
        dist.broadcast(late, 0)
    return bool(late.item())


def _ranks_in_sync(model):
    """Whether every rank ends with rank 0's parameters, bit for bit (DDP's promise, checked)."""
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, 0)
    same = torch.tensor([int(torch.equal(flat, reference))], device=flat.device)
    dist.all_reduce(same, op=dist.ReduceOp.MIN)
    return bool(same.item())


def _first(batch):
    x, y = batch[0]
    return x.unsqueeze(0), y.unsqueeze(0)


def _device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from ..bench.report import environment
    return environment(device)["device"]


def _versions():
    import triton
    return dict(tcnkernels=__version__, torch=torch.__version__, triton=triton.__version__,
                python=platform.python_version())


def write_results(results, best_state, out_dir):
    """<task>-<model>-<device>.json and .pt (the best validation epoch's weights), then the task's
    learning curves over every model with results in out_dir: <task>-<device>.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{results['task']}-{results['model']}-{results['device']}"
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    torch.save(best_state, out / f"{stem}.pt")
    plot_curves(out, results["task"], results["device"])


def plot_curves(out, task, device):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for path in sorted(Path(out).glob(f"{task}-*-{device}.json")):
        run = json.loads(path.read_text())
        epochs = [e["epoch"] for e in run["epochs"]]
        ax.plot(epochs, [e["valid_metric"] for e in run["epochs"]], marker="o", label=f"{run['model']} "
                f"({run['params']:,} params)")
        metric, T = run["config"]["metric"], run["config"].get("T")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {metric}")
    if metric in ("mse", "ce") and all(math.isfinite(v) for v in ax.get_ylim()):
        ax.set_yscale("log")
    ax.set_title(f"{task}{f', T={T}' if T else ''} ({device})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(Path(out) / f"{task}-{device}.png", dpi=100)
    plt.close(fig)
