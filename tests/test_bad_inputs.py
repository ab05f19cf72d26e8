"""Bad input: one line on stderr, a non-zero exit, no traceback, and nothing half-written."""
import os
import subprocess
import sys

import numpy as np
import pytest
from onnx import helper

from conftest import shared_model
from onnx_factory import conv_relu_gemm, make_model, save, tensor


def mcugen(*args, cwd=None):
    done = subprocess.run([sys.executable, "-m", "mcugen", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=dict(os.environ, MCUGEN_DEBUG=""))
    return done.returncode, done.stdout, done.stderr


def assert_clean_failure(code, err, *words):
    assert code == 1, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("mcugen: error:")]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]


def build_fails(tmp_path, model_path, *words, extra=()):
    out = tmp_path / "out"
    code, _, err = mcugen("build", model_path, "-o", out, "--input-range", "0:1", *extra)
    assert_clean_failure(code, err, *words)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []   # no temp left


def test_missing_file(tmp_path):
    build_fails(tmp_path, tmp_path / "nope.onnx", "not found")


def test_not_onnx(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x89PNG this is not a model" * 10)
    build_fails(tmp_path, path, "ONNX")


def test_truncated_model(tmp_path):
    data = shared_model("mnist8").read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    build_fails(tmp_path, path, "cut.onnx")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_weight(tmp_path, bad):
    weight = np.random.default_rng(0).normal(size=(4, 2, 3, 3))
    weight[1, 0, 1, 1] = bad
    path = save(conv_relu_gemm(weight), tmp_path / "nan.onnx")
    build_fails(tmp_path, path, "'w'", "NaN" if np.isnan(bad) else "Inf")


def test_unsupported_op_names_node_and_op(tmp_path):
    model = make_model([helper.make_node("Sin", ["x"], ["y"], name="my_sine")],
                       [tensor("x", [1, 4])], [tensor("y", [1, 4])])
    build_fails(tmp_path, save(model, tmp_path / "sin.onnx"), "my_sine", "Sin", "Conv")


def test_dynamic_non_batch_dimension(tmp_path):
    model = conv_relu_gemm()
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "width"
    build_fails(tmp_path, save(model, tmp_path / "dyn.onnx"), "dynamic dimension 3", "width")


def test_symbolic_batch_is_fixed_to_one(tmp_path, host_cc):
    model = conv_relu_gemm()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    path = save(model, tmp_path / "batch.onnx")
    code, out, err = mcugen("build", path, "-o", tmp_path / "b", "--input-range", "-1:1")
    assert code == 0, err


def test_bad_option_values(tmp_path):
    build_fails(tmp_path, shared_model("sine"), "wbits", extra=("--wbits", "9"))
    build_fails(tmp_path, shared_model("sine"), "exponent", extra=("--exponent", "banana"))


def test_all_zero_layer_builds_and_verifies(tmp_path, host_cc):
    path = save(conv_relu_gemm(np.zeros((4, 2, 3, 3))), tmp_path / "zero.onnx")
    out = tmp_path / "z"
    code, _, err = mcugen("build", path, "-o", out, "--input-range", "-1:1", "--wbits", "4")
    assert code == 0, err
    code, stdout, err = mcugen("verify", out, "--n", "50")
    assert code == 0 and "0 differences" in stdout, stdout + err


def test_output_directory_not_made_by_mcugen_is_left_alone(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    for args in ((), ("--force",)):
        code, _, err = mcugen("build", shared_model("sine"), "-o", out, "--input-range", "0:6.3", *args)
        assert_clean_failure(code, err, "not made by mcugen")
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]


def test_force_replaces_only_its_own_project(tmp_path):
    out = tmp_path / "proj"
    assert mcugen("build", shared_model("sine"), "-o", out, "--input-range", "0:6.3")[0] == 0
    code, _, err = mcugen("build", shared_model("sine"), "-o", out, "--input-range", "0:6.3")
    assert_clean_failure(code, err, "--force")
    assert mcugen("build", shared_model("sine"), "-o", out, "--input-range", "0:6.3", "--force")[0] == 0
    (out / "notes.txt").write_text("mine")
    code, _, err = mcugen("build", shared_model("sine"), "-o", out, "--input-range", "0:6.3", "--force")
    assert_clean_failure(code, err, "notes.txt")
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.c").is_file()


def test_simulate_rejects_inputs_of_the_wrong_shape(tmp_path, host_cc):
    out = tmp_path / "proj"
    assert mcugen("build", shared_model("mnist8"), "-o", out, "--input-range", "0:255")[0] == 0
    np.save(tmp_path / "x.npy", np.zeros((3, 27, 28), dtype=np.float32))
    code, _, err = mcugen("simulate", out, "--inputs", tmp_path / "x.npy")
    assert_clean_failure(code, err, "[3, 27, 28]", "(N, 1, 28, 28)")
    np.save(tmp_path / "ok.npy", np.full((3, 784), 128, dtype=np.float32))
    code, stdout, err = mcugen("simulate", out, "--inputs", tmp_path / "ok.npy", "--output", tmp_path / "y.npy")
    assert code == 0, err
    assert np.load(tmp_path / "y.npy").shape == (3, 10)


@pytest.mark.parametrize("target, sources", [("host", ["model.c"]),
                                             ("hls", ["firmware/model.cpp", "firmware/constants.h",
                                                      "firmware/model.h"])])
def test_hostile_node_names_become_safe_identifiers(target, sources, tmp_path, host_cc):
    evil = 'x */ int pwned = 1; /* \n#include "/etc/passwd"\n'
    model = conv_relu_gemm(conv_name=evil)
    model.graph.node[3].name = "9 while(1);"
    path = save(model, tmp_path / "evil.onnx")
    out = tmp_path / "e"
    code, _, err = mcugen("build", path, "-o", out, "--input-range", "-1:1", "--target", target)
    assert code == 0, err
    for name in sources:
        source = (out / name).read_text()
        assert "pwned" not in source.replace("_pwned_", "") and "passwd" not in source.replace("_passwd", "")
        assert "while(1)" not in source and "/etc" not in source
    code, stdout, err = mcugen("verify", out, "--n", "20")
    assert code == 0, stdout + err


def test_project_commands_refuse_a_directory_that_is_not_a_project(tmp_path):
    for command in ("verify", "simulate", "report"):
        code, _, err = mcugen(command, tmp_path)
        assert_clean_failure(code, err, "not an mcugen project")
