import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_MODELS = REPO / "models"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# the real models in models/, with the input range each expects (models/README.md)
MODELS = {
    "mnist8": (0.0, 255.0),
    "mnist_mlp_bn": (0.0, 1.0),
    "sine": (0.0, 6.2832),
    "resnet8": (0.0, 255.0),
    "kws_dscnn": (-30.0, 30.0),
}


def require_tool(name):
    """A tool the test needs: in CI its absence is a failure, never a skip."""
    if shutil.which(name):
        return
    if IN_CI:
        pytest.fail(f"{name} is not installed (the test command should have installed it)")
    pytest.skip(f"{name} not installed")


def shared_model(name):
    path = SHARED_MODELS / f"{name}.onnx"
    if not path.is_file():
        if IN_CI:
            pytest.fail(f"shared model {path} is missing")
        pytest.skip(f"shared model {path} is missing")
    return path


@pytest.fixture
def host_cc():
    require_tool("cc")
    require_tool("make")


def pytest_sessionfinish(session, exitstatus):
    """The README's test command (scripts/test.sh sets MCUGEN_SKIPS=fail) fails on any skip: a
    skipped test is not a passing one. MCUGEN_ALLOW_SKIPS=1 lets a partial machine through."""
    if os.environ.get("MCUGEN_SKIPS") != "fail" or os.environ.get("MCUGEN_ALLOW_SKIPS") == "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and exitstatus == 0:
        reporter.ensure_newline()
        reporter.write_line(f"{skipped} test(s) skipped: a skip fails the suite "
                            "(MCUGEN_ALLOW_SKIPS=1 to accept them)", red=True)
        session.exitstatus = 1
