"""The project directory: --force replaces a project only when every file in it is mcugen's
(subfolders included, and what simulate/verify built into it), the swap is atomic, and the
destination may be given as `.`, with a trailing slash or through a symlink."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mcugen
from conftest import require_tool
from mcugen.codegen import project as project_dir
from mcugen.errors import MCUGenError
from mcugen.ir.schedule import Schedule
from onnx_factory import conv_relu_gemm, save

RANGE = ("--input-range", "-1:1")


def mcugen_cli(*args, cwd=None):
    done = subprocess.run([sys.executable, "-m", "mcugen", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=dict(os.environ, MCUGEN_DEBUG=""))
    return done.returncode, done.stdout, done.stderr


def build(model, out, *extra, cwd=None):
    code, stdout, err = mcugen_cli("build", model, "-o", out, *RANGE, *extra, cwd=cwd)
    assert code == 0, err
    return stdout


def tree(root: Path) -> dict:
    """relative path -> bytes of every file under root."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def leftovers(parent: Path, name: str) -> list:
    """Temporary or backup directories a write left beside the project."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def assert_refused_naming(code, err, name):
    lines = [line for line in err.splitlines() if line.startswith("mcugen: error:")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert name in lines[0] and "did not write" in lines[0], lines[0]


@pytest.fixture
def model(tmp_path):
    return save(conv_relu_gemm(), tmp_path / "small.onnx")


@pytest.mark.parametrize("target, user_file", [("host", "build/notes.txt"),
                                               ("gap8", "pmsis_emu/my_patch.h")])
def test_user_file_in_a_subfolder_survives_force(tmp_path, model, target, user_file):
    out = tmp_path / "proj"
    build(model, out, "--target", target)
    (out / user_file).parent.mkdir(exist_ok=True)
    (out / user_file).write_text("mine")
    before = tree(out)
    code, _, err = mcugen_cli("build", model, "-o", out, *RANGE, "--target", target, "--force")
    assert_refused_naming(code, err, user_file)
    assert tree(out) == before
    assert leftovers(tmp_path, "proj") == []


def test_force_with_dot_from_inside_the_project_rebuilds_it(tmp_path, model):
    out = tmp_path / "proj"
    build(model, out)
    build(model, ".", "--wbits", "4", "--force", cwd=out)
    assert (out / "model.c").is_file()
    assert Schedule.load(out).meta["options"]["wbits"] == 4
    assert leftovers(tmp_path, "proj") == []
    assert not any(p.name.startswith(".") and p.is_dir() for p in out.iterdir())


@pytest.mark.parametrize("spelling", ["trailing slash", "symlink"])
def test_force_through_a_trailing_slash_or_a_symlink(tmp_path, model, spelling):
    out = tmp_path / "proj"
    build(model, out)
    if spelling == "symlink":
        given = tmp_path / "link"
        given.symlink_to(out, target_is_directory=True)
    else:
        given = f"{out}{os.sep}"
    build(model, given, "--wbits", "4", "--force")
    assert Schedule.load(out).meta["options"]["wbits"] == 4
    assert spelling != "symlink" or (tmp_path / "link").resolve() == out.resolve()
    assert leftovers(tmp_path, "proj") == []


def test_force_after_verify_replaces_the_build_and_still_guards_it(tmp_path, model, host_cc):
    out = tmp_path / "proj"
    build(model, out)
    code, stdout, err = mcugen_cli("verify", out, "--n", "5")
    assert code == 0, stdout + err
    built = [path for path in tree(out) if path.startswith("build/")]
    assert built                                      # verify made its harness in build/
    (out / "build" / "host" / "mine.txt").write_text("mine")
    code, _, err = mcugen_cli("build", model, "-o", out, *RANGE, "--force")
    assert_refused_naming(code, err, "build/host/mine.txt")
    (out / "build" / "host" / "mine.txt").unlink()
    build(model, out, "--force")
    assert not (out / "build").exists()               # a fresh project: no stale harness


def test_force_after_simulate_on_qemu(tmp_path, model):
    """simulate --on qemu adds build/qemu and profile.json; both are mcugen's."""
    for tool in ("make", "riscv64-unknown-elf-gcc", "qemu-system-riscv32"):
        require_tool(tool)
    out = tmp_path / "proj"
    build(model, out)
    code, stdout, err = mcugen_cli("simulate", out, "--on", "qemu", "--n", "2")
    assert code == 0, stdout + err
    assert (out / "profile.json").is_file()
    build(model, out, "--force")
    assert not (out / "profile.json").exists()


def _fail_moving_into_place(monkeypatch, out: Path):
    """os.rename fails when the new project would take `out`'s place (a full disk, say)."""
    real_rename = os.rename

    def rename(src, dst):
        src, dst = Path(src), Path(dst)
        if dst == out and src.name.startswith(f".{out.name}.") and not src.name.endswith(".old"):
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)
    monkeypatch.setattr(project_dir.os, "rename", rename)


def _fail_writing(monkeypatch, out: Path):
    """The write is interrupted half way (Ctrl-C while the constants are saved)."""
    def save(self, directory):
        (Path(directory) / "schedule.json").write_text("{")
        raise KeyboardInterrupt
    monkeypatch.setattr(Schedule, "save", save)


@pytest.mark.parametrize("failure, error", [(_fail_moving_into_place, MCUGenError),
                                            (_fail_writing, KeyboardInterrupt)])
def test_an_interrupted_write_leaves_the_old_project(tmp_path, model, monkeypatch, failure, error):
    out = tmp_path / "proj"
    mcugen.build(model, out=out, input_range=(-1, 1))
    before = tree(out)
    failure(monkeypatch, out)
    with pytest.raises((MCUGenError, OSError, KeyboardInterrupt)) as raised:
        mcugen.build(model, out=out, force=True, input_range=(-1, 1), wbits=4)
    assert tree(out) == before
    assert leftovers(tmp_path, "proj") == []
    assert raised.type is error           # a disk error is one clean line, Ctrl-C stays Ctrl-C


def test_manifest_lists_every_file_written_in_subfolders(tmp_path, model):
    out = tmp_path / "proj"
    build(model, out, "--target", "gap8")
    written = project_dir.read_manifest(out)["files"]
    assert "pmsis_emu/pmsis.h" in written and "pmsis_emu/bsp/fs.h" in written
    assert sorted(written) == sorted(tree(out).keys() - {".mcugen"})
