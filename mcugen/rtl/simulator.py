"""Run RV32 programs cycle-exact on the OpenHW CV32E40P RTL, verilated once per configuration.

The RTL comes from the PyPI package pythondata-cpu-cv32e40p, the simulator from Debian's
verilator. `build_simulator` copies the RTL into a cache directory, patches what Verilator 5.006
rejects, and compiles it with harness.cpp (which loads the ELF's PT_LOAD segments itself);
`run_program` runs one ELF built with `compile_flags()`/`link_flags()` against the memory and
MMIO contract of rtl_io.h.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mcugen.errors import MCUGenError
from mcugen.runners import FAULT_CAUSES

HERE = Path(__file__).resolve().parent
HARNESS = HERE / "harness.cpp"
IO_HEADER = HERE / "rtl_io.h"
CRT0 = HERE / "crt0.S"
STDIO_SHIM = HERE / "rtl_stdio.c"

INSTALL_VERILATOR = "apt-get install verilator g++ make"
INSTALL_RTL = "pip install pythondata-cpu-cv32e40p"

# One 4 MiB memory: code/rodata in the first half, data/bss/heap/stack in the second (rtl_io.h).
FLASH_ORIGIN, FLASH_BYTES = 0x0, 0x200000
RAM_ORIGIN, RAM_BYTES = 0x200000, 0x200000
MMIO_ORIGIN, MMIO_BYTES = 0x10000000, 0x20
STACK_BYTES = 0x10000

DEFAULT_MAX_CYCLES = 200_000_000
# The harness runs about 1.3 M cycles a second on this project's 2-core machines; leave room
# for a loaded machine before calling a run hung.
CYCLES_PER_SECOND_FLOOR = 250_000

# Verilator 5.006 stops with BLKANDNBLK where cv32e40p_cs_registers.sv ties unimplemented
# counter/event/inhibit elements to 0 with `assign` while always_ff drives the others. A flop
# that always loads 0 keeps the value (0 from time 0). Without its siblings' asynchronous reset
# (a reset cannot change a constant) the model simulates 20% faster (measured); Verilator then
# warns MULTIDRIVEN (different clocking), harmless here.
TIE_OFFS = (
    "mhpmcounter_q[cnt_gidx]",
    "mhpmevent_q[evt_gidx]",
    "mhpmevent_q[evt_gidx][31:NUM_HPM_EVENTS]",
    "mcountinhibit_q[inh_gidx]",
)
TIE_OFF_FLOP = "always_ff @(posedge clk) {target} <= 'b0;"
PATCHED_FILE = "cv32e40p_cs_registers.sv"

VERILATOR_FLAGS = [
    "--cc", "--exe", "--build", "-j", "2", "--no-timing", "--top-module", "cv32e40p_top",
    # the RTL's own lint noise; none of it changes the simulated behaviour
    "-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-UNOPTFLAT", "-Wno-COMBDLY", "-Wno-MULTIDRIVEN",
]
# Only the evaluation code is hot: -O2 there, the rest at -O0 keeps the build near 10 s.
MAKE_FLAGS = "OPT_FAST=-O2 OPT_SLOW=-O0 OPT_GLOBAL=-O0"


@dataclass(frozen=True)
class RtlRun:
    output: bytes      # the words written to RTL_OUT_WORD
    profile: str       # the bytes written to RTL_PROF_BYTE
    cycles: int        # clock cycles from reset release to the write of RTL_EXIT
    exit_code: int
    console: str = ""  # RTL_PUTC (printf) text, for debugging


def rtl_source_dir() -> Path:
    """The installed package's SystemVerilog tree (rtl/, bhv/, the manifests)."""
    return Path(_rtl_package().data_location)


def rtl_version() -> str:
    package = _rtl_package()
    return (f"pythondata-cpu-cv32e40p {package.version_str} "
            f"(cv32e40p git {package.data_git_describe}, {package.data_git_hash[:12]})")


def _rtl_package():
    try:
        # deferred: an optional dependency (pip install 'mcugen[rtl]'), needed by --on rtl only
        import pythondata_cpu_cv32e40p
    except ImportError:
        raise MCUGenError(f"the CV32E40P RTL is not installed: {INSTALL_RTL}") from None
    return pythondata_cpu_cv32e40p


def verilator_version() -> str:
    """`verilator --version`, once the tools a build needs are known to be there."""
    for tool in ("verilator", "make", "g++"):
        if shutil.which(tool) is None:
            raise MCUGenError(f"`{tool}` not found (the CV32E40P simulator needs it): {INSTALL_VERILATOR}")
    done = subprocess.run(["verilator", "--version"], capture_output=True, text=True)
    if done.returncode != 0:
        raise MCUGenError(f"`verilator --version` failed: reinstall it ({INSTALL_VERILATOR})")
    return done.stdout.strip()


