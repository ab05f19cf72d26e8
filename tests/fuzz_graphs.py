"""A seeded generator of small random valid ONNX models, and the oracle that judges mcugen on them.

`make_case(seed)` builds a single-input single-output model with onnx.helper from a numpy
Generator seeded by `seed` (same seed, same model), covering every op mcugen imports and their
attributes (kernels 1..5, strides, asymmetric pads, auto_pad, dilations, groups, ceil_mode,
count_include_pad, residual Add/Sub, Concat of branches, unnamed and duplicate node names,
near-zero and all-zero channels, large biases, symbolic batch, opsets 11..17, odd endings,
negative Pad, BatchNorm off a Conv, LeakyRelu with a negative slope). Every model passes the
ONNX checker and strict shape inference and runs in onnxruntime, or the generator raises
GeneratorError (a bug of this file, never of mcugen).

`check_case(case)` runs mcugen on it and returns an Outcome: a clean refusal (MCUGenError, one
line), or a build whose float IR matches onnxruntime, whose integer output is close to
simulated quantization and to the float model, and (when asked) whose generated C verifies
bit-exact through the CLI; anything else is an internal error or a wrong result.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from mcugen.reference.float_ir import run_float

OPSETS = tuple(range(11, 18))
MAX_SPATIAL = 16
MAX_CHANNELS = 8
INPUT_RANGES = ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0), (-30.0, 30.0), (-4.0, 4.0), (0.5, 2.0),
                (-1000.0, 1000.0), (0.0, 0.001))


# names that must not break C identifiers, file names or one-line messages
ODD_NAMES = ("/block.0/conv 1", ":0", "ü-λ", "a'b\"c", "x" * 120, "\tnew\nline", "model.layer[3]",
             "%s%d{}", "..", "0")


class GeneratorError(Exception):
    """The generator made a model that is not valid ONNX: a bug of this file."""


@dataclass
class Tensor:
    name: str
    shape: tuple          # batch dimension included, always 1 here


@dataclass
class Case:
    seed: int
    model: onnx.ModelProto
    input_range: tuple
    scheme: str
    layers: list          # one short text per generated op, in order
    tags: set             # features this case exercises (for the failure statistics)

    @property
    def description(self):
        return " -> ".join(self.layers)

    @property
    def softmax_size(self):
        """Ends in Softmax/LogSoftmax: how many consecutive output values each softmax spans
        (compared as logits, centered per span; mcugen refuses the layouts this misreads)."""
        out = self.model.graph.output[0]
        last = next((n for n in self.model.graph.node if out.name in n.output), None)
        if last is None or last.op_type not in ("Softmax", "LogSoftmax"):
            return None
        dims = [d.dim_value or 1 for d in out.type.tensor_type.shape.dim]
        opset = self.model.opset_import[0].version
        axis = next((a.i for a in last.attribute if a.name == "axis"), 1 if opset < 13 else -1)
        rank = len(dims)
        if opset >= 13 and axis % rank != rank - 1 and any(d != 1 for d in dims[axis % rank + 1:]):
            return None       # per position over the channels: mcugen's integer step, not logits
        return int(np.prod(dims[axis % rank:]))

    @property
    def classifier(self):
        return self.softmax_size is not None


# --------------------------------------------------------------------------------------------
# the builder: nodes, initializers, naming policy, shape bookkeeping


class Builder:
    def __init__(self, rng, opset, naming):
        self.rng = rng
        self.opset = opset
        self.naming = naming
        self.nodes, self.inits, self.layers, self.tags = [], [], [], set()
        self.shapes = {}                   # tensor -> the shape this file expects
        self.declared_output = None        # the last op's H, W as ONNX shape inference has them,
                                           # when onnxruntime disagrees (ceil_mode, see pool_pads)
        self.count = 0

    def fresh(self, prefix="t"):
        self.count += 1
        if self.naming == "odd":          # any string is a valid ONNX name
            return f"{prefix}{self.count}" + str(self.rng.choice(ODD_NAMES))
        return f"{prefix}{self.count}"

    def const(self, value, dtype=np.float32, prefix="c"):
        name = self.fresh(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, values):
        return self.const(np.asarray(values, dtype=np.int64), np.int64, "i")

    def node_name(self, op):
        """The naming policy under test: unique, empty, or repeated names."""
        policy = self.naming if self.naming != "mixed" else self.rng.choice(["named", "empty", "dup"])
        if policy == "empty":
            return ""
        if policy == "dup":
            return str(self.rng.choice(["n", "layer", op]))
        if policy == "odd":
            return f"{op}_{self.count}" + str(self.rng.choice(ODD_NAMES))
        return f"{op}_{self.count}"

    def add(self, op, inputs, shape, text=None, **attrs):
        out = self.fresh()
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.node_name(op), **attrs))
        self.layers.append(text or op)
        self.shapes[out] = tuple(int(s) for s in shape)
        return Tensor(out, self.shapes[out])

    def choice(self, options, p=None):
        return options[int(self.rng.choice(len(options), p=p))]

    def chance(self, p):
        return bool(self.rng.random() < p)


def activation_pattern(b, x):
    """The subgraphs exporters write for SiLU, GELU (erf, tanh) and Mish (frontend/patterns.py)."""
    kind = b.choice(["silu", "gelu", "gelu_tanh", "mish"])
    b.tags.add(f"pattern:{kind}")
    if kind == "silu":
        gate = b.add("Sigmoid", [x.name], x.shape)
        return b.add("Mul", [x.name, gate.name], x.shape, "SiLU")
    if kind == "mish":
        soft = b.add("Softplus", [x.name], x.shape)
        gate = b.add("Tanh", [soft.name], x.shape)
        return b.add("Mul", [x.name, gate.name], x.shape, "Mish")
    if kind == "gelu":
        scaled = b.add("Div", [x.name, b.const(1.4142135)], x.shape)
        gate = b.add("Erf", [scaled.name], x.shape)
    else:
        cube = b.add("Pow", [x.name, b.const(3.0)], x.shape)
        inner = b.add("Add", [x.name, b.add("Mul", [cube.name, b.const(0.044715)], x.shape).name], x.shape)
        gate = b.add("Tanh", [b.add("Mul", [inner.name, b.const(0.7978845608)], x.shape).name], x.shape)
    one = b.add("Add", [gate.name, b.const(1.0)], x.shape)
    half = b.add("Mul", [x.name, b.const(0.5)], x.shape)
    return b.add("Mul", [half.name, one.name], x.shape, "GELU" if kind == "gelu" else "GELU(tanh)")


def conv_out(size, k, s, pb, pe, d=1):
    return (size + pb + pe - d * (k - 1) - 1) // s + 1


def pool_out_ceil(size, k, s, pb, pe, drop=True):
    """ceil_mode output size. onnxruntime and the ONNX reference drop a last window that would
    start past the input (in the end pad); ONNX shape inference does not (drop=False)."""
    out = -(-(size + pb + pe - k) // s) + 1
    if drop and (out - 1) * s >= size + pb:
        out -= 1
    return out


def auto_pad_out(size, k, s, d, mode):
    if mode == "VALID":
        return (size - d * (k - 1) - 1) // s + 1
    return -(-size // s)


# --------------------------------------------------------------------------------------------
# weights


def conv_weights(b, co, cg, kh, kw):
    """He-initialized weights and a bias, now and then with odd channels (mark_odd_channels)."""
    fan_in = cg * kh * kw
    w = b.rng.normal(size=(co, cg, kh, kw)) * np.sqrt(2.0 / fan_in)
    bias = b.rng.normal(size=co) * 0.1
    mark_odd_channels(b, w, bias)
    return w, bias


def mark_odd_channels(b, w, bias):
    """In place: near-zero channels (~1e-30, nonzero bias), all-zero channels (with a small or
    zero bias), large biases; each with a small probability per layer."""
    co = w.shape[0]
    if b.chance(0.12):
        c = int(b.rng.integers(co))
        w[c] = b.rng.normal(size=w[c].shape) * 1e-30
        bias[c] = b.rng.choice([-1, 1]) * b.rng.uniform(0.05, 1.0)
        b.tags.add("near_zero_channel")
    if b.chance(0.12):
        c = int(b.rng.integers(co))
        w[c] = 0.0
        bias[c] = b.choice([0.0, 1e-6, -1e-4, 0.3])
        b.tags.add("zero_channel")
    if b.chance(0.08):
        bias *= b.choice([30.0, 300.0])
        b.tags.add("large_bias")


# --------------------------------------------------------------------------------------------
# 4-D layers: each takes the current tensor [1, C, H, W] and returns the next


def pick_group(b, c, co):
    groups = [g for g in range(1, c + 1) if c % g == 0 and co % g == 0]
    if 1 < c <= MAX_CHANNELS // 2 and b.chance(0.2):
        return c                         # depthwise (co is a multiple of c, see conv)
    return b.choice(groups)


def conv_geometry(b, h, w, same):
    """(kernel, strides, dilations, attrs for pads/auto_pad, out_h, out_w) with outputs >= 1."""
    for _ in range(50):
        kh = int(b.rng.integers(1, 6))
        kw = kh if b.chance(0.7) else int(b.rng.integers(1, 6))
        d = [1, 1] if b.chance(0.8) else [int(b.rng.integers(1, 3)), int(b.rng.integers(1, 3))]
        s = [1, 1] if same or b.chance(0.6) else [int(b.rng.integers(1, 4)), int(b.rng.integers(1, 4))]
        if same:
            if kh % 2 == 0 or kw % 2 == 0:
                d = [1, 1]                    # even kernels keep size through SAME_*, undilated
            return (kh, kw), s, d, same_pads(b, kh, kw, d), h, w
        mode = b.choice(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"], p=[0.7, 0.1, 0.1, 0.1])
        if mode.startswith("SAME") and d != [1, 1]:
            mode = "NOTSET"                   # onnxruntime does not run dilated SAME convs
        if mode == "NOTSET":
            pads = [int(b.rng.integers(0, k)) if k > 1 else 0 for k in (kh, kw, kh, kw)]
            oh = conv_out(h, kh, s[0], pads[0], pads[2], d[0])
            ow = conv_out(w, kw, s[1], pads[1], pads[3], d[1])
            attrs = {"pads": pads}
        else:
            oh, ow = auto_pad_out(h, kh, s[0], d[0], mode), auto_pad_out(w, kw, s[1], d[1], mode)
            attrs = {"auto_pad": mode}
            b.tags.add("auto_pad")
        if oh >= 1 and ow >= 1:
            if max(s) > 1:
                b.tags.add("stride")
            if max(d) > 1:
                b.tags.add("dilation")
            return (kh, kw), s, d, attrs, oh, ow
    raise GeneratorError("no conv geometry fits")


def same_pads(b, kh, kw, d):
    """Pads that keep H and W at stride 1: symmetric for odd kernels, SAME_UPPER/LOWER else."""
    if kh % 2 and kw % 2 and (b.chance(0.7) or d != [1, 1]):
        ph, pw = d[0] * (kh - 1) // 2, d[1] * (kw - 1) // 2
        return {"pads": [ph, pw, ph, pw]}
    b.tags.add("auto_pad")
    return {"auto_pad": b.choice(["SAME_UPPER", "SAME_LOWER"])}


def conv(b, x, out_c=None, same=False):
    _, c, h, w = x.shape
    depthwise_mult = int(b.rng.integers(1, 3))
    co = out_c or int(b.rng.integers(1, MAX_CHANNELS + 1))
    group = pick_group(b, c, co) if out_c is None else b.choice(
        [g for g in range(1, c + 1) if c % g == 0 and co % g == 0])
    if group == c and c > 1 and out_c is None:
        co = c * min(depthwise_mult, MAX_CHANNELS // c)
        b.tags.add("depthwise")
    elif group > 1:
        b.tags.add("groups")
    (kh, kw), s, d, attrs, oh, ow = conv_geometry(b, h, w, same)
    wt, bias = conv_weights(b, co, c // group, kh, kw)
    inputs = [x.name, b.const(wt, prefix="w")]
    if b.chance(0.85):
        inputs.append(b.const(bias, prefix="b"))
    if group > 1:
        attrs["group"] = group
    if d != [1, 1]:
        attrs["dilations"] = d
    if s != [1, 1] or b.chance(0.3):
        attrs["strides"] = s
    if b.chance(0.3):
        attrs["kernel_shape"] = [kh, kw]
    text = f"Conv{kh}x{kw}/s{s[0]}{s[1]}/g{group}/{co}ch"
    return b.add("Conv", inputs, (1, co, oh, ow), text, **attrs)


def shared_weight_convs(b, x):
    """Two same-shaped Convs reading one weight initializer (and often unnamed)."""
    _, c, h, w = x.shape
    k = b.choice([1, 3])
    wt, bias = conv_weights(b, c, c, k, k)
    wname, bname = b.const(wt, prefix="w"), b.const(bias, prefix="b")
    pads = [k // 2] * 4
    y = b.add("Conv", [x.name, wname, bname], x.shape, f"Conv{k}x{k}(shared W)", pads=pads)
    y = activation(b, y) if b.chance(0.5) else y
    b.tags.add("shared_weights")
    return b.add("Conv", [y.name, wname, bname], x.shape, f"Conv{k}x{k}(shared W)", pads=pads)


def batchnorm(b, x):
    c = x.shape[1]
    gamma = b.rng.uniform(0.5, 1.5, c) * b.rng.choice([-1, 1], c, p=[0.1, 0.9])
    beta, mean = b.rng.normal(size=c) * 0.2, b.rng.normal(size=c) * 0.2
    var = b.rng.uniform(0.3, 2.0, c)
    inputs = [x.name] + [b.const(v, prefix="bn") for v in (gamma, beta, mean, var)]
    producer = next((n.op_type for n in b.nodes if x.name in n.output), "input")
    b.tags.add("bn_after_mac" if producer in ("Conv", "Gemm") else "bn_after_other")
    attrs = {"epsilon": float(b.choice([1e-5, 1e-3]))}
    return b.add("BatchNormalization", inputs, x.shape, "BatchNorm", **attrs)


def preactivation(b, x):
    """BatchNorm then ReLU, or ReLU then BatchNorm (pre-activation ResNets): no Conv to fold into."""
    if b.chance(0.5):
        return b.add("Relu", [batchnorm(b, x).name], x.shape)
    return batchnorm(b, b.add("Relu", [x.name], x.shape))


SMOOTH = {"Sigmoid": {}, "Tanh": {}, "Softplus": {}, "HardSwish": {},
          "HardSigmoid": {"alpha": 0.25, "beta": 0.4}, "Elu": {"alpha": 0.8},
          "Selu": {"alpha": 1.6732632, "gamma": 1.0507010}}


def activation(b, x):
    kind = b.choice(["Relu", "Clip", "LeakyRelu", "smooth", "PRelu", "pattern"],
                    p=[0.4, 0.15, 0.15, 0.15, 0.05, 0.1])
    if kind == "Relu":
        return b.add("Relu", [x.name], x.shape)
    if kind == "LeakyRelu":
        alpha = float(b.choice([0.01, 0.1, 0.2, -0.1, -0.5]))
        if alpha < 0:
            b.tags.add("leaky_negative")
        return b.add("LeakyRelu", [x.name], x.shape, f"LeakyRelu({alpha})", alpha=alpha)
    if kind == "smooth":
        op = b.choice([op for op in SMOOTH if op != "HardSwish" or b.opset >= 14])
        return b.add(op, [x.name], x.shape, **SMOOTH[op])
    if kind == "PRelu":          # one slope per channel, some negative
        shape = (x.shape[1],) + (1,) * (len(x.shape) - 2)
        slope = b.const(b.rng.uniform(-0.4, 0.4, size=shape))
        return b.add("PRelu", [x.name, slope], x.shape, "PRelu(per channel)")
    if kind == "pattern":
        return activation_pattern(b, x)
    lo, hi = b.choice([(0.0, 6.0), (-1.0, 1.0), (0.0, None), (None, 2.0), (-0.5, 3.0)])
    inputs = [x.name, b.const(lo) if lo is not None else "", b.const(hi) if hi is not None else ""]
    while inputs[-1] == "":
        inputs.pop()
    return b.add("Clip", inputs, x.shape, f"Clip({lo},{hi})")


def pool_geometry(b, h, w, last=False):
    """(kernel, strides, attrs, out_h, out_w) for Max/AveragePool with outputs >= 1."""
    for _ in range(50):
        k = [int(b.rng.integers(1, 4 if b.chance(0.8) else 6)) for _ in range(2)]
        if b.chance(0.6):
            k[1] = k[0]
        s = [int(b.rng.integers(1, 4)), int(b.rng.integers(1, 4))] if b.chance(0.6) else list(k)
        attrs = {"kernel_shape": k, "strides": s}
        if b.chance(0.15):
            out, declared = pool_auto_pad(b, attrs, (h, w))
        else:
            out, declared = pool_pads(b, attrs, (h, w), last)
        if out and min(out) >= 1:
            if declared:
                b.tags.add("ceil_dropped_window")
                b.declared_output = tuple(declared)     # the model declares what ONNX infers
            return k, s, attrs, out[0], out[1]
    raise GeneratorError("no pool geometry fits")


def pool_auto_pad(b, attrs, sizes):
    k, s = attrs["kernel_shape"], attrs["strides"]
    mode = b.choice(["SAME_UPPER", "SAME_LOWER", "VALID"])
    if mode != "VALID" and (s[0] > k[0] or s[1] > k[1]):
        mode = "VALID"                        # onnxruntime: SAME with stride > kernel fails
    attrs["auto_pad"] = mode
    b.tags.add("pool_auto_pad")
    return [auto_pad_out(n, kk, ss, 1, mode) for n, kk, ss in zip(sizes, k, s)], None


def pool_pads(b, attrs, sizes, last):
    """Explicit pads (below the kernel, as onnxruntime requires), sometimes ceil_mode ->
    (onnxruntime's output H, W; ONNX shape inference's when it differs, else None). They
    differ when ceil_mode adds a window starting past the input: allowed as the last op only
    (out None otherwise)."""
    k, s = attrs["kernel_shape"], attrs["strides"]
    pads = [int(b.rng.integers(0, kk)) if kk > 1 and b.chance(0.6) else 0 for kk in k + k]
    if any(pads):
        attrs["pads"] = pads
        b.tags.add("pool_pads")
    axes = list(zip(sizes, k, s, pads[:2], pads[2:]))
    if not b.chance(0.25):
        return [conv_out(n, kk, ss, pb, pe) for n, kk, ss, pb, pe in axes], None
    attrs["ceil_mode"] = 1
    out = [pool_out_ceil(n, kk, ss, pb, pe) for n, kk, ss, pb, pe in axes]
    inferred = [pool_out_ceil(n, kk, ss, pb, pe, drop=False) for n, kk, ss, pb, pe in axes]
    if out == inferred:
        b.tags.add("ceil_mode")
        return out, None
    return (out, inferred) if last and b.chance(0.5) else (None, None)


def maxpool(b, x, last=False):
    _, c, h, w = x.shape
    k, s, attrs, oh, ow = pool_geometry(b, h, w, last)
    if b.chance(0.04):
        attrs["dilations"] = [2, 2]          # refused by mcugen: checks the refusal is clean
        k2 = [2 * kk - 1 for kk in k]
        if attrs.get("auto_pad") or attrs.get("ceil_mode"):
            attrs.pop("dilations")
        else:
            pads = attrs.get("pads", [0, 0, 0, 0])
            oh = conv_out(h, k2[0], s[0], pads[0], pads[2])
            ow = conv_out(w, k2[1], s[1], pads[1], pads[3])
            if min(oh, ow) < 1:
                return x
            b.tags.add("pool_dilation")
    return b.add("MaxPool", [x.name], (1, c, oh, ow), f"MaxPool{k[0]}x{k[1]}/s{s[0]}{s[1]}", **attrs)


def avgpool(b, x, last=False):
    _, c, h, w = x.shape
    k, s, attrs, oh, ow = pool_geometry(b, h, w, last)
    if b.chance(0.7):
        attrs["count_include_pad"] = int(b.rng.integers(0, 2))
        if attrs["count_include_pad"] == 0 and "pads" in attrs:
            b.tags.add("avg_pads_cip0")
    return b.add("AveragePool", [x.name], (1, c, oh, ow), f"AvgPool{k[0]}x{k[1]}/s{s[0]}{s[1]}", **attrs)


def global_avgpool(b, x):
    return b.add("GlobalAveragePool", [x.name], x.shape[:2] + (1, 1), "GAP")


def residual(b, x):
    """x + f(x) (or x - f(x), f(x) - x) with f a same-shaped Conv stack; now and then x + x."""
    if b.chance(0.15):
        b.tags.add("add_self")
        return b.add("Add", [x.name, x.name], x.shape, "Add(x,x)")
    y = conv(b, x, out_c=x.shape[1], same=True)
    if b.chance(0.4):
        y = batchnorm(b, y)
    if b.chance(0.6):
        y = activation(b, y)
    if b.chance(0.3):
        y = conv(b, y, out_c=x.shape[1], same=True)
    return join_residual(b, x, y)


def join_residual(b, x, y):
    """x + y, x - y, y - x, Sum(x, y), now and then Sum(x, y, x)."""
    op = b.choice(["Add", "Sub", "Sum"], p=[0.65, 0.2, 0.15])
    inputs = [x.name, y.name] if b.chance(0.5) else [y.name, x.name]
    if op == "Sum" and b.chance(0.15):
        inputs.append(x.name)
        b.tags.add("sum_of_three")
    b.tags.add("residual")
    return b.add(op, inputs, x.shape, f"{op}(residual)")


def concat(b, x):
    """Branches from x concatenated along channels (sometimes along H or W)."""
    _, c, h, w = x.shape
    c1 = int(b.rng.integers(1, MAX_CHANNELS // 2 + 1))
    first = conv(b, x, out_c=c1, same=True)
    kind = b.choice(["conv", "maxpool", "input", "relu", "self"], p=[0.35, 0.2, 0.2, 0.15, 0.1])
    if kind == "self" and 2 * c <= MAX_CHANNELS:
        b.tags.add("concat_self")
        return b.add("Concat", [x.name, x.name], (1, 2 * c, h, w), "Concat(x,x)", axis=1)
    if c + c1 > MAX_CHANNELS or kind == "self":
        kind = "conv"                     # keep the channels within bounds
    if kind == "conv":
        second = conv(b, x, out_c=int(b.rng.integers(1, MAX_CHANNELS - c1 + 1)), same=True)
    elif kind == "maxpool":
        second = b.add("MaxPool", [x.name], x.shape, "MaxPool3x3/s11", kernel_shape=[3, 3],
                       pads=[1, 1, 1, 1])
    elif kind == "relu":
        second = b.add("Relu", [x.name], x.shape)
    else:
        second = x
    parts = [first, second] if b.chance(0.5) else [second, first]
    b.tags.add("concat")
    axis = b.choice([1, -3, 2, 3], p=[0.6, 0.2, 0.1, 0.1])
    if axis in (2, 3) and first.shape[1] != second.shape[1]:
        axis = 1
    shape = list(parts[0].shape)
    shape[axis % 4] = sum(p.shape[axis % 4] for p in parts)
    if shape[2] > MAX_SPATIAL or shape[3] > MAX_SPATIAL:
        axis, shape = 1, [1, first.shape[1] + second.shape[1], h, w]
    return b.add("Concat", [p.name for p in parts], shape, f"Concat(axis={axis})", axis=axis)


def pad(b, x):
    """Pad on C, H or W: constant (zero or not), edge or reflect, with negative (cropping) pads."""
    _, c, h, w = x.shape
    mode = b.choice(["constant", "edge", "reflect"], p=[0.6, 0.2, 0.2])
    pads = [0] * 8
    for axis, size in ((2, h), (3, w)):
        for end in (0, 4):
            low = -1 if size > 2 and mode != "reflect" and b.chance(0.35) else 0
            high = min(2, size - 1) if mode == "reflect" else 2
            pads[axis + end] = int(b.rng.integers(low, high + 1))
    if b.chance(0.1) and c < MAX_CHANNELS and (mode != "reflect" or c > 1):
        pads[5] = 1
    shape = [x.shape[i] + pads[i] + pads[i + 4] for i in range(4)]
    if min(shape) < 1 or max(shape[2:]) > MAX_SPATIAL:
        return x
    if min(pads) < 0:
        b.tags.add("negative_pad")
    inputs = [x.name, b.ints(pads)]
    value = 0.0
    if mode == "constant" and b.chance(0.4):
        value = float(b.choice([0.5, -1.0, 2.0, 1000.0]))
        inputs.append(b.const(value))
        b.tags.add("pad_value")
    return b.add("Pad", inputs, shape, f"Pad({mode},{pads},{value})", mode=mode)


def const_affine(b, x):
    """Mul/Add/Sub/Div by a constant: a scalar or one value per channel."""
    op = b.choice(["Mul", "Add", "Sub", "Div"])
    c = x.shape[1]
    shape = b.choice([(), (1,), (c,) + (1,) * (len(x.shape) - 2), (1, c) + (1,) * (len(x.shape) - 2)])
    if len(x.shape) == 2 and shape == (c,):
        shape = (c,)
    value = b.rng.uniform(0.5, 2.0, size=shape) * b.rng.choice([-1, 1], size=shape, p=[0.2, 0.8])
    if op in ("Add", "Sub"):
        value = b.rng.normal(size=shape) * 0.5
    elif op == "Mul" and len(shape) and max(shape) > 1 and b.chance(0.2):
        value.reshape(-1)[int(b.rng.integers(value.size))] = 0.0
        b.tags.add("zero_scale")
    const = b.const(value)
    inputs = [x.name, const] if op == "Div" or b.chance(0.6) else [const, x.name]
    b.tags.add("const_affine")
    return b.add(op, inputs, x.shape, f"{op}(const{list(shape)})")


def noop(b, x):
    """Identity or Dropout (inference: a copy)."""
    op = b.choice(["Identity", "Dropout"])
    return b.add(op, [x.name], x.shape)


def transpose_pair(b, x):
    """NCHW -> NHWC -> NCHW, as tflite2onnx writes around its ops (sometimes only one)."""
    n, c, h, w = x.shape
    if b.chance(0.3) and max(h, w) <= MAX_CHANNELS:
        perm = b.choice([[0, 2, 1, 3], [0, 3, 2, 1], [0, 1, 3, 2]])
        b.tags.add("transpose")
        shape = tuple(x.shape[p] for p in perm)
        return b.add("Transpose", [x.name], shape, f"Transpose{perm}", perm=perm)
    y = b.add("Transpose", [x.name], (n, h, w, c), "Transpose[0,2,3,1]", perm=[0, 2, 3, 1])
    if b.chance(0.4):
        y = b.add("Relu", [y.name], y.shape)
    b.tags.add("transpose")
    return b.add("Transpose", [y.name], x.shape, "Transpose[0,3,1,2]", perm=[0, 3, 1, 2])


def squeeze_roundtrip(b, x):
    """Unsqueeze a trailing axis then Squeeze it (or Reshape there and back)."""
    rank = len(x.shape)
    if b.chance(0.5):
        y = axes_op(b, "Unsqueeze", x, [rank], x.shape + (1,))
        return axes_op(b, "Squeeze", y, [rank], x.shape)
    y = b.add("Reshape", [x.name, b.ints([1, -1])], (1, int(np.prod(x.shape))), "Reshape[1,-1]")
    return b.add("Reshape", [y.name, b.ints(list(x.shape))], x.shape, f"Reshape{list(x.shape)}")


def axes_op(b, op, x, axes, shape):
    """Squeeze/Unsqueeze: axes an attribute before opset 13, an input from 13 on."""
    if b.opset >= 13:
        return b.add(op, [x.name, b.ints(axes)], shape, f"{op}{axes}")
    return b.add(op, [x.name], shape, f"{op}{axes}", axes=axes)


BIG, SMALL = int(np.iinfo(np.int64).max), int(np.iinfo(np.int64).min)


def slicing(b, x):
    """Slice (negative starts and steps, INT64 bounds), Split (its parts concatenated back in
    another order) or Gather (an index list with repeats and negative indices, or a scalar
    index that drops the axis, restored by an Unsqueeze) of [1, C, H, W] along C, H or W."""
    axis = int(b.rng.integers(1, 4))
    dim = x.shape[axis]
    kind = b.choice(["slice", "split", "gather"])
    if kind == "split" and dim > 1:
        n = int(b.rng.integers(2, min(dim, 3) + 1))
        cuts = sorted(int(c) for c in b.rng.choice(np.arange(1, dim), size=n - 1, replace=False))
        sizes = [int(s) for s in np.diff([0, *cuts, dim])]
        outs, inputs, attrs = [b.fresh() for _ in sizes], [x.name], {"axis": axis}
        if b.opset >= 13:
            inputs.append(b.ints(sizes))
        else:
            attrs["split"] = sizes
        b.nodes.append(helper.make_node("Split", inputs, outs, name=b.node_name("Split"), **attrs))
        b.layers.append(f"Split(axis={axis},{sizes})")
        for out, size in zip(outs, sizes):
            b.shapes[out] = tuple(size if a == axis else d for a, d in enumerate(x.shape))
        order = [int(i) for i in b.rng.permutation(len(outs))]
        b.tags.add("split")
        return b.add("Concat", [outs[i] for i in order], x.shape, f"Concat{order}", axis=axis)
    if kind == "gather":
        b.tags.add("gather")
        if b.chance(0.4):
            index = int(b.rng.integers(-dim, dim))
            y = b.add("Gather", [x.name, b.ints(index)], x.shape[:axis] + x.shape[axis + 1:],
                      f"Gather(axis={axis},{index})", axis=axis)
            return axes_op(b, "Unsqueeze", y, [axis], x.shape[:axis] + (1,) + x.shape[axis + 1:])
        index = [int(i) for i in b.rng.integers(-dim, dim, size=int(b.rng.integers(1, dim + 1)))]
        shape = tuple(len(index) if a == axis else d for a, d in enumerate(x.shape))
        return b.add("Gather", [x.name, b.ints(index)], shape, f"Gather(axis={axis},{index})", axis=axis)
    step = int(b.choice([1, 1, 2, 3, -1, -2]))
    start = int(b.choice([int(b.rng.integers(-dim, dim)), SMALL if step > 0 else BIG]))
    end = int(b.choice([int(b.rng.integers(-dim - 1, dim + 2)), BIG if step > 0 else SMALL]))
    size = len(range(*slice(start, end, step).indices(dim)))     # Python's clamping is ONNX's
    if size == 0:
        return x
    b.tags.add("slice")
    shape = tuple(size if a == axis else d for a, d in enumerate(x.shape))
    return b.add("Slice", [x.name, b.ints([start]), b.ints([end]), b.ints([axis]), b.ints([step])], shape,
                 f"Slice(axis={axis},{start}:{end}:{step})")


def layer_norm(b, x):
    """LayerNorm over the last axis of tokens [1, C, H*W] (or [1, C*H, W]), back to [1, C, H, W]:
    the LayerNormalization op from opset 17, else (and now and then at 17) the exporters'
    decomposed form (frontend/patterns.py): Pow or Mul(d, d), Div or Mul by Reciprocal, the Sub
    reused or written twice, gamma (with negative entries) and beta optional. Now and then
    instance_norm instead."""
    if b.chance(0.3):
        return instance_norm(b, x)
    _, c, h, w = x.shape
    tokens = (1, c, h * w) if b.chance(0.5) else (1, c * h, w)
    d = tokens[-1]
    t = b.add("Reshape", [x.name, b.ints(list(tokens))], tokens, f"Reshape{list(tokens)}")
    gamma = b.rng.normal(size=d) * b.choice([1.0, 0.1, 3.0])
    beta = b.rng.normal(size=d) * b.choice([0.0, 0.5])
    eps = float(b.choice([1e-5, 1e-6, 1e-3]))
    if b.opset >= 17 and b.chance(0.7):
        b.tags.add("layernorm")
        y = b.add("LayerNormalization", [t.name, b.const(gamma), b.const(beta)], tokens,
                  "LayerNormalization", axis=-1, epsilon=eps)
    else:
        b.tags.add("pattern:layernorm")
        mean = b.add("ReduceMean", [t.name], tokens[:2] + (1,), "ReduceMean[-1]", axes=[-1])
        centered = b.add("Sub", [t.name, mean.name], tokens)
        if b.chance(0.5):
            square = b.add("Pow", [centered.name, b.const(2.0)], tokens)
        else:
            square = b.add("Mul", [centered.name, centered.name], tokens)
        var = b.add("ReduceMean", [square.name], tokens[:2] + (1,), "ReduceMean[-1]", axes=[-1])
        std = b.add("Sqrt", [b.add("Add", [var.name, b.const(eps)], var.shape).name], var.shape)
        numerator = centered if b.chance(0.7) else b.add("Sub", [t.name, mean.name], tokens)
        if b.chance(0.5):
            y = b.add("Div", [numerator.name, std.name], tokens, "LayerNorm (decomposed)")
        else:
            inverse = b.add("Reciprocal", [std.name], var.shape)
            y = b.add("Mul", [numerator.name, inverse.name], tokens, "LayerNorm (decomposed)")
        if b.chance(0.8):
            y = b.add("Mul", [y.name, b.const(gamma)], tokens)
        if b.chance(0.7):
            y = b.add("Add", [y.name, b.const(beta)], tokens)
    return b.add("Reshape", [y.name, b.ints(list(x.shape))], x.shape, f"Reshape{list(x.shape)}")


def instance_norm(b, x):
    """InstanceNormalization of [1, C, H, W] over H x W, its Scale and B per channel (now and
    then 1 and 0); or GroupNorm as torch exports it: a Reshape to [1, G, -1], the op with Scale
    1 and B 0, the Reshape back, then Mul and Add by [C, 1, 1] constants."""
    _, c, h, w = x.shape
    eps = float(b.choice([1e-5, 1e-3]))
    gamma = b.rng.normal(size=c) * b.choice([1.0, 0.1])
    beta = b.rng.normal(size=c) * b.choice([0.0, 0.5])
    if b.chance(0.5):
        b.tags.add("instancenorm")
        if b.chance(0.3):
            gamma, beta = np.ones(c), np.zeros(c)
        return b.add("InstanceNormalization", [x.name, b.const(gamma), b.const(beta)], x.shape,
                     "InstanceNormalization", epsilon=eps)
    b.tags.add("groupnorm")
    groups = b.choice([g for g in (1, 2, c) if c % g == 0])
    grouped = (1, groups, c // groups * h * w)
    t = b.add("Reshape", [x.name, b.ints(list(grouped))], grouped, f"Reshape{list(grouped)}")
    y = b.add("InstanceNormalization", [t.name, b.const(np.ones(groups)), b.const(np.zeros(groups))],
              grouped, "GroupNorm", epsilon=eps)
    y = b.add("Reshape", [y.name, b.ints(list(x.shape))], x.shape, f"Reshape{list(x.shape)}")
    y = b.add("Mul", [y.name, b.const(gamma.reshape(c, 1, 1))], x.shape)
    return b.add("Add", [y.name, b.const(beta.reshape(c, 1, 1))], x.shape)


def softmax_inside(b, x):
    """A Softmax inside the graph (its output feeds the next layer): over the last axis, over
    the channels (axis 1) or, before opset 13, over the trailing axes from 2; then a Mul by
    the input (an attention-like weighting) or straight on."""
    axis = b.choice([-1, 1, 2])
    b.tags.add("softmax_inside")
    y = b.add("Softmax", [x.name], x.shape, f"Softmax(axis={axis})", axis=axis)
    if b.chance(0.5):
        inputs = [x.name, y.name] if b.chance(0.5) else [y.name, x.name]
        return b.add("Mul", inputs, x.shape, "Mul(x, softmax)")
    return y


def propagate_softmax(qgraph, node, errors, inputs):
    """|softmax(x + d) - softmax(x)| <= y (e^(2 max|d|) - 1), the max over the row (each
    probability moves by a factor within e^(+-2 max|d|)), and never more than 1; plus the
    integer step's own error, its contract's bound (mcugen/ops/softmax.py error_bound, at
    y = 1)."""
    from mcugen.ops import get_op
    from mcugen.ops.softmax import error_bound, exp_bits, prob_bits
    axes = tuple(node.attrs["axes"])
    y = get_op(node.op).run_float(node, inputs)
    spread = errors[0].max(axis=axes, keepdims=True) if axes else np.zeros_like(errors[0])
    n = int(np.prod([inputs[0].shape[a] for a in axes]))
    k = exp_bits(qgraph.encodings[node.output].B, qgraph.encodings[node.inputs[0]].range)
    moved = np.minimum(y * np.expm1(np.minimum(2 * spread, 30.0)), 1.0)   # a probability
    return moved + error_bound(k, prob_bits(n, k), n)


def reduce_axes(b, op, x, axes, shape, text):
    """A reduce with keepdims=1: axes an attribute, or an input (ReduceSum from opset 13)."""
    if op == "ReduceSum" and b.opset >= 13:
        return b.add(op, [x.name, b.ints(axes)], shape, text, keepdims=1)
    return b.add(op, [x.name], shape, text, axes=axes, keepdims=1)


def squeeze_excite(b, x):
    """x * gate(Conv1x1(Relu(Conv1x1(mean over H, W of x)))): MobileNetV3 (HardSigmoid) and
    EfficientNet (Sigmoid) gates, the mean a GlobalAveragePool or a ReduceMean, the Mul's
    operands in either order."""
    _, c, h, w = x.shape
    if b.chance(0.5):
        pooled = b.add("GlobalAveragePool", [x.name], (1, c, 1, 1), "GAP")
    else:
        pooled = reduce_axes(b, "ReduceMean", x, [2, 3], (1, c, 1, 1), "ReduceMean[2,3]")
    r = max(1, c // 2)
    w1, b1 = conv_weights(b, r, c, 1, 1)
    w2, b2 = conv_weights(b, c, r, 1, 1)
    s = b.add("Conv", [pooled.name, b.const(w1, prefix="w"), b.const(b1, prefix="b")], (1, r, 1, 1), "SE squeeze")
    s = b.add("Relu", [s.name], s.shape)
    s = b.add("Conv", [s.name, b.const(w2, prefix="w"), b.const(b2, prefix="b")], (1, c, 1, 1), "SE excite")
    if b.chance(0.5):
        gate = b.add("HardSigmoid", [s.name], s.shape, alpha=1.0 / 6.0)
    else:
        gate = b.add("Sigmoid", [s.name], s.shape)
    b.tags.add("squeeze_excite")
    if b.chance(0.25):              # gate.expand_as(x), as some models write the broadcast
        gate = b.add("Expand", [gate.name, b.ints(list(x.shape))], x.shape, "Expand")
    inputs = [x.name, gate.name] if b.chance(0.7) else [gate.name, x.name]
    return b.add("Mul", inputs, x.shape, "SE Mul")


def reduction(b, x):
    """A mean, sum, max or min over some of the channel and spatial axes (keepdims)."""
    op = b.choice(["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"])
    axes = sorted(int(a) for a in b.rng.choice([1, 2, 3], size=int(b.rng.integers(1, 3)), replace=False))
    shape = tuple(1 if a in axes else d for a, d in enumerate(x.shape))
    b.tags.add("reduce")
    return reduce_axes(b, op, x, axes, shape, f"{op}{axes}")


LAYERS_4D = ((squeeze_excite, 0.04), (reduction, 0.03), (slicing, 0.04), (layer_norm, 0.03), (softmax_inside, 0.03), (conv, 0.30), (batchnorm, 0.05), (activation, 0.10), (maxpool, 0.08),
             (avgpool, 0.08), (residual, 0.09), (concat, 0.07), (pad, 0.07), (const_affine, 0.04),
             (noop, 0.03), (transpose_pair, 0.03), (squeeze_roundtrip, 0.02),
             (shared_weight_convs, 0.04), (preactivation, 0.04), (global_avgpool, 0.02))


# --------------------------------------------------------------------------------------------
# 1-D layers: [1, C, L] (audio, sensors, keyword spotting)


def conv1d_geometry(b, length, same):
    """(kernel, stride, dilation, pad attrs, output length); `same` keeps the length."""
    for _ in range(50):
        k, s = int(b.rng.integers(1, 6)), 1 if same or b.chance(0.6) else int(b.rng.integers(1, 4))
        d = 2 if k % 2 and b.chance(0.2) else 1
        if same:
            attrs = {"pads": [d * (k - 1) // 2] * 2} if k % 2 else {"auto_pad": "SAME_UPPER"}
            return k, s, d, attrs, length
        pads = [int(b.rng.integers(0, k)) for _ in range(2)]
        out = conv_out(length, k, s, pads[0], pads[1], d)
        if out >= 1:
            return k, s, d, {"pads": pads}, out
    raise GeneratorError("no conv1d geometry fits")


def conv1d(b, x, out_c=None, same=False):
    _, c, length = x.shape
    co = out_c or int(b.rng.integers(1, MAX_CHANNELS + 1))
    group = b.choice([g for g in range(1, c + 1) if c % g == 0 and co % g == 0])
    k, s, d, attrs, out = conv1d_geometry(b, length, same)
    w, bias = conv_weights(b, co, c // group, 1, k)
    attrs.update(strides=[s], dilations=[d], group=group)
    inputs = [x.name, b.const(w.reshape(co, c // group, k), prefix="w"), b.const(bias, prefix="b")]
    return b.add("Conv", inputs, (1, co, out), f"Conv1d k{k}/s{s}/d{d}/g{group}/{co}ch", **attrs)


def pool1d(b, x):
    _, c, length = x.shape
    op = b.choice(["MaxPool", "AveragePool", "GlobalAveragePool"], p=[0.45, 0.4, 0.15])
    if op == "GlobalAveragePool":
        return b.add(op, [x.name], (1, c, 1), "GAP1d")
    k = int(b.rng.integers(1, min(4, length + 1) + 1)) if length > 1 else 1
    s = int(b.rng.integers(1, 3))
    pads = [int(b.rng.integers(0, k)), int(b.rng.integers(0, k))] if k > 1 and b.chance(0.4) else [0, 0]
    out = conv_out(length, k, s, pads[0], pads[1])
    if out < 1:
        return x
    attrs = {"kernel_shape": [k], "strides": [s], "pads": pads}
    if op == "AveragePool" and any(pads):
        attrs["count_include_pad"] = int(b.rng.integers(0, 2))
    return b.add(op, [x.name], (1, c, out), f"{op}1d k{k}/s{s}", **attrs)


def residual1d(b, x):
    y = conv1d(b, x, out_c=x.shape[1], same=True)
    if b.chance(0.5):
        y = activation(b, y)
    return join_residual(b, x, y)


LAYERS_1D = ((conv1d, 0.4), (pool1d, 0.15), (activation, 0.12), (batchnorm, 0.08),
             (residual1d, 0.1), (const_affine, 0.05), (noop, 0.05), (preactivation, 0.05))


# --------------------------------------------------------------------------------------------
# 2-D layers: [1, K]


def gemm(b, x, out_f=None):
    k = x.shape[1]
    n = out_f or int(b.rng.integers(1, 11))
    w = b.rng.normal(size=(n, k)) * np.sqrt(2.0 / k)
    bias = b.rng.normal(size=n) * 0.1
    mark_odd_channels(b, w, bias)
    if b.chance(0.25):
        y = b.add("MatMul", [x.name, b.const(w.T, prefix="w")], (1, n), f"MatMul({n})")
        if b.chance(0.6):
            y = b.add("Add", [y.name, b.const(bias, prefix="b")], (1, n), "Add(bias)")
        return y
    attrs = {}
    trans = b.chance(0.7)
    if trans:
        attrs["transB"] = 1
    if b.chance(0.15):
        attrs["alpha"], attrs["beta"] = float(b.choice([0.5, 2.0])), float(b.choice([0.5, 1.0, 2.0]))
    inputs = [x.name, b.const(w if trans else w.T, prefix="w")]
    if b.chance(0.85):
        inputs.append(b.const(bias, prefix="b"))
    return b.add("Gemm", inputs, (1, n), f"Gemm({n})", **attrs)


def dense_residual(b, x):
    if x.shape[1] > 4 * MAX_SPATIAL:
        return gemm(b, x)                 # a K x K layer stays small
    y = gemm(b, x, out_f=x.shape[1])
    if b.chance(0.6):
        y = activation(b, y)
    return join_residual(b, x, y)


LAYERS_2D = ((gemm, 0.45), (activation, 0.2), (batchnorm, 0.08), (const_affine, 0.1),
             (dense_residual, 0.1), (noop, 0.07), (preactivation, 0.04))


def to_2d(b, x):
    """[1, C, H, W] -> [1, K]: Flatten, Reshape, GAP + Squeeze/Flatten, or NHWC Flatten."""
    k = int(np.prod(x.shape[1:]))
    kind = b.choice(["flatten", "reshape", "gap", "nhwc"], p=[0.4, 0.25, 0.2, 0.15])
    if kind == "gap":
        x = global_avgpool(b, x)
        if b.chance(0.5):
            return axes_op(b, "Squeeze", x, [2, 3], x.shape[:2])
        return b.add("Flatten", [x.name], x.shape[:2], "Flatten")
    if kind == "nhwc":
        n, c, h, w = x.shape
        x = b.add("Transpose", [x.name], (n, h, w, c), "Transpose[0,2,3,1]", perm=[0, 2, 3, 1])
    if kind == "reshape":
        shape = b.choice([[1, -1], [0, -1], [-1, k]])
        return b.add("Reshape", [x.name, b.ints(shape)], (1, k), f"Reshape{shape}")
    return b.add("Flatten", [x.name], (1, k), "Flatten", **({"axis": 1} if b.chance(0.5) else {}))


# --------------------------------------------------------------------------------------------
# endings: what follows (or is) the last MAC


ENDINGS = ("mac", "mac+act", "mac+maxpool", "mac+avgpool", "mac+gap", "mac+transpose",
           "mac+flatten", "mac+reshape", "mac+bn", "mac+affine", "mac+pad", "mac+identity",
           "softmax", "logsoftmax", "mac+concat")
ENDING_P = (0.14, 0.08, 0.09, 0.05, 0.05, 0.07, 0.07, 0.06, 0.05, 0.04, 0.05, 0.03, 0.1, 0.06, 0.06)


def softmax_ending(b, x, op):
    """A Gemm then Softmax/LogSoftmax; or an activation between them; or a Conv's output
    flattened straight into it; now and then over the channels of a 4-D tensor."""
    if len(x.shape) == 4 and b.chance(0.05):
        x = conv(b, x)
        b.tags.add("softmax_4d")
        return b.add(op, [x.name], x.shape, f"{op}(axis=1)", axis=1)
    if len(x.shape) == 4 and b.chance(0.2):
        x = to_2d(b, conv(b, x))
        b.tags.add("softmax_after_reshape")
    else:
        x = gemm(b, to_2d(b, x) if len(x.shape) == 4 else x, out_f=int(b.rng.integers(2, 11)))
        if b.chance(0.25):
            x = activation(b, x)
            b.tags.add("softmax_after_act")
    attrs = {"axis": b.choice([1, -1])} if b.chance(0.5) else {}
    return b.add(op, [x.name], x.shape, **attrs)


def ending(b, x):
    kind = b.choice(ENDINGS, p=ENDING_P)
    spatial_only = ("mac+maxpool", "mac+avgpool", "mac+gap", "mac+pad", "mac+concat")
    if len(x.shape) == 2 and kind in spatial_only:
        kind = "mac"
    b.tags.add(f"end:{kind.replace('mac+', '')}" if kind != "mac" else "end:mac")
    if kind in ("softmax", "logsoftmax"):
        return softmax_ending(b, x, "Softmax" if kind == "softmax" else "LogSoftmax")
    before = x
    x = conv(b, x) if len(x.shape) == 4 else gemm(b, x)
    tail = {"mac+act": activation, "mac+maxpool": maxpool, "mac+avgpool": avgpool,
            "mac+gap": global_avgpool, "mac+bn": batchnorm, "mac+affine": const_affine,
            "mac+pad": pad, "mac+identity": noop}
    if kind in ("mac+maxpool", "mac+avgpool"):
        return tail[kind](b, x, last=True)
    if kind in tail:
        return tail[kind](b, x)
    if kind == "mac+transpose":
        perm = [0, 2, 3, 1] if len(x.shape) == 4 else [0, 1]
        shape = tuple(x.shape[p] for p in perm)
        return b.add("Transpose", [x.name], shape, f"Transpose{perm}", perm=perm)
    if kind == "mac+flatten":
        return b.add("Flatten", [x.name], (1, int(np.prod(x.shape[1:]))), "Flatten")
    if kind == "mac+reshape":
        flat = (1, int(np.prod(x.shape[1:])))
        return b.add("Reshape", [x.name, b.ints([1, -1])], flat, "Reshape[1,-1]")
    if kind == "mac+concat":               # two last MACs side by side
        other = conv(b, before, out_c=int(b.rng.integers(1, 4)), same=True)
        if other.shape[2:] != x.shape[2:]:
            return x
        return b.add("Concat", [x.name, other.name], (1, x.shape[1] + other.shape[1]) + x.shape[2:],
                     "Concat(axis=1)", axis=1)
    return x


# --------------------------------------------------------------------------------------------
# the case


def first_layer(b, x):
    """Ops that may start a model (on the input itself): BatchNorm, Pad, pools, activations."""
    kind = b.choice(["none", "bn", "pad", "act", "maxpool", "affine", "transpose", "avgpool", "gap",
                     "preact"], p=[0.47, 0.1, 0.08, 0.08, 0.06, 0.05, 0.05, 0.05, 0.02, 0.04])
    if kind != "none":
        b.tags.add(f"first:{kind}")
    layer = {"bn": batchnorm, "pad": pad, "act": activation, "maxpool": maxpool,
             "affine": const_affine, "transpose": transpose_pair, "avgpool": avgpool,
             "gap": global_avgpool, "preact": preactivation}.get(kind)
    return layer(b, x) if layer else x


def grow(b, x, layers, n):
    fns, ps = zip(*layers)
    ps = np.asarray(ps) / np.sum(ps)
    for _ in range(n):
        fn = b.choice(fns, p=ps)
        widens = fn in (residual, concat, shared_weight_convs)
        if len(x.shape) == 4 and widens and x.shape[1] > MAX_CHANNELS:
            fn = conv
        x = fn(b, x)
    return x


def spatial_size(b):
    return int(b.rng.integers(1, 3)) if b.chance(0.05) else int(b.rng.integers(3, MAX_SPATIAL + 1))


def dead_branch(b, output):
    """A node whose result nothing reads (valid ONNX; exporters leave such nodes)."""
    name = str(b.rng.choice([t for t in b.shapes if t != output.name]))
    x = Tensor(name, b.shapes[name])
    if len(x.shape) == 4 and x.shape[1] <= MAX_CHANNELS:
        y = conv(b, x)
    else:
        y = b.add("Relu", [x.name], x.shape)
    b.layers[-1] += "(dead)"
    b.tags.add("dead_branch")
    return y


def input_tensor(b, shape):
    x = Tensor(b.fresh("input"), tuple(shape))
    b.shapes[x.name] = x.shape
    return x


def body_1d(b):
    """[1, C, L] through 1-D layers, then flattened into dense layers (or ending in a Conv)."""
    x0 = input_tensor(b, (1, int(b.rng.integers(1, 5)), int(b.rng.integers(2, 4 * MAX_SPATIAL + 1))))
    b.tags.add("conv1d")
    x = grow(b, conv1d(b, x0), LAYERS_1D, int(b.rng.integers(0, 4)))
    if b.chance(0.3):
        return x0, conv1d(b, x)
    x = b.add("Flatten", [x.name], (1, int(np.prod(x.shape[1:]))), "Flatten")
    return x0, ending(b, grow(b, x, LAYERS_2D, int(b.rng.integers(0, 2))))


def body_dense(b):
    x0 = input_tensor(b, (1, int(b.rng.integers(1, 17))))
    return x0, ending(b, grow(b, x0, LAYERS_2D, int(b.rng.integers(0, 4))))


def body_2d(b):
    """[1, C, H, W] through 2-D layers, sometimes flattened into dense layers, then an ending."""
    x0 = input_tensor(b, (1, int(b.rng.integers(1, 5)), spatial_size(b), spatial_size(b)))
    x = grow(b, first_layer(b, x0), LAYERS_4D, int(b.rng.integers(0, 4)))
    if b.chance(0.35):
        x = grow(b, to_2d(b, x), LAYERS_2D, int(b.rng.integers(0, 3)))
    return x0, ending(b, x)


def make_case(seed) -> Case:
    rng = np.random.default_rng(seed)
    b = Builder(rng, int(rng.choice(OPSETS)),
                str(rng.choice(["named", "named", "empty", "dup", "mixed", "odd"])))
    b.tags.update({f"opset{b.opset}", f"names:{b.naming}"})
    x0, x = b.choice([body_2d, body_dense, body_1d], p=[0.8, 0.12, 0.08])(b)
    if b.chance(0.06):
        dead_branch(b, x)
    symbolic = b.chance(0.3)
    if symbolic:
        b.tags.add("symbolic_batch")
    model = assemble(b, x0, x, symbolic)
    scheme = "power" if b.chance(0.15) else "uniform"
    input_range = INPUT_RANGES[int(rng.integers(len(INPUT_RANGES)))]
    validate(model, {k: v for k, v in b.shapes.items() if not (b.declared_output and k == x.name)})
    return Case(seed, model, input_range, scheme, b.layers, b.tags | {f"scheme:{scheme}"})


def assemble(b, x0, x, symbolic):
    batch = "N" if symbolic else 1
    inputs = [helper.make_tensor_value_info(x0.name, TensorProto.FLOAT, (batch,) + x0.shape[1:])]
    declared = x.shape if b.declared_output is None else x.shape[:2] + b.declared_output
    outputs = [helper.make_tensor_value_info(x.name, TensorProto.FLOAT, (batch,) + declared[1:])]
    if x.name == x0.name:
        raise GeneratorError("the model is empty")
    nodes, inits = list(b.nodes), list(b.inits)
    if b.chance(0.1):                  # constants as Constant nodes, as PyTorch exports shapes
        moved = [i for i in inits if b.chance(0.5)]
        inits = [i for i in inits if i not in moved]
        nodes = [helper.make_node("Constant", [], [i.name], name=b.node_name("Constant"), value=i)
                 for i in moved] + nodes
        b.tags.add("constant_nodes")
    if b.chance(0.08):                 # initializers listed as inputs too, as old exporters did
        inputs += [helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in inits]
        b.tags.add("initializers_as_inputs")
    graph = helper.make_graph(nodes, "fuzz", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", b.opset)])
    model.ir_version = 8
    return model


def validate(model, expected):
    """The ONNX checker and strict shape inference, which must agree with the shapes tracked."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    fixed.graph.output[0].type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=True)
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = tuple(d.dim_value if d.HasField("dim_value") else None
                     for d in value.type.tensor_type.shape.dim)
        if value.name in expected and any(
                d is not None and d != e for d, e in zip(dims[1:], expected[value.name][1:])):
            node = next(n for n in model.graph.node if value.name in n.output)
            raise GeneratorError(f"shape of {value.name} ({node.op_type} {node.attribute}): "
                                 f"onnx infers {dims}, generator expects {expected[value.name]}")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise GeneratorError(f"checker: {first_line(exc)}") from None


