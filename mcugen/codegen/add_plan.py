"""How a cluster Add computes its codes: a target's plan, derived from the Schedule's step.

The Add's reference decodes both codes to a common fixed point (table_a, table_b), sums them and
encodes the sum. Its inputs are two codes of at most 8 bits, so every (a, b) pair can be run
through the reference here, and a cheaper kernel is taken only when it gives the same code for
every pair (not a proof about the arithmetic: an exhaustive check of the kernel's own):

- `pair`: the codes of every pair in one table, when it is small (4-bit activations). An input
  that stores levels (DESIGN section 1) holds a few of its table's entries only (the step's
  a_values / b_values): a byte map from each of those to its row (or column) of the table
  comes first, so the table has a row per level, not per entry;
- `fold`: a lut encoder's requantization folded into the decode tables. The reference's index
  is floor((acc * mult + 2^(shift-1)) / 2^shift) with acc = table_a[a] + table_b[b]; the folded
  tables hold floor((table * mult + part of the rounding) / 2^k), small enough that their sum
  stays an int32, and the index is that sum >> (shift - k): no 64-bit product (a 5-cycle mulh
  on CV32E40P), no per-element multiplier. Dropping the low k bits of each term can take one
  off the sum; the split of the rounding term between the tables is chosen so that this never
  reaches an index boundary for any pair. When the encoder's table is a plain clamp (a
  uniform grid's codes), the table load goes too.
"""
from __future__ import annotations

import numpy as np

from mcugen.lower.encoders import encode
from mcugen.lower.encoders.lut import row_shifts

PAIR_TABLE_BYTES = 4096     # a pair table this large or smaller is loaded into L1 whole
MAP_LIMIT = 256             # a mapped pair table's indices fit the maps' bytes
FOLD_TRIES = 16             # splits of the rounding term tried per shift
FOLD_SHIFTS = 3             # shifts tried, from the least that keeps the sum an int32
INT32_LIMIT = 1 << 31
MAX_PAIRS = 1 << 16         # pairs of codes checked at most (two 8-bit operands)


def add_kernel_plan(step, dtypes) -> dict:
    """{} (the general kernel), or the Add's `pair` or `fold` kernel: its template parameters
    (`kernel`, `add_kernel` and the numbers the template lays out) and `consts`, the constants
    it reads in place of the step's. `dtypes`: the two inputs' and the output's."""
    out_dtype = dtypes[2]
    ta, tb = (step.consts[k].astype(np.int64) for k in ("table_a", "table_b"))
    ia, ib = (operand_entries(step, key) for key in ("a", "b"))
    if len(ia) * len(ib) > MAX_PAIRS:            # wider codes: no exhaustive check
        return {}
    codes = encode(step, ta[ia][:, None] + tb[ib][None, :], 0)   # (values of a, values of b)
    stride = 1 << max(0, int(len(ib) - 1).bit_length())       # a row per value of a
    mapped = len(ia) < len(ta) or len(ib) < len(tb)
    if (len(ia) * stride * np.dtype(out_dtype).itemsize <= PAIR_TABLE_BYTES
            and (not mapped or len(ia) * stride <= MAP_LIMIT)):
        pair = _pair_plan(step, codes, stride, out_dtype, (ia, ib) if mapped else None)
        return dict(pair, **_asm(dtypes, PAIR_MAP_BODY if mapped else PAIR_BODY))
    fold = _fold_plan(step, codes, ta, tb, ia, ib)
    return dict(fold, **_asm(dtypes, _fold_body(fold))) if fold else {}


def c_add_plan(schedule, step) -> dict:
    """A C target's plan of an Add step: {} or its lookup, with `lookup_consts`, what its
    kernel reads in place of the step's constants, and `layout_extra_bytes`, the flash that
    changes (Target.needs)."""
    dtypes = tuple(schedule.buffers[name].dtype for name in (*step.inputs, step.output))
    plan = add_kernel_plan(step, dtypes)
    if not plan:
        return {}
    consts = plan.pop("consts")
    return dict(plan, lookup_consts=consts, layout_extra_bytes=int(
        sum(v.nbytes for v in consts.values()) - schedule.step_consts_bytes(step)))


def operand_entries(step, key) -> np.ndarray:
    """The entries of input `key`'s decode table (table_a or table_b) its stored values can
    reach: all of them, or those of the values Add.lower lists (a_values / b_values)."""
    values = step.params.get(f"{key}_values")
    if values is None:
        return np.arange(len(step.consts[f"table_{key}"]))
    return np.asarray(values, dtype=np.int64) + step.params[f"{key}_offset"]


def _pair_plan(step, codes, stride, out_dtype, maps) -> dict:
    """The pair table; `maps` (the entries of table_a and table_b the inputs reach): the byte
    maps from a stored value to its row's first index and to its column."""
    table = np.zeros((codes.shape[0], stride), dtype=out_dtype)
    table[:, :codes.shape[1]] = codes
    p = step.params
    plan = {"kernel": "add_lookup", "add_kernel": "pair", "pair_stride": stride,
            "pair_shift": stride.bit_length() - 1, "pair_map": int(maps is not None),
            "consts": {"pair": table.reshape(-1)}}
    if maps is None:
        plan["pair_base"] = p["a_offset"] * stride + p["b_offset"]
        return plan
    ia, ib = maps
    rows, cols = (np.zeros(len(step.consts[k]), np.uint8) for k in ("table_a", "table_b"))
    rows[ia] = np.arange(len(ia)) * stride
    cols[ib] = np.arange(len(ib))
    plan["consts"].update(pair_rows=rows, pair_cols=cols)
    return plan


