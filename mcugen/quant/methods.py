"""The quantization methods behind one call: PowerQuant (data-free, qgraph.py) and NUPES
(data-driven, nupes.py, which builds on qgraph's pieces)."""
from __future__ import annotations

from mcugen.quant.nupes import quantize_nupes
from mcugen.quant.qgraph import QGraph, QuantOptions, quantize_powerquant

QUANTIZERS = {"powerquant": quantize_powerquant, "nupes": quantize_nupes}


def quantize(graph, options: QuantOptions, progress=None) -> QGraph:
    return QUANTIZERS[options.method](graph, options, progress)