# --------------------------------------------------------------------------------------------
# running: onnxruntime, mcugen's float IR, mcugen's build


def first_line(exc):
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def input_shape(case):
    return [d.dim_value or 1 for d in case.model.graph.input[0].type.tensor_type.shape.dim]


def sample_inputs(case, n=16):
    """Fresh inputs, uniform over the declared input range."""
    rng = np.random.default_rng(10_000 + case.seed)
    lo, hi = case.input_range
    return rng.uniform(lo, hi, size=(n,) + tuple(input_shape(case)[1:]))


def calibration_inputs(case, n=16):
    """The first of the inputs mcugen calibrates on without data (seed 0): on these no
    activation exceeds its calibrated range, so a gap to float is the quantization's own."""
    from mcugen.quant.calibrate import synthetic_inputs
    return synthetic_inputs(input_shape(case), case.input_range, 0)[:n]


def without_output_transform(model):
    """The model with its final Softmax/LogSoftmax removed: onnxruntime's logits."""
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    out = stripped.graph.output[0]
    last = next(n for n in stripped.graph.node if out.name in n.output)
    if last.op_type in ("Softmax", "LogSoftmax"):
        out.name = last.input[0]
        stripped.graph.node.remove(last)
    return stripped


def run_onnxruntime(model, x):
    """The float model, one sample at a time (batch 1 is what mcugen compiles)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4
    renamed = onnx.ModelProto()
    renamed.CopyFrom(model)
    for i, node in enumerate(renamed.graph.node):
        node.name = f"node{i}"       # onnxruntime rejects repeated names (only diagnostic in ONNX)
    try:
        session = ort.InferenceSession(renamed.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        outs = [session.run(None, {name: s[None].astype(np.float32)})[0] for s in x]
    except Exception as exc:
        raise GeneratorError(f"onnxruntime: {first_line(exc)}") from None
    return np.concatenate(outs).astype(np.float64).reshape(len(x), -1)


# --------------------------------------------------------------------------------------------
# the oracle

# "close". Integer vs simulated quantization: a gap (a fraction of max |float output|) within
# max(floor, factor * noise_budget); on 1,450 random graphs it stayed below 1.02x the budget
# (median 0.001x). Each vs float: element by element within error_bound, a sound bound of what
# their own grids allow (no calibration needed; fails a Pad whose fill its grid clamps).
TOLERANCE = {"int_vs_sim": (0.01, 1.5)}
NOISE_TRIALS = 4
FLOAT_IR_TOLERANCE = 1e-3          # float64 IR vs onnxruntime's float32 (inputs up to 1000,
                                   # sums of 1,000 terms: float32 alone is 2e-3 off on some)
INT_SLACK = 1e-3                   # the integers' fixed point, beyond their codes (error_bound)
VERIFY_N = 20


@dataclass
class Outcome:
    kind: str             # verified | accepted | refused | internal | wrong | generator
    reason: str = ""      # the class: a refusal's normalized message, the failed check, ...
    detail: str = ""      # the full message or traceback tail
    metrics: dict = field(default_factory=dict)


def normalize_message(text):
    """A message with its names and numbers blanked: one class per kind of refusal."""
    text = re.sub(r"'[^']*'", "'…'", text)
    text = re.sub(r"\[[-0-9, ]*\]", "[…]", text)
    return re.sub(r"-?\d+(\.\d+)?(e[-+]?\d+)?", "N", text)


def refusal(exc):
    message = str(exc)
    if "\n" in message.strip() or not message.strip():
        return Outcome("internal", "MCUGenError that is not one line", message)
    op = re.match(r"node '.*' \((\w+)\): ", message)      # greedy: names may hold quotes
    key = f"{op.group(1)}: {normalize_message(message[op.end():])}" if op else normalize_message(message)
    return Outcome("refused", key, message)


def internal(stage, exc):
    """An unexpected exception: classed by type, innermost mcugen frame and message shape."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/mcugen/" in f.filename]
    where = f"{Path(frames[-1].filename).name}:{frames[-1].name}" if frames else "?"
    message = str(exc).splitlines()[0] if str(exc) else ""
    key = f"{stage}: {type(exc).__name__} in {where}: {normalize_message(message)[:120]}"
    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
    return Outcome("internal", key, detail)


