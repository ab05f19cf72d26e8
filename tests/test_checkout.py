"""The checkout stands alone: a clone anywhere runs the suite, the examples and the benches with
what the repository holds (models/ with its provenance, docs/design.md for the contract)."""
import re
import subprocess
from pathlib import Path

from conftest import MODELS, REPO

# a path that leaves the checkout: a sibling folder, this machine's work folder, or a walk up
# past the repository's root from a file inside it
OUTSIDE = re.compile(r"\.\./shared|/work/|\bREPO\.parent\b|parents\[[2-9]\]|\.parent\.parent\.parent")
FOLDERS = ("mcugen", "tests", "bench", "scripts", "docs", "examples", "templates", "boards", "README.md")


def tracked_files():
    listed = subprocess.run(["git", "ls-files", "--", *FOLDERS], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.split()
    return [REPO / name for name in listed if not name.endswith((".onnx", ".npy", ".png", ".npz"))]


def test_nothing_reaches_outside_the_checkout():
    this = Path(__file__).resolve()
    found = [f"{path.relative_to(REPO)}:{n}: {line.strip()}"
             for path in tracked_files() if path.resolve() != this
             for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
             if OUTSIDE.search(line)]
    assert not found, "\n".join(found)


def test_the_models_and_the_contract_are_in_the_repository():
    for name in MODELS:
        assert (REPO / "models" / f"{name}.onnx").is_file(), name
        assert f"{name}.onnx" in (REPO / "models" / "README.md").read_text(), name
    assert "## 1. The quantizer" in (REPO / "docs" / "design.md").read_text()
