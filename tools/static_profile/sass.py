"""Reading a compiled kernel: registers, spills, shared memory, occupancy, MMA kinds, load widths,
asynchronous copies, subroutine calls, and the steady-state loop, from the SASS Triton's bundled
CUDA tools disassemble (triton/backends/nvidia/bin). Static counts of binaries; nothing is timed.
"""
import dataclasses
import math
import re
import subprocess
import tempfile
from pathlib import Path

from triton import knobs
from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

from .launches import ARCHS, build, specialize


def _nvidia_tool(name):
    return getattr(knobs.nvidia, name).path


@dataclasses.dataclass
class Binary:
    """Static facts of one compiled kernel."""
    num_warps: int
    num_stages: int
    registers: int
    spill_store_bytes: int
    spill_load_bytes: int
    shared_bytes: int
    ctas_per_sm: int
    mma: list              # distinct MMA opcodes (HMMA..., HGMMA..., DMMA...)
    widest_load_bytes: int  # widest global load (LDG / LDGSTS = cp.async / TMA = 16+) anywhere
    loop_load_bytes: list   # global load widths inside the steady-state loop
    cp_async: bool
    tma: bool
    calls: int              # calls of subroutines (64-bit division shows up as one), not ptxas's local CALLs
    loop: int               # instructions in the steady-state loop body (0: no loop)
    outside: int            # instructions outside it
    loop_async: bool        # the loop's global loads are asynchronous (cp.async or TMA): pipelined


_INSTR = re.compile(r"/\*([0-9a-f]+)\*/\s+(.*?)\s*;")
_LABEL = re.compile(r"^(\.L_x_\d+):")
_MMA = ("HMMA", "HGMMA", "DMMA", "IMMA")
_FMA = ("FFMA", "DFMA")


def _opcode(text):
    return re.sub(r"^@!?U?P[T\d]+\s+", "", text).split()[0]


def _load_bytes(op):
    """Bytes per thread of a global load opcode, or None if it is not one."""
    base = op.split(".")[0]
    if base not in ("LDG", "LDGSTS", "UTMALDG"):
        return None
    if base == "UTMALDG":
        return 16  # a TMA tile load: at least as wide as the widest vector load
    for width, size in ((".128", 16), (".64", 8), (".U16", 2), (".S16", 2), (".U8", 1), (".S8", 1)):
        if width in op:
            return size
    return 4


def parse_sass(text):
    """(instructions [(addr, opcode, text)], loops [(start, end)] of backward branches)."""
    instrs, labels, pending = [], {}, []
    for line in text.splitlines():
        label = _LABEL.match(line.strip())
        if label:
            pending.append(label.group(1))
            continue
        m = _INSTR.search(line)
        if m:
            addr = int(m.group(1), 16)
            for name in pending:
                labels[name] = addr
            pending = []
            instrs.append((addr, _opcode(m.group(2)), m.group(2)))
    loops = []
    for addr, op, text in instrs:
        target = re.search(r"`\((\.L_x_\d+)\)", text)
        if op.startswith("BRA") and target and labels.get(target.group(1), addr + 1) <= addr:
            loops.append((labels[target.group(1)], addr))
    return instrs, loops


def steady_state(instrs, loops):
    """(loop body, everything else): the smallest loop holding tensor-core math, else FMA math."""
    for kinds in (_MMA, _FMA):
        holding = [(s, e) for s, e in loops if any(s <= a <= e and op.startswith(kinds) for a, op, _ in instrs)]
        if holding:
            start, end = min(holding, key=lambda se: se[1] - se[0])
            body = [i for i in instrs if start <= i[0] <= end]
            return body, [i for i in instrs if not start <= i[0] <= end]
    return [], instrs


