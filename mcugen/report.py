"""The per-layer report, from the Schedule alone (so `mcugen report out/` works later); each
target adds its columns (Target.report_extras) and its lines of text (Target.report_lines)."""
from __future__ import annotations

from mcugen.cycle_model import add_estimate
from mcugen.targets import get_target
from mcugen.text_table import fmt, table

LAYER_FIELDS = ("macs", "weight_bytes", "wbits", "abits", "exponent", "recon_error",
                "encoder", "table_bytes", "acc_bound", "w_frac_bits", "x_frac_bits",
                "constant_channels", "encoder_max_code_error", "encoder_off_share",
                "encoder_mean_code_error", "encoder_entries", "encoder_bits", "encoder_ops",
                "output_error", "output_error_before", "decode_bits", "decode8_cost",
                "softmax_error_bound", "ln_max_error", "ln_bound_ratio", "w_lanes", "act_grid",
                "act_lanes", "act_error", "act_alternative", "act_alternative_error")


def build_report(schedule) -> dict:
    layers = []
    for step in schedule.steps:
        record = {"name": step.layer, "step": step.name, "op": step.onnx_op, "kind": step.kind}
        record.update({k: step.info.get(k) for k in LAYER_FIELDS})
        record["macs"] = step.info.get("macs", 0)
        record["weight_bytes"] = step.info.get("weight_bytes", 0)
        record["const_bytes"] = schedule.step_consts_bytes(step)
        record["ram_bytes"] = schedule.buffers[step.output].nbytes
        layers.append(record)
    roots = [b for b in schedule.buffers.values() if not b.alias_of]
    totals = {
        "macs": sum(layer["macs"] for layer in layers),
        "weight_bytes": sum(layer["weight_bytes"] for layer in layers),
        "flash_bytes": sum(layer["const_bytes"] for layer in layers),
        "peak_ram_bytes": schedule.arena_bytes,
        "activation_bytes_unshared": sum(b.nbytes for b in roots),
        "exponent": schedule.meta.get("exponent"),
        "steps": len(layers),
    }
    return {"model": schedule.meta.get("model"), "target": schedule.meta.get("target"),
            "options": schedule.meta.get("options"), "notes": schedule.meta.get("notes", []),
            "layers": layers, "totals": totals}


def merge_profile(report: dict, profile: dict) -> dict:
    """Add measured RV32 instruction counts (qemu: instructions per MAC) or cycles (the
    CV32E40P RTL, one core, ideal memory: MACs per cycle), and section sizes (profile.json),
    to a report."""
    unit = "cycles" if "cycles" in profile else "instructions"
    if unit == "cycles":
        _merge_counts(report, profile["cycles"], "rtl_cycles", "macs_per_cycle",
                      lambda count, macs: macs / count)
    else:
        _merge_counts(report, profile["instructions"], "instructions", "instr_per_mac",
                      lambda count, macs: count / macs)
    report["totals"].update({f"{k}_bytes": v for k, v in profile["sections"].items()})
    if profile.get("gap8") and report.get("gap8_model"):
        add_estimate(report, profile["gap8"], unit)
    return report


def _merge_counts(report, counts, key, ratio_key, ratio):
    """Per step and in total: the count under `key`, and `ratio(count, macs)` where both exist."""
    records = [(layer, counts["steps"].get(layer["step"])) for layer in report["layers"]]
    records.append((report["totals"], counts["total"]))
    for record, count in records:
        record[key] = count
        if count and record["macs"]:
            record[ratio_key] = round(ratio(count, record["macs"]), 3)


