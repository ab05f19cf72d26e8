"""The pade encoder: its measured worst code error is exact (brute force against the float
encoder never exceeds it, and it is attained), F is the smallest within the budget, and its C
(host with sanitizers, RV32IMC under qemu) equals its numpy reference on every accumulator fed."""
import re
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import require_tool
from mcugen.codegen.host import qemu_memory
from mcugen.codegen.render import c_array, ctype_of, environment
from mcugen.errors import MCUGenError
from mcugen.ir.schedule import CTYPES
from mcugen.lower.encoders.base import EncodeRequest
from mcugen.lower.encoders.exact import float_encoder
from mcugen.lower.encoders.pade import Pade, negative_slopes
from mcugen.quant.power import Encoding
from mcugen.runners import RV_CC, find_cc, harness_command

PADE = Pade()
RNG = np.random.default_rng(29)
BOUND_MAX = (1 << 31) - 2


def request(bits, signed, a, activation, scale, bound, rng_range, rows=4, budget=1, seed=0):
    """Rows whose scales spread over a factor of 4 around `scale`."""
    spread = np.random.default_rng(seed).uniform(0.5, 2.0, size=rows)
    return EncodeRequest(Encoding(bits, signed, a, "power", rng_range), activation, scale * spread,
                         bound, budget)


# bits, signed, exponent, activation, scale, bound, range R
CASES = {
    "u8_a05_relu": (8, False, 0.5, ("Relu",), 1e-6, 1 << 26, 20.0),
    "u8_a075_relu_resnet": (8, False, 0.75, ("Relu",), 1e-6, 1 << 26, 30.0),
    "s8_a07_identity_1e-9": (8, True, 0.7, None, 1e-9, BOUND_MAX, 1.5),
    "u4_a088_clip6_1e-2": (4, False, 0.88, ("Clip", 0.0, 6.0), 1e-2, 5000, 6.0),
    "s4_a1_leaky01": (4, True, 1.0, ("LeakyRelu", 0.1), 1e-4, 1 << 20, 40.0),
    "u8_a07_leaky_neg05": (8, False, 0.7, ("LeakyRelu", -0.5), 3e-8, BOUND_MAX, 25.0),
    "s8_a05_prelu_rows": (8, True, 0.5, ("PRelu", (0.25, -0.75, 0.0, 1.0)), 1e-5, 1 << 24, 60.0),
    "u8_a1_clip6": (8, False, 1.0, ("Clip", 0.0, 6.0), 1e-3, 1 << 14, 6.0),
    "s8_a088_clip_sym": (8, True, 0.88, ("Clip", -1.0, 0.5), 2e-7, 1 << 23, 1.0),
    "s4_a05_leaky_neg05": (4, True, 0.5, ("LeakyRelu", -0.5), 1e-2, 1000, 3.0),
    "u4_a07_prelu_one": (4, False, 0.7, ("PRelu", (0.3,)), 1e-7, 1 << 28, 9.0),
    "s8_a1_identity_1e-2": (8, True, 1.0, None, 1e-2, 20000, 100.0),
}


ACTIVATIONS = [None, ("Relu",), ("Clip", 0.0, 6.0), ("LeakyRelu", 0.1), ("LeakyRelu", -0.5),
               ("PRelu", (0.25, -0.75, 0.0, 1.5))]
SCALES = [(1e-9, BOUND_MAX), (1e-7, 1 << 28), (1e-5, 1 << 22), (1e-3, 1 << 14), (1e-2, 3000)]


def sweep():
    """Every encoding x exponent x activation, the scale and bound rotating through SCALES; R
    puts the saturation inside the accumulator range (Clip's 6 inside the code range)."""
    cases, i = {}, 0
    for bits, signed in ((4, False), (4, True), (8, False), (8, True)):
        for a in (0.5, 0.7, 0.88, 1.0):
            for act in ACTIVATIONS:
                scale, bound = SCALES[i % len(SCALES)]
                rng_range = 8.0 if act and act[0] == "Clip" else 0.6 * scale * bound
                name = f"{'s' if signed else 'u'}{bits}_a{a}_{act[0] if act else 'identity'}_{scale:g}"
                cases[name] = (bits, signed, a, act, scale, bound, rng_range)
                i += 1
    return cases