def ctas_per_sm(registers, shared, num_warps, arch):
    """Resident CTAs per SM, limited by registers (256-register warp granules in 4 partitions of
    16K), warps (64 per SM), shared memory and the 32-CTA cap."""
    per_warp = math.ceil(max(registers, 1) * 32 / 256) * 256
    by_regs = 4 * (16384 // per_warp) // num_warps
    by_smem = ARCHS[arch].smem_per_sm // (shared + 1024)
    return min(by_regs, 64 // num_warps, by_smem, 32)


def _ptxas_log(ptx, arch):
    """`ptxas -v` on Triton's PTX with Triton's own ptxas and flags: registers and spill bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        cmd = [get_ptxas(arch).path, "-lineinfo", "-v", "--regAllocOptLevel=2",
               f"--gpu-name={sm_arch_from_capability(arch)}", str(src), "-o", str(Path(tmp) / "k.cubin")]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stderr


def _sass(cubin):
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([_nvidia_tool("nvdisasm"), "-c", f.name], capture_output=True, text=True,
                              check=True).stdout


def analyse(ck, arch, num_warps):
    log = _ptxas_log(ck.asm["ptx"], arch)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    registers = int(re.search(r"Used (\d+) registers", log).group(1))
    instrs, loops = parse_sass(_sass(ck.asm["cubin"]))
    instrs = [i for i in instrs if i[1] != "NOP"]
    body, rest = steady_state(instrs, loops)
    loads = [b for b in (_load_bytes(op) for _, op, _ in instrs) if b]
    loop_ops = [op for _, op, _ in body]
    shared = ck.metadata.shared
    return Binary(
        num_warps=num_warps, num_stages=ck.metadata.num_stages, registers=registers,
        spill_store_bytes=int(spills.group(1)), spill_load_bytes=int(spills.group(2)), shared_bytes=shared,
        ctas_per_sm=ctas_per_sm(registers, shared, num_warps, arch),
        mma=sorted({op for _, op, _ in instrs if op.startswith(_MMA)}),
        widest_load_bytes=max(loads, default=0),
        loop_load_bytes=sorted({b for b in (_load_bytes(op) for op in loop_ops) if b}),
        cp_async=any(op.startswith("LDGSTS") for _, op, _ in instrs),
        tma=any(op.startswith("UTMALDG") for _, op, _ in instrs),
        calls=sum(op.startswith("CALL") and "(.L_x_" not in text for _, op, text in instrs),
        loop=len(body), outside=len(rest),
        loop_async=bool(body) and any(op.startswith(("LDGSTS", "UTMALDG")) for op in loop_ops)
        and not any(op.startswith("LDG.") or op == "LDG" for op in loop_ops),
    )


_compiled = {}


def compile_launch(launch, arch):
    """The analysed binary of `launch` for sm_<arch> (cached per runtime specialisation)."""
    options, signature, constexprs, attrs = specialize(launch, arch)
    key = (launch.kernel.fn.__name__, arch, repr(signature), repr(sorted(constexprs.items())),
           repr(sorted(attrs.items())), repr(sorted(options.__dict__.items())))
    if key not in _compiled:
        ck, options = build(launch, arch)
        _compiled[key] = analyse(ck, arch, options.num_warps)
    return _compiled[key]


def local_memory_in_loop(ck):
    """Local-memory (spill) instructions inside the steady-state loop of a compiled kernel."""
    instrs, loops = parse_sass(_sass(ck.asm["cubin"]))
    body, _ = steady_state([i for i in instrs if i[1] != "NOP"], loops)
    return sum(op.startswith(("STL", "LDL")) for _, op, _ in body)


def resource_usage(ck):
    """{REG, STACK, SHARED, LOCAL, ...} of a compiled kernel, from `cuobjdump -res-usage` (quick: no
    disassembly). STACK > 0 means spills: these kernels keep no arrays in local memory."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(ck.asm["cubin"])
        f.flush()
        out = subprocess.run([_nvidia_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True,
                             check=True).stdout
    return {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", out.split("Function", 1)[-1])}