def format_report(report: dict) -> str:
    head = ("step", "op", "MACs", "weights B", "tables B", "RAM B", "W", "A", "exponent",
            "recon err", "out err", "acc bound", "encoder", "enc B", "code err", "instr", "instr/MAC")
    rows = []
    for layer in report["layers"]:
        rows.append((layer["step"][:34], layer["op"], fmt(layer["macs"]), fmt(layer["weight_bytes"]),
                     fmt(layer["const_bytes"] - layer["weight_bytes"]), fmt(layer["ram_bytes"]),
                     fmt(layer["wbits"]), fmt(layer["abits"]), fmt(layer["exponent"], "float"),
                     fmt(layer["recon_error"], "float"), _output_error(layer), fmt(layer["acc_bound"]),
                     *_encoder_columns(layer), fmt(layer.get("instructions")), fmt(layer.get("instr_per_mac"), "float")))
    t = report["totals"]
    rows.append(("total", "", fmt(t["macs"]), fmt(t["weight_bytes"]),
                 fmt(t["flash_bytes"] - t["weight_bytes"]), fmt(t["peak_ram_bytes"]) + " peak",
                 "", "", fmt(t["exponent"], "float"), "", "", "", "",
                 fmt(sum(layer["table_bytes"] or 0 for layer in report["layers"]
                          if layer.get("encoder_max_code_error") is not None)), "",
                 fmt(t.get("instructions")),
                 fmt(t.get("instr_per_mac"), "float")))
    lines = table(head, rows)
    stack = (f" + {t['kernel_stack_bytes']:,} B of kernel stack buffers"
             if "kernel_stack_bytes" in t else "")
    lines.append(f"flash {t['flash_bytes']:,} B; activation RAM {t['peak_ram_bytes']:,} B peak "
                 f"(vs {t['activation_bytes_unshared']:,} B if no buffer were shared){stack}")
    if "int_vs_sim_max_abs_diff" in t:
        agree = (f"; top-1 agreement: integer vs simulated {t['int_vs_sim_top1_agreement']:.0%}, "
                 f"integer vs float {t['int_vs_float_top1_agreement']:.0%}") if "int_vs_sim_top1_agreement" in t else ""
        lines.append(f"max |output| difference, relative to the float range: simulated quantization vs "
                     f"float {t['sim_vs_float_max_abs_diff']:.3g}, integer vs simulated "
                     f"{t['int_vs_sim_max_abs_diff']:.3g}{agree} (32 calibration inputs)")
    lines.extend(get_target(report.get("target") or "host").report_lines(report))
    if "text_bytes" in t:
        lines.append(f"RV32IMC model.o: text {t['text_bytes']:,} B, rodata {t['rodata_bytes']:,} B, "
                     f"data {t['data_bytes']:,} B, bss {t['bss_bytes']:,} B")
    lines.extend(_integer_step_errors(report["layers"]))
    lines.extend(_grid_choices(report["layers"]))
    constant = [(layer["step"], layer["constant_channels"]) for layer in report["layers"]
                if layer.get("constant_channels")]
    if constant:
        lines.append("constant channels (weights negligible, lowered as their bias alone): "
                     + ", ".join(f"{step} {n}" for step, n in constant))
    lines.extend(f"note: {n}" for n in report.get("notes", []))
    return "\n".join(lines)


def _integer_step_errors(layers) -> list:
    """The integer Softmax's proven error bound and LayerNorm's worst measured error (on
    sampled rows, with its share of the stated bound), each against the float step."""
    parts = [f"{layer['step']} {layer['op'].lower()} <= {layer['softmax_error_bound']:.2g}"
             for layer in layers if layer.get("softmax_error_bound") is not None]
    parts += [f"{layer['step']} layernorm {layer['ln_max_error']:.2g} ({layer['ln_bound_ratio']:.0%} "
              f"of its bound)" for layer in layers if layer.get("ln_max_error") is not None]
    return ["integer steps' worst error against float (before encoding): " + "; ".join(parts)] if parts else []


def _grid_choices(layers) -> list:
    """Per MAC layer whose input grid was chosen between 8-bit and 16-bit lanes (--act-grid
    auto): the grid taken, its lanes and error, and the alternative's error (quant/lanes.py)."""
    parts = [f"  {layer['step']}: {layer['act_grid']} in {layer['act_lanes']}-bit lanes, error "
             f"{layer['act_error']:.3g}; {layer['act_alternative']} {layer['act_alternative_error']:.3g}"
             for layer in layers if layer.get("act_alternative")]
    return ["input grids chosen per MAC layer (mean squared error of the encoded calibration "
            "values, against the grid not taken):"] + parts if parts else []


def _output_error(layer) -> str:
    """NUPES: the layer's output error on the calibration samples with PowerQuant's rounding,
    then with NUPES's (relative to the float layer's output)."""
    if layer.get("output_error") is None:
        return "-"
    return f"{layer['output_error_before']:.3g}->{layer['output_error']:.3g}"


def _encoder_columns(layer) -> tuple:
    """encoder (lut/its table's entries, pade/its index bits), its table bytes, and its worst code error with the
    share of accumulator values off (over the whole accumulator range)."""
    if layer.get("encoder_max_code_error") is None:
        return (layer.get("encoder") or "-", "-", "-")
    name = layer["encoder"] + (f"/{layer['encoder_entries']}" if layer.get("encoder_entries") else "") + (
        f"/F{layer['encoder_bits']}" if layer.get("encoder_bits") else "")
    error = f"{layer['encoder_max_code_error']} ({layer['encoder_off_share']:.1%})"
    return (name, fmt(layer["table_bytes"]), error)
