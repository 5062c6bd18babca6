"""The static profile of the general op's variants (`python benchmarks/sass_profile.py --variants`).

For the seq-MNIST and char-PTB layers at full width, dilations 1, 2, 4 (ALIGN 1, 2, 4) and the
network's widest, each activation
and gate of `tcnkernels.conv1d` is compiled for sm_90 (the binaries its launchers pick on an H100)
and its warp-instructions per output compared with the plain conv of the same layer (bias, no
activation): forward, weight gradient (where the activation's derivative is applied) and input
gradient. A gated unit's conv computes two channels per output; its counts are per conv output
(both halves; for the input gradient, which reduces over both, per half of its work), so that they
compare with the plain conv's. The depthwise kernels are profiled on
Conv-TasNet-like layers, channel-first and channel-last. Counted, not timed.
"""
import dataclasses

from .launches import op_launches
from .profile import PROFILE_CONFIGS, work_model
from .sass import compile_launch

ACTIVATIONS = (None, "relu", "leaky_relu", "elu", "selu", "gelu", "gelu_tanh", "silu", "mish", "softplus", "tanh",
               "sigmoid", "prelu", "glu", "gated_tanh")
GATES = ("glu", "gated_tanh")
# The budgets: 2.5 (elementwise), 4 (gated) and 1.5 (depthwise forward and input gradient)
# warp-instructions per output.
ELEMENTWISE_ALLOWANCE, GATED_ALLOWANCE = 2.5, 4.0
DEPTHWISE_BUDGET = 1.5
DEPTHWISE_LAYERS = ((512, 2000, 3, (1, 2, 4, 8, 16, 32, 64, 128)), (256, 4000, 8, (1, 16)))  # C, L, K, dilations
VARIANT_CONFIGS = ("seq-mnist", "char-ptb")


def _instructions(binary, trips):
    return binary.outside + trips * binary.loop


def _per_output(launch, arch, gated=False):
    """(role, the shipped binary, warp-instructions per output). A kernel whose programs branch
    between an interior and an edge path (the depthwise kernel's unmasked and masked taps) is
    counted path by path: each compiled alone (TILES 1 and 2: the same code as its branch of the
    shipped binary), weighted by the fraction of programs that take it in this launch's grid."""
    work = work_model(launch)
    binary = compile_launch(launch, arch)
    per_cta = work["per_cta"] * (2 if gated else 1)
    interior = work.get("interior")
    if interior is None:
        count = _instructions(binary, work["trips"])
    else:
        inner, edge = (compile_launch(dataclasses.replace(launch, named={**launch.named, "TILES": tiles}), arch)
                       for tiles in (1, 2))
        count = interior * _instructions(inner, work["trips"]) + (1 - interior) * _instructions(edge, work["trips"])
    return work["role"], binary, binary.num_warps * count / per_cta


def variant_rows(configs=VARIANT_CONFIGS, precisions=("tf32", "bf16"), arch=90):
    """One row per (config, precision, activation, role): the worst per-output count over the
    network's dilations, its registers, spills and loop load widths."""
    rows = []
    for config in configs:
        B, _, channels, K, L = PROFILE_CONFIGS[config]
        width = max(channels)
        for precision in precisions:
            for activation in ACTIVATIONS:
                gated = activation in GATES
                worst = {}
                for dilation in sorted({1, 2, 4, 2 ** (len(channels) - 1)}):  # the alignments, and the widest
                    launches = op_launches(width, 2 * width if gated else width, L, K, dilation, precision, arch,
                                           activation=activation, batch=B)
                    for launch in launches:
                        if launch.kernel.fn.__name__ not in ("causal_conv1d_kernel",
                                                             "causal_conv1d_weight_grad_kernel"):
                            continue
                        # a gated layer's conv is twice as wide: its forward counted per conv output,
                        # its input gradient (a reduction over both halves) per output of half the work
                        role, binary, per_output = _per_output(launch, arch, gated and launch.kernel.fn.__name__ ==
                                                               "causal_conv1d_kernel")
                        row = worst.get(role)
                        if row is None or per_output > row["per_output"]:
                            worst[role] = dict(config=config, precision=precision, activation=str(activation),
                                               role=role, layer=f"{width}->{width} K={K}", dilation=dilation,
                                               per_output=round(per_output, 2), registers=binary.registers,
                                               spills=binary.spill_store_bytes + binary.spill_load_bytes,
                                               loads="/".join(map(str, binary.loop_load_bytes)) or "-")
                rows += worst.values()
    plain = {(r["config"], r["precision"], r["role"]): r["per_output"] for r in rows if r["activation"] == "None"}
    for r in rows:
        r["over_plain"] = round(r["per_output"] - plain[(r["config"], r["precision"], r["role"])], 2)
    return rows


