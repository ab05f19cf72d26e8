"""The float IR run as it stands: each node's float kernel (its op's run_float), in order. The
oracle every quantized result is measured against, and the calibration's source of activation
ranges."""
from __future__ import annotations

import numpy as np

from mcugen.ops import get_op


def run_float(graph, x: np.ndarray, hook=None) -> dict[str, np.ndarray]:
    """Run the float IR on a batch x of shape (N, *input_shape[1:]); returns every tensor.

    `hook(tensor_name, value) -> value` lets simulated quantization replace activations."""
    values = {graph.input: hook(graph.input, x) if hook else x}
    for node in graph.nodes:
        out = get_op(node.op).run_float(node, [values[t] for t in node.inputs])
        values[node.output] = hook(node.output, out) if hook else out
    return values
