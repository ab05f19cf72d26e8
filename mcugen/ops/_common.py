"""Helpers shared by op modules: window extraction and the float convolution of conv/pool
(the activation functions are mcugen/numerics.py)."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def out_size(size, kernel, stride, pad_begin, pad_end, dilation=1):
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


def windows(x, kernel, strides, pads, dilations=(1, 1), pad_value=0):
    """(N,C,H,W) -> (N,C,OH,OW,KH,KW) view of the padded input; pads = (top, left, bottom, right)."""
    top, left, bottom, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=pad_value)
    kh, kw = kernel
    dh, dw = dilations
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    win = sliding_window_view(xp, span, axis=(2, 3))
    oh = out_size(x.shape[2], kh, strides[0], top, bottom, dh)
    ow = out_size(x.shape[3], kw, strides[1], left, right, dw)
    return win[:, :, : oh * strides[0] : strides[0], : ow * strides[1] : strides[1], ::dh, ::dw]


def conv2d(x, w, strides, pads, dilations, group):
    """Grouped 2-D convolution without bias, in float64 (exact for the integer path too:
    every partial sum the lowering admits is an integer below 2^31)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    win = windows(x, w.shape[2:], strides, pads, dilations)      # N,C,OH,OW,KH,KW
    n, c, oh, ow, kh, kw = win.shape
    co, cg = w.shape[0], w.shape[1]
    if group == 1:
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
        out = cols @ w.reshape(co, -1).T
        return out.reshape(n, oh, ow, co).transpose(0, 3, 1, 2)
    win = win.reshape(n, group, cg, oh, ow, kh, kw)
    wg = w.reshape(group, co // group, cg, kh, kw)
    out = np.einsum("ngcxykl,gockl->ngoxy", win, wg, optimize=True)
    return out.reshape(n, co, oh, ow)