SWEEP = sweep()


def build(case, budget=1):
    req = request(*{**SWEEP, **CASES}[case], budget=budget)
    parts = PADE.build(req)
    assert parts is not None, f"{case}: no pade realization within a code error of {budget}"
    return req, parts


def float_codes(req, acc, row):
    grid = np.zeros((req.rows, acc.size), dtype=np.int64)
    grid[row] = acc
    return float_encoder(req.encoding, req.activation, req.scale)(grid)[row]


def probe_accumulators(req, parts, row, n_random=20000, width=3):
    """Dense windows around every breakpoint (the float encoder's and the realization's), random
    accumulators, 0 and +-bound."""
    edges = np.concatenate([req.reference().starts[row],
                            PADE.segments(req, parts.params, parts.consts).starts[row]])
    window = (edges[:, None] + np.arange(-width, width + 1)).ravel()
    rand = RNG.integers(-req.bound, req.bound + 1, size=n_random)
    acc = np.concatenate([window, rand, [0, -req.bound, req.bound]])
    return np.unique(np.clip(acc, -req.bound, req.bound))


def witness(req, parts, wanted):
    """(row, acc) where the realization's segments claim an error of `wanted`, or None."""
    ref, real = req.reference(), PADE.segments(req, parts.params, parts.consts)
    for r in range(req.rows):
        starts = np.union1d(ref.starts[r], real.starts[r])
        hit = np.flatnonzero(np.abs(real.at(r, starts) - ref.at(r, starts)) == wanted)
        if hit.size:
            return r, starts[hit[:1]]
    return None


@pytest.mark.parametrize("case", list(CASES) + list(SWEEP))
def test_measured_error_is_exact_and_within_budget(case):
    req, parts = build(case)
    assert parts.error.worst <= req.max_code_error
    seen = 0
    for r in range(req.rows):
        acc = probe_accumulators(req, parts, r)
        error = np.abs(PADE.run(parts.params, parts.consts, acc, r) - float_codes(req, acc, r))
        seen = max(seen, int(error.max()))
    assert seen <= parts.error.worst
    found = witness(req, parts, parts.error.worst)         # the worst is attained by a real input
    assert found is not None
    r, acc = found
    got = PADE.run(parts.params, parts.consts, acc, r)
    assert abs(int(got[0]) - int(float_codes(req, acc, r)[0])) == parts.error.worst


@pytest.mark.parametrize("case", ["u8_a075_relu_resnet", "s8_a05_prelu_rows", "u8_a1_clip6"])
def test_index_bits_are_the_fewest_within_budget(case):
    """One bit fewer (same approximant) breaks the budget (EncodeRequest.accepts): a worst error
    shown on a real accumulator, or more accumulator values off."""
    req, parts = build(case)
    F = parts.params["enc_F"]
    order = "uniform" if parts.params["enc_uniform"] else (parts.consts["enc_num"].size - 1,
                                                           parts.consts["enc_den"].size - 1)
    slopes = negative_slopes(req.activation, req.rows)
    narrower = PADE.candidate(req, slopes, order, F - 1) if F > 1 else None
    if narrower is None:
        assert F == 1
        return
    assert not req.accepts(narrower.error)
    if narrower.error.worst > req.max_code_error:       # shown on a real accumulator
        r, acc = witness(req, narrower, narrower.error.worst)
        got = PADE.run(narrower.params, narrower.consts, acc, r)
        assert abs(int(got[0]) - int(float_codes(req, acc, r)[0])) > req.max_code_error
    else:                                               # or too many values off by one
        assert narrower.error.off_share > parts.error.off_share


