"""The static profile of the GPU binaries tcnkernels launches (`python benchmarks/sass_profile.py`).

For each paper configuration and precision, every binary a whole-network forward + backward launches
(launches.py records and compiles them on a CPU) is read (sass.py) and related to the work one CTA
does. Per-output metric: warp-instructions of one interior CTA = num_warps * (instructions outside
the steady-state loop + trips * loop body), divided by the CTA's output elements (for the weight
gradient: by the elements of g it reduces over); static code outside the loop is counted once. The
budgets below are checked by the compile-only test tier. Nothing here is timed.
"""
import dataclasses
import json
import multiprocessing
import platform
import subprocess
import time
from pathlib import Path

import torch
import triton
from tqdm import tqdm
from triton.backends.nvidia.compiler import get_ptxas

from tcnkernels.bench.report import environment as bench_environment

from .launches import ARCHS, PRECISIONS, conv_launches, network_launches
from .sass import compile_launch

PROFILE_CONFIGS = {  # (B, C_in, channels per level, K, L): the bench's paper TCNs and one long sequence
    "adding": (32, 2, (24,) * 8, 8, 600),
    "seq-mnist": (64, 1, (25,) * 8, 7, 784),
    "copy-memory": (32, 1, (10,) * 8, 8, 1020),
    "nottingham": (1, 88, (150,) * 4, 6, 200),
    "char-ptb": (32, 100, (450, 450, 100), 3, 400),
    "word-ptb": (16, 600, (600,) * 4, 3, 80),
    "long": (8, 64, (64,) * 16, 3, 65536),
}
PROFILE_DROPOUT = {"adding": 0.0, "seq-mnist": 0.05, "copy-memory": 0.05, "nottingham": 0.2, "char-ptb": 0.1,
                   "word-ptb": 0.45, "long": 0.1}  # the paper's (reference-tcn.md); the long case's chosen

# A fused block's conv may spend this many more warp-instructions per output than the plain conv of
# the same layer: the epilogue's Philox draw (dropout), the gate and the residual.
EPILOGUE_ALLOWANCE = 2.5

# Budgets, sm_90 TF32, warp-instructions per output element of the layers at the config's width
# (C_in = C_out = the widest level, K > 1). They hold for the Triton version they were measured with;
# other versions are only reported.
BUDGET_TRITON = "3.9.0"
PER_OUTPUT_BUDGETS = {("seq-mnist", "forward"): 5.0, ("seq-mnist", "input-grad"): 8.0,
                      ("copy-memory", "forward"): 6.0,
                      ("char-ptb", "forward"): 10.0, ("char-ptb", "input-grad"): 16.0}


# ------------------------------------------------------------------------------------------------
# What each kernel does per CTA: its role, the conv layer (in forward terms), the steady-state trips
# of an interior CTA (every tap active) and the elements that CTA produces (or reduces over).

