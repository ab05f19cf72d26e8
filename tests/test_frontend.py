"""The float IR (after folding and fusion) against onnxruntime on every shared model."""
import numpy as np
import onnxruntime as ort
import pytest

from conftest import MODELS, shared_model
from mcugen.frontend.onnx_reader import import_model, read_model
from mcugen.ops.softmax import apply_output_transform
from mcugen.passes import run_flow
from mcugen.reference.float_ir import run_float


@pytest.mark.parametrize("name", list(MODELS))
def test_float_ir_matches_onnxruntime(name):
    path = shared_model(name)
    graph = run_flow(import_model(read_model(path)))
    session = ort.InferenceSession(str(path))
    spec = session.get_inputs()[0]
    lo, hi = MODELS[name]
    x = np.random.default_rng(0).uniform(lo, hi, size=(6,) + tuple(graph.shapes[graph.input][1:]))
    x = x.astype(np.float32)
    want = np.concatenate([session.run(None, {spec.name: xi[None]})[0] for xi in x])
    got = apply_output_transform(graph.output_transform, run_float(graph, x.astype(np.float64))[graph.output])
    np.testing.assert_allclose(got, want.reshape(got.shape), rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_batchnorm_and_bias_adds_are_folded():
    graph = run_flow(import_model(read_model(shared_model("mnist_mlp_bn"))))
    assert [n.op for n in graph.nodes] == ["Gemm", "Gemm", "Gemm"]
    graph = run_flow(import_model(read_model(shared_model("mnist8"))))
    assert [n.op for n in graph.nodes] == ["Conv", "MaxPool", "Conv", "MaxPool", "Reshape", "Gemm"]
    assert graph.nodes[0].attrs["activation"] == ("Relu",)


def test_nhwc_transpose_before_flatten_becomes_free():
    graph = run_flow(import_model(read_model(shared_model("resnet8"))))
    assert "Transpose" not in [n.op for n in graph.nodes]
    assert graph.output_transform == "Softmax"