def relative_gap(a, b, scale):
    return float(np.abs(a - b).max()) / scale


def float_graph(path, passes=True):
    from mcugen.frontend.onnx_reader import import_model, read_model
    from mcugen.passes import run_flow
    graph = import_model(read_model(path))
    return run_flow(graph) if passes else graph


def check_float_ir(path, x, ref):
    """mcugen's float IR, as imported and after its rewrite passes, against onnxruntime."""
    from mcugen.ops.softmax import apply_output_transform
    scale = max(float(np.abs(ref).max()), 1e-6)
    for stage, passes in (("import", False), ("passes", True)):
        graph = float_graph(path, passes)
        y = apply_output_transform(graph.output_transform, run_float(graph, x)[graph.output])
        y = y.reshape(len(x), -1)
        if y.shape != ref.shape:
            return Outcome("wrong", f"float IR ({stage}) output shape differs from onnxruntime",
                           f"{y.shape} vs {ref.shape}")
        gap = relative_gap(y, ref, scale)
        if not gap <= FLOAT_IR_TOLERANCE:
            return Outcome("wrong", f"float IR ({stage}) differs from onnxruntime",
                           f"max |diff| = {gap:.3g} of max |float|")
    return None


def centered(y, size):
    """Logits up to a constant per softmax span (of `size` values; None: not logits)."""
    if size is None:
        return y
    spans = y.reshape(len(y), -1, size)
    return (spans - spans.mean(axis=2, keepdims=True)).reshape(len(y), -1)