def compile_flags(directory=HERE) -> list[str]:
    """For every riscv64-unknown-elf-gcc command, the link included: the ISA, picolibc and
    rtl_io.h (in `directory`: a generated project keeps copies in its rtl/). rv32imc, not
    rv32imc_zicsr, which would miss picolibc's rv32im multilib."""
    return ["-march=rv32imc", "-mabi=ilp32", "--specs=picolibc.specs", f"-I{directory}"]


def link_flags(directory=HERE) -> list[str]:
    """Added to compile_flags() for the link (picolibc.specs refuses to be given twice): this
    directory's startup instead of picolibc's (no semihosting) and picolibc.ld placed on the
    memory map. crt0.S and rtl_stdio.c are compiled by the link command itself."""
    return ["-nostartfiles", f"{directory}/{CRT0.name}", f"{directory}/{STDIO_SHIM.name}",
            f"-Wl,--defsym=__flash={FLASH_ORIGIN:#x}", f"-Wl,--defsym=__flash_size={FLASH_BYTES:#x}",
            f"-Wl,--defsym=__ram={RAM_ORIGIN:#x}", f"-Wl,--defsym=__ram_size={RAM_BYTES:#x}",
            f"-Wl,--defsym=__stack_size={STACK_BYTES:#x}"]


PROGRAM_FILES = (CRT0, STDIO_SHIM, IO_HEADER)     # what a program built for the harness needs


def memory_map() -> dict:
    return {"flash": {"origin": FLASH_ORIGIN, "bytes": FLASH_BYTES},
            "ram": {"origin": RAM_ORIGIN, "bytes": RAM_BYTES},
            "mmio": {"origin": MMIO_ORIGIN, "bytes": MMIO_BYTES},
            "stack_bytes": STACK_BYTES}


# ---- building the simulator -------------------------------------------------------------

def cache_root() -> Path:
    base = os.environ.get("MCUGEN_CACHE") or Path.home() / ".cache" / "mcugen"
    return Path(base) / "rtl"


def build_key(corev_pulp: bool) -> str:
    """Everything the executable depends on; a change in any of it means a new build."""
    inputs = {"rtl": rtl_version(), "verilator": verilator_version(), "corev_pulp": bool(corev_pulp),
              "fpu": 0, "flags": VERILATOR_FLAGS, "make": MAKE_FLAGS, "tie_offs": [TIE_OFFS, TIE_OFF_FLOP],
              "harness": HARNESS.read_text(), "io": IO_HEADER.read_text()}
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    return f"cv32e40p-pulp{int(bool(corev_pulp))}-{digest}"


def build_simulator(corev_pulp: bool = True, progress: Callable[[str], None] | None = None) -> Path:
    """The harness executable for this configuration, built once (about 10 s) and cached."""
    final = cache_root() / build_key(corev_pulp)
    exe = final / "sim"
    if exe.is_file():
        return exe
    final.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(final.parent / f"{final.name}.lock"):
        if exe.is_file():      # another process built it while this one waited
            return exe
        staging = Path(tempfile.mkdtemp(prefix=f"{final.name}.", dir=final.parent))
        staging.chmod(0o755)       # mkdtemp's 0700 would hide a shared cache from other users
        try:
            _build_into(staging, corev_pulp, progress)
            if final.exists():     # a leftover without its executable
                shutil.rmtree(final)
            staging.rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return exe


@contextmanager
def _exclusive(lock_path: Path):
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build_into(build: Path, corev_pulp: bool, progress) -> None:
    sources = copy_patched_rtl(build / "rtl")
    if progress:
        progress(f"verilating the CV32E40P RTL (COREV_PULP={int(corev_pulp)}), about 10 s, once")
    cmd = ["verilator", *VERILATOR_FLAGS, f"-GCOREV_PULP={int(corev_pulp)}", "-GFPU=0",
           "--Mdir", "obj", "-o", "sim", "-Irtl/include", "-Irtl/bhv",
           "-CFLAGS", f"-I{HERE}", "-MAKEFLAGS", MAKE_FLAGS,
           *[str(path.relative_to(build)) for path in sources], str(HARNESS)]
    started = time.monotonic()
    log = build / "build.log"
    with open(log, "w") as out:
        done = subprocess.run(cmd, cwd=build, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0 or not (build / "obj" / "sim").is_file():
        kept = build.parent / f"{build.name.split('.')[0]}-failed.log"
        shutil.copyfile(log, kept)
        raise MCUGenError(f"building the CV32E40P simulator with verilator failed: see {kept}")
    (build / "obj" / "sim").rename(build / "sim")
    shutil.rmtree(build / "obj")       # tens of MB of objects nothing reads again
    if progress:
        progress(f"built the CV32E40P simulator in {time.monotonic() - started:.0f} s")


def copy_patched_rtl(dest: Path) -> list[Path]:
    """The core's sources (the package's manifest order, with the behavioural clock gate and
    without the FPU) copied under `dest`, the tie-offs patched; returns them in compile order."""
    source = rtl_source_dir()
    names = _manifest_rtl_files(source) + ["bhv/cv32e40p_sim_clock_gate.sv"]
    shutil.copytree(source / "rtl" / "include", dest / "include")
    copied = []
    for name in names:
        target = dest / Path(name).relative_to("rtl") if name.startswith("rtl/") else dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target)
        copied.append(target)
    _patch_tie_offs(dest / PATCHED_FILE)
    return copied


