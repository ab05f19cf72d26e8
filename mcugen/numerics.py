"""Pure numerics below the op registry: the activation functions a fused activation spec
names, what they are (monotone, non-negative, piecewise linear, per channel, where they turn),
and C's rounding. The encoders, the fixed-point tables, the quantizer and the ops all read
them; they import nothing of mcugen but its errors."""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy.special import expit, ndtr

from mcugen.errors import MCUGenError

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_CUBIC = 0.044715                     # the cubic term of GELU's tanh approximation


def activation_fn(spec, axis=1):
    """A fused activation spec -> an elementwise numpy function (None = identity). A per-channel
    PRelu applies slope c to index c of `axis` of its argument (1 for (N, C, ...) tensors, 0 for
    the (C, M) arrays of a lowering)."""
    if spec is None:
        return lambda y: y
    name = spec[0]
    if name == "PRelu":
        return _prelu(spec[1], axis)
    build = _FUNCTIONS.get(name)
    if build is None:
        raise MCUGenError(f"unknown activation {name}")
    return build(*spec[1:])


def _leaky(alpha):
    return lambda y: np.where(y >= 0, y, alpha * y)


def _elu(alpha, gamma=1.0):
    # expm1 of min(y, 0): the branch np.where discards must not overflow either
    return lambda y: gamma * np.where(y > 0, y, alpha * np.expm1(np.minimum(y, 0.0)))


def _hard_sigmoid(alpha, beta):
    return lambda y: np.clip(alpha * y + beta, 0.0, 1.0)


def _gelu_tanh(y):
    # 0.5 * (1 + tanh(z)) == expit(2z); beyond |y| = 100 the gate is 0 or 1 to the last bit,
    # and clipping there keeps y^3 finite for any y
    inner = np.clip(y, -100.0, 100.0)
    z = SQRT_2_OVER_PI * (inner + GELU_CUBIC * inner ** 3)
    return y * expit(2.0 * z)


def _prelu(slopes, axis):
    slopes = np.asarray(slopes, dtype=np.float64).reshape(-1)
    if slopes.size == 1:
        return _leaky(float(slopes[0]))

    def apply(y):
        y = np.asarray(y)
        if y.ndim == 0 or y.shape[axis] != slopes.size:
            raise MCUGenError(f"PRelu with {slopes.size} slopes applied to an array of shape "
                              f"{list(y.shape)} along axis {axis}")
        shape = [1] * y.ndim
        shape[axis] = slopes.size
        return np.where(y >= 0, y, slopes.reshape(shape) * y)
    return apply


_FUNCTIONS = {
    "Relu": lambda: (lambda y: np.maximum(y, 0.0)),
    "Clip": lambda lo, hi: (lambda y: np.clip(y, lo, hi)),
    "LeakyRelu": _leaky,
    "Sigmoid": lambda: expit,
    "Tanh": lambda: np.tanh,
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": lambda: (lambda y: y * np.clip(y / 6.0 + 0.5, 0.0, 1.0)),
    "Elu": _elu,
    "Selu": _elu,
    "Softplus": lambda: (lambda y: np.logaddexp(0.0, y)),
    "SiLU": lambda: (lambda y: y * expit(y)),
    "Gelu": lambda: (lambda y: y * ndtr(y)),          # ndtr = Phi, no 1 + erf cancellation
    "GeluTanh": lambda: _gelu_tanh,
    "Mish": lambda: (lambda y: y * np.tanh(np.logaddexp(0.0, y))),
}


def _spec_params(spec):
    if spec[0] not in _FUNCTIONS and spec[0] != "PRelu":
        raise MCUGenError(f"unknown activation {spec[0]}")
    return spec[0], spec[1:]


