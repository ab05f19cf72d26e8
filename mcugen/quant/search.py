"""Data-free exponent search (PowerQuant): a* = argmin_a sum over layers of the weight
reconstruction error. The objective is ragged in a (rounding steps), so Nelder-Mead stalls: a
coarse grid first, then a bounded scalar search inside the best grid cell. Each layer's error is
normalized by its norm (the default, 'normalized'), so the biggest layer does not decide alone;
'sum' is the paper's raw sum of L2 errors."""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from mcugen.quant.power import Grid, quantize_weights

GRID = np.round(np.arange(0.30, 1.2001, 0.05), 4)


def _layer_error(w, grid, objective, norm=None):
    """`norm`: np.linalg.norm(w), when the caller has it already."""
    _, _, w_hat = quantize_weights(w, grid)
    err = np.linalg.norm(w - w_hat)
    if objective == "normalized":
        norm = np.linalg.norm(w) if norm is None else norm
        return err / norm if norm > 0 else 0.0
    return err


def objective_fn(layers, objective="normalized"):
    """layers: list of (weight array, bits) or (weight array, bits, lanes) -> f(a): the lanes
    (quant/lanes.py) round the levels, and the search measures the levels as they are. Each
    layer's norm is computed once, not at each of the search's ~30 evaluations: the same value,
    and on a multi-threaded BLAS a norm of a large layer costs a thread hand-off, a large part
    of a small model's build."""
    norms = [np.linalg.norm(layer[0]) for layer in layers] if objective == "normalized" else [None] * len(layers)

    def f(a):
        return sum(_layer_error(layer[0], Grid(layer[1], True, float(a), lanes=lanes_of(layer)),
                                objective, norm) for layer, norm in zip(layers, norms))
    return f


def lanes_of(layer) -> int:
    return layer[2] if len(layer) > 2 else 0


def search_exponent(layers, objective="normalized", progress=None) -> float:
    f = objective_fn(layers, objective)
    scores = []
    for i, a in enumerate(GRID):
        scores.append(f(a))
        if progress:
            progress(i + 1, len(GRID))
    best = int(np.argmin(scores))
    lo, hi = GRID[max(best - 1, 0)], GRID[min(best + 1, len(GRID) - 1)]
    result = minimize_scalar(f, bounds=(lo, hi), method="bounded", options={"xatol": 1e-3})
    a = float(result.x) if result.fun <= scores[best] else float(GRID[best])
    return round(a, 4)
