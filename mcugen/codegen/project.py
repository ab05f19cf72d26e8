"""Write a generated project atomically: everything goes to a temporary directory beside the
destination and is swapped into place by renames only when complete. A `.mcugen` manifest
lists every file mcugen wrote into the project (relative paths, subfolders included; builds
run by simulate/verify add theirs), so --force replaces a project only when every file in it
is mcugen's, and never deletes anything else."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from mcugen.version import __version__
from mcugen.errors import MCUGenError

MANIFEST = ".mcugen"
PARTIAL_MANIFEST = ".mcugen.partial"     # the next manifest, until it replaces the old one
MANIFEST_FORMAT = 2            # 2: "files" lists every file; earlier: top-level names only
# written into a project by cli.py's `simulate --on qemu` after the fact, at the top level
WRITTEN_LATER = {"profile.json"}


def resolve_out(out) -> Path:
    """The real destination: `-o .`, a trailing slash or a symlink name the directory itself,
    so the temporary directory and the backup go beside it, never inside it."""
    return Path(out).expanduser().resolve()


def project_files(root: Path) -> set:
    """Every file under root as a relative POSIX path (symlinks listed, never followed), the
    manifest excluded. Empty directories are not listed: removing one loses nothing."""
    def unreadable(error):
        raise MCUGenError(f"cannot read '{error.filename}': {error.strerror}")
    found = set()
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        base = Path(dirpath).relative_to(root)
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        found.update((base / name).as_posix() for name in filenames + links)
    found.difference_update({MANIFEST, PARTIAL_MANIFEST})
    return found


def read_manifest(out: Path) -> dict:
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        raise MCUGenError(f"'{out / MANIFEST}' is unreadable; remove '{out}' yourself or choose "
                          f"another -o") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise MCUGenError(f"'{out / MANIFEST}' is not an mcugen manifest; choose another -o")
    return manifest


def write_manifest(out: Path, files, manifest_format=MANIFEST_FORMAT) -> None:
    """Replaced by a rename, so an interruption leaves the old manifest, never half of one."""
    text = json.dumps({"mcugen": __version__, "format": manifest_format, "files": sorted(files)},
                      indent=1)
    partial = out / PARTIAL_MANIFEST
    partial.write_text(text)
    os.replace(partial, out / MANIFEST)


def foreign_files(out: Path) -> list:
    """Files in the project that mcugen did not write, sorted."""
    manifest = read_manifest(out)
    if manifest.get("format", 1) < MANIFEST_FORMAT:
        raise MCUGenError(f"'{out}' was made by an older mcugen that did not list its files; "
                          f"remove it yourself or choose another -o")
    return sorted(project_files(out) - set(manifest["files"]) - WRITTEN_LATER)


def check_destination(out, force: bool) -> None:
    """Refuse to write over anything mcugen did not make; raises before any work is done."""
    out = resolve_out(out)
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
    foreign = foreign_files(out)
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise MCUGenError(f"'{out}' also holds a file mcugen did not write: {foreign[0]}{more}; "
                          f"move it away or choose another -o")


def _write_files(tmp: Path, files: dict, save_extra) -> None:
    for name, text in files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            (tmp / name).write_bytes(text)      # data files (GAP8's model_l3.bin)
        else:
            (tmp / name).write_text(text)
    save_extra(tmp)
    os.chmod(tmp, 0o755)           # mkdtemp makes it private; a project is an ordinary dir
    write_manifest(tmp, project_files(tmp))


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Old project -> a backup beside it, new one -> its place, then drop the backup. Each
    step is one rename, so at every moment `out` is the old project or the new one."""
    if not out.exists():
        os.rename(tmp, out)
        return
    backup = tmp.with_name(f"{tmp.name}.old")
    os.rename(out, backup)
    try:
        os.rename(tmp, out)
    except BaseException:
        _restore(backup, out)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def _restore(backup: Path, out: Path) -> None:
    try:
        os.rename(backup, out)
    except OSError as exc:
        raise MCUGenError(f"could not write '{out}', nor put the old project back "
                          f"({exc.strerror or exc}): it is in '{backup}'") from None


def write_project(out, files: dict, save_extra, force: bool) -> None:
    """files: name -> text; save_extra(tmpdir) writes binary artifacts (schedule, constants)."""
    out = resolve_out(out)
    check_destination(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write_files(tmp, files, save_extra)
        _swap_into_place(tmp, out)
    except OSError as exc:
        raise MCUGenError(f"could not write '{out}' ({exc.strerror or exc}); "
                          f"it is left as it was") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)     # gone already when the swap succeeded


@contextmanager
def recording_new_files(project):
    """Around a build that writes into the project (make in simulate/verify): the files it
    made are added to the manifest, so a later --force knows them for mcugen's."""
    project = Path(project)
    if not (project / MANIFEST).is_file():
        yield
        return
    before = project_files(project)
    try:
        yield
    finally:
        made = project_files(project) - before
        if made:
            manifest = read_manifest(project)
            write_manifest(project, set(manifest["files"]) | made, manifest.get("format", 1))


def require_project(out: Path) -> Path:
    out = Path(out)
    if not (out / MANIFEST).is_file() or not (out / "schedule.json").is_file():
        raise MCUGenError(f"'{out}' is not an mcugen project (run `mcugen build ... -o {out}` first)")
    return out