def test_exact_budget_is_refused_and_so_are_log2_and_curved_activations():
    req = request(*CASES["u8_a075_relu_resnet"], budget=0)
    assert PADE.build(req) is None              # index rounding alone is off by one somewhere
    log_req = EncodeRequest(Encoding(8, False, 1.0, "log2", 4.0), ("Relu",), np.array([1e-6]),
                            1 << 20, 1)
    assert PADE.build(log_req) is None
    assert not PADE.supports(("Sigmoid",)) and not PADE.supports(("SiLU",))
    assert PADE.supports(None) and PADE.supports(("LeakyRelu", -3.0))
    assert PADE.supports(("PRelu", (1.0, 2.0))) and PADE.supports(("Clip", -1.0, 1.0))
    with pytest.raises(MCUGenError, match="PRelu with 3 slopes on a layer of 4 output channels"):
        PADE.build(request(8, False, 0.7, ("PRelu", (0.1, 0.2, 0.3)), 1e-6, 1 << 20, 4.0))


# --- the C snippet against run() -------------------------------------------------------------

C_CASES = ["u8_a075_relu_resnet", "s8_a07_identity_1e-9", "u4_a088_clip6_1e-2", "s4_a1_leaky01",
           "u8_a07_leaky_neg05", "s8_a05_prelu_rows", "s8_a1_identity_1e-2"]
HOST_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-g",
              "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
RV_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-march=rv32imc", "-mabi=ilp32",
            "--specs=picolibc.specs", "--oslib=semihost", "--crt0=semihost"]
HARNESS_MAIN = """
#ifdef __riscv
static uint32_t instret(void)
{
    uint32_t value;
    __asm__ volatile(".option push\\n.option arch, +zicsr\\ncsrr %0, minstret\\n.option pop"
                     : "=r"(value));
    return value;
}
#else
static uint32_t instret(void) { return 0; }
#endif

#define CHUNK 4096
static int32_t triples[3 * CHUNK];
static int32_t codes[CHUNK];

/* usage: harness IN OUT; IN holds (case, row, acc) int32 triples, OUT gets int32 codes */
int main(int argc, char **argv)
{
    FILE *in = fopen(argv[argc - 2], "rb");
    FILE *out = fopen(argv[argc - 1], "wb");
    uint32_t spent = 0, overhead = 0;
    size_t n, total = 0;
    if (in == NULL || out == NULL) {
        return 2;
    }
    while ((n = fread(triples, 3 * sizeof(int32_t), CHUNK, in)) > 0) {
        uint32_t start = instret();
        for (size_t i = 0; i < n; i++) {
            codes[i] = triples[3 * i + 2] ^ triples[3 * i + 1] ^ triples[3 * i];
        }
        uint32_t middle = instret();
        for (size_t i = 0; i < n; i++) {
            codes[i] = encode_case(triples[3 * i], triples[3 * i + 1], triples[3 * i + 2]);
        }
        overhead += middle - start;
        spent += instret() - middle;
        total += n;
        if (fwrite(codes, sizeof(int32_t), n, out) != n) {
            return 3;
        }
    }
    fclose(in);
    fclose(out);
    printf("encoded %lu instret %lu overhead %lu\\n", (unsigned long)total, (unsigned long)spent,
           (unsigned long)overhead);
    return 0;
}
"""


def snippet_source(index, parts, encoding):
    """The constants as C arrays, then the rendered snippet under the name caseN."""
    name = f"case{index}"
    lines = [f"static const {ctype_of(v)} {name}_{k}[] = {{{c_array(v)}}};"
             for k, v in parts.consts.items()]
    s = SimpleNamespace(name=name, consts=parts.consts, params=parts.params)
    template = environment("host").get_template("encoders/pade.c.j2")
    out_t = CTYPES[encoding.ctype]                # as templates/common/_encode.c.j2 sets them
    body = template.render(s=s, p=parts.params, out_t=out_t, code_t=out_t, enc_fn=f"{name}_encode",
                           code_consts=list(parts.params["enc_consts"]))
    args = "".join(f"{name}_{k}, " for k in parts.params["enc_consts"])
    call = (f"static int32_t {name}_call(int32_t row, int32_t acc)\n"
            f"{{\n    return {name}_encode({args}row, acc);\n}}")
    return "\n".join(lines) + "\n" + body + "\n" + call + "\n"


