"""Static profile of the fused WaveNet block (`python benchmarks/sass_profile.py --wavenet`).

Parallel WaveGAN's generator layer (64 residual, 128 gate, 64 skip and 80 aux channels, K=3, its
dilations 1 to 512, batch 6 of 25,600 samples, the upsampling net's conditioning needing a gradient):
one `tcnkernels.WaveNetBlock` forward + backward recorded on meta tensors, its kernels compiled for
sm_90 (the binaries the launchers pick on an H100) and counted as variants.py counts the general
op's. The gated conv (x's 64 channels through its 3 taps, c's 80 through a 1x1 GEMM in the same
program, 128 outputs, tanh * sigmoid) is compared with the plain conv of the layer the composed
block would run (cat(x, c): 144 -> 128 channels, bias, no activation), its forward per conv output
(both halves), with the gated units' budget: the forward and the input gradient within 4
warp-instructions per output of the plain conv, no spills. The skip + residual 1x1 (64 -> 128, the
residual add in its epilogue, its gradients read from dskip and dx_out where they are) and the
conditioning's input gradient (1x1, 80 channels) are reported, and must not spill; the conditioning's
weight gradient is one more tap of the gated conv's weight-gradient launch. Counted, not timed.
"""
from .launches import op_launches, wavenet_launches
from .profile import work_model
from .variants import GATED_ALLOWANCE, _per_output

RESIDUAL, GATE, SKIP, AUX, K = 64, 128, 64, 80, 3
BATCH, L = 6, 25600
DILATIONS = (1, 2, 4, 512)  # the alignments (ALIGN 1, 2, 4) and the widest
CONVS = ("causal_conv1d_kernel", "causal_conv1d_weight_grad_kernel")


def block_launches(dilation, precision, arch, batch=BATCH, length=L):
    """(forward launches, backward launches) of the profiled block."""
    return wavenet_launches(RESIDUAL, GATE, SKIP, AUX, K, dilation, length, precision, arch, batch)


def _row(kind, precision, dilation, role, binary, per_output):
    return dict(conv=kind, precision=precision, dilation=dilation, role=role, per_output=round(per_output, 2),
                registers=binary.registers, spills=binary.spill_store_bytes + binary.spill_load_bytes,
                loads="/".join(map(str, binary.loop_load_bytes)) or "-")


def rows(precisions=("tf32", "bf16", "ieee"), arch=90):
    """One row per (conv, precision, role): the worst per-output count over the dilations, with the
    plain conv's count of the same layer and the difference, and the most any dilation spills. Also
    the launch counts of the block."""
    out, launch_counts = [], {}
    for precision in precisions:
        worst, plain = {}, {}
        for dilation in DILATIONS:
            forward, backward = block_launches(dilation, precision, arch)
            launch_counts[precision] = dict(forward=len(forward), backward=len(backward))
            for launch in forward + backward:
                if launch.kernel.fn.__name__ not in CONVS:
                    continue
                work = work_model(launch)
                kind = _kind(work["layer"])
                # the gated forward writes one output per two conv channels: counted per conv output.
                # Its input gradient is the plain conv's (the weight-gradient kernel writes the gate's
                # derivative into g), a reduction over 128 channels, into x's 64 here.
                gated = kind == "gate" and work["role"] == "forward"
                role, binary, per_output = _per_output(launch, arch, gated)
                key, row = (kind, role), _row(kind, precision, dilation, role, binary, per_output)
                spills = max(row["spills"], worst[key]["spills"] if key in worst else 0)  # at any dilation
                if key not in worst or per_output > worst[key]["per_output"]:
                    worst[key] = row
                worst[key]["spills"] = spills
            # the plain conv of the gated layer: same channels, taps and dilation, bias, no activation
            for launch in op_launches(RESIDUAL + AUX, GATE, L, K, dilation, precision, arch, activation=None,
                                      batch=BATCH):
                if launch.kernel.fn.__name__ in CONVS:
                    role, _, per_output = _per_output(launch, arch)
                    plain[role] = max(plain.get(role, 0.0), per_output)
        for (kind, role), r in worst.items():
            r["plain"] = round(plain[role], 2) if kind == "gate" else r["per_output"]
            r["over_plain"] = round(r["per_output"] - r["plain"], 2)
            out.append(r)
    return out, launch_counts


def _kind(layer):
    """Which of the block's convs a launch belongs to, from its (C_in, C_out, K, dilation)."""
    if layer[2] > 1:
        return "gate"
    return "conditioning" if AUX in layer[:2] else "skip+residual"


def violations(rows):
    broken = []
    for r in rows:
        if r["conv"] == "gate" and r["role"] in ("forward", "input-grad") and r["over_plain"] > GATED_ALLOWANCE:
            broken.append(f"WaveNet gate conv {r['precision']} {r['role']}: +{r['over_plain']} warp-instructions "
                          f"per output over the plain conv (allowed {GATED_ALLOWANCE})")
        if r["spills"]:
            broken.append(f"WaveNet {r['conv']} conv {r['precision']} {r['role']}: spills {r['spills']} B")
    return broken


def render_markdown(rows, launch_counts, env):
    lines = ["# Static profile of the fused WaveNet block (sm_90): counted, not timed", "",
             f"{env['date']}, triton {env['triton']}, torch {env['torch']}, commit {env['commit']}.", "",
             f"One `tcnkernels.WaveNetBlock({RESIDUAL}, {GATE}, {SKIP}, kernel_size={K}, dilation=d, "
             f"aux_channels={AUX})` (Parallel WaveGAN's generator layer), batch {BATCH} x {L} samples, forward + "
             "backward with the conditioning needing a gradient, recorded on meta tensors "
             "(`python benchmarks/sass_profile.py --wavenet`). Worst over dilations "
             f"{', '.join(map(str, DILATIONS))}. The gated conv reads x through its taps and c beside it (a 1x1 "
             "GEMM in the same program) and writes tanh(a) * sigmoid(b); its forward counted per conv output "
             "(both halves), and compared with the plain conv of the layer the composed block runs (cat(x, c), "
             f"{RESIDUAL + AUX} -> {GATE} channels, bias, no activation). The skip + residual 1x1s are one conv "
             "with two outputs, the residual add and scale in its epilogue; `conditioning` is c's input gradient "
             "(its weight gradient is a tap of the gated conv's weight-gradient launch). "
             f"Budget (the general op's gated units): forward and input gradient within +{GATED_ALLOWANCE} "
             "warp-instructions per output of the plain conv, no spills.", "",
             "| conv | precision | kernel | worst dilation | instr/out | plain | +plain | regs | spills (any dilation) "
             "| loop loads (B) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['conv']} | {r['precision']} | {r['role']} | {r['dilation']} | {r['per_output']:.2f} | "
                     f"{r['plain']:.2f} | {r['over_plain']:+.2f} | {r['registers']} | {r['spills']} | {r['loads']} |")
    lines += ["", "Triton launches per block (weight preparation included): " + "; ".join(
        f"{p}: forward {n['forward']}, backward {n['backward']}" for p, n in launch_counts.items()) + "."]
    broken = violations(rows)
    lines += ["", "## Budgets", ""] + ([f"- {v}" for v in broken] or ["Every budget holds."])
    return "\n".join(lines) + "\n"
