"""mcugen explore: a small sweep of the digits CNN (examples/) on rv32, checked against
oracles the sweep does not use: the Python integer reference on the saved Schedule (the sweep
runs the generated C), onnxruntime's float model, a brute-force Pareto check, PNG decoding,
and the files the HTML links to."""
import csv
import json
import re
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser

import numpy as np
import pytest

from conftest import REPO, require_tool
from onnx_factory import conv_relu_gemm, save

from mcugen.errors import MCUGenError

EXAMPLES = REPO / "examples"
MODEL = EXAMPLES / "digits_cnn.onnx"
LABELS = EXAMPLES / "digits_cnn_labels.npy"
# the sweep's three points, as the space file below declares them (in its order)
POINTS = [dict(scheme="uniform", wbits="8", abits="8", first_last_bits="8", weight_storage="auto"),
          dict(scheme="power", wbits="8", abits="8", first_last_bits="8", weight_storage="auto"),
          dict(scheme="power", wbits="4", abits="4", first_last_bits="same", weight_storage="codes")]
SPACE = """
[grid]
scheme = ["uniform", "power"]
bits = ["W8A8"]
[[point]]
scheme = "power"
bits = "W4A4"
first_last_bits = "same"
weight_storage = "codes"
"""


def mcugen(*args, check=True):
    done = subprocess.run([sys.executable, "-m", "mcugen", *map(str, args)], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise AssertionError(f"mcugen {' '.join(map(str, args))} failed: {done.stderr}")
    return done


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Calibrate on the first 32 saved digits, evaluate on all 64 (with their labels)."""
    for tool in ("riscv64-unknown-elf-gcc", "qemu-system-riscv32", "cc", "make"):
        require_tool(tool)
    root = tmp_path_factory.mktemp("explore")
    x = np.load(EXAMPLES / "digits_cnn_inputs.npy")
    np.save(root / "calib.npy", x[:32])
    np.save(root / "eval.npy", x)
    (root / "space.toml").write_text(SPACE)
    return root


def sweep_args(data, out, space="space.toml", *extra):
    return (MODEL, "--calib", data / "calib.npy", "--eval", data / "eval.npy", "--labels", LABELS,
            "--target", "rv32", "--space", data / space, "-o", out, *extra)


@pytest.fixture(scope="module")
def serial(data):
    out = data / "serial"
    done = mcugen("explore", *sweep_args(data, out))
    return out, done.stdout


def test_csv_has_one_row_per_point_in_space_order(serial):
    out, _ = serial
    rows = read_csv(out / "results.csv")
    assert len(rows) == len(POINTS)
    for row, point in zip(rows, POINTS):
        assert {k: row[k] for k in point} == point
        assert row["status"] == "ok" and row["fits"] == "True" and row["error"] == ""
        assert (out / row["project"] / "schedule.json").is_file()
        assert int(row["instructions"]) > int(row["macs"]) > 0
        # what the point's profile.json (as `mcugen simulate --on qemu` writes it) says
        profile = json.loads((out / row["project"] / "profile.json").read_text())
        assert profile["instructions"]["total"] == int(row["instructions"])
    stored = [r for r in json.loads((out / "results.json").read_text())["points"]]
    assert [r["id"] for r in stored] == [row["id"] for row in rows]


def _reference_outputs(project, x):
    """The point's saved Schedule run by the Python integer reference (the sweep evaluates
    with the generated C on the host)."""
    from mcugen.ir.schedule import Schedule
    from mcugen.reference.interpreter import run
    return run(Schedule.load(project), x).reshape(len(x), -1)


def test_accuracy_matches_the_reference_and_onnxruntime(serial, data):
    import onnxruntime as ort
    out, _ = serial
    row = read_csv(out / "results.csv")[2]          # the W4A4 point: the least trivial one
    x = np.load(data / "eval.npy")
    labels = np.load(LABELS)
    outputs = _reference_outputs(out / row["project"], x)
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    reference = np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
    assert float(row["top1"]) == pytest.approx(np.mean(outputs.argmax(1) == labels), abs=1e-12)
    assert float(row["float_agreement"]) == pytest.approx(
        np.mean(outputs.argmax(1) == reference.argmax(1)), abs=1e-12)
    error = np.linalg.norm(outputs - reference) / np.linalg.norm(reference)
    assert float(row["output_error"]) == pytest.approx(error, rel=1e-3)
    assert 0.5 < float(row["top1"]) <= 1.0


def test_pareto_column_is_exactly_the_non_dominated_set(serial):
    out, _ = serial
    rows = read_csv(out / "results.csv")
    objectives = [(-float(r["top1"]), int(r["flash_bytes"]), int(r["instructions"])) for r in rows]

    def beaten(i):
        return any(all(o <= p for o, p in zip(other, objectives[i])) and other != objectives[i]
                   for other in objectives)
    for i, row in enumerate(rows):
        assert (row["pareto"] == "True") == (not beaten(i)), row["id"]
    assert any(row["pareto"] == "True" for row in rows)


def test_stdout_prints_the_pareto_points_and_their_build_commands(serial):
    out, stdout = serial
    pareto = [r for r in read_csv(out / "results.csv") if r["pareto"] == "True"]
    commands = [line.strip() for line in stdout.splitlines() if line.strip().startswith("mcugen build")]
    assert len(commands) == len(pareto)
    for row in pareto:
        options = f"--scheme {row['scheme']} --wbits {row['wbits']} --abits {row['abits']}"
        assert any(options in c and f"-o {row['id']}" in c for c in commands), row["id"]
        assert f"{100 * float(row['top1']):.2f}" in stdout


def _png_size(path):
    """Width and height from the PNG's own header; the whole file decodes."""
    from matplotlib.image import imread
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert imread(path).shape[:2] == (height, width)
    return width, height


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.images = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a":
            self.hrefs.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs["src"])


