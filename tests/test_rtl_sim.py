"""The CV32E40P RTL under Verilator (mcugen/rtl): CORE-V SIMD, post-increment loads and hardware
loops checked against numpy on random and extreme data, cycle counts, the I/O streams, traps,
the cycle limit and the build cache. No skips: a missing tool fails."""
import re
import shutil
import struct
import subprocess
import threading
import time

import numpy as np
import pytest

from mcugen.errors import MCUGenError
from mcugen.rtl import simulator
from mcugen.rtl.simulator import build_simulator, compile_flags, link_flags, run_program

NV, SHORT, LONG = 8, 16, 1024      # short vector pairs per kind, their int8 length, the long dot

SIMD_PROGRAM = r"""
#include <stdint.h>
#include "rtl_io.h"

#define NV %(NV)d
#define SHORT %(SHORT)d
#define LONG %(LONG)d
#define ALIGNED __attribute__((aligned(4)))

static int8_t a8[NV][SHORT] ALIGNED, b8[NV][SHORT] ALIGNED;
static uint8_t u8[NV][SHORT] ALIGNED;
static int16_t a16[NV][SHORT / 2] ALIGNED, b16[NV][SHORT / 2] ALIGNED;
static int8_t la[LONG] ALIGNED, lb[LONG] ALIGNED;
static uint32_t wx[NV], wy[NV];
static int32_t out[512];
static unsigned n_out;

static void emit(int32_t v) { out[n_out++] = v; }

/* accumulating CORE-V dot products (opcode custom-3): rd += rs1 . rs2 */
#define DOT(f3, f7, acc, x, y) \
    __asm__(".insn r 0x7b, " #f3 ", " #f7 ", %%0, %%1, %%2" : "+r"(acc) : "r"(x), "r"(y))
#define OP(f3, f7, x, y) ({ uint32_t r_; \
    __asm__(".insn r 0x7b, " #f3 ", " #f7 ", %%0, %%1, %%2" : "=r"(r_) : "r"(x), "r"(y)); r_; })

__attribute__((noinline)) static int32_t dot_plain(const int8_t *x, const int8_t *y, unsigned n)
{
    int32_t acc = 0;
    for (unsigned i = 0; i < n; i++) acc += x[i] * y[i];
    return acc;
}

__attribute__((noinline)) static int32_t dot_simd(const int8_t *x, const int8_t *y, unsigned n)
{
    const uint32_t *px = (const uint32_t *)x, *py = (const uint32_t *)y;
    int32_t acc = 0;
    for (unsigned i = 0; i < n / 4; i++) DOT(1, 0x54, acc, px[i], py[i]);
    return acc;
}

/* lp.setup L0 (count from a register, body: the next 3 words), cv.lw post-increment, cv.sdotsp.b */
__attribute__((noinline)) static int32_t dot_hwloop(const int8_t *x, const int8_t *y, unsigned n)
{
    int32_t acc = 0;
    __asm__ volatile(
        ".balign 4\n.option push\n.option norvc\n"
        ".insn i 0x2b, 4, x14, %%[cnt], 4\n"
        ".insn i 0x0b, 2, t0, 4(%%[px])\n"
        ".insn i 0x0b, 2, t1, 4(%%[py])\n"
        ".insn r 0x7b, 1, 0x54, %%[acc], t0, t1\n"
        ".option pop\n"
        : [acc] "+r"(acc), [px] "+r"(x), [py] "+r"(y)
        : [cnt] "r"(n / 4)
        : "t0", "t1", "memory");
    return acc;
}

/* lp.setupi L1 (count 512 from the immediate, body: the next 4 words), cv.lb and cv.lh
   post-increment: the sums of 512 int8 and of 512 int16 */
__attribute__((noinline)) static void sums_hwloop(const int8_t *bytes, const int16_t *halves)
{
    int32_t s8 = 0, s16 = 0;
    __asm__ volatile(
        ".balign 4\n.option push\n.option norvc\n"
        ".insn i 0x2b, 4, x13, x5, 512\n"
        ".insn i 0x0b, 0, t0, 1(%%[pb])\n"
        ".insn i 0x0b, 1, t1, 2(%%[ph])\n"
        "add %%[s8], %%[s8], t0\n"
        "add %%[s16], %%[s16], t1\n"
        ".option pop\n"
        : [s8] "+r"(s8), [s16] "+r"(s16), [pb] "+r"(bytes), [ph] "+r"(halves)
        :
        : "t0", "t1", "memory");
    emit(s8);
    emit(s16);
}

static void short_vectors(int v)
{
    const uint32_t *pa = (const uint32_t *)a8[v], *pb = (const uint32_t *)b8[v];
    const uint32_t *pu = (const uint32_t *)u8[v];
    const uint32_t *ph = (const uint32_t *)a16[v], *pg = (const uint32_t *)b16[v];
    int32_t sb = 0, sh = 0, usb = 0, uub = 0, ush = 0;
    for (int w = 0; w < SHORT / 4; w++) {
        DOT(1, 0x54, sb, pa[w], pb[w]);     /* cv.sdotsp.b */
        DOT(0, 0x54, sh, ph[w], pg[w]);     /* cv.sdotsp.h */
        DOT(1, 0x50, usb, pu[w], pb[w]);    /* cv.sdotusp.b: unsigned rs1, signed rs2 */
        DOT(1, 0x4C, uub, pu[w], pa[w]);    /* cv.sdotup.b: both unsigned */
        DOT(0, 0x50, ush, pg[w], ph[w]);    /* cv.sdotusp.h */
    }
    emit(dot_plain(a8[v], b8[v], SHORT));
    emit(sb); emit(sh); emit(usb); emit(uub); emit(ush);
}

static void word_ops(int v)
{
    int32_t clipped;
    __asm__(".insn r 0x2b, 3, 0x38, %%0, %%1, x8" : "=r"(clipped) : "r"(wx[v]));  /* cv.clip 8 */
    emit(clipped);
    emit((int32_t)OP(1, 0x18, wx[v], wy[v]));   /* cv.max.b */
    emit((int32_t)OP(1, 0x1C, wx[v], wy[v]));   /* cv.maxu.b */
    emit((int32_t)OP(0, 0x78, wx[v], wy[v]));   /* cv.pack */
    emit((int32_t)OP(0, 0x79, wx[v], wy[v]));   /* cv.pack.h */
}

int main(void)
{
    emit((int32_t)rtl_in_left());
    rtl_read_words(a8, sizeof a8 / 4);
    rtl_read_words(b8, sizeof b8 / 4);
    rtl_read_words(u8, sizeof u8 / 4);
    rtl_read_words(a16, sizeof a16 / 4);
    rtl_read_words(b16, sizeof b16 / 4);
    rtl_read_words(la, sizeof la / 4);
    rtl_read_words(lb, sizeof lb / 4);
    rtl_read_words(wx, NV);
    rtl_read_words(wy, NV);
    emit((int32_t)rtl_in_left());
    for (int v = 0; v < NV; v++) short_vectors(v);
    for (int v = 0; v < NV; v++) word_ops(v);
    sums_hwloop(la, (const int16_t *)lb);

    uint32_t t0 = rtl_cycles();
    int32_t plain = dot_plain(la, lb, LONG);
    uint32_t t1 = rtl_cycles();
    int32_t simd = dot_simd(la, lb, LONG);
    uint32_t t2 = rtl_cycles();
    int32_t hw = dot_hwloop(la, lb, LONG);
    uint32_t t3 = rtl_cycles();
    emit(plain); emit(simd); emit(hw);
    emit((int32_t)(t1 - t0)); emit((int32_t)(t2 - t1)); emit((int32_t)(t3 - t2));
    rtl_write_words(out, n_out);
    rtl_prof_puts("plain "); rtl_prof_putu(t1 - t0);
    rtl_prof_puts(" simd "); rtl_prof_putu(t2 - t1);
    rtl_prof_puts(" hwloop "); rtl_prof_putu(t3 - t2);
    rtl_prof_puts("\n");
    return 0;
}
""" % {"NV": NV, "SHORT": SHORT, "LONG": LONG}

