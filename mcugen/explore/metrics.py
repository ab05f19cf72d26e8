"""Accuracy of one point on the evaluation inputs, from its bit-exact integer reference:
top-1 against labels when given, agreement of the top-1 class with the float model, and the
output error relative to the float model (which is what a regression model has instead)."""
from __future__ import annotations

import numpy as np

from mcugen.ops.softmax import apply_output_transform
from mcugen.reference.float_ir import run_float

BATCH = 256     # evaluation inputs per reference call: bounds the reference's memory


def batched(fn, x: np.ndarray) -> np.ndarray:
    """fn over x in batches, outputs flattened to (N, outputs per input)."""
    parts = [np.asarray(fn(x[i:i + BATCH])).reshape(min(BATCH, len(x) - i), -1)
             for i in range(0, len(x), BATCH)]
    return np.concatenate(parts)


def float_outputs(graph, x: np.ndarray) -> np.ndarray:
    """The float model's outputs, with its host-side Softmax/LogSoftmax like the reference's."""
    return batched(lambda b: apply_output_transform(graph.output_transform,
                                                    run_float(graph, b)[graph.output]), x)


def accuracy_figures(outputs: np.ndarray, reference: np.ndarray, labels=None) -> dict:
    """outputs, reference: (N, K) floats of the integer model and the float model."""
    figures = {"output_error": relative_error(outputs, reference)}
    if outputs.shape[1] > 1:
        figures["float_agreement"] = float(np.mean(outputs.argmax(1) == reference.argmax(1)))
        if labels is not None:
            figures["top1"] = float(np.mean(outputs.argmax(1) == labels))
    return figures


def relative_error(outputs: np.ndarray, reference: np.ndarray) -> float:
    """||outputs - reference|| / ||reference|| over every output of every input."""
    scale = float(np.linalg.norm(reference)) or 1.0
    return float(np.linalg.norm(outputs - reference)) / scale


def quality_metric(labels, n_outputs: int) -> tuple[str, bool]:
    """The figure a sweep ranks points by, and whether higher is better."""
    if n_outputs > 1:
        return ("top1", True) if labels is not None else ("float_agreement", True)
    return ("output_error", False)