def layout_rows(configs=VARIANT_CONFIGS, precisions=("tf32", "bf16"), arch=90):
    """The plain conv (bias + ReLU) of the full-width layers on channel-first and channel-last
    inputs: per-output count, loop load widths and MMA kinds of the forward and input gradient. Each
    layer also at the width rounded down to 8 channels (char-PTB's 450 fp32 channels put a
    channel-last row at 8-byte alignment, 4 in bf16: no load along C can be wider)."""
    rows = []
    for config, width in ((c, w) for c in configs for w in _widths(PROFILE_CONFIGS[c][2])):
        B, _, channels, K, L = PROFILE_CONFIGS[config]
        for precision in precisions:
            for channel_last in (False, True):
                dilation = 2 ** (len(channels) - 1)  # aligned shifts: what the layout alone changes
                for launch in op_launches(width, width, L, K, dilation, precision, arch, activation="relu",
                                          channel_last=channel_last, batch=B):
                    if launch.kernel.fn.__name__ != "causal_conv1d_kernel":
                        continue
                    role, binary, per_output = _per_output(launch, arch)
                    rows.append(dict(config=f"{config} {width} ch", precision=precision, role=role,
                                     layout="channel-last" if channel_last else "channel-first",
                                     layer=f"{width}->{width} K={K}", dilation=dilation,
                                     per_output=round(per_output, 2), mma=",".join(binary.mma) or "-",
                                     loads="/".join(map(str, binary.loop_load_bytes)) or "-",
                                     spills=binary.spill_store_bytes + binary.spill_load_bytes))
    return rows


