"""The static-profile and host-overhead tools' own logic, on synthetic inputs (the compile-only tier
runs them on real binaries)."""
import pytest

from tcnkernels.bench import host
from tools.static_profile import profile as static_profile
from tools.static_profile import sass

SASS = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/              @!P0 BRA `(.L_x_0) ;
.L_x_1:
        /*0020*/                   LDGSTS.E.BYPASS.LTC128B.128 [R2], desc[UR4][R4.64] ;
        /*0030*/                   HMMA.1688.F32.TF32 R8, R12, R14, R8 ;
        /*0040*/                   IADD3 R2, R2, 0x10, RZ ;
        /*0050*/              @P1 BRA `(.L_x_1) ;
.L_x_0:
        /*0060*/                   LDG.E.U16 R3, desc[UR4][R6.64] ;
        /*0070*/                   CALL.REL.NOINC `(.L_x_2) ;
        /*0080*/                   CALL.REL.NOINC `($__internal_0_$__cuda_sm20_div_s64) ;
        /*0090*/                   EXIT ;
.L_x_2:
        /*00a0*/                   NOP ;
"""


def test_sass_parsing_finds_the_steady_state_loop():
    instrs, loops = sass.parse_sass(SASS)
    assert loops == [(0x20, 0x50)]  # the backward branch; the forward one is not a loop
    body, rest = sass.steady_state(instrs, loops)
    assert [op.split(".")[0] for _, op, _ in body] == ["LDGSTS", "HMMA", "IADD3", "BRA"]
    assert len(rest) == len(instrs) - 4
    assert [sass._load_bytes(op) for _, op, _ in instrs if sass._load_bytes(op)] == [16, 2]


def test_occupancy_limits():
    assert sass.ctas_per_sm(registers=64, shared=0, num_warps=4, arch=90) == 8     # registers
    assert sass.ctas_per_sm(registers=32, shared=0, num_warps=4, arch=90) == 16    # 64 warps per SM
    assert sass.ctas_per_sm(registers=32, shared=100 * 1024, num_warps=4, arch=90) == 2  # shared memory


def _row(**over):
    row = dict(config="seq-mnist", precision="tf32", arch="sm_90", role="forward", c_in=25, c_out=25, K=7, align=4,
               dilations=[16], per_output=[3.0], spill_store_bytes=0, spill_load_bytes=0, calls=0, loop=100,
               loop_async=True, loop_load_bytes=[4, 16], mma=["HMMA.1688.F32.TF32"])
    row.update(over)
    return row


@pytest.mark.parametrize("over,broken", [
    ({}, None),
    (dict(spill_store_bytes=8, spill_load_bytes=8), "spills 8 B stored"),
    (dict(calls=1), "subroutine calls"),
    (dict(per_output=[5.5]), "> budget 5.0"),
    (dict(c_in=1, per_output=[9.0]), None),                          # not a full-width layer: no budget
    (dict(precision="bf16", align=8, loop_async=False, loop_load_bytes=[16]), "not asynchronous"),
    (dict(precision="bf16", align=1, loop_async=False, loop_load_bytes=[2]), None),  # 2-byte copies: no cp.async
    (dict(loop_load_bytes=[4]), "widest load is 4 B"),
    (dict(loop_load_bytes=[4], align=2), None),                      # not fully aligned
    (dict(role="input-grad", loop_load_bytes=[4], mma=["HGMMA.64x128x8.F32.TF32"]), None),  # wgmma tf32: exempt
], ids=["ok", "spill", "call", "budget", "narrow-layer", "bf16-sync", "bf16-align1", "narrow-loads", "align2",
        "wgmma-tf32-grad"])
def test_budget_violations(over, broken):
    found = static_profile.violations([_row(**over)])
    if broken is None:
        assert found == []
    else:
        assert len(found) == 1 and broken in found[0], found


def test_host_overhead_rows_and_stubs_restored():
    from tcnkernels.ops import launching
    launch = launching.launch
    rows = host.measure(rounds=25, blocks=1)
    assert launching.launch is launch
    assert [r["name"] for r in rows][:2] == ["causal_conv1d forward", "causal_conv1d forward+backward"]
    assert all(r["us"] > 0 for r in rows) and rows[0]["goal_us"] == 20.0


def test_structure_counts_launches_and_saved_activations():
    from tcnkernels.bench import configs, report, structure
    rows = structure.structure_rows(batch_size=8, max_length=256)
    by = {(r["config"], r["provider"]): r for r in rows}
    assert {c for c, _ in by} == set(configs.PAPER_CONFIGS)
    for config in configs.PAPER_CONFIGS:
        ours, ref = by[config, "tcnkernels"], by[config, "reference"]
        # per block: 3 launches forward, at most 6 backward, plus the head and the loss; the
        # reference runs at least twice as many ops
        assert 0 < ours["launches"] < ref["launches"] / 2, (config, ours, ref)
        # at most the zero-padded K-major weights more (noticeable only at this tiny batch and length)
        assert 0 < ours["saved_bytes"] <= ref["saved_bytes"] * 1.25, (config, ours, ref)
    seq = by["seq-mnist", "tcnkernels"]  # 8 blocks at 25 channels: x and out1 kept per block (and the last y)
    assert 8 * 2 * 8 * 25 * 256 * 4 <= seq["saved_bytes"] <= 0.5 * by["seq-mnist", "reference"]["saved_bytes"]
    table = "\n".join(report.structure_table(rows))
    assert "| seq-mnist |" in table and "saved ratio" in table


def test_structure_of_the_general_ops_models():
    """A GELU TCN and a gated TCN: the fused blocks and gated convs launch fewer kernels than the same
    models from torch.nn modules, and keep little more (the prepared weights) at the paper's shapes."""
    from tcnkernels.bench import structure
    rows = structure.variant_rows()
    by = {(r["config"], r["provider"]): r for r in rows}
    assert {c for c, _ in by} == {f"{c} {m}" for c in structure.VARIANT_CONFIGS for m in ("GELU TCN", "gated TCN")}
    for config in {c for c, _ in by}:
        ours, ref = by[config, "tcnkernels"], by[config, "reference"]
        assert 0 < ours["launches"] < ref["launches"], (config, ours, ref)
        assert 0 < ours["saved_bytes"] <= ref["saved_bytes"] * 1.1, (config, ours, ref)


@pytest.mark.parametrize("over, broken", [({}, 0), ({"over_plain": 4.1}, 1),
                                          ({"role": "input-grad", "over_plain": 4.1}, 1),
                                          ({"role": "weight-grad", "over_plain": 9}, 0),
                                          ({"conv": "skip+residual", "over_plain": 9}, 0), ({"spills": 8}, 1),
                                          ({"conv": "skip+residual", "spills": 8}, 1)])
def test_wavenet_budget_violations(over, broken):
    """The WaveNet block's budget: the gated conv's forward and input gradient within +4 of the plain
    conv; no kernel spills; the weight gradient and the plain 1x1 are only reported."""
    from tools.static_profile import wavenet
    row = dict(conv="gate", precision="tf32", role="forward", over_plain=3.9, spills=0)
    row.update(over)
    assert len(wavenet.violations([row])) == broken
