"""Write a generated project atomically: everything goes to a temporary directory beside the
destination and is renamed into place only when complete. A `.mcugen` manifest marks the
directories mcugen made; --force replaces only such a directory, never anything else."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from mcugen import __version__
from mcugen.errors import MCUGenError

MANIFEST = ".mcugen"
OWN_EXTRA = {"build"}          # what simulate/verify add to a project


def check_destination(out: Path, force: bool) -> None:
    """Refuse to write over anything mcugen did not make; raises before any work is done."""
    if not out.exists():
        if out.parent.exists() and not out.parent.is_dir():
            raise MCUGenError(f"cannot create '{out}': '{out.parent}' is not a directory")
        return
    if not out.is_dir():
        raise MCUGenError(f"'{out}' exists and is not a directory; choose another -o")
    entries = set(os.listdir(out))
    if not entries:
        return
    if MANIFEST not in entries:
        raise MCUGenError(f"'{out}' exists and was not made by mcugen; choose another -o "
                          f"(mcugen never deletes what it did not write)")
    if not force:
        raise MCUGenError(f"'{out}' holds an earlier mcugen project; pass --force to replace it")
    owned = set(json.loads((out / MANIFEST).read_text()).get("files", [])) | OWN_EXTRA | {MANIFEST}
    foreign = sorted(entries - owned)
    if foreign:
        raise MCUGenError(f"'{out}' also holds files mcugen did not write ({foreign[0]}, ...); "
                          f"move them away or choose another -o")


def write_project(out: Path, files: dict, save_extra, force: bool) -> None:
    """files: name -> text; save_extra(tmpdir) writes binary artifacts (schedule, constants)."""
    out = Path(out)
    check_destination(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, text in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(text, bytes):
                (tmp / name).write_bytes(text)      # data files (GAP8's model_l3.bin)
            else:
                (tmp / name).write_text(text)
        save_extra(tmp)
        os.chmod(tmp, 0o755)           # mkdtemp makes it private; a project is an ordinary dir
        names = sorted(os.listdir(tmp))
        (tmp / MANIFEST).write_text(json.dumps({"mcugen": __version__, "files": names}, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def require_project(out: Path) -> Path:
    out = Path(out)
    if not (out / MANIFEST).is_file() or not (out / "schedule.json").is_file():
        raise MCUGenError(f"'{out}' is not an mcugen project (run `mcugen build ... -o {out}` first)")
    return out