def _manifest_rtl_files(source: Path) -> list[str]:
    manifest = (source / "cv32e40p_manifest.flist").read_text()
    names = re.findall(r"^\$\{DESIGN_RTL_DIR\}/(\S+\.sv)\s*$", manifest, flags=re.M)
    return [f"rtl/{name}" for name in names if not name.startswith("..")]


def _patch_tie_offs(path: Path) -> None:
    text = path.read_text()
    for target in TIE_OFFS:
        old = f"assign {target} = 'b0;"
        if text.count(old) != 1:
            raise MCUGenError(f"{path.name} of {rtl_version()} differs from the one this patch knows "
                              f"(`{old}`): {INSTALL_RTL}==1.0.1.post1909")
        text = text.replace(old, TIE_OFF_FLOP.format(target=target))
    path.write_text(text)


# ---- running a program --------------------------------------------------------------------

def run_program(elf: Path, input_bytes: bytes = b"", corev_pulp: bool = True, stall_percent: int = 0,
                max_cycles: int = DEFAULT_MAX_CYCLES, timeout: float | None = None) -> RtlRun:
    """Run `elf` from reset until it writes RTL_EXIT. A trap, a non-zero exit code, an access
    outside the memory map or running past `max_cycles` raises MCUGenError."""
    elf = Path(elf)
    if not elf.is_file():
        raise MCUGenError(f"{elf} does not exist: build the program first")
    sim = build_simulator(corev_pulp)
    timeout = timeout or 30 + max_cycles / CYCLES_PER_SECOND_FLOOR
    with tempfile.TemporaryDirectory(prefix="mcugen-rtl-") as tmp:
        files = {name: Path(tmp) / name for name in ("in", "out", "prof")}
        files["in"].write_bytes(input_bytes)
        cmd = [str(sim), str(elf), "--stall-percent", str(stall_percent), "--max-cycles", str(max_cycles)]
        for name, path in files.items():
            cmd += [f"--{name}", str(path)]
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise MCUGenError(f"the CV32E40P simulation of {elf.name} ran longer than {timeout:.0f} s: "
                              f"pass a larger timeout or a smaller max_cycles") from None
        run = RtlRun(output=files["out"].read_bytes() if files["out"].exists() else b"",
                     profile=_text(files["prof"].read_bytes()) if files["prof"].exists() else "",
                     cycles=_stdout_cycles(done.stdout), exit_code=0, console=_text(done.stderr))
    return _checked(elf, run, done, corev_pulp)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _stdout_cycles(stdout: bytes) -> int:
    found = re.search(rb"^cycles (\d+)$", stdout, flags=re.M)
    return int(found.group(1)) if found else 0


def _checked(elf: Path, run: RtlRun, done: subprocess.CompletedProcess, corev_pulp: bool) -> RtlRun:
    """Turn the harness's status line into the run's exit code or a one-line error."""
    stdout = done.stdout.decode(errors="replace")
    where = f"{elf.name} on the CV32E40P RTL (COREV_PULP={int(corev_pulp)})"
    if found := re.search(r"^exit (-?\d+)$", stdout, flags=re.M):
        code = int(found.group(1))
        if code != 0:
            raise MCUGenError(f"{where} exited with code {code} after {run.cycles:,} cycles")
        return run
    if found := re.search(r"^trap mcause (0x[0-9a-f]+) mepc (0x[0-9a-f]+)$", stdout, flags=re.M):
        cause, pc = int(found.group(1), 16), int(found.group(2), 16)
        name = FAULT_CAUSES.get(cause, "exception")
        raise MCUGenError(f"{where} trapped: mcause {cause:#x} ({name}) at mepc {pc:#010x}")
    if found := re.search(r"^limit (\d+)$", stdout, flags=re.M):
        raise MCUGenError(f"{where} ran past max_cycles={int(found.group(1)):,} without writing "
                          f"RTL_EXIT: raise max_cycles or check that the program ends")
    if found := re.search(r"^fault (.*)$", stdout, flags=re.M):
        raise MCUGenError(f"{where}: {found.group(1)}")
    reason = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[0]
    raise MCUGenError(f"the CV32E40P harness could not run {elf}: {reason}")
