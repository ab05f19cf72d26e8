"""The host / generic C99 target: model.c, model.h, a file-driven harness and a Makefile."""
from __future__ import annotations

import numpy as np

from mcugen.boards import get_board
from mcugen.lower.head_loops import step_calls
from mcugen.codegen.kernel_plan import mac_kernel_plan, simd_weight_layout
from mcugen.codegen.render import render_all
from mcugen.ir.schedule import CTYPES, ITEMSIZE
from mcugen.rtl.simulator import PROGRAM_FILES, compile_flags, link_flags
from mcugen.version import __version__

# the members of a typed union (the arena, GAP8's L3 staging): one array per element type, so
# every array placed in it is read and written through an lvalue of its own type
UNION_MEMBERS = {"int32": "i32", "int16": "i16", "uint16": "u16", "int8": "i8", "uint8": "u8"}


def union_lengths(words: int) -> dict:
    """C type -> (member, length) of a union of `words` 32-bit words."""
    return {CTYPES[d]: (m, words * 4 // ITEMSIZE[d]) for d, m in UNION_MEMBERS.items()}


def union_view(union: str, dtype: str, byte_offset: int) -> str:
    """The C expression of an array of `dtype` at `byte_offset` into a typed union."""
    if byte_offset % ITEMSIZE[dtype]:
        raise AssertionError(f"{union} offset {byte_offset} is not aligned to {dtype}")
    return f"&{union}.{UNION_MEMBERS[dtype]}[{byte_offset // ITEMSIZE[dtype]}]"

FILES = {"model.c": "model.c.j2", "model.h": "model.h.j2", "main.c": "main.c.j2",
         "Makefile": "Makefile.j2"}
ISA_FILES = {"mcugen_isa.h": "mcugen_isa.h.j2"}

# The SIMD dot products of mcugen_isa.h: (x lanes) x (weight lanes), accumulated in 32 bits.
# corev: the CV32E40P instruction (.insn r opcode, funct3, funct7); pulp: GAP8's built-in.
ISA_KINDS = [
    {"name": "b", "doc": "4 x int8 inputs . 4 x int8 weights (cv.sdotsp.b)",
     "corev": ".insn r 0x7b, 1, 0x54,", "pulp": "__builtin_pulp_sdotsp4", "pulp_x": "isa_v4s",
     "pulp_w": "isa_v4s", "x_type": "int8_t", "w_type": "int8_t", "x_lane": "int8_t",
     "w_lane": "int8_t", "lanes": [0, 8, 16, 24], "per_word": 4},
    {"name": "ub", "doc": "4 x uint8 inputs . 4 x int8 weights (cv.sdotusp.b)",
     "corev": ".insn r 0x7b, 1, 0x50,", "pulp": "__builtin_pulp_sdotusp4", "pulp_x": "isa_v4u",
     "pulp_w": "isa_v4s", "x_type": "uint8_t", "w_type": "int8_t", "x_lane": "uint8_t",
     "w_lane": "int8_t", "lanes": [0, 8, 16, 24], "per_word": 4},
    {"name": "h", "doc": "2 x int16 inputs . 2 x int16 weights (cv.sdotsp.h)",
     "corev": ".insn r 0x7b, 0, 0x54,", "pulp": "__builtin_pulp_sdotsp2", "pulp_x": "isa_v2s",
     "pulp_w": "isa_v2s", "x_type": "int16_t", "w_type": "int16_t", "x_lane": "int16_t",
     "w_lane": "int16_t", "lanes": [0, 16], "per_word": 2},
]


def step_consts(schedule, plan) -> dict:
    """step name -> the constants its kernel reads: the Schedule's, with a SIMD kernel's weights
    laid out for its kernel (the same values: kernel_plan.simd_weight_layout), or an Add
    lookup's tables in place of the step's (add_plan.py)."""
    out = {}
    for s in schedule.steps:
        p = plan.get(s.name, {})
        consts = dict(p.get("lookup_consts", s.consts))
        if p.get("simd"):
            consts["weights"] = simd_weight_layout(s.consts["weights"], s.consts["bias"].size, p)
        out[s.name] = consts
    return out


def template_context(schedule, model_file: str, plan: dict | None = None) -> dict:
    """`plan`: step name -> the kernel plan the templates read together with the step's
    parameters (default: the C kernels' own, mcugen/codegen/kernel_plan.py)."""
    if plan is None:
        plan = {s.name: mac_kernel_plan(s) for s in schedule.steps}
    roots = [b for b in schedule.buffers.values() if not b.alias_of]
    return {
        "version": __version__,
        "model_file": model_file,
        "schedule": schedule,
        "params": {s.name: {**s.params, **{k: v for k, v in plan.get(s.name, {}).items()
                                            if k != "lookup_consts"}} for s in schedule.steps},
        "consts": step_consts(schedule, plan),
        # the ISA layer (mcugen_isa.h) when any kernel uses it: a conv's, a dense's, a matmul's
        "simd": any(p.get("simd") or p.get("matmul_simd") for p in plan.values()),
        "step_calls": step_calls(schedule),
        "isa_kinds": ISA_KINDS,
        "root_buffers": roots,
        "buffer_types": {b.name: CTYPES[b.dtype] for b in schedule.buffers.values()},
        "buffer_bytes": {b.name: b.nbytes for b in schedule.buffers.values()},
        "arena_words": max(1, (schedule.arena_bytes + 3) // 4),
        "arena_union": union_lengths(max(1, (schedule.arena_bytes + 3) // 4)),
        "buffer_views": {b.name: union_view("arena", b.dtype, b.offset) for b in roots},
        "input_size": int(np.prod(schedule.input["shape"])),
        "output_size": int(np.prod(schedule.output["shape"])),
        "input_lo": -schedule.input["B"] if schedule.input["signed"] else 0,
        "input_bits": 8,
        "rv_memory": qemu_memory(),
        "rv_cflags": RV_CFLAGS,
    }


# GCC for RV32 (qemu and the RTL): each step's kernel stays its own function. Inlined into
# model_run (a kernel is called once), its encoder's constants spill around the output loop:
# resnet8 on the CV32E40P RTL, measured side by side, runs 0.1 % (uniform W8A8) and 1.4 %
# (power W4A4) fewer cycles without the inlining.
RV_CFLAGS = "-O2 -fno-inline-functions-called-once"


def qemu_memory():
    """The rv32 rule always targets qemu's virt machine (its board file has the layout)."""
    memory = get_board("rv32imc-qemu")["memory"]
    return {"flash_origin": hex(memory["flash"]["origin"]), "flash_bytes": memory["flash"]["bytes"],
            "ram_origin": hex(memory["ram"]["origin"]), "ram_bytes": memory["ram"]["bytes"]}


def render(schedule, model_file: str, board: dict | None = None, plan: dict | None = None,
           rtl: bool = False) -> dict:
    """The board does not change the host C (the rv32 rule always targets qemu's layout).
    `rtl`: the project also builds for the CV32E40P RTL (a target that runs there: rv32, whose
    plain kernels are RV32IMC)."""
    context = template_context(schedule, model_file, plan)
    context["rtl"] = rtl_make_flags() if rtl else None
    files = render_all("host", {**FILES, **(ISA_FILES if context["simd"] else {}),
                                **(RTL_FILES if rtl else {})}, context)
    return {**files, **(rtl_program_files() if rtl else {})}


RTL_FILES = {"main_rtl.c": "main_rtl.c.j2"}


def rtl_make_flags() -> dict:
    """The Makefile's rtl rule: mcugen's CV32E40P harness contract, from the project's rtl/."""
    return {"cflags": " ".join(compile_flags("rtl")), "ldflags": " ".join(link_flags("rtl"))}


def rtl_program_files() -> dict:
    """rtl/: the startup, I/O header and console of programs run by the RTL harness."""
    return {f"rtl/{path.name}": path.read_text() for path in PROGRAM_FILES}