def test_plots_are_pngs_and_the_page_links_every_project(serial):
    out, _ = serial
    for name in ("accuracy_vs_flash.png", "accuracy_vs_cost.png", "best_layers.png"):
        width, height = _png_size(out / name)
        assert width > 300 and height > 150
    links = Links()
    links.feed((out / "index.html").read_text())
    assert sorted(links.images) == sorted(["accuracy_vs_flash.png", "accuracy_vs_cost.png",
                                           "best_layers.png"])
    projects = [r["project"] for r in read_csv(out / "results.csv")]
    assert sorted(h.rstrip("/") for h in links.hrefs) == sorted(projects)
    for href in links.hrefs:
        assert (out / href / ".mcugen").is_file() and (out / href / "model.c").is_file()


def test_rerun_skips_finished_points(serial, data):
    out, _ = serial
    before = {p.name: p.stat().st_mtime_ns for p in (out / "projects").glob("*/report.json")}
    log = (out / "points.jsonl").read_text()
    done = mcugen("explore", *sweep_args(data, out))
    assert "3 from an earlier run" in done.stdout
    assert (out / "points.jsonl").read_text() == log
    assert {p.name: p.stat().st_mtime_ns for p in (out / "projects").glob("*/report.json")} == before


def test_jobs_2_gives_the_same_table(serial, data):
    out, _ = serial
    mcugen("explore", *sweep_args(data, data / "jobs2", "space.toml", "--jobs", "2"))
    assert (data / "jobs2" / "results.csv").read_text() == (out / "results.csv").read_text()


def test_dask_local_cluster_gives_the_same_table(serial, data):
    from distributed import LocalCluster
    out, _ = serial
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        mcugen("explore", *sweep_args(data, data / "dask", "space.toml", "--scheduler",
                                      cluster.scheduler_address))
    assert (data / "dask" / "results.csv").read_text() == (out / "results.csv").read_text()


