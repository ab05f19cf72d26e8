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


# ---- pytest-xdist (scripts/test.sh runs `-n auto --dist loadgroup`) ----------------------------
# A test file's module-scoped fixtures and its module-level memos (built projects, schedules) are
# built once per worker process that runs a test needing them. With --dist loadgroup the tests
# below go to one worker as one unit, so that work is done once; every other test is handed out
# on its own (the finest balance). Without xdist, or with another --dist, this changes nothing.
MEMO_MODULES = {"test_gap8.py", "test_gap8_toolchain.py"}     # module dicts of built projects


def _shares_module_work(item):
    if item.path.name in MEMO_MODULES:
        return True
    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info else ()):
        # the project's own fixtures (pytest's builtins, tmp_path_factory..., have no baseid)
        if defs and defs[-1].scope != "function" and defs[-1].baseid:
            return True
    return False


@pytest.hookimpl(tryfirst=True)      # before xdist's hook turns the marks into node ids
def pytest_collection_modifyitems(config, items):
    # an xdist worker (where items are collected) has dist "no" and loadgroup set
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        if item.get_closest_marker("xdist_group") is None and _shares_module_work(item):
            item.add_marker(pytest.mark.xdist_group(item.path.name))


def pytest_sessionfinish(session, exitstatus):
    """The README's test command (scripts/test.sh sets MCUGEN_SKIPS=fail) fails on any skip: a
    skipped test is not a passing one. MCUGEN_ALLOW_SKIPS=1 lets a partial machine through.
    Under xdist the controller decides: it receives every worker's reports (and prints -rs)."""
    if os.environ.get("MCUGEN_SKIPS") != "fail" or os.environ.get("MCUGEN_ALLOW_SKIPS") == "1":
        return
    if hasattr(session.config, "workerinput"):      # an xdist worker: the controller counts
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and exitstatus == 0:
        reporter.ensure_newline()
        if reporter._tw.width_of_current_line:      # after the progress line's [100%]
            reporter.write("\n")
        reporter.write_line(f"{skipped} test(s) skipped: a skip fails the suite "
                            "(MCUGEN_ALLOW_SKIPS=1 to accept them)", red=True)
        session.exitstatus = 1
