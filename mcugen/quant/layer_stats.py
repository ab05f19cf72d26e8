"""What NUPES needs to know of a MAC layer's inputs, gathered in one pass over the samples.

A layer's linear output is, per group g of its output channels, X_g W_g^T: X_g holds one row
per output position and sample (the im2col of a conv, the flat input of a dense layer) and one
column per weight of a channel. With the second moments of the quantized inputs X_q and the float
inputs X_f (and their column means), the output error of any candidate weights V against the
float weights W is closed form, so a layer's search never reads the data again:

    ||X_q V^T - X_f W^T||^2 = V C_qq V^T - 2 V C_qf W^T + W C_ff W^T    (per row, summed)

with C the centered moments when the bias absorbs the mean error (NUPES), the raw ones when it
does not (PowerQuant)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcugen.ops._common import windows

CHUNK_VALUES = 1 << 22      # im2col values per chunk of samples (bounds the memory)


def layer_columns(node, x) -> np.ndarray:
    """The layer's input as (groups, rows, weights per channel): im2col for a conv, the flat
    input for a dense layer; columns in the order of the weight's own layout."""
    if node.op != "Conv":
        return x.reshape(1, x.shape[0], -1)
    a = node.attrs
    _, cg, kh, kw = node.params["weight"].shape
    win = windows(x, (kh, kw), a["strides"], a["pads"], a["dilations"])     # N,C,OH,OW,KH,KW
    n, _, oh, ow = win.shape[:4]
    win = win.reshape(n, a["group"], cg, oh, ow, kh, kw).transpose(1, 0, 3, 4, 2, 5, 6)
    return win.reshape(a["group"], n * oh * ow, cg * kh * kw)


@dataclass
class LayerStats:
    """Sums over every row: hqq = X_q^T X_q, hqf = X_q^T X_f, hff = X_f^T X_f (G, K, K), and the
    column means (G, K)."""
    hqq: np.ndarray
    hqf: np.ndarray
    hff: np.ndarray
    mean_q: np.ndarray
    mean_f: np.ndarray
    rows: int

    def centered(self, h, mean_a, mean_b):
        return h - self.rows * mean_a[:, :, None] * mean_b[:, None, :]

    @property
    def cqq(self):
        """The Hessian of the bias-corrected output error (the quantized inputs' covariance)."""
        return self.centered(self.hqq, self.mean_q, self.mean_q)

    @property
    def cqf(self):
        return self.centered(self.hqf, self.mean_q, self.mean_f)

    @property
    def input_energy(self):
        """(G, K) how much each weight position weighs in the output: diag of the covariance."""
        return np.maximum(np.diagonal(self.cqq, axis1=1, axis2=2), 0.0)

    def mean_error(self, v, w):
        """(G, R) the mean over rows of X_q v - X_f w, per output channel."""
        return np.einsum("grk,gk->gr", v, self.mean_q) - np.einsum("grk,gk->gr", w, self.mean_f)

    def squared_error(self, v, w, corrected):
        """(G, R) the summed squared output error of every channel, after (corrected) or without
        the bias correction."""
        hqq, hqf, hff = self.hqq, self.hqf, self.hff
        error = (np.einsum("grk,gkl,grl->gr", v, hqq, v) - 2 * np.einsum("grk,gkl,grl->gr", v, hqf, w)
                 + np.einsum("grk,gkl,grl->gr", w, hff, w))
        if corrected:
            error = error - self.rows * self.mean_error(v, w) ** 2
        return np.maximum(error, 0.0)

    def relative_error(self, v, w, bias, corrected):
        """||y^ - y|| / ||y||, y the float layer's linear output with its bias."""
        b = bias.reshape(w.shape[0], w.shape[1])
        mean_y = np.einsum("grk,gk->gr", w, self.mean_f)
        energy = np.einsum("grk,gkl,grl->gr", w, self.hff, w) + self.rows * (2 * b * mean_y + b * b)
        total = float(energy.sum())
        return float(np.sqrt(self.squared_error(v, w, corrected).sum() / total)) if total > 0 else 0.0


def layer_stats(node, x_q, x_f) -> LayerStats:
    """Accumulate the statistics over chunks of samples (the im2col of a chunk at a time)."""
    per_sample = max(1, layer_columns(node, x_q[:1]).size)
    chunk = max(1, CHUNK_VALUES // per_sample)
    sums = None
    for start in range(0, len(x_q), chunk):
        cq = layer_columns(node, x_q[start:start + chunk])
        cf = layer_columns(node, x_f[start:start + chunk])
        part = [cq.transpose(0, 2, 1) @ cq, cq.transpose(0, 2, 1) @ cf, cf.transpose(0, 2, 1) @ cf,
                cq.sum(axis=1), cf.sum(axis=1), cq.shape[1]]
        sums = part if sums is None else [a + b for a, b in zip(sums, part)]
    hqq, hqf, hff, sum_q, sum_f, rows = sums
    return LayerStats(hqq, hqf, hff, sum_q / rows, sum_f / rows, rows)