def activation_is_monotone(spec):
    """Non-decreasing on all reals: what a threshold encoder (and MaxPool on codes) can realize."""
    if spec is None:
        return True
    name, p = _spec_params(spec)
    if name in ("LeakyRelu", "HardSigmoid", "Elu"):
        return p[0] >= 0
    if name == "PRelu":
        return min(p[0]) >= 0
    if name == "Selu":                       # gamma * elu_alpha: slopes gamma and gamma * alpha
        return p[1] >= 0 and p[0] * p[1] >= 0
    return name in ("Relu", "Clip", "Sigmoid", "Tanh", "Softplus")


def activation_is_nonnegative(spec):
    """Every output >= 0, whatever the input: the unsigned encoding serves it."""
    if spec is None:
        return False
    name, p = _spec_params(spec)
    if name == "Clip":                       # with lo > hi, Clip is the constant hi
        return min(p[0], p[1]) >= 0
    if name in ("LeakyRelu", "Elu"):         # a slope <= 0 maps negatives to >= 0
        return p[0] <= 0
    if name == "PRelu":
        return max(p[0]) <= 0
    if name == "Selu":
        return p[1] == 0 or (p[1] > 0 and p[0] <= 0)
    return name in ("Relu", "Sigmoid", "HardSigmoid", "Softplus")


def activation_is_piecewise_linear(spec):
    """Identity, ReLU, Clip, LeakyRelu, PRelu: one slope per side of a kink at 0 (or a clamp);
    what the pade encoder computes and where a lut's cells can sit on a uniform grid's steps."""
    return spec is None or spec[0] in ("Relu", "Clip", "LeakyRelu", "PRelu")


def activation_per_channel(spec):
    """The number of per-channel slopes (a PRelu with more than one), else 0."""
    if spec is not None and spec[0] == "PRelu" and len(spec[1]) > 1:
        return len(spec[1])
    return 0


def activation_turning_points(spec):
    """The sorted y where the function turns between non-decreasing and non-increasing; between
    two consecutive points, and beyond the first and the last, it is monotone one way."""
    if spec is None:
        return []
    name, p = _spec_params(spec)
    if name in ("LeakyRelu", "Elu"):
        return [0.0] if p[0] < 0 else []
    if name == "PRelu":
        return [0.0] if min(p[0]) < 0 else []
    if name == "Selu":
        return [0.0] if p[0] < 0 and p[1] != 0 else []
    if name == "HardSwish":                  # slope (2y + 3) / 6 on (-3, 3), zero at -1.5 exactly
        return [-1.5]
    if name in _SLOPE_SIGN:
        return [_smooth_turning_point(name)]
    return []


def _gelu_tanh_slope_sign(y):
    z = SQRT_2_OVER_PI * (y + GELU_CUBIC * y ** 3)
    dz = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * y * y)
    return 1.0 + 2.0 * y * expit(-2.0 * z) * dz          # f' / expit(2z)


def _mish_slope_sign(y):
    t = np.tanh(np.logaddexp(0.0, y))
    return t + y * (1.0 - t * t) * expit(y)              # f' itself


# functions of y with the sign of the derivative (each is f' divided by something > 0)
_SLOPE_SIGN = {
    "SiLU": lambda y: 1.0 + y * expit(-y),                              # f' / expit(y)
    "Gelu": lambda y: ndtr(y) + y * math.exp(-0.5 * y * y) / math.sqrt(2.0 * math.pi),
    "GeluTanh": _gelu_tanh_slope_sign,
    "Mish": _mish_slope_sign,
}


@functools.lru_cache(maxsize=None)
def _smooth_turning_point(name):
    """The one root of the derivative: each of these dips to its minimum in (-5, 0)."""
    # deferred: scipy.optimize is slow to import and only smooth activations need it
    from scipy.optimize import brentq
    slope = _SLOPE_SIGN[name]
    return float(brentq(lambda y: float(slope(y)), -5.0, 0.0,
                        xtol=np.finfo(float).tiny, rtol=4 * np.finfo(float).eps, maxiter=500))


def round_half_away(x):
    """Round half away from zero, as C's round() and the quantizer contract do."""
    x = np.asarray(x, dtype=np.float64)
    return np.trunc(x + np.copysign(0.5, x))