def mcugen_outputs(case, project, x):
    """(integer, simulated) outputs; a softmax's as logits (centered: softmax ignores a
    constant), since closeness of probabilities says little when logits are large."""
    if not case.classifier:
        return project.run(x), project.run_simulated(x)
    import copy
    from mcugen.quant.qgraph import simulated_run
    from mcugen.reference.interpreter import run
    schedule = copy.copy(project.schedule)
    schedule.output_transform = None
    integer = run(schedule, x).reshape(len(x), -1)
    simulated = simulated_run(project.qgraph, x).reshape(len(x), -1)
    return centered(integer, case.softmax_size), centered(simulated, case.softmax_size)


def noise_budget(case, graph, x):
    """How far the float output moves when every activation gets uniform noise of half an 8-bit
    step of its calibrated range (or its own magnitude, if smaller), and every weight half an
    8-bit step of its channel's range:
    the graph's own sensitivity to W8A8, as a fraction of max |output| (worst of a few draws)."""
    import copy
    steps = {t: float(np.abs(v).max()) / (255 if v.min() >= 0 else 127)
             for t, v in run_float(graph, calibration_inputs(case, 64)).items()}
    clean = run_float(graph, x)[graph.output].reshape(len(x), -1)
    clean = centered(clean, case.softmax_size)
    rng = np.random.default_rng(case.seed)
    worst = 0.0
    for _ in range(NOISE_TRIALS):
        noisy = copy.copy(graph)
        noisy.nodes = [copy.copy(n) for n in graph.nodes]
        for node in noisy.nodes:
            if "weight" in node.params:
                w = node.params["weight"]
                step = np.abs(w).reshape(len(w), -1).max(1) / 127
                node.params = dict(node.params, weight=w + rng.uniform(-0.5, 0.5, w.shape)
                                   * step.reshape((-1,) + (1,) * (w.ndim - 1)))
        # zero is on every grid: nothing rounds farther than to it (ReLU outputs, dead inputs)
        y = run_float(noisy, x, lambda t, v: v + rng.uniform(-1, 1, v.shape)
                            * np.minimum(steps[t] / 2, np.abs(v)))
        y = y[graph.output].reshape(len(x), -1)
        worst = max(worst, float(np.abs(centered(y, case.softmax_size) - clean).max()))
    return worst / (float(np.abs(clean).max()) or 1e-6)


