"""The quantization methods behind one call: PowerQuant (data-free, qgraph.py) and NUPES
(data-driven, nupes.py, which builds on qgraph's pieces)."""
from __future__ import annotations

from mcugen.quant.lanes import stored_encodings
from mcugen.quant.nupes import quantize_nupes
from mcugen.quant.qgraph import QGraph, QuantOptions, quantize_powerquant

QUANTIZERS = {"powerquant": quantize_powerquant, "nupes": quantize_nupes}


def quantize(graph, options: QuantOptions, progress=None) -> QGraph:
    qgraph = QUANTIZERS[options.method](graph, options, progress)
    qgraph.encodings = stored_encodings(qgraph.encodings, graph.input, options.act_storage)
    return qgraph