# echoes its input padded to words, then the byte count; 5 bytes of input mean "exit 3"
ECHO_PROGRAM = r"""
#include <stdio.h>
#include "rtl_io.h"

static uint32_t words[64];

int main(void)
{
    uint32_t n = rtl_in_left();
    if (n > sizeof words) rtl_exit(2);
    rtl_read_words(words, (n + 3) / 4);
    rtl_write_words(words, (n + 3) / 4);
    rtl_write_words(&n, 1);
    printf("echo %u\n", (unsigned)n);
    if (n == 5) rtl_exit(3);
    return 0;
}
"""

FOREVER_PROGRAM = "int main(void) { for (;;) __asm__ volatile(\"\"); }\n"
SLEEP_PROGRAM = "int main(void) { __asm__ volatile(\"wfi\"); return 0; }\n"


def require_tools():
    for tool in ("verilator", "riscv64-unknown-elf-gcc", "g++", "make"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (scripts/test.sh installs it)")


def compile_program(source: str, path) -> object:
    src = path.with_suffix(".c")
    src.write_text(source)
    elf = path.with_suffix(".elf")
    cmd = ["riscv64-unknown-elf-gcc", "-O2", *compile_flags(), str(src), *link_flags(), "-o", str(elf)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return elf


@pytest.fixture(scope="module")
def sim():
    require_tools()
    return build_simulator()


@pytest.fixture(scope="module")
def programs(tmp_path_factory, sim):
    folder = tmp_path_factory.mktemp("rtl_programs")
    return {name: compile_program(source, folder / name) for name, source in
            (("simd", SIMD_PROGRAM), ("echo", ECHO_PROGRAM), ("forever", FOREVER_PROGRAM),
             ("sleep", SLEEP_PROGRAM))}


def random_inputs(seed):
    """The SIMD program's inputs, random with the extremes planted in some vectors."""
    rng = np.random.default_rng(seed)

    def int8(shape):
        return rng.integers(-128, 128, shape).astype(np.int8)
    x = {"a8": int8((NV, SHORT)), "b8": int8((NV, SHORT)),
         "u8": rng.integers(0, 256, (NV, SHORT)).astype(np.uint8),
         "a16": rng.integers(-32768, 32768, (NV, SHORT // 2)).astype(np.int16),
         "b16": rng.integers(-32768, 32768, (NV, SHORT // 2)).astype(np.int16),
         "la": int8(LONG), "lb": int8(LONG),
         "wx": rng.integers(0, 2**32, NV, dtype=np.uint64).astype(np.uint32),
         "wy": rng.integers(0, 2**32, NV, dtype=np.uint64).astype(np.uint32)}
    x["a8"][0], x["b8"][0] = -128, -128                     # the largest int8 product, 16 times
    x["a8"][1], x["b8"][1] = 127, -128
    x["u8"][2], x["b8"][2], x["a8"][2] = 255, -128, 127     # 255 x -128 and 255 x 127
    x["a16"][3], x["b16"][3] = -32768, -32768
    x["a16"][4], x["b16"][4] = -32768, 32767
    x["la"][:64], x["lb"][:64] = -128, -128
    x["wx"][:4] = [0x7FFFFFFF, 0x80000000, 100, 0xFFFFFF80]
    x["wy"][:2] = [0x80807F7F, 0x7F7F8080]
    return x


def expected_outputs(x):
    """What the program must write, from numpy alone (int64, then wrapped to int32)."""
    i64 = lambda a: a.astype(np.int64)       # noqa: E731
    n_bytes = sum(a.nbytes for a in x.values())
    out = [n_bytes, 0]
    for v in range(NV):
        dot8 = (i64(x["a8"][v]) * i64(x["b8"][v])).sum()
        out += [dot8, dot8, (i64(x["a16"][v]) * i64(x["b16"][v])).sum(),
                (i64(x["u8"][v]) * i64(x["b8"][v])).sum(),
                (i64(x["u8"][v]) * i64(x["a8"][v].view(np.uint8))).sum(),
                (i64(x["b16"][v].view(np.uint16)) * i64(x["a16"][v])).sum()]
    for v in range(NV):
        wx, wy = x["wx"][v:v + 1], x["wy"][v:v + 1]
        lo_x, hi_x = wx.view(np.uint16)
        lo_y, hi_y = wy.view(np.uint16)
        out += [np.clip(wx.view(np.int32)[0], -128, 127),
                np.maximum(wx.view(np.int8), wy.view(np.int8)).view(np.int32)[0],
                np.maximum(wx.view(np.uint8), wy.view(np.uint8)).view(np.int32)[0],
                np.array([lo_y, lo_x], np.uint16).view(np.int32)[0],     # rs1 low half on top
                np.array([hi_y, hi_x], np.uint16).view(np.int32)[0]]
    out += [i64(x["la"][:512]).sum(), i64(x["lb"].view(np.int16)).sum()]
    dot = (i64(x["la"]) * i64(x["lb"])).sum()
    out += [dot, dot, dot]
    return np.array(out, np.int64).astype(np.int32)


def run_simd(programs, seed, **options):
    x = random_inputs(seed)
    data = b"".join(x[k].tobytes() for k in ("a8", "b8", "u8", "a16", "b16", "la", "lb", "wx", "wy"))
    run = run_program(programs["simd"], data, **options)
    got = np.frombuffer(run.output, np.int32)
    want = expected_outputs(x)
    assert got.size == want.size + 3, got.size
    return run, got[:want.size], want, got[want.size:]


@pytest.mark.parametrize("seed", [1, 2])
def test_simd_instructions_match_numpy_and_beat_plain_c(programs, seed):
    run, got, want, (plain, simd, hwloop) = run_simd(programs, seed)
    wrong = np.nonzero(got != want)[0]
    assert wrong.size == 0, f"outputs {wrong.tolist()}: got {got[wrong].tolist()} want {want[wrong].tolist()}"
    assert 0 < hwloop < simd < plain, (plain, simd, hwloop)
    assert hwloop >= 3 * LONG // 4           # 3 instructions per 4 elements, at most 1 a cycle
    assert run.cycles > plain + simd + hwloop and run.exit_code == 0
    assert run.profile == f"plain {plain} simd {simd} hwloop {hwloop}\n"


def test_memory_stalls_cost_cycles_not_results(programs):
    fast, got_fast, want, cycles_fast = run_simd(programs, 3)
    slow, got_slow, _, cycles_slow = run_simd(programs, 3, stall_percent=30)
    assert (got_fast == want).all() and (got_slow == want).all()
    assert (cycles_slow > cycles_fast).all() and slow.cycles > fast.cycles
    again = run_simd(programs, 3, stall_percent=30)[0]
    assert again.cycles == slow.cycles                  # the stalls are deterministic


def test_streams_console_and_exit_codes(programs):
    data = bytes(range(1, 11))
    run = run_program(programs["echo"], data)
    assert run.output == data + b"\0\0" + struct.pack("<I", 10)
    assert run.console == "echo 10\n" and run.profile == "" and run.cycles > 0
    exited = r"^echo.elf on the CV32E40P RTL \(COREV_PULP=1\) exited with code 3 "
    with pytest.raises(MCUGenError, match=exited):
        run_program(programs["echo"], b"12345")


def test_a_program_that_never_exits_hits_max_cycles(programs):
    with pytest.raises(MCUGenError, match=r"ran past max_cycles=200,000 without writing RTL_EXIT") as error:
        run_program(programs["forever"], b"", max_cycles=200_000)
    assert "\n" not in str(error.value)


def test_a_wfi_that_nothing_can_wake_stops_at_once(programs):
    with pytest.raises(MCUGenError, match=r"^sleep.elf on the CV32E40P RTL .*: wfi with no interrupt source$"):
        run_program(programs["sleep"], b"")


def test_a_file_that_is_not_an_elf_is_refused(tmp_path, sim):
    bogus = tmp_path / "bogus.elf"
    bogus.write_text("not an ELF")
    with pytest.raises(MCUGenError, match=r"could not run .*bogus.elf: sim: .* is not an ELF file"):
        run_program(bogus, b"")


def word_at(elf, address):
    """The 32-bit word at `address` in the ELF's loadable segments (ELF32 little endian)."""
    image = elf.read_bytes()
    phoff, = struct.unpack_from("<I", image, 28)
    phentsize, phnum = struct.unpack_from("<HH", image, 42)
    for i in range(phnum):
        kind, offset, _, paddr, filesz = struct.unpack_from("<5I", image, phoff + i * phentsize)
        if kind == 1 and paddr <= address < paddr + filesz:
            return struct.unpack_from("<I", image, offset + address - paddr)[0]
    raise AssertionError(f"{address:#x} is not in a loaded segment")


def test_without_corev_pulp_the_first_simd_instruction_traps(programs):
    started = time.monotonic()
    plain_core = build_simulator(corev_pulp=False)
    assert plain_core != build_simulator(corev_pulp=True)
    echoed = run_program(programs["echo"], b"abcd", corev_pulp=False)      # RV32IMC runs as usual
    assert echoed.output == b"abcd" + struct.pack("<I", 4)
    trapped = r"COREV_PULP=0\) trapped: mcause 0x2 \(illegal instruction\)"
    with pytest.raises(MCUGenError, match=trapped) as error:
        run_program(programs["simd"], bytes(4096), corev_pulp=False)
    mepc = int(re.search(r"mepc (0x[0-9a-f]+)", str(error.value)).group(1), 16)
    assert word_at(programs["simd"], mepc) & 0x7F == 0x7B        # a custom-3 (SIMD) instruction
    print(f"COREV_PULP=0 build and runs: {time.monotonic() - started:.1f} s")


def test_the_build_is_cached_and_reused(sim, monkeypatch):
    """A second request verilates nothing: the cached harness is handed back as it is."""
    def no_second_build(build, corev_pulp, progress):
        raise AssertionError("the simulator was built again")
    monkeypatch.setattr(simulator, "_build_into", no_second_build)
    stamp = sim.stat().st_mtime_ns
    assert build_simulator() == sim and sim.stat().st_mtime_ns == stamp
    assert sim.is_file() and sim.parent.name.startswith("cv32e40p-pulp1-")


def test_concurrent_builds_build_once(tmp_path, monkeypatch):
    builds = []

    def slow_fake_build(build, corev_pulp, progress):
        builds.append(build)
        time.sleep(0.5)                  # long enough for the other thread to reach the lock
        (build / "sim").write_text("#!/bin/true\n")

    monkeypatch.setenv("MCUGEN_CACHE", str(tmp_path))
    monkeypatch.setattr(simulator, "_build_into", slow_fake_build)
    results = []
    threads = [threading.Thread(target=lambda: results.append(build_simulator())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and len(results) == 2 and results[0] == results[1]
    assert results[0].read_text() == "#!/bin/true\n"
    assert [p.name for p in (tmp_path / "rtl").iterdir() if p.is_dir()] == [results[0].parent.name]