class OracleGap(Exception):
    """The oracle cannot judge this graph (an op error_bound does not know): a bug of this file."""


def rounding_error(encoding, codes_off):
    """How far a value can land from its real value when encoded to within `codes_off` codes of
    the rounding the grid defines: half a step on a uniform grid, a whole one on power and log2
    grids (they round in their own domain, to one of the two neighbours)."""
    if encoding is None:
        return 0.0                        # int32 accumulators: exact
    gap = float(np.diff(encoding.levels).max()) * encoding.range
    uniform = encoding.scheme != "log2" and encoding.exponent == 1.0
    return gap * ((0.5 if uniform else 1.0) + codes_off)


def lipschitz(spec):
    """An upper bound of |f'| (the steepest slope of each activation, rounded up)."""
    if spec is None:
        return 1.0
    name = spec[0]
    if name == "LeakyRelu":
        return max(1.0, abs(spec[1]))
    if name == "PRelu":
        return max([1.0] + [abs(a) for a in spec[1]])
    return {"HardSwish": 1.5, "HardSigmoid": abs(spec[1]) if len(spec) > 1 else 1.0,
            "Elu": max(1.0, abs(spec[1]) if len(spec) > 1 else 1.0),
            "Selu": 1.7581, "SiLU": 1.1, "Gelu": 1.13, "GeluTanh": 1.13, "Mish": 1.09,
            "Sigmoid": 0.25}.get(name, 1.0)