def _fold_plan(step, codes, ta, tb, ia, ib) -> dict:
    """The folded tables, or {} when the encoder is not a one-row lut or no split is exact
    (checked on the entries ia, ib the inputs reach)."""
    p, c = step.params, step.consts
    if p.get("encoder") != "lut" or p["enc_per_row"] or c["enc_mult"].size != 1:
        return {}
    shift = int(row_shifts(p, c)[0])
    mult = int(c["enc_mult"][0])
    table = c["enc_table"].astype(np.int64)
    lo, hi = p["enc_lo"], p["enc_hi"]
    clamp = _plain_clamp(table, lo, hi)
    # the table's index made to start at 0 inside the folded tables (no offset per element)
    base = -lo if clamp is None else 0
    least = _least_drop(ta, tb, mult, shift, base)
    if least is None:
        return {}
    for k in range(least, min(shift, least + FOLD_SHIFTS)):
        for d in range(FOLD_TRIES):
            fa, fb = _split(ta * mult, tb * mult, shift, k, d, base)
            if np.abs(fa).max() + np.abs(fb).max() >= INT32_LIMIT:
                continue
            index = (fa[ia][:, None] + fb[ib][None, :]) >> (shift - k)
            got = np.clip(index, *clamp) if clamp else table[np.clip(index, 0, hi - lo)]
            if np.array_equal(got, codes):
                return _fold_params(step, fa, fb, shift - k, clamp, hi - lo)
    return {}


def _least_drop(ta, tb, mult, shift, base):
    """The fewest low bits to drop from the products for the folded tables' sum to stay an int32
    (with the rounding term and the index offset; one bit of margin for the floors); None when
    the products themselves would not stay within int64 here."""
    span = (int(np.abs(ta).max()) + int(np.abs(tb).max())) * mult + ((1 + base) << shift)
    if span.bit_length() > 62:
        return None
    return max(0, span.bit_length() - 30)


def _split(pa, pb, shift, k, d, base):
    """Folded tables with the rounding term 2^(shift-1) (and `base` whole indices) in the first,
    moved by the d-th trial amount between the two."""
    moved = (d * ((1 << k) // FOLD_TRIES)) if k else 0
    fa = (pa + (1 << (shift - 1)) + (base << shift) + moved) >> k
    fb = (pb - moved) >> k
    return fa, fb


def _plain_clamp(table, lo, hi):
    """(first, last) when T[u - lo] is just u clamped to [first, last] for every u in [lo, hi]
    (a uniform output grid), else None."""
    first, last = int(table[0]), int(table[-1])
    if not lo <= first <= last <= hi:
        return None
    u = np.arange(lo, hi + 1)
    return (first, last) if np.array_equal(table, np.clip(u, first, last)) else None


def _fold_params(step, fa, fb, shift, clamp, last) -> dict:
    """The fold kernel's parameters: the index is clamped to [clamp_lo, clamp_hi] (the codes,
    or the encoder table's indices when `fold_table`); clip_bits > 0 when that range is
    [0, 2^(clip_bits-1) - 1], one CORE-V cv.clipu."""
    consts = {"fold_a": fa.astype(np.int32), "fold_b": fb.astype(np.int32)}
    lo, hi = clamp if clamp else (0, last)
    if not clamp:
        consts["enc_table"] = step.consts["enc_table"]
    clip = (hi + 1).bit_length() if lo == 0 and hi > 0 and (hi + 1) & hi == 0 else 0
    return {"kernel": "add_lookup", "add_kernel": "fold", "fold_shift": int(shift),
            "fold_table": int(not clamp), "clamp_lo": int(lo), "clamp_hi": int(hi),
            "clip_bits": clip, "consts": consts}


# the pair's CORE-V block: its hardware loop's instructions per iteration of 4 elements, 6 each
# (2 code loads, a shift to the row, an add, the table's load, the store); mapped, 7 each (the
# two maps' loads in place of the shift)
PAIR_BODY = 4 * 6
PAIR_MAP_BODY = 4 * 7


def _fold_body(fold) -> int:
    """The fold's CORE-V block: its hardware loop's instructions per iteration of 4 elements
    (8 code loads, 8 shifts to word offsets, 8 table loads, 4 sums, 4 shifts, the clamps, the
    encoder table's loads, 4 stores)."""
    clamp = 4 if fold["clip_bits"] else 8
    return 8 + 8 + 8 + 4 + 4 + clamp + 4 * fold["fold_table"] + 4


def _asm(dtypes, body) -> dict:
    """The CORE-V block's numbers: its hardware loop's instructions per iteration (and the
    setup's offset to its end) and the
    post-incremented code loads' funct3 (4: cv.lbu, 0: cv.lb). `asm` 0 (the C loop only)
    unless codes and outputs are all bytes: the blocks move bytes."""
    unsigned = [np.dtype(d).kind == "u" for d in dtypes[:2]]
    return {"asm": int(all(np.dtype(d).itemsize == 1 for d in dtypes)), "asm_body": body,
            "asm_loop_end": body + 1,     # cv.setup's offset: past the body, in instructions
            "x_load": 4 if unsigned[0] else 0, "y_load": 4 if unsigned[1] else 0}
