"""LayerNormalization (opset 17; the exporters' decomposed form before it is fused into one by
frontend/patterns.py) as one integer step, `layernorm`: per row of the normalized (trailing) axes,
decode, center without a division, the variance in int64, an integer square root, one division,
then gamma and beta through the step's encoder, one encoder row per position of the row.

The contract and its overflow proofs are docs/design.md, section 2 (LayerNormalization). In
short, per row of n table values D_i (u the real value of one unit):
  S1 = sum D_i, c_i = n D_i - S1 (int32); V' = sum c_i^2 + E (int64, E = eps n^3 / u^2 >= 1);
  W = V' 4^k in [2^60, 2^62), s = isqrt(W), r = floor(2^60 / s);
  z_i = rshift_round(c_i r, 60 - Z - k) ~ 2^Z y_i / sqrt(n), y_i = (x_i - mean) / sqrt(var + eps);
  acc = g_j z_i + b_j (g_j = sign(gamma_j), b_j = round(beta_j / scale_j)), encoded with the
  scale_j = |gamma_j| sqrt(n) 2^-Z of position j.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from mcugen.ir.graph import Node
from mcugen.lower.encoders import encode
from mcugen.lower.fixedpoint import (ACC_LIMIT, CONSTANT_BITS, decode_table, default_frac_bits,
                                     code_grid, stored_codes, stored_values, table_scale)
from mcugen.numerics import activation_fn, round_half_away
from mcugen.ops import OpDef, register
from mcugen.ops.affine import affine_node

NORM_BITS = 60          # W = V' 4^k is brought into [2^NORM_BITS, 2^(NORM_BITS + 2))
NORM_STEPS = 30         # ... by at most 30 steps of 4 (V' >= 1)
ROOT_STEPS = 31         # isqrt(W) < 2^31: result bits 30..0, one step each
RECIP_BITS = 60         # r = floor(2^RECIP_BITS / s) in [2^29, 2^30]
MAX_Z = 29              # z's fractional bits: the shift 60 - Z - k stays >= 1
VAR_LIMIT = (1 << 62) - 1
MAX_N = 1 << 20         # elements per row (Samuelson's bound with r's rounding needs n <= 2^29)
NEGLIGIBLE = 2.0 ** -16  # a position whose normalized term is below this share of its bias is its bias
INT32_MAX = (1 << 31) - 1
SAMPLED_ELEMENTS = 1 << 15   # the error measurement's budget (rows of n elements)


def layer_norm(x, axis, gamma, beta, eps, center=True):
    """Float LayerNormalization over the axes [axis, ndim) of x (ONNX: eps inside the sqrt);
    without `center`, RMSNormalization (the mean square instead of the variance)."""
    axes = tuple(range(axis, x.ndim))
    mean = x.mean(axis=axes, keepdims=True) if center else 0.0
    centered = x - mean
    var = (centered * centered).mean(axis=axes, keepdims=True)
    return centered / np.sqrt(var + eps) * gamma + beta


@register
class LayerNormalization(OpDef):
    kind = "LayerNormalization"
    onnx_types = ("LayerNormalization", "RMSNormalization", "InstanceNormalization")
    step_kinds = ("layernorm",)
    applies_activation = True
    fuses_activation = "elementwise"

    def from_onnx(self, node, ctx):
        if node.op_type == "InstanceNormalization":
            return instance_norm(node, ctx)
        x, out = node.input[0], node.output[0]
        if any(name and ctx.is_read(name) for name in node.output[1:]):
            ctx.fail(node, "its Mean or InvStdDev output is read; supported: the normalized output alone")
        shape = tuple(ctx.shape(x))
        rank = len(shape)
        attrs = ctx.attrs(node)
        axis = int(attrs.get("axis", -1))
        eps = epsilon(node, ctx)
        if not -rank <= axis < rank:
            ctx.fail(node, f"axis {axis} is outside the input's rank {rank}")
        axis = axis + rank if axis < 0 else axis
        if rank < 2 or (axis == 0 and shape[0] != 1):
            ctx.fail(node, f"it normalizes across the batch of a {list(shape)} tensor; supported: "
                           f"the trailing axes after the batch")
        norm_shape = shape[axis:]
        params = {}
        for key, index, what, default in (("scale", 1, "Scale", 1.0), ("bias", 2, "B", 0.0)):
            value = ctx.optional_const(node, index) if index == 2 else ctx.require_const(node, 1, what)
            value = np.full(norm_shape, default) if value is None else np.asarray(value, dtype=np.float64)
            try:
                value = np.broadcast_to(value, norm_shape)
            except ValueError:
                ctx.fail(node, f"its {what} of shape {list(value.shape)} does not broadcast to the "
                               f"normalized shape {list(norm_shape)}")
            params[key] = value.reshape(shape[max(axis, 1):]).astype(np.float64)
        return Node(name=node.name, op=self.kind, inputs=[x], output=out, onnx_op=node.op_type,
                    attrs={"axis": max(axis, 1), "epsilon": eps, "activation": None,
                           "center": node.op_type == "LayerNormalization"}, params=params)

    def infer_shape(self, node, in_shapes):
        return in_shapes[0]

    def run_float(self, node, inputs):
        y = layer_norm(inputs[0], node.attrs["axis"], node.params["scale"], node.params["bias"],
                       node.attrs["epsilon"], node.attrs.get("center", True))
        return activation_fn(node.attrs["activation"])(y)

    def lower(self, node, ctx):
        x, y = ctx.encoding(node.inputs[0]), ctx.encoding(node.output)
        shape = ctx.shape(node.inputs[0])
        axis = node.attrs["axis"]
        outer, n = int(np.prod(shape[1:axis])), int(np.prod(shape[axis:]))
        center = int(node.attrs.get("center", True))
        fixed = frac_bits(node, ctx, x, n, node.attrs["epsilon"], center)
        gamma = node.params["scale"].reshape(-1)
        beta = node.params["bias"].reshape(-1)
        z_bits, sign, scales, bias, bound, constant = positions(gamma, beta, n, y.range, center)
        consts, params, info = ctx.encoder_parts(node, node.attrs["activation"], scales, bound)
        params.update(outer=outer, n=n, center=center, x_offset=x.table_offset, eps_units=fixed["eps_units"],
                      norm_bits=NORM_BITS, norm_steps=NORM_STEPS, root_steps=ROOT_STEPS,
                      recip_bits=RECIP_BITS, shift_base=RECIP_BITS - z_bits)
        consts.update(dx=fixed["table"].astype(np.int16), ln_sign=sign.astype(np.int8),
                      ln_bias=bias.astype(np.int32))
        info.update(x_frac_bits=fixed["frac"], z_bits=z_bits, eps_units=fixed["eps_units"],
                    var_bound=fixed["var_bound"], acc_bound=bound, constant_channels=int(constant.sum()))
        codes = sample_codes(x, n, np.random.default_rng(0))
        measured = measure(SimpleNamespace(params=params, consts=consts),
                           error_model(node, x, y, fixed["frac"]), codes)
        info.update(summarize(measured))
        return ctx.step(node, "layernorm", params=params, consts=consts, info=info)

    def run_int(self, step, inputs):
        p = step.params
        codes = inputs[0].reshape(inputs[0].shape[0], p["outer"], p["n"])
        acc = integer_rows(p, step.consts, codes)
        return encode(step, acc, np.arange(p["n"])).reshape(inputs[0].shape[0], -1)


def instance_norm(node, ctx) -> list:
    """InstanceNormalization (and GroupNormalization as the exporters write it: a Reshape to
    [1, groups, -1] around it) -> a LayerNormalization over the axes after the channels, its
    gamma 1 and beta 0, then the per-channel Scale and B as an Affine: the layernorm step's
    gamma and beta run along the normalized axes, InstanceNormalization's along the channels.
    The Affine is left out when Scale is 1 and B is 0 (the GroupNorm exports')."""
    x, out = node.input[0], node.output[0]
    shape = tuple(ctx.shape(x))
    if len(shape) < 3 or shape[0] != 1:
        ctx.fail(node, f"its input is {list(shape)}; supported: [1, C, D1, ...] (batch 1, at "
                       f"least one axis after the channels)")
    eps = epsilon(node, ctx)
    channel = {}
    for key, index, what in (("scale", 1, "scale"), ("shift", 2, "B")):
        value = np.asarray(ctx.require_const(node, index, what), dtype=np.float64).reshape(-1)
        if value.size != shape[1]:
            ctx.fail(node, f"its {what} has {value.size} values for {shape[1]} channels")
        channel[key] = value
    plain = np.all(channel["scale"] == 1.0) and not np.any(channel["shift"])
    normalized = out if plain else f"{out}/normalized"
    ctx.shapes[normalized] = shape
    norm = Node(name=node.name if plain else f"{node.name}/normalize", op="LayerNormalization",
                inputs=[x], output=normalized,
                onnx_op=node.op_type, attrs={"axis": 2, "epsilon": eps, "activation": None,
                                             "center": True},
                params={"scale": np.ones(shape[2:]), "bias": np.zeros(shape[2:])})
    if plain:
        return [norm]
    return [norm, affine_node(node, normalized, channel["scale"], channel["shift"])]


def epsilon(node, ctx) -> float:
    eps = float(ctx.attrs(node).get("epsilon", 1e-5))
    if not eps >= 0.0:
        ctx.fail(node, f"epsilon {eps} is negative")
    return eps


def frac_bits(node, ctx, x, n, eps, center=1) -> dict:
    """Step 1 of the contract: the decode table's fractional bits F, as many as int16 tables
    allow (the uniform grid too), lowered until S1, c_i and V' + E provably fit (RMSNorm,
    without `center`: c_i = n D_i, |c_i| <= n max|D|, V' <= n^3 max|D|^2 + E)."""
    if n > MAX_N:
        ctx.fail(node, f"it normalizes rows of {n} elements; supported: up to {MAX_N}")
    frac = default_frac_bits(x, fine=True)
    while True:
        table = decode_table(x, frac)
        peak, span = int(np.abs(table).max()), int(table.max() - table.min())
        unit = x.range / table_scale(x, frac)
        exact = eps * n ** 3 / unit ** 2
        eps_units = max(1, int(round_half_away(exact))) if exact < VAR_LIMIT else VAR_LIMIT + 1
        var_bound = n ** 3 * span ** 2 // 4 if center else n ** 3 * peak ** 2
        c_bound = (n - 1) * span if center else n * peak
        if n * peak <= ACC_LIMIT and c_bound <= INT32_MAX and var_bound + eps_units <= VAR_LIMIT:
            return {"frac": frac, "table": table, "unit": unit, "eps_units": eps_units,
                    "var_bound": var_bound}
        if frac == 0:
            ctx.fail(node, f"its variance over {n} elements (with epsilon {eps} in units of the "
                           f"input's grid) can overflow int64 even without fractional bits; "
                           f"supported: rows whose variance and epsilon fit 2^62 units")
        frac -= 1


def positions(gamma, beta, n, y_range, center=1):
    """Step 10: per position j, (Z, g_j, scale_j, b_j, the accumulator bound, constant_j).
    LayerNorm's |z| < 2^Z (|y| <= sqrt(n - 1)); RMSNorm's |y| < sqrt(n) leaves no such slack,
    so its bound takes |z| <= 2^Z + 1 (r and z rounded up)."""
    spread = math.sqrt(n - 1) if center else math.sqrt(n)
    constant = (gamma == 0) | (np.abs(gamma) * spread <= NEGLIGIBLE * np.abs(beta))
    sign = np.where(constant, 0, np.sign(gamma)).astype(np.int64)
    fixed_scale = np.where(beta != 0, np.abs(beta), y_range) / (1 << CONSTANT_BITS)
    for z_bits in range(MAX_Z, -1, -1):
        scales = fixed_scale.copy()
        scales[~constant] = np.abs(gamma[~constant]) * math.sqrt(n) / (1 << z_bits)
        bias = round_half_away(beta / scales).astype(np.int64)
        bound = int(np.max(np.abs(sign) * ((1 << z_bits) + 1 - center) + np.abs(bias)))
        if bound <= ACC_LIMIT:
            return z_bits, sign, scales, bias, bound, constant
    raise AssertionError("unreachable: Z = 14 always fits (docs/design.md)")


def error_model(node, x, y, frac) -> dict:
    """What `measure` compares a step of `node` with: its float parameters, the input and
    output encodings, the table's unit (x_frac_bits = frac) and the encoder rows' scales."""
    gamma, beta = node.params["scale"].reshape(-1), node.params["bias"].reshape(-1)
    center = int(node.attrs.get("center", True))
    _, _, scales, _, _, constant = positions(gamma, beta, gamma.size, y.range, center)
    return {"x": x, "y": y, "gamma": gamma, "beta": beta, "eps": node.attrs["epsilon"], "center": center,
            "unit": x.range / table_scale(x, frac), "activation": node.attrs["activation"],
            "scales": scales, "constant": constant}


def integer_rows(p, consts, codes) -> np.ndarray:
    """Steps 1-10 on codes (..., n): the int64 accumulators acc (same shape), as the C does."""
    n = p["n"]
    d = consts["dx"].astype(np.int64)[np.asarray(codes, dtype=np.int64) + p["x_offset"]]
    s1 = d.sum(axis=-1, keepdims=True) if p.get("center", 1) else 0
    c = n * d - s1
    w = (c * c).sum(axis=-1) + p["eps_units"]
    k = np.zeros_like(w)
    for _ in range(p["norm_steps"]):
        low = w < (1 << p["norm_bits"])
        w[low] <<= 2
        k[low] += 1
    root = np.array([math.isqrt(int(v)) for v in w.reshape(-1)], dtype=np.int64).reshape(w.shape)
    r = (1 << p["recip_bits"]) // root
    shift = (p["shift_base"] - k)[..., None]
    z = (c * r[..., None] + np.left_shift(np.int64(1), shift - 1)) >> shift
    return consts["ln_sign"].astype(np.int64) * z + consts["ln_bias"].astype(np.int64)


def sample_codes(x, n, rng) -> np.ndarray:
    """Rows of codes to measure the step on: uniform codes, Gaussian-like values of several
    spreads, constant and near-constant rows, extremes."""
    rows = int(np.clip(SAMPLED_ELEMENTS // max(n, 1), 24, 600))
    stored, x = x, code_grid(x)          # codes written as a levels encoding stores them
    lo, hi = x.code_min, x.B
    part = max(1, rows // 6)
    uniform = rng.integers(lo, hi + 1, size=(part, n))
    spread = x.range * np.geomspace(1e-3, 0.5, 2 * part)[:, None]
    centers = rng.uniform(-x.range, x.range, size=(2 * part, 1)) * (0.5 if x.signed else 0.0)
    values = centers + spread * rng.normal(size=(2 * part, n))
    gaussian = x.encode(values if x.signed else np.abs(values))
    level = rng.integers(lo, hi + 1, size=(part, 1))
    constant = np.broadcast_to(level, (part, n))
    nudged = np.array(constant)
    nudged[np.arange(part), rng.integers(0, n, size=part)] += np.where(level[:, 0] < hi, 1, -1)
    pair = np.where(rng.random((part, n)) < 0.5, constant, np.minimum(constant + 1, hi))
    spike = np.full(n, lo)
    spike[0] = hi
    extremes = np.stack([np.where(np.arange(n) % 2 == 0, lo, hi), spike])
    codes = np.concatenate([uniform, gaussian, constant, nudged, pair, extremes]).astype(np.int64)
    return stored_values(stored, codes)


def measure(step, model, codes) -> dict:
    """Per element of `codes` (rows, n): the step's accumulator as a real value against float
    LayerNorm on the decoded inputs, the stated bound, and the output codes against the float
    result encoded (docs/design.md states the bound)."""
    p, consts = step.params, step.consts
    n = p["n"]
    x, y, gamma, beta, eps = model["x"], model["y"], model["gamma"], model["beta"], model["eps"]
    center = model["center"]
    acc = integer_rows(p, consts, codes)
    value = acc * model["scales"]
    decoded = x.decode(codes)
    with np.errstate(divide="ignore", invalid="ignore"):     # eps = 0 on a constant row: 0/0
        exact = layer_norm(decoded, 1, gamma, beta, eps, center)
    defined = np.isfinite(exact)
    exact = np.where(defined, exact, 0.0)
    unit = model["unit"]
    table = consts["dx"].astype(np.int64)[codes + p["x_offset"]] * unit
    error = np.where(defined, np.abs(value - exact), 0.0)
    # the integer realization against float LayerNorm on the table values
    e_units, e_exact = p["eps_units"], eps * n ** 3 / unit ** 2
    d_e = abs(e_units - e_exact)
    z_bits = RECIP_BITS - p["shift_base"]
    m = n - 1 if center else n           # |y| <= sqrt(m): Samuelson's bound, or the mean square's
    own = np.abs(gamma) * (2 * math.sqrt(n) * 2.0 ** -z_bits)
    if m > 0:
        own += np.abs(gamma) * math.sqrt(m) * d_e / (2 * (n * m + max(e_units - d_e, 0.0)))
    own = np.where(model["constant"], np.abs(gamma) * math.sqrt(max(m, 0)) + np.abs(beta) * 2.0 ** -25, own)
    # the table's rounding (u/2 per element) against the decoded inputs
    second = table.var(axis=-1, keepdims=True) if center else np.mean(table ** 2, axis=-1, keepdims=True)
    spread = np.sqrt(second + eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        normalized = np.nan_to_num(np.abs(layer_norm(decoded, 1, 1.0, 0.0, eps, center)))
        rounding = np.where(model["constant"], 0.0,
                            np.abs(gamma) * unit * (1 + normalized / 2) / spread)
    bound = own + np.nan_to_num(rounding, nan=np.inf) + 1e-12 * (1 + np.abs(exact))   # float64 slack
    act = activation_fn(model["activation"])
    encoder = SimpleNamespace(params=p, consts=consts)
    codes_out = encode(encoder, acc, np.arange(n))
    want = act(exact)
    representable = np.clip(want, -y.range if y.signed else 0.0, y.range)   # the grid's range
    return {"error": error, "bound": bound,
            "code_error": np.where(defined, np.abs(stored_codes(y, codes_out)
                                                   - stored_codes(y, y.encode(want))), 0),
            "output_error": np.where(defined, np.abs(y.decode(codes_out) - representable), 0.0),
            "rows": codes.shape[0]}


def summarize(measured) -> dict:
    ratio = measured["error"] / measured["bound"]
    return {"ln_sampled_rows": int(measured["rows"]),
            "ln_max_error": float(measured["error"].max()),
            "ln_bound_ratio": round(float(ratio.max()), 6),
            "ln_max_code_error": int(measured["code_error"].max()),
            "ln_max_output_error": float(measured["output_error"].max())}