def _cdiv(a, b):
    return -(-a // b)


def depthwise_interior(a):
    """The fraction of the depthwise kernels' programs (the weight gradient's: items) that take the
    unmasked taps: their tile's channels all inside C and the input columns their taps read all
    inside [0, L) (the kernels' `interior`, from their constexprs and sizes). None where every
    program takes the masked taps."""
    if a.get("TILES", 0) or a.get("SEQ_IDX"):
        return None
    K, T = a["K"], a["BLOCK_T"]
    if a.get("STRIP", 0):  # the forward kernel's strip path: STRIP steps of D columns, T of each
        J, D, P = a["STRIP"], a["W_DILATION"], a["W_PAD_RIGHT"] // a["W_DILATION"]
        o_min = -P if a.get("ANTI_CAUSAL") else P - (K - 1)
        chunks = D // T
        starts = [i // chunks * J * D + i % chunks * T for i in range(a["N_T_BLOCKS"])]
        reach = (J - 1 + max(o_min + K - 1, 0)) * D + T
        inside_t = sum(1 for t0 in starts if t0 + o_min * D >= 0 and t0 + reach <= a["L"])
        inside_c = sum(1 for j in range(a["N_C_BLOCKS"]) if (j + 1) * a["BLOCK_C"] <= a["C"])
        return inside_t * inside_c / (a["N_T_BLOCKS"] * a["N_C_BLOCKS"])
    if a.get("WINDOW", 0):
        V, D, P, sign = a["WINDOW"], a["W_DILATION"], a["W_PAD_RIGHT"], -1 if a.get("ANTI_CAUSAL") else 1
        back = -(-max(sign * ((K - 1) * D - P), -sign * P) // V) * V
        ahead = max((V - 1 - min(sign * ((K - 1) * D - P), -sign * P)) // V, 0) * V
    else:
        reach = (K - 1) * a["DILATION"] - a["PAD_RIGHT"]
        back, ahead = (a["PAD_RIGHT"], reach) if a.get("ANTI_CAUSAL") else (reach, a["PAD_RIGHT"])
        ahead = max(ahead, 0)
    n_t, n_c = a["N_T_BLOCKS"], a["N_C_BLOCKS"]
    inside_t = sum(1 for i in range(n_t) if i * T >= back and i * T + T + ahead <= a["L"])
    inside_c = sum(1 for j in range(n_c) if (j + 1) * a["BLOCK_C"] <= a["C"])
    return inside_t * inside_c / (n_t * n_c)


def work_model(launch):
    """{role, layer (C_in, C_out, K, dilation), trips, per_cta} of one launch."""
    a = launch.named
    name = launch.kernel.fn.__name__
    if name == "causal_conv1d_kernel":
        grad = bool(a["ANTI_CAUSAL"])
        layer = (a["C_OUT"], a["C_IN"]) if grad else (a["C_IN"], a["C_OUT"])
        epilogue = [n for n, on in (("bias", a["HAS_BIAS"]), ("relu", a["ACTIVATION"] == 1), ("dropout", a["DROPOUT"]),
                                    ("gate", a["GATE"]), ("branch", a["STORE_BRANCH"]),
                                    ("residual" if a["RESIDUAL"] == 1 else "1x1-residual", a["RESIDUAL"]),
                                    ("relu", a["FINAL_ACTIVATION"] == 1), ("aux", a["AUX"]),
                                    ("split", a["SPLIT"])) if on]
        return dict(role="input-grad" if grad else "forward", layer=(*layer, a["K"], a["DILATION"]),
                    trips=_cdiv(a["C_IN"], a["BLOCK_CI"]) * a["K"], per_cta=a["BLOCK_CO"] * a["BLOCK_T"],
                    epilogue="+".join(epilogue))
    if name == "causal_conv1d_weight_grad_kernel":
        items = _cdiv(a["B"] * a["N_T_BLOCKS"], a["N_CHUNKS"])  # the shift-0 tap: every item
        gates = [n for n, on in (("relu-gate", a["GATE_BY_RELU"]), ("gate2", a["GATE2"]), ("g", a["WRITE_G"]),
                                 ("ds", a["WRITE_DS"]), ("res-tap", a["RES_TAP"]), ("aux-tap", a["AUX_TAP"]),
                                 ("split-dy", a["SPLIT_DY"])) if on]
        return dict(role="weight-grad", layer=(a["C_IN"], a["C_OUT"], a["K"], a["DILATION"]),
                    trips=items, per_cta=items * a["BLOCK_T"] * a["BLOCK_CO"], epilogue="+".join(gates))
    if name == "depthwise_conv1d_kernel":
        return dict(role="input-grad" if a["ANTI_CAUSAL"] else "forward", layer=(a["C"], a["C"], a["K"], a["DILATION"]),
                    trips=1 if a["UNROLL"] else a["K"], per_cta=a["BLOCK_C"] * a["BLOCK_T"] * max(a.get("STRIP", 0), 1),
                    interior=depthwise_interior(a))
    if name == "depthwise_weight_grad_kernel":
        items = _cdiv(a["B"] * a["N_T_BLOCKS"], a["N_CHUNKS"])
        return dict(role="weight-grad", layer=(a["C"], a["C"], a["K"], a["DILATION"]), trips=items,
                    per_cta=items * a["BLOCK_C"] * a["BLOCK_T"], interior=depthwise_interior(a))
    if name == "causal_conv1d_update_kernel":  # one program: every new token of BLOCK_C channels
        return dict(role="update", layer=(a["DIM"], a["DIM"], a["K"], a["DILATION"]), trips=1,
                    per_cta=a["BLOCK_C"] * a["SEQLEN"])
    if name == "weight_prep_kernel":
        return dict(role="weights", layer=(a["C_IN0"], a["C_OUT0"], a["K0"], None), trips=a["K0"],
                    per_cta=a["BLOCK_O"] * a["C_PAD0"])
    if name == "weight_grad_finalize_kernel":
        return dict(role="weight-grad-sum", layer=(a["C_IN0"], a["C_OUT0"], a["K0"], None), trips=a["N_CHUNKS0"],
                    per_cta=a["BLOCK_O"] * a["C_IN0"] * a["K0"])
    raise KeyError(f"no work model for kernel {name}: add one to tools/static_profile/profile.py")


def plain_conv_launches(config, precision, arch):
    """A plain causal_conv1d (bias + ReLU) training step at the config's full width, every dilation of
    its network: what the fused block's convs are compared with."""
    B, _, channels, K, L = PROFILE_CONFIGS[config]
    width = max(channels)
    return [launch for level in range(len(channels))
            for launch in conv_launches(width, width, L, K, 2**level, precision, arch, batch=B)]


def profile_config(config, precision, arch=90):
    """One row per distinct (binary, layer shape) launched by a training step of `config`'s whole
    network (source "block": the fused blocks, with the paper's dropout) and of a plain conv at its
    full width (source "conv")."""
    rows = {}
    sources = (("block", network_launches(PROFILE_CONFIGS[config], precision, arch, PROFILE_DROPOUT[config])),
               ("conv", plain_conv_launches(config, precision, arch)))
    for source, launches in sources:
        for launch in launches:
            _add_row(rows, source, config, precision, arch, launch)
    return list(rows.values())


def _add_row(rows, source, config, precision, arch, launch):
    work = work_model(launch)
    binary = compile_launch(launch, arch)
    per_output = binary.num_warps * (binary.outside + work["trips"] * binary.loop) / work["per_cta"]
    c_in, c_out, k, d = work["layer"]
    key = (source, work["role"], c_in, c_out, k, id(binary))
    row = rows.setdefault(key, dict(config=config, precision=precision, arch=f"sm_{arch}", source=source,
                                    role=work["role"], epilogue=work.get("epilogue", ""),
                                    kernel=launch.kernel.fn.__name__, c_in=c_in, c_out=c_out, K=k,
                                    align=launch.kwargs.get("ALIGN"), dilations=[], per_output=[], trips=[],
                                    tiles={n: v for n, v in launch.kwargs.items() if n.startswith("BLOCK")},
                                    **dataclasses.asdict(binary)))
    if d not in row["dilations"]:
        row["dilations"].append(d)
        row["per_output"].append(round(per_output, 2))
        row["trips"].append(work["trips"])


def full_width(row):
    """A K > 1 layer at the config's full width (C_in = C_out = its widest level)."""
    width = max(PROFILE_CONFIGS[row["config"]][2])
    return row["K"] is not None and row["K"] > 1 and row["c_in"] == row["c_out"] == width


def budgeted(row):
    """Whether a per-output budget applies to this row: the plain conv, full width, a budgeted role."""
    return (row.get("source", "conv") == "conv" and (row["config"], row["role"]) in PER_OUTPUT_BUDGETS
            and full_width(row))


CONV_ROLES = ("forward", "input-grad", "weight-grad")


def vector_elements(precision):
    """Elements of a 16-byte vector at this precision."""
    return 8 if precision == "bf16" else 4


def violations(rows):
    """The budgets a profile breaks, in words (an empty list when every budget holds)."""
    out = []
    plain = {}  # the plain conv's worst per-output count per (config, precision, arch, role), full width
    for r in rows:
        if r.get("source", "conv") == "conv" and r["role"] in CONV_ROLES and full_width(r):
            key = (r["config"], r["precision"], r["arch"], r["role"])
            plain[key] = max(plain.get(key, 0.0), max(r["per_output"]))
    for r in rows:
        where = (f"{r['config']} {r['precision']} {r['arch']} {r.get('source', 'conv')} {r['role']} "
                 f"{r['c_in']}->{r['c_out']} K={r['K']} d={r['dilations']} ALIGN={r['align']}")
        if r["spill_store_bytes"] or r["spill_load_bytes"]:
            out.append(f"{where}: spills {r['spill_store_bytes']} B stored, {r['spill_load_bytes']} B loaded")
        if r["calls"]:
            out.append(f"{where}: {r['calls']} subroutine calls (64-bit division)")
        if r["role"] not in CONV_ROLES or not r["loop"] or r["arch"] != "sm_90":
            continue
        # cp.async copies 4, 8 or 16 bytes: a bf16 tile shifted by an odd number of steps (ALIGN 1)
        # cannot be copied asynchronously; everywhere else the loop's loads must be.
        if r["precision"] == "bf16" and r["align"] > 1 and not r["loop_async"]:
            out.append(f"{where}: bf16 loads in the loop are not asynchronous (not pipelined)")
        # tf32 warpgroup MMA (HGMMA) reads only K-major shared memory: the time-major activation and
        # gradient tiles are transposed on their way in, 4 bytes at a time. The input gradient's
        # weight tile is time-major there too, so it has no 16-byte stream; that one is exempt.
        wgmma_tf32_grad = r["role"] == "input-grad" and any(m.startswith("HGMMA") and "TF32" in m for m in r["mma"])
        if r["precision"] in ("tf32", "bf16") and r["align"] == vector_elements(r["precision"]) \
                and max(r["loop_load_bytes"], default=0) < 16 and not wgmma_tf32_grad:
            out.append(f"{where}: aligned, but the loop's widest load is {max(r['loop_load_bytes'], default=0)} B")
        if r["precision"] == "tf32" and budgeted(r):
            budget = PER_OUTPUT_BUDGETS[(r["config"], r["role"])]
            if max(r["per_output"]) > budget:
                out.append(f"{where}: {max(r['per_output'])} warp-instructions per output > budget {budget}")
        # A block whose widths change runs its 1x1 downsample in conv2's program: more work than an
        # epilogue (a GEMM over C_in), so those rows are reported and spill-checked, not held to it.
        key = (r["config"], r["precision"], r["arch"], r["role"])
        if r.get("source") == "block" and r["precision"] != "ieee" and full_width(r) and key in plain \
                and "1x1-residual" not in r["epilogue"] \
                and max(r["per_output"]) > plain[key] + EPILOGUE_ALLOWANCE:
            out.append(f"{where}: {max(r['per_output'])} warp-instructions per output, the plain conv's "
                       f"{plain[key]} + {EPILOGUE_ALLOWANCE} allowed")
    return out


# ------------------------------------------------------------------------------------------------
# The whole profile, its report and its files.

def _profile_one(job):
    config, precision, arch = job
    return profile_config(config, precision, arch)


def profile(configs=tuple(PROFILE_CONFIGS), precisions=tuple(PRECISIONS), archs=(90, 80), workers=1, progress=True):
    """Rows of every (config, precision, arch), compiled in `workers` processes."""
    jobs = [(c, p, a) for a in archs for c in configs for p in precisions]
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = list(tqdm(pool.imap(_profile_one, jobs), total=len(jobs), disable=not progress, desc="sass"))
    else:
        results = [_profile_one(job) for job in tqdm(jobs, disable=not progress, desc="sass")]
    return [row for rows in results for row in rows]


def environment():
    ptxas = {arch: subprocess.run([get_ptxas(arch).path, "--version"], capture_output=True, text=True).stdout
             .strip().splitlines()[-1] for arch in ARCHS}
    return dict(date=time.strftime("%Y-%m-%d"), triton=triton.__version__, torch=torch.__version__,
                python=platform.python_version(), ptxas={f"sm_{a}": v for a, v in ptxas.items()},
                commit=bench_environment(torch.device("cpu")).get("commit"))


def _layer(r):
    return f"{r['c_in']}->{r['c_out']} K={r['K']}" if r["K"] is not None else "all"


def _fmt_dilations(ds):
    ds = [d for d in ds if d is not None]
    return ",".join(map(str, sorted(ds))) if len(ds) <= 4 else f"{min(ds)}..{max(ds)} ({len(ds)})"


def summary_rows(rows):
    """The sm_90 TF32 and bf16 conv kernels at each config's full-width layers (the budgeted ones): one
    line per (config, precision, role), with the worst warp-instructions per output over dilations."""
    out = {}
    for r in rows:
        if r["arch"] != "sm_90" or r["precision"] == "ieee" or r["role"] not in CONV_ROLES:
            continue
        width = max(PROFILE_CONFIGS[r["config"]][2])
        if r["K"] == 1 or r["c_in"] != width or r["c_out"] != width:
            continue
        key = (r["config"], r["precision"], r["role"])
        best = out.get(key)
        if best is None or max(r["per_output"]) > best["per_output"]:
            out[key] = dict(config=r["config"], precision=r["precision"], role=r["role"], layer=_layer(r),
                            per_output=max(r["per_output"]), budget=PER_OUTPUT_BUDGETS.get((r["config"], r["role"]))
                            if r["precision"] == "tf32" else None, registers=r["registers"],
                            spills=r["spill_store_bytes"] + r["spill_load_bytes"], ctas_per_sm=r["ctas_per_sm"],
                            mma=",".join(r["mma"]) or "-", loads="/".join(map(str, r["loop_load_bytes"])) or "-")
    return list(out.values())


def render_markdown(profile_rows, env):
    lines = [
        "# Static profile of the compiled kernels (sm_90 and sm_80): counted, not timed", "",
        f"{env['date']}, triton {env['triton']}, torch {env['torch']}, commit {env['commit']}; "
        f"ptxas: {', '.join(f'{k} {v}' for k, v in env['ptxas'].items())}.", "",
        "Every row is a binary the launchers really launch for a whole-network forward + backward of that "
        "paper configuration (`python benchmarks/sass_profile.py`), compiled on a CPU with Triton's bundled "
        "ptxas. `instr/out` is warp-instructions per output element of an interior CTA (every tap active; for "
        "the weight gradient, per element of g reduced over), from the SASS steady-state loop; one value per "
        "dilation. `loads` are the global load widths (bytes) inside that loop; `async` says they are cp.async "
        "or TMA copies (software-pipelined). No GPU ran any of this.", "",
    ]
    budgets = ", ".join(f"{c} {r} <= {b}" for (c, r), b in PER_OUTPUT_BUDGETS.items())
    lines += ["## Summary: full-width layers, sm_90", "", f"Budgets (TF32, triton {BUDGET_TRITON}): {budgets}.", "",
              "| config | precision | kernel | layer | instr/out (worst) | budget | regs | spills | CTAs/SM | MMA "
              "| loads |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary_rows(profile_rows):
        lines.append(f"| {s['config']} | {s['precision']} | {s['role']} | {s['layer']} | {s['per_output']:.2f} | "
                     f"{s['budget'] or ''} | {s['registers']} | {s['spills']} | {s['ctas_per_sm']} | {s['mma']} | "
                     f"{s['loads']} |")
    for arch in ("sm_90", "sm_80"):
        arch_rows = [r for r in profile_rows if r["arch"] == arch]
        if not arch_rows:
            continue
        lines += ["", f"## Every binary, {arch}", "",
                  "| config | precision | kernel | layer | dilations | ALIGN | tiles (CO, CI, T) / warps / stages | "
                  "instr/out | regs | spill B | smem KB | CTAs/SM | MMA | loads | async |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in arch_rows:
            t = r["tiles"]
            tiles = "/".join(str(t[k]) for k in ("BLOCK_CO", "BLOCK_CI", "BLOCK_T") if k in t) or str(t.get("BLOCK"))
            lines.append(
                f"| {r['config']} | {r['precision']} | {r['role']} | {_layer(r)} | {_fmt_dilations(r['dilations'])} | "
                f"{r['align'] or ''} | {tiles} / {r['num_warps']} / {r['num_stages']} | "
                f"{', '.join(f'{v:.2f}' for v in sorted(set(r['per_output'])))} | {r['registers']} | "
                f"{r['spill_store_bytes'] + r['spill_load_bytes']} | {r['shared_bytes'] / 1024:.0f} | "
                f"{r['ctas_per_sm']} | {','.join(r['mma']) or '-'} | "
                f"{'/'.join(map(str, r['loop_load_bytes'])) or '-'} | {'yes' if r['loop_async'] else 'no'} |")
    broken = violations(profile_rows)
    lines += ["", "## Budgets", ""]
    lines += [f"- {v}" for v in broken] or ["Every budget holds: no spills, no subroutine calls, bf16 pipelined "
                                            "wherever 4-byte copies are possible, a 16-byte load stream in every "
                                            "fully aligned loop (tf32 warpgroup-MMA input gradients exempt), and "
                                            "the per-output budgets above."]
    return "\n".join(lines) + "\n"


def write_profile(profile_rows, env, out_dir):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "sass-sm90.json", out_dir / "sass-sm90.md"]
    paths[0].write_text(json.dumps(dict(environment=env, budget_triton=BUDGET_TRITON,
                                        per_output_budgets={f"{c} {r}": b for (c, r), b in PER_OUTPUT_BUDGETS.items()},
                                        rows=profile_rows), indent=1))
    paths[1].write_text(render_markdown(profile_rows, env))
    return paths


