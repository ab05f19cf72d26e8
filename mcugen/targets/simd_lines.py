"""The report's SIMD table, shared by the targets whose boards may have dot-product
instructions (c99's rv32 on cv32e40p, gap8): Target.report_lines of both add it when their
report_extras recorded a SIMD board (report["simd"])."""
from __future__ import annotations

from mcugen.text_table import fmt, table


def simd_lines(report) -> list:
    """SIMD boards per MAC layer: the kernel (dot products of 4 x 8-bit lanes: b signed, ub
    unsigned inputs; h: 2 x 16-bit; plain: no SIMD), the decode tables' width, what an 8-bit
    weight table adds to the reconstruction error, and (after `simulate --on rtl`) cycles."""
    if "simd" not in report:
        return []
    head = ("SIMD step", "kernel", "decode bits", "8-bit cost", "MACs", "cycles", "MAC/cycle")
    rows = [(layer["step"][:34], layer.get("kernel", "-"), fmt(layer.get("decode_bits")),
             "-" if layer.get("decode8_cost") is None else f"+{layer['decode8_cost']:.1%}",
             fmt(layer["macs"]), fmt(layer.get("rtl_cycles")), fmt(layer.get("macs_per_cycle"), "float"))
            for layer in report["layers"] if layer["macs"] or layer.get("rtl_cycles")]
    t = report["totals"]
    rows.append(("total", "", "", "", fmt(t["macs"]), fmt(t.get("rtl_cycles")),
                 fmt(t.get("macs_per_cycle"), "float")))
    lines = [""] + table(head, rows)
    lines.append(f"{report['simd']}: 8-bit cost = added relative weight reconstruction error of an "
                 f"8-bit decode table; cycles measured on one core with ideal memory"
                 + ("" if "gap8_model" not in report else " (the emulation build: every core's share "
                    "in turn and the emulated DMA copies; the cluster's estimate is the GAP8 table's)"))
    return lines