@pytest.fixture(scope="module")
def c_program(tmp_path_factory):
    """One C file with every case's snippet, the accumulators to feed (at least 100k a case,
    or every value when the bound is small) and run()'s codes."""
    tmp = tmp_path_factory.mktemp("pade_c")
    parts, feeds, want, counts = [], [], [], []
    for i, case in enumerate(C_CASES):
        req, built = build(case)
        parts.append((req, built))
        counts.append(0)
        for r in range(req.rows):
            acc = probe_accumulators(req, built, r, n_random=30000)
            if 2 * req.bound + 1 <= 100_000:               # small: every accumulator value
                acc = np.arange(-req.bound, req.bound + 1)
            feeds.append(np.stack([np.full(acc.size, i), np.full(acc.size, r), acc], axis=1))
            want.append(PADE.run(built.params, built.consts, acc, r))
            counts[-1] += acc.size
    sources = [snippet_source(i, p, req.encoding) for i, (req, p) in enumerate(parts)]
    branches = "".join(f"    if (which == {i}) {{\n        return case{i}_call(row, acc);\n    }}\n"
                       for i in range(len(C_CASES)))
    dispatch = ("static int32_t encode_case(int32_t which, int32_t row, int32_t acc)\n"
                f"{{\n{branches}    return 0;\n}}\n")
    text = "#include <stdint.h>\n#include <stdio.h>\n\n" + "\n".join(sources) + dispatch + HARNESS_MAIN
    (tmp / "harness.c").write_text(text)
    feed = np.concatenate(feeds).astype(np.int32)
    feed.tofile(tmp / "in.i32")
    assert all(n >= 100_000 or req.bound * 2 + 1 <= 100_000 for n, (req, _) in zip(counts, parts))
    return SimpleNamespace(dir=tmp, n=len(feed), want=np.concatenate(want), parts=parts,
                           counts=counts)


def check_outputs(program, out_file):
    got = np.fromfile(out_file, dtype=np.int32)
    assert got.size == program.n
    bad = np.flatnonzero(got != program.want)
    assert bad.size == 0, (f"{bad.size} codes differ, first at feed {bad[0]}: "
                           f"C {got[bad[0]]}, run {program.want[bad[0]]}")


def test_c_snippet_matches_run_on_the_host_with_sanitizers(c_program):
    require_tool("cc")
    exe = c_program.dir / "harness"
    subprocess.run([find_cc(), *HOST_FLAGS, str(c_program.dir / "harness.c"), "-o", str(exe)],
                   check=True)
    done = subprocess.run([str(exe), str(c_program.dir / "in.i32"), str(c_program.dir / "host.i32")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    check_outputs(c_program, c_program.dir / "host.i32")


def test_c_snippet_matches_run_on_rv32_under_qemu(c_program):
    for tool in (RV_CC, "qemu-system-riscv32"):
        require_tool(tool)
    memory = qemu_memory()              # the layout of qemu's virt machine, as the rv32 rule links
    layout = [f"-Wl,--defsym=__{key}={memory[field]}" for key, field in
              (("flash", "flash_origin"), ("flash_size", "flash_bytes"), ("ram", "ram_origin"),
               ("ram_size", "ram_bytes"))]
    elf = c_program.dir / "harness.elf"
    subprocess.run([RV_CC, *RV_FLAGS, *layout, str(c_program.dir / "harness.c"), "-o", str(elf)], check=True)
    out = c_program.dir / "rv32.i32"
    done = subprocess.run(harness_command(elf, [c_program.dir / "in.i32", out], "qemu"), capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    check_outputs(c_program, out)
    counts = re.search(r"encoded (\d+) instret (\d+) overhead (\d+)", done.stdout + done.stderr)
    assert counts and int(counts.group(1)) == c_program.n
    # the stated per-element cost (the full path) is the right size: measured over the mix fed
    # here (some zero or clamped indices, cheaper), plus the loop and the dispatch over cases
    per_element = (int(counts.group(2)) - int(counts.group(3))) / c_program.n
    stated = np.average([p.ops_per_element for _, p in c_program.parts], weights=c_program.counts)
    assert 0.5 * stated <= per_element <= 1.25 * stated + 12, (per_element, stated)