def _widths(channels):
    width = max(channels)
    return (width,) if width % 8 == 0 else (width, width // 8 * 8)


def depthwise_rows(precisions=("ieee", "bf16"), arch=90):
    """The depthwise kernels (forward with PReLU, input gradient, weight gradient): warp-instructions
    per output, loop load widths, spills, and modelled DRAM bytes per output against the
    compulsory 2 x itemsize (read x once, write y once; the halo of K-1 shifted steps re-read)."""
    rows = []
    for C, L, K, dilations in DEPTHWISE_LAYERS:
        for precision in precisions:
            itemsize = 2 if precision == "bf16" else 4
            for channel_last in (False, True):
                worst = {}
                for d in dilations:
                    for launch in op_launches(C, C, L, K, d, precision, arch, C, "causal", "prelu", channel_last,
                                              batch=4):
                        name = launch.kernel.fn.__name__
                        if not name.startswith("depthwise"):
                            continue
                        a = launch.named
                        role, binary, per_output = _per_output(launch, arch)
                        if role != "weight-grad" and a.get("STRIP", 0):  # J + K - 1 input steps for J outputs
                            dram = itemsize * (1 + (a["STRIP"] + K - 1) / a["STRIP"])
                        elif role != "weight-grad":
                            halo = min((K - 1) * d, L)
                            dram = itemsize * (1 + (a["BLOCK_T"] + halo) / a["BLOCK_T"] if not channel_last
                                               else 1 + min(1 + halo / a["BLOCK_T"], K))
                        else:
                            dram = None
                        row = worst.get(role)
                        if row is None or per_output > row["per_output"]:
                            worst[role] = dict(layer=f"{C} ch K={K}", L=L, precision=precision,
                                               layout="channel-last" if channel_last else "channel-first", role=role,
                                               dilation=d, per_output=round(per_output, 2),
                                               registers=binary.registers,
                                               spills=binary.spill_store_bytes + binary.spill_load_bytes,
                                               loads="/".join(map(str, sorted({binary.widest_load_bytes,
                                                                               *binary.loop_load_bytes}))),
                                               dram_per_output=None if dram is None else round(dram, 2),
                                               compulsory=2 * itemsize)
                rows += worst.values()
    return rows


def violations(rows, dw_rows):
    out = []
    for r in rows:
        allowed = GATED_ALLOWANCE if r["activation"] in GATES else ELEMENTWISE_ALLOWANCE
        if r["role"] in ("forward", "input-grad") and r["over_plain"] > allowed:
            out.append(f"{r['config']} {r['precision']} {r['activation']} {r['role']}: +{r['over_plain']} "
                       f"warp-instructions per output over the plain conv (allowed {allowed})")
        if r["spills"]:
            out.append(f"{r['config']} {r['precision']} {r['activation']} {r['role']}: spills {r['spills']} B")
    for r in dw_rows:
        if r["per_output"] > DEPTHWISE_BUDGET and r["role"] != "weight-grad":
            out.append(f"depthwise {r['layer']} {r['precision']} {r['layout']} {r['role']}: {r['per_output']} "
                       f"warp-instructions per output > {DEPTHWISE_BUDGET}")
        if r["spills"]:
            out.append(f"depthwise {r['layer']} {r['precision']} {r['layout']} {r['role']}: spills {r['spills']} B")
        if "16" not in r["loads"].split("/"):
            out.append(f"depthwise {r['layer']} {r['precision']} {r['layout']} {r['role']}: no 16-byte loads")
    return out


def render_layouts(layout):
    lines = ["", "## Channel-last inputs", "",
             "The plain conv (bias + ReLU) of the same layers on a channel-first `(B, C, L)` input and on a "
             "channel-last view (`x.transpose(1, 2)` of a `(B, L, C)` tensor), widest dilation. `loads`: the "
             "global load widths in the loop (bytes).", "",
             "| config | precision | layout | kernel | instr/out | MMA | loop loads (B) | spills |",
             "|---|---|---|---|---|---|---|---|"]
    for r in layout:
        lines.append(f"| {r['config']} | {r['precision']} | {r['layout']} | {r['role']} | {r['per_output']:.2f} | "
                     f"{r['mma']} | {r['loads']} | {r['spills']} |")
    return lines


def render_markdown(rows, dw_rows, env, layout=()):
    lines = ["# Static profile of the general op's variants (sm_90): counted, not timed", "",
             f"{env['date']}, triton {env['triton']}, torch {env['torch']}, commit {env['commit']}.", "",
             "Warp-instructions per output of the binaries `tcnkernels.conv1d` launches for a forward + backward "
             "on the seq-MNIST (25 channels, K=7, L=784) and char-PTB (450 channels, K=3, L=400) layers, worst "
             "dilation of their networks (`python benchmarks/sass_profile.py --variants`). `+plain` is the "
             "difference with the same layer's conv without activation. The activation's derivative is applied "
             "in the weight-gradient kernel (which writes the gradient the input-gradient kernel reads), so the "
             "input gradient is the plain one for every activation. Gated units: per conv output (both halves). "
             f"Budgets (forward and input gradient): +{ELEMENTWISE_ALLOWANCE} elementwise, +{GATED_ALLOWANCE} "
             "gated. The weight gradient, which also applies the derivative, is reported.", "",
             "| config | precision | activation | kernel | worst dilation | instr/out | +plain | regs | spills "
             "| loop loads (B) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['precision']} | {r['activation']} | {r['role']} | {r['dilation']} | "
                     f"{r['per_output']:.2f} | {r['over_plain']:+.2f} | {r['registers']} | {r['spills']} | "
                     f"{r['loads']} |")
    lines += ["", "## Depthwise kernels", "",
              f"Budget: <= {DEPTHWISE_BUDGET} warp-instructions per output (forward and input gradient; the "
              "weight gradient, a reduction, is reported), 16-byte loads along the contiguous dimension, no "
              "spills. Channel-first rows at dilations below a 16-byte vector take the window path (the aligned "
              "blocks the taps span loaded once, each tap's operand taken from their in-thread lanes). "
              "`DRAM B/out` is modelled (each input tile and its halo read once, the output written once), not "
              "measured.", "",
              "| layer | L | precision | layout | kernel | worst dilation | instr/out | regs | spills | loads (B) "
              "| DRAM B/out (modelled) | compulsory |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in dw_rows:
        lines.append(f"| {r['layer']} | {r['L']} | {r['precision']} | {r['layout']} | {r['role']} | {r['dilation']} | "
                     f"{r['per_output']:.2f} | {r['registers']} | {r['spills']} | {r['loads']} | "
                     f"{r['dram_per_output'] if r['dram_per_output'] is not None else '-'} | {r['compulsory']} |")
    lines += render_layouts(layout)
    broken = violations(rows, dw_rows)
    lines += ["", "## Budgets", ""] + ([f"- {v}" for v in broken] or ["Every variant budget holds."])
    return "\n".join(lines) + "\n"
