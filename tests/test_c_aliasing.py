"""The activation arena obeys C's effective-type rule: every buffer is read and written through
an lvalue of its own type (a member of the arena union), never through a pointer cast of the
arena, so the C stays correct under -fstrict-aliasing and stays bit-exact."""
import re
import subprocess
from dataclasses import replace

import pytest

import mcugen
from conftest import MODELS, shared_model
from mcugen.codegen import host
from mcugen.ir.schedule import ITEMSIZE
from mcugen.runners import find_cc
from mcugen.verify import compare, verify_inputs

STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-fstrict-aliasing",
          "-Wstrict-aliasing"]
CHARACTER_TYPES = {"char", "signed char", "unsigned char", "uint8_t", "int8_t"}
# a cast to a pointer type: "(int16_t *)", "(const void *)", "(struct s *)"
POINTER_CAST = re.compile(r"\(\s*(?:const\s+|volatile\s+)*([A-Za-z_][\w ]*?)\s*\*\s*\)")
CASES = [("mnist8", "host"), ("sine", "host"), ("kws_dscnn", "host"), ("mnist8", "gap8")]


def arena_pointer_casts(source: str) -> list:
    """Lines that cast the arena (or a pointer derived from it) to a non-character pointer."""
    found = []
    for line in source.splitlines():
        if not re.search(r"\barena\b", line):
            continue
        types = POINTER_CAST.findall(line)
        if any(t.strip() not in CHARACTER_TYPES for t in types):
            found.append(line.strip())
    return found


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    """name, target -> (project directory, schedule), built once for the module."""
    built = {}
    for name, target in CASES:
        out = tmp_path_factory.mktemp("alias") / f"{name}_{target}"
        project = mcugen.build(shared_model(name), out=out, target=target, input_range=MODELS[name])
        built[name, target] = (out, project.schedule)
    return built


def test_the_cast_detector_sees_the_old_buffer_macro():
    old = "#define buf_x (((int16_t *)(void *)((uint8_t *)arena + 8)))"
    assert arena_pointer_casts(old) == [old]
    assert arena_pointer_casts("#define buf_x (&arena.i16[4])") == []


@pytest.mark.parametrize("name, target", CASES)
def test_no_pointer_cast_of_the_arena(projects, name, target):
    out, _ = projects[name, target]
    source = (out / "model.c").read_text()
    assert re.search(r"\barena\b", source)
    assert arena_pointer_casts(source) == []


@pytest.mark.parametrize("name, target", CASES)
def test_buffer_offsets_are_aligned_to_their_items(projects, name, target):
    _, schedule = projects[name, target]
    for buffer in schedule.buffers.values():
        assert buffer.offset % ITEMSIZE[buffer.dtype] == 0, buffer


def _sources(out, target):
    if target == "gap8":
        return ["-I", str(out / "pmsis_emu"),
                str(out / "model.c"), str(out / "emu_main.c"), str(out / "pmsis_emu" / "pmsis.c")]
    return [str(out / "model.c"), str(out / "main.c")]


@pytest.mark.parametrize("name, target", CASES)
def test_compiles_with_strict_aliasing_warnings(projects, name, target, host_cc, tmp_path):
    out, _ = projects[name, target]
    done = subprocess.run([find_cc(), *STRICT, *_sources(out, target), "-o", str(tmp_path / "t")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name, target", CASES)
def test_stays_bit_exact(projects, name, target, host_cc):
    out, schedule = projects[name, target]
    result = compare(out, schedule, verify_inputs(schedule, 20, seed=5))
    assert result.mismatches == 0, result.first
    if (name, target) == ("kws_dscnn", "host"):
        sanitized = compare(out, schedule, verify_inputs(schedule, 20, seed=6), sanitize=True)
        assert sanitized.mismatches == 0, sanitized.first


def _with_buffer(schedule, dtype, offset):
    """A copy of the schedule whose first step output is retyped and moved (render only)."""
    name = schedule.steps[0].output
    buffers = dict(schedule.buffers)
    buffers[name] = replace(buffers[name], dtype=dtype, offset=offset)
    return replace(schedule, buffers=buffers), name


@pytest.mark.parametrize("dtype, member", [("int16", "i16"), ("uint16", "u16"), ("int32", "i32")])
def test_each_buffer_type_takes_its_own_member(projects, dtype, member):
    schedule, name = _with_buffer(projects["sine", "host"][1], dtype, 8)
    source = host.render(schedule, "m.onnx")["model.c"]
    index = 8 // ITEMSIZE[dtype]
    assert re.search(rf"#define {name} \(&arena\.{member}\[{index}\]\)", source)
    assert "#error" not in source


def test_a_misaligned_offset_is_refused_before_any_c(projects):
    schedule, _ = _with_buffer(projects["sine", "host"][1], "int16", 7)
    with pytest.raises(AssertionError, match="not aligned"):
        host.render(schedule, "m.onnx")
