"""The per-layer report, from the Schedule alone (so `mcugen report out/` works later)."""
from __future__ import annotations

from mcugen.cycle_model import add_estimate

LAYER_FIELDS = ("macs", "weight_bytes", "wbits", "abits", "exponent", "recon_error",
                "encoder", "table_bytes", "acc_bound", "w_frac_bits", "x_frac_bits",
                "constant_channels", "encoder_max_code_error", "encoder_off_share",
                "encoder_mean_code_error", "encoder_entries", "encoder_bits", "encoder_ops",
                "output_error", "output_error_before", "decode_bits", "decode8_cost")


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


def _fmt(value, kind="int"):
    if value is None:
        return "-"
    if kind == "float":
        return f"{value:.3g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def format_report(report: dict) -> str:
    head = ("step", "op", "MACs", "weights B", "tables B", "RAM B", "W", "A", "exponent",
            "recon err", "out err", "acc bound", "encoder", "enc B", "code err", "instr", "instr/MAC")
    rows = []
    for layer in report["layers"]:
        rows.append((layer["step"][:34], layer["op"], _fmt(layer["macs"]), _fmt(layer["weight_bytes"]),
                     _fmt(layer["const_bytes"] - layer["weight_bytes"]), _fmt(layer["ram_bytes"]),
                     _fmt(layer["wbits"]), _fmt(layer["abits"]), _fmt(layer["exponent"], "float"),
                     _fmt(layer["recon_error"], "float"), _output_error(layer), _fmt(layer["acc_bound"]),
                     *_encoder_columns(layer), _fmt(layer.get("instructions")), _fmt(layer.get("instr_per_mac"), "float")))
    t = report["totals"]
    rows.append(("total", "", _fmt(t["macs"]), _fmt(t["weight_bytes"]),
                 _fmt(t["flash_bytes"] - t["weight_bytes"]), _fmt(t["peak_ram_bytes"]) + " peak",
                 "", "", _fmt(t["exponent"], "float"), "", "", "", "",
                 _fmt(sum(layer["table_bytes"] or 0 for layer in report["layers"]
                          if layer.get("encoder_max_code_error") is not None)), "",
                 _fmt(t.get("instructions")),
                 _fmt(t.get("instr_per_mac"), "float")))
    lines = _table(head, rows)
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
    if "dma_bytes" in t:
        lines.extend(_gap8_lines(report))
    if "hls" in report:
        lines.extend(_hls_lines(report))
    if "simd" in report:
        lines.extend(_simd_lines(report))
    if "text_bytes" in t:
        lines.append(f"RV32IMC model.o: text {t['text_bytes']:,} B, rodata {t['rodata_bytes']:,} B, "
                     f"data {t['data_bytes']:,} B, bss {t['bss_bytes']:,} B")
    constant = [(layer["step"], layer["constant_channels"]) for layer in report["layers"]
                if layer.get("constant_channels")]
    if constant:
        lines.append("constant channels (weights negligible, lowered as their bias alone): "
                     + ", ".join(f"{step} {n}" for step, n in constant))
    lines.extend(f"note: {n}" for n in report.get("notes", []))
    return "\n".join(lines)


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
    return (name, _fmt(layer["table_bytes"]), error)


def _table(head, rows) -> list:
    """Aligned columns: the first two left, the rest right; a rule under the head."""
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths))) for r in [head] + rows]
    lines.insert(1, "-" * len(lines[0]))
    return lines


def _gap8_lines(report) -> list:
    """GAP8 per layer: where it runs, tiles, L1 and DMA bytes, and (after `simulate --on qemu`
    or `--on rtl`) the cycle estimate of the model in mcugen/cycle_model.py."""
    t = report["totals"]
    unit = report.get("gap8_counts", "instructions")
    busiest = f"busiest_core_{unit}"
    head = ("GAP8 step", "on", "tiles", "L1 B", "DMA B",
            "busiest core " + ("cycles" if unit == "cycles" else "instr"), "est. cycles", "bound",
            "est. MAC/cycle")
    rows = [(layer["step"][:34], layer.get("runs_on", "-"), _fmt(layer.get("tiles")), _fmt(layer.get("l1_bytes")),
             _fmt(layer.get("dma_bytes")), _fmt(layer.get(busiest)),
             _fmt(layer.get("est_cycles")), layer.get("bound", "-"), _fmt(layer.get("est_macs_per_cycle"), "float"))
            for layer in report["layers"]]
    lines = [""] + _table(head, rows)
    lines.append(f"GAP8: L1 up to {t['l1_bytes_max']:,} B per layer, {t['dma_bytes']:,} B moved by DMA per inference")
    if "l3_bytes" in t:
        lines.append(f"GAP8: weights in L3 (HyperRAM, {t['l3_bytes']:,} B, read once per inference), staged "
                     f"through {t['l3_slots']} L2 slot(s) ({t['l3_staging_bytes']:,} B)"
                     + (", the next layer's read during the current one" if t["l3_slots"] == 2 else ""))
    if "est_cycles" in t:
        model = report["gap8_model"]
        lines.append(f"GAP8 estimate {_estimate_basis(unit, model)}: {t['est_cycles']:,} cycles = "
                     f"{t['est_time_ms']} ms at {model['cluster_hz'] / 1e6:g} MHz, "
                     f"{t['est_macs_per_cycle']} MAC/cycle; reference: {model['reference']}: "
                     f"{model['reference_macs_per_cycle']} MAC/cycle")
    else:
        lines.append("GAP8 cycle estimate: run `mcugen simulate OUT --on qemu` (instructions) or "
                     "`--on rtl` (cycles) first")
    return lines


