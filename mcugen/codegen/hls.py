"""The hls target's project: firmware/ (the top function and one function per layer; each MAC
layer's ROMs in roms/<layer>.h, the other tables in constants.h), tb/ with golden vectors from
the reference in tb_data/, hls_config.cfg for the Vitis unified flow, build_prj.tcl for
`vitis_hls -f`, and a README with the commands. Every number comes from the Schedule or the
target's plan (mcugen/targets/hls.py)."""
from __future__ import annotations

import numpy as np

from mcugen.codegen import hls_sim, hls_stream
from mcugen.codegen.hls_plan import MAC_KINDS, copy_name
from mcugen.codegen.render import environment, render_all
from mcugen.reference.inputs import verify_inputs
from mcugen.reference.interpreter import quantize_input, run_codes
from mcugen.version import __version__

FILES = {"firmware/model.cpp": "firmware/model.cpp.j2", "firmware/model.h": "firmware/model.h.j2",
         "firmware/constants.h": "firmware/constants.h.j2", "tb/tb_model.cpp": "tb/tb_model.cpp.j2",
         "hls_config.cfg": "hls_config.cfg.j2", "build_prj.tcl": "build_prj.tcl.j2",
         "README.md": "README.md.j2"}
STREAM_FILES = {"firmware/model.cpp": "stream/model.cpp.j2"}
TB_SAMPLES = 16        # golden vectors in tb_data/ (verify runs as many more as asked)
# what a MAC layer's kernel reads from the plan's ROMs instead of the Schedule's C arrays
MAC_ROM_KEYS = ("weights", "weight_codes", "dw", "dx", "pt", "bias")


def fanout_names(schedule, plan) -> dict:
    """step name -> the array each of its inputs reads. Under DATAFLOW an array has one reader,
    so a buffer read by several layers (a residual branch), or twice by one, is copied once per
    reader."""
    names = {}
    for step in schedule.steps:
        names[step.name] = []
        for i, name in enumerate(step.inputs):
            root = plan["roots"][name]
            many = len(plan["readers"].get(root, [])) > 1
            names[step.name].append(copy_name(root, step.name, i) if many else root)
    return names


def fanouts(plan) -> list:
    """(buffer, [copies]) for every buffer with more than one reader."""
    return [(root, copies) for root, copies in plan["readers"].items() if len(copies) > 1]


def template_context(schedule, model_file, board, plan) -> dict:
    roots = [b for b in schedule.buffers.values() if not b.alias_of]
    macs = {name: m.as_dict() for name, m in plan["macs"].items()}
    native = {s.name: {k: v for k, v in s.consts.items()
                       if not (s.kind in MAC_KINDS and k in MAC_ROM_KEYS)} for s in schedule.steps}
    return {
        "version": __version__, "model_file": model_file, "schedule": schedule,
        "board": board, "fpga": board["fpga"], "plan": plan, "macs": macs,
        "native_consts": native,
        "root_buffers": roots,
        "buffer_types": {name: f"{plan['roots'][name]}_t" for name in schedule.buffers},
        "ap_types": {b.name: plan["types"][b.name] for b in roots},
        "step_inputs": fanout_names(schedule, plan), "fanouts": fanouts(plan),
        "input_root": plan["roots"][schedule.input["buffer"]],
        "output_root": plan["roots"][schedule.output["buffer"]],
        "input_size": int(np.prod(schedule.input["shape"])),
        "output_size": int(np.prod(schedule.output["shape"])),
        "clock_ns": round(1000.0 / board["fpga"]["clock_mhz"], 3),
        "io": plan["io"], "top": "model_top",
    }


def golden_vectors(schedule, n=TB_SAMPLES, seed=7):
    """Input codes and the reference's outputs for the testbench (one line per input)."""
    x = verify_inputs(schedule, n - 2, seed)
    codes = quantize_input(schedule, x)
    expected = run_codes(schedule, codes)
    return codes.reshape(len(x), -1), np.asarray(expected).reshape(len(x), -1)


def lines_of(values) -> str:
    return "\n".join(" ".join(str(int(v)) for v in row) for row in values) + "\n"


def stream_context(schedule, plan, context) -> dict:
    """What the stream templates add: the processes' steps, each stream MAC layer's plan, the
    width of the emission tables, each deep FIFO's storage."""
    emit_bits = {p.step: max(1, int(max(p.t["row_emit"].max(), p.t["col_emit"].max())).bit_length())
                 for p in plan["processes"] if "row_emit" in p.t}
    fifo_impl = {n: ("bram" if hls_stream.fifo_cost(f, plan["fpga"])["bram_18k"] else "srl")
                 for n, f in plan["streams"].items()}
    return {**context, "steps": {s.name: s for s in schedule.steps}, "smacs": plan["smacs"],
            "emit_bits": emit_bits, "fifo_impl": fifo_impl}


def render(schedule, model_file: str, board: dict, plan: dict) -> dict:
    context = template_context(schedule, model_file, board, plan)
    stream = plan["io"] == "stream"
    if stream:
        context = stream_context(schedule, plan, context)
    files = render_all("hls", {**FILES, **(STREAM_FILES if stream else {})}, context)
    rom = environment("hls").get_template("firmware/rom.h.j2")
    stream_rom = environment("hls").get_template("stream/rom.h.j2")
    for step in schedule.steps:          # each MAC layer's ROMs, statics of its function
        if step.name in plan["macs"]:
            files[f"firmware/roms/{step.name}.h"] = rom.render(**context, s=step)
        elif step.name in plan.get("smacs", {}):
            files[f"firmware/roms/{step.name}.h"] = stream_rom.render(**context, s=step)
    if stream:     # what `mcugen verify` simulates: the processes and FIFOs as planned
        files["dataflow.json"] = hls_sim.dump(plan)
    codes, expected = golden_vectors(schedule)
    files["tb_data/inputs.txt"] = lines_of(codes)
    files["tb_data/golden.txt"] = lines_of(expected)
    return files