def test_a_failing_point_has_its_one_line_error_and_the_others_finish(data):
    (data / "failing.toml").write_text(
        '[[point]]\nscheme = "uniform"\nbits = "W8A8"\n'
        '[[point]]\nscheme = "power"\nwbits = 1\nabits = 8\n'
        '[[point]]\nscheme = "power"\nbits = "W4A8"\nmethod = "nupes"\n')
    done = mcugen("explore", *sweep_args(data, data / "failing", "failing.toml"))
    rows = read_csv(data / "failing" / "results.csv")
    assert [r["status"] for r in rows] == ["ok", "error", "ok"]
    assert rows[1]["error"] == "--wbits must be between 2 and 8"
    assert rows[1]["pareto"] == "False" and rows[1]["project"] == ""
    assert f"failed: {rows[1]['id']}: --wbits must be between 2 and 8" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_a_point_that_does_not_fit_the_board_is_marked_not_dropped(data):
    """16 x 1200 bytes of Conv output cannot fit the HiFive1's 16 KB of RAM."""
    from mcugen.explore import explore
    model = save(conv_relu_gemm(extra_dim=1200), data / "wide.onnx")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 2, 4, 1200))
    (data / "one.toml").write_text('[[point]]\nscheme = "power"\nbits = "W8A8"\n')
    sweep = explore(model, x[:20], x[20:], target="rv32", board="hifive1-revb",
                    space=str(data / "one.toml"), out=data / "wide", measure="none")
    (record,) = sweep.records
    assert record["status"] == "does not fit" and record["fits"] is False
    assert "ram needs" in record["shortfall"] and "16,384 B" in record["shortfall"]
    assert record["ram_bytes"] > 16384 and 0 <= record["float_agreement"] <= 1
    assert sweep.fronts["pareto"] == []
    assert read_csv(data / "wide" / "results.csv")[0]["status"] == "does not fit"


def test_ctrl_c_keeps_finished_points_and_a_rerun_finishes(data):
    (data / "six.toml").write_text('[grid]\nscheme = ["uniform", "power"]\n'
                                   'bits = ["W8A8", "W4A8", "W4A4"]\n')
    out = data / "interrupted"
    # Ctrl-C's default restored in the child: a process that ignores SIGINT (a pytest-xdist
    # worker) passes that on, and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen([sys.executable, "-m", "mcugen", "explore",
                             *map(str, sweep_args(data, out, "six.toml"))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = out / "points.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    kept = len(read_csv(out / "results.csv"))
    assert 1 <= kept < 6
    (message,) = [line for line in stderr.splitlines() if line.startswith("mcugen:")]
    assert f"{kept} of 6 points are kept" in message and "run the same command again" in message
    assert "Traceback" not in stderr
    done = mcugen("explore", *sweep_args(data, out, "six.toml"))
    assert f"({kept} from an earlier run" in done.stdout
    rows = read_csv(out / "results.csv")
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)


def test_an_explore_directory_of_another_sweep_is_refused_unless_force(serial, data):
    out, _ = serial
    other = data / "other.toml"
    other.write_text('[[point]]\nscheme = "uniform"\nbits = "W8A8"\n')
    done = mcugen("explore", *sweep_args(data, out, "other.toml"), check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"mcugen: error: '{out}' holds a sweep of other inputs (different space); pass --force to "
        f"replace it or choose another -o"]
    stranger = data / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    done = mcugen("explore", *sweep_args(data, stranger, "other.toml", "--force"), check=False)
    assert done.returncode == 1 and "not an mcugen explore directory" in done.stderr
    assert (stranger / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("space, message", [
    ('[grid]\nbitz = ["W8A8"]\n', "unknown option 'bitz'"),
    ('[grid]\nbits = "W8A8"\n', "[grid] bits must be a non-empty list"),
    ('[grid]\nbits = ["8 bits"]\n', 'bits takes values like "W4A8"'),
    ("[grid\n", "is not valid TOML"),
])
def test_a_bad_space_file_is_one_line(data, space, message):
    from mcugen.explore.space import load_space
    path = data / "bad.toml"
    path.write_text(space)
    with pytest.raises(MCUGenError, match=re.escape(message)) as err:
        load_space(str(path))
    assert "\n" not in str(err.value)


def test_labels_of_the_wrong_length_are_refused_before_any_point(data):
    from mcugen.explore import explore
    x = np.load(data / "eval.npy")
    with pytest.raises(MCUGenError, match="--labels must be 64 integer class indices"):
        explore(MODEL, x[:32], x, labels=np.load(LABELS)[:10], space=str(data / "space.toml"),
                out=data / "never")
    assert not (data / "never").exists()