def _estimate_basis(unit, model) -> str:
    """What the GAP8 estimate is built from, said plainly."""
    dma = f"DMA {model['dma_bytes_per_cycle']} B/cycle"
    if unit == "cycles":
        return ("from per-core cycles measured on the CV32E40P RTL (one core at a time, ideal memory) "
                "+ the model's fork, task and DMA costs: a MODEL for the cluster (no TCDM contention; "
                f"{dma})")
    return (f"(a MODEL, not a measurement: instructions from qemu on plain RV32IMC, "
            f"{model['cpi']} cycle each, {dma})")


def _simd_lines(report) -> list:
    """SIMD boards per MAC layer: the kernel (dot products of 4 x 8-bit lanes: b signed, ub
    unsigned inputs; h: 2 x 16-bit; plain: no SIMD), the decode tables' width, what an 8-bit
    weight table adds to the reconstruction error, and (after `simulate --on rtl`) cycles."""
    head = ("SIMD step", "kernel", "decode bits", "8-bit cost", "MACs", "cycles", "MAC/cycle")
    rows = [(layer["step"][:34], layer.get("kernel", "-"), _fmt(layer.get("decode_bits")),
             "-" if layer.get("decode8_cost") is None else f"+{layer['decode8_cost']:.1%}",
             _fmt(layer["macs"]), _fmt(layer.get("rtl_cycles")), _fmt(layer.get("macs_per_cycle"), "float"))
            for layer in report["layers"] if layer["macs"] or layer.get("rtl_cycles")]
    t = report["totals"]
    rows.append(("total", "", "", "", _fmt(t["macs"]), _fmt(t.get("rtl_cycles")),
                 _fmt(t.get("macs_per_cycle"), "float")))
    lines = [""] + _table(head, rows)
    lines.append(f"{report['simd']}: 8-bit cost = added relative weight reconstruction error of an "
                 f"8-bit decode table; cycles measured on one core with ideal memory"
                 + ("" if "gap8_model" not in report else " (the emulation build: every core's share "
                    "in turn and the emulated DMA copies; the cluster's estimate is the GAP8 table's)"))
    return lines


def _hls_lines(report) -> list:
    """FPGA per layer: how its products are realized, lanes and reuse, II (cycles between two
    outputs in steady state), the estimate of DSP, BRAM_18K, LUT, FF and cycles
    (mcugen/codegen/hls_estimate.py: a model, not synthesis)."""
    h = report["hls"]
    head = ("HLS step", "multiply", "lanes", "reuse", "II", "acc bits", "DSP", "BRAM_18K", "LUT", "FF",
            "cycles")
    rows = [(layer["step"][:34], layer.get("multiply") or "-", _fmt(layer.get("lanes")),
             _fmt(layer.get("reuse")), _fmt(layer.get("ii")), _fmt(layer.get("acc_bits")), _fmt(layer.get("dsp")),
             _fmt(layer.get("bram_18k")), _fmt(layer.get("lut")), _fmt(layer.get("ff")),
             _fmt(layer.get("cycles"))) for layer in report["layers"]]
    b = h["budget"]
    rows.append(("total (with layer buffers)", "", "", "", "", "", f"{h['dsp']:,}/{b['dsp']:,}",
                 f"{h['bram_18k']:,}/{b['bram_18k']:,}", f"{h['lut']:,}/{b['lut']:,}",
                 f"{h['ff']:,}/{b['ff']:,}", _fmt(h["latency_cycles"])))
    lines = [""] + _table(head, rows)
    lines.append(f"HLS estimate (a MODEL before synthesis, docs/hls.md) for {h['board']} ({h['part']}) at "
                 f"{h['clock_mhz']} MHz, reuse {h['reuse']}, io {h['io']}: latency "
                 f"{h['latency_cycles']:,} cycles = {h['latency_us']:,} us, a new input every "
                 f"{h['interval_cycles']:,} cycles (DATAFLOW)")
    return lines