def propagate(qgraph, node, errors, inputs):
    """A bound on |error| of node's output from bounds on its inputs' errors (and the inputs):
    |W^ x^ - W x| <= |W^| |x^ - x| + |W^ - W| |x|; affine maps scale by |scale|; activations
    by their Lipschitz constant; pools, reductions, copies and moves take the max/mean/copy of
    the bounds; a product of two activations is bounded term by term."""
    import copy
    from mcugen.ops import get_op
    op = get_op(node.op)
    node = copy.copy(node)
    spec = node.attrs.get("activation")
    if node.op in ("Conv", "Gemm"):
        w = node.params["weight"]
        w_hat = qgraph.weights[node.name].w_hat if node.name in qgraph.weights else w
        zero = np.zeros_like(node.params["bias"])
        node.attrs = dict(node.attrs, activation=None)
        node.params = dict(node.params, weight=np.abs(w_hat), bias=zero)
        through = op.run_float(node, [errors[0]])
        node.params = dict(node.params, weight=np.abs(w_hat - w))
        return (through + op.run_float(node, [np.abs(inputs[0])])) * lipschitz(spec)
    if node.op == "Add":
        return (errors[0] + errors[1]) * lipschitz(spec)
    if node.op == "Affine":
        shape = (1, -1) + (1,) * (errors[0].ndim - 2)
        return errors[0] * np.abs(node.params["scale"]).reshape(shape) * lipschitz(spec)
    if node.op == "Activation":
        return errors[0] * lipschitz(spec)
    if node.op == "Pad":
        node.attrs = dict(node.attrs, value=0.0)
        return op.run_float(node, errors)
    if node.op in ("MaxPool", "AveragePool", "Concat", "Reshape", "Transpose", "Expand", "Slice"):
        return op.run_float(node, errors)
    if node.op == "Mul":       # |a^ b^ - a b| <= |a| e_b + |b| e_a + e_a e_b, broadcast
        a, b = (np.abs(v) for v in inputs)
        return (a * errors[1] + b * errors[0] + errors[0] * errors[1]) * lipschitz(spec)
    if node.op == "ReduceSum":       # a mean (sum) of the errors bounds the mean's (sum's)
        node.attrs = dict(node.attrs, activation=None)
        return op.run_float(node, errors) * lipschitz(spec)
    if node.op == "ReduceMax":       # a max or a min moves by at most the largest error
        node.attrs = dict(node.attrs, mode="max")
        return op.run_float(node, errors)
    if node.op == "Softmax":
        return propagate_softmax(qgraph, node, errors, inputs)
    if node.op == "Constant":
        return np.zeros_like(op.run_float(node, inputs))
    if node.op == "LayerNormalization":
        # ops/layernorm.py, docs/design.md: for input errors of at most e per row (plus half the
        # decode table's unit, at most R/(2B)), the centered value moves by at most 2e and the
        # standard deviation with eps by at most e (a seminorm); the integer steps add
        # |gamma| (2 sqrt(n) 2^-14 + 1 / (2 n sqrt(n-1))) (Z >= 14, epsilon's rounding), the
        # positions lowered as their bias 2^-16 |beta|
        axis, eps = node.attrs["axis"], node.attrs["epsilon"]
        x = inputs[0]
        axes = tuple(range(axis, x.ndim))
        n = int(np.prod(x.shape[axis:]))
        enc = qgraph.encodings[node.inputs[0]]
        e = errors[0].max(axis=axes, keepdims=True) + enc.range / (2 * enc.B)
        centered = x - x.mean(axis=axes, keepdims=True)
        s = np.sqrt((centered ** 2).mean(axis=axes, keepdims=True) + eps)
        low = np.maximum(s - e, np.sqrt(eps))
        gamma, beta = np.abs(node.params["scale"]), np.abs(node.params["bias"])
        own = gamma * 2 * np.sqrt(n) * 2.0 ** -14 + beta * 2.0 ** -16
        if n > 1:
            own = own + gamma / (2 * n * np.sqrt(n - 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            return (gamma * (2 * e + np.abs(centered) / s * e) / low + own) * lipschitz(spec)
    raise OracleGap(f"error_bound does not know op {node.op}")


def error_bound(qgraph, x, codes_off):
    """Per sample and output element, a bound on |quantized - float| for a realization that
    puts every encoded tensor within `codes_off` codes of its grid's rounding (0: simulated
    quantization), with mcugen's own grids and quantized weights: sound when every value lies
    inside its tensor's range (check_ranges)."""
    graph = qgraph.graph
    values = run_float(graph, x)
    errors = {graph.input: np.full(values[graph.input].shape,
                                   rounding_error(qgraph.encodings.get(graph.input), codes_off))}
    for node in graph.nodes:
        spread = propagate(qgraph, node, [errors[t] for t in node.inputs],
                           [values[t] for t in node.inputs])
        errors[node.output] = spread + rounding_error(qgraph.encodings.get(node.output), codes_off)
    return errors[graph.output].reshape(len(x), -1)


def check_grids(qgraph, values):
    """Every activation grid against its definition, on the calibration inputs' float values:
    8 bits (W8A8); its range covers the values of every tensor it encodes and is no wider than
    their largest magnitude (a tensor that only moves codes, and a Pad's fill, share a grid);
    unsigned only when they are all >= 0. None, or what is wrong."""
    graph = qgraph.graph
    groups = {}
    for tensor, enc in qgraph.encodings.items():
        if tensor in values:
            groups.setdefault(enc, []).append(tensor)
    for enc, tensors in groups.items():
        top = max(float(np.abs(values[t]).max()) for t in tensors)
        low = min(float(values[t].min()) for t in tensors)
        where = f"grid of {tensors[0]!r} ({enc.bits} bits, range {enc.range:.6g})"
        if enc.bits != 8:
            return f"{where}: not 8 bits"
        if top > enc.range * (1 + 1e-6) + 1e-12:
            return f"{where}: its values reach {top:.6g}"
        if graph.input not in tensors and top > 0 and enc.range > top * (1 + 1e-6):
            return f"{where}: wider than its values (max {top:.6g})"
        if not enc.signed and low < -1e-9 * max(top, 1.0):
            return f"{where}: unsigned but its values go down to {low:.4g}"
    return None


def max_rounding(grid, scale):
    """The largest weight error a grid's rounding allows at scale M_c (see rounding_error)."""
    uniform = grid.scheme != "log2" and grid.exponent == 1.0
    return float(np.diff(grid.levels).max()) * scale * (0.5 if uniform else 1.0)


def check_weights(qgraph, values):
    """Every MAC layer's quantized weights: 8 bits, each channel within its grid's rounding of
    max|W_c|, or zeroed only when negligible (next to the layer's largest channel, or
    swamped by its bias over the input's range). None, or what is wrong."""
    for node in qgraph.graph.nodes:
        if node.name not in qgraph.weights:
            continue
        qw = qgraph.weights[node.name]
        w = node.params["weight"].reshape(len(node.params["weight"]), -1)
        w_hat = qw.w_hat.reshape(w.shape)
        mass = np.abs(w).sum(axis=1)
        x_top = float(np.abs(values[node.inputs[0]]).max())
        if qw.grid.bits != 8:
            return f"layer {node.name!r}: {qw.grid.bits}-bit weights"
        for c in range(len(w)):
            if not w_hat[c].any() and mass[c] > 0:
                negligible = mass[c] <= w.shape[1] * 2.0 ** -16 * mass.max() or \
                    x_top * mass[c] <= 2.0 ** -16 * abs(node.params["bias"][c])
                if not negligible:
                    return f"layer {node.name!r}: channel {c} zeroed though it is not negligible"
                continue
            error = float(np.abs(w[c] - w_hat[c]).max())
            if error > max_rounding(qw.grid, np.abs(w[c]).max()) * (1 + 1e-9):
                return f"layer {node.name!r}: channel {c} weights off by {error:.4g}"
    return None


def check_quantizer(case, qgraph):
    """What simulated quantization rests on, each against its definition; with the float IR
    checked against onnxruntime, this is what makes simulated quantization right."""
    values = run_float(qgraph.graph, calibration_inputs(case, 64))
    return check_grids(qgraph, values) or check_weights(qgraph, values)


def argmax_disagreement(integer, ref, bound):
    """Samples whose integer top-1 is a class the float model scores below its top-1 by more
    than the two logits' error bounds (a nearer tie may go either way)."""
    rows = np.arange(len(ref))
    chosen, best = integer.argmax(1), ref.argmax(1)
    slack = bound[rows, chosen] + bound[rows, best]
    return int((ref[rows, best] - ref[rows, chosen] > slack * (1 + 1e-9)).sum())


def output_bounds(case, qgraph, x, scale):
    """error_bound of simulated (codes exact) and integer (one code off) outputs, as compared:
    centered logits take one more mean of it; plus a slack for onnxruntime's float32 (sim) and
    the integers' fixed point beyond their codes (int: rounded biases and decode tables)."""
    bounds = {"sim": error_bound(qgraph, x, 0) + FLOAT_IR_TOLERANCE * scale,
              "int": error_bound(qgraph, x, 1) + INT_SLACK * scale}
    if not case.classifier:
        return bounds
    spans = {k: b.reshape(len(b), -1, case.softmax_size) for k, b in bounds.items()}
    return {k: (v + v.mean(axis=2, keepdims=True)).reshape(len(x), -1) for k, v in spans.items()}


def accuracy_metrics(case, graph, qgraph, outputs, logits, x, n_cal):
    """The gaps (fractions of max |float|), the gaps over their bounds, and the noise budget."""
    integer, simulated = outputs
    cal = slice(0, n_cal)
    scale = float(np.abs(logits).max()) or 1e-6   # a dead output: the integers must be dead too
    bounds = output_bounds(case, qgraph, x[cal], scale)
    return {"int_vs_sim": relative_gap(integer, simulated, scale),
            "int_vs_float": relative_gap(integer[cal], logits[cal], scale),
            "sim_vs_float": relative_gap(simulated[cal], logits[cal], scale),
            "sim_over_bound": float((np.abs(simulated[cal] - logits[cal]) / bounds["sim"]).max()),
            "int_over_bound": float((np.abs(integer[cal] - logits[cal]) / bounds["int"]).max()),
            "budget": noise_budget(case, graph, x[cal])}, bounds


def check_accuracy(case, project, graph, x, logits, n_cal):
    """The quantizer's choices (check_quantizer); the integer output vs simulated quantization
    (on every input: within max(floor, factor * noise_budget)); both vs the float model run by
    onnxruntime, element by element within the sound error bound of their own grids
    (error_bound), on the first n_cal inputs: calibration inputs, inside every range."""
    integer, simulated = (np.asarray(y, dtype=np.float64).reshape(len(x), -1)
                          for y in mcugen_outputs(case, project, x))
    if integer.shape != logits.shape:
        return Outcome("wrong", "integer output shape differs from onnxruntime",
                       f"{integer.shape} vs {logits.shape}")
    if not np.all(np.isfinite(integer)):
        return Outcome("wrong", "integer output not finite")
    wrong_choice = check_quantizer(case, project.qgraph)
    if wrong_choice:
        return Outcome("wrong", "a grid or weight breaks its definition", wrong_choice)
    m, bounds = accuracy_metrics(case, graph, project.qgraph, (integer, simulated), logits, x, n_cal)
    floor, factor = TOLERANCE["int_vs_sim"]
    # an encoder allowed one code of error moves some values (a few %, measured) by a step: the
    # budget's half-step noise on every value, doubled, covers it on 400 seeds and still fails
    # a 25% scale error (test_oracle_passes_real_models_and_fails_wrong_results)
    code_error = max((s.info.get("encoder_max_code_error") or 0 for s in project.schedule.steps),
                     default=0)
    if not m["int_vs_sim"] <= max(floor, factor * (1 + code_error) * m["budget"]):
        return Outcome("wrong", "integer far from simulated quantization", gaps_text(m), m)
    if not m["sim_over_bound"] <= 1.0:
        return Outcome("wrong", "simulated quantization beyond its error bound vs float",
                       gaps_text(m), m)
    if not m["int_over_bound"] <= 1.0:
        return Outcome("wrong", "integer beyond its error bound vs float", gaps_text(m), m)
    if case.classifier and argmax_disagreement(*(v.reshape(-1, case.softmax_size) for v in (
            integer[:n_cal], logits[:n_cal], bounds["int"]))):
        return Outcome("wrong", "argmax differs from float", gaps_text(m), m)
    return Outcome("accepted", "", "", m)


def gaps_text(m):
    return ", ".join(f"{k} {v:.3g}" for k, v in m.items()) + " (of max |float|)"


def verify_c(out):
    """The CLI, as a user runs it: compile with cc and compare bit for bit."""
    done = subprocess.run([sys.executable, "-m", "mcugen", "verify", str(out), "--n", str(VERIFY_N)],
                          capture_output=True, text=True, timeout=900)
    if done.returncode == 0:
        return None
    text = (done.stdout + done.stderr).strip()
    lines = [line for line in text.splitlines() if "FAILED" in line or "error" in line]
    lines = lines or text.splitlines()[-1:]
    first = lines[0] if lines else f"exit {done.returncode}"
    if "did not compile" in first:
        return Outcome("wrong", "generated C does not compile", first)
    if "FAILED" in first:
        return Outcome("wrong", "generated C differs from the reference", first)
    return Outcome("internal", f"verify CLI: {normalize_message(first)[:120]}", text[-2000:])


def check_case(case, with_c=False, workdir=None) -> Outcome:
    """Every invariant on one case; the first one broken decides the outcome."""
    import mcugen
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / f"fuzz_{case.seed}.onnx"
        onnx.save(case.model, str(path))
        x_cal = calibration_inputs(case)
        x = np.concatenate([x_cal, sample_inputs(case)])
        try:
            ref = run_onnxruntime(case.model, x)
            logits = run_onnxruntime(without_output_transform(case.model), x) if case.classifier else ref
        except GeneratorError as exc:
            return Outcome("generator", "onnxruntime rejects the model", str(exc))
        out = Path(tmp) / "proj" if with_c else None
        try:
            project = mcugen.build(path, out=out, scheme=case.scheme, wbits=8, abits=8,
                                   input_range=case.input_range)
        except mcugen.MCUGenError as exc:
            return refusal(exc)
        except Exception as exc:                      # noqa: BLE001 - any other is a bug
            return internal("build", exc)
        try:
            failed = check_float_ir(path, x, ref)
            if failed:
                return failed
            result = check_accuracy(case, project, float_graph(path), x,
                                    centered(logits, case.softmax_size), len(x_cal))
        except OracleGap as exc:
            return Outcome("generator", "the oracle cannot judge this graph", str(exc))
        except Exception as exc:                      # noqa: BLE001
            return internal("run", exc)
        if result.kind != "accepted" or not with_c:
            return result
        failed = verify_c(out)
        if failed is not None:
            failed.metrics = result.metrics
            return failed
        return Outcome("verified", "", "", result.metrics)
