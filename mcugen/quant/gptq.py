"""Rounding with error feedback on a power grid (GPTQ, Frantar et al. 2023), for NUPES.

Weights are held grouped, (G, R, K): G groups of a grouped conv (1 otherwise), R output
channels each, K weights per channel; every group has its own Hessian C (G, K, K), the covariance
of the layer's quantized inputs (mcugen/quant/layer_stats.py). Columns are rounded one at a time,
in order of decreasing C diagonal (the inputs that matter most first, while the most columns are
left to absorb their error); the rounding error of a column, scaled by the Cholesky factor of
C^-1, is subtracted from the columns not rounded yet, which is the least-squares correction of
the output for what the rounding lost."""
from __future__ import annotations

import numpy as np

DAMPING = 0.01              # x the mean diagonal, added to C: a rank-deficient C stays invertible
BLOCK = 128                 # columns updated lazily together (one matrix product per block)
CLIP_FACTORS = np.round(np.arange(1.0, 0.649, -0.05), 4)   # per-channel scale = factor x max|w|


def grouped(w, group) -> np.ndarray:
    """(Co, ...) -> (G, Co/G, K)."""
    return np.asarray(w, dtype=np.float64).reshape(group, w.shape[0] // group, -1)


def ungrouped(a, shape) -> np.ndarray:
    """The inverse of `grouped` for weights (to `shape`), or (G, R) -> (Co,) with shape None."""
    return a.reshape(shape) if shape is not None else a.reshape(-1)


def damped(c) -> np.ndarray:
    """C plus DAMPING x its mean diagonal; a dead input (zero diagonal) gets a unit diagonal."""
    c = c.copy()
    diag = np.diagonal(c, axis1=1, axis2=2)
    dead = diag <= 0
    idx = np.arange(c.shape[1])
    c[:, idx, idx] = np.where(dead, 1.0, diag + DAMPING * np.maximum(diag.mean(axis=1, keepdims=True),
                                                                     np.finfo(float).tiny))
    return c


def least_squares_target(w, stats) -> np.ndarray:
    """The float weights V that best map the quantized inputs onto the float outputs:
    C_qq V^T = C_qf W^T. Rounding V (rather than W) also corrects the error the layers before
    left in this layer's inputs. Solved for V - W, so that the damping shrinks only the
    correction (V = W exactly when the inputs are)."""
    rhs = (stats.cqf - stats.cqq) @ w.transpose(0, 2, 1)
    return w + np.linalg.solve(damped(stats.cqq), rhs).transpose(0, 2, 1)


def inverse_factor(c):
    """(order, U): the columns by decreasing diagonal, and per group the upper Cholesky factor
    of the damped C^-1 in that order."""
    order = np.argsort(-np.diagonal(c, axis1=1, axis2=2), axis=1, kind="stable")
    permuted = np.take_along_axis(np.take_along_axis(c, order[:, :, None], 1), order[:, None, :], 2)
    inverse = np.linalg.inv(damped(permuted))
    inverse = (inverse + inverse.transpose(0, 2, 1)) / 2
    return order, np.linalg.cholesky(inverse).transpose(0, 2, 1)


def gptq_codes(target, scale, grid, factor) -> np.ndarray:
    """(G, R, K) codes of `target` on `grid` with per-channel `scale` (G, R), GPTQ order."""
    order, u = factor
    w = np.take_along_axis(target, order[:, None, :], 2).copy()
    codes = np.empty(w.shape, dtype=np.int64)
    k = w.shape[2]
    for start in range(0, k, BLOCK):
        end = min(start + BLOCK, k)
        errors = np.empty(w.shape[:2] + (end - start,))
        for j in range(start, end):
            column = w[:, :, j]
            codes[:, :, j] = grid.quantize(column, scale)
            error = (column - grid.dequantize(codes[:, :, j], scale)) / u[:, j, j][:, None]
            w[:, :, j + 1:end] -= error[:, :, None] * u[:, None, j, j + 1:end]
            errors[:, :, j - start] = error
        w[:, :, end:] -= errors @ u[:, start:end, end:]
    return np.take_along_axis(codes, np.argsort(order, axis=1)[:, None, :], 2)


def row_scales(target, grid, energy, constant) -> np.ndarray:
    """(G, R) per-channel scales: max|w| times the CLIP_FACTORS entry with the least weight
    error weighted by each input's energy (G, K); 1 for all-zero and constant channels."""
    peak = np.abs(target).max(axis=2)
    best_scale, best_error = peak.copy(), np.full(peak.shape, np.inf)
    for factor in CLIP_FACTORS:
        scale = np.where(peak > 0, peak * factor, 1.0)
        error = ((target - grid.dequantize(grid.quantize(target, scale[:, :, None]),
                                           scale[:, :, None])) ** 2 * energy[:, None, :]).sum(axis=2)
        better = error < best_error
        best_scale = np.where(better, scale, best_scale)
        best_error = np.where(better, error, best_error)
    return np.where((peak > 0) & ~constant, best_scale, 1.0)
