"""Small ONNX models built with onnx.helper, for op conformance and bad-input tests. The test
code is the script that makes them; they are written to a temporary directory."""
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from mcugen.frontend.onnx_reader import import_model
from mcugen.reference.float_ir import run_float


def make_model(nodes, inputs, outputs, initializers=(), opset=13, name="t"):
    graph = helper.make_graph(nodes, name, inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k)
                               for k, v in initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def tensor(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def conv_relu_gemm(weight=None, conv_name="conv", batch=1, extra_dim=4):
    """input [batch,2,4,extra] -> Conv 3x3 pad 1 -> Relu -> Flatten -> Gemm(3)."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 2, 3, 3)) if weight is None else weight
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name=conv_name, pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], name="fc", transB=1)]
    inits = [("w", w), ("b", rng.normal(size=4) * 0.1), ("gw", rng.normal(size=(3, 4 * 4 * extra_dim))),
             ("gb", rng.normal(size=3))]
    return make_model(nodes, [tensor("x", [batch, 2, 4, extra_dim])], [tensor("y", [batch, 3])], inits)


def save(model, path):
    onnx.save(model, str(path))
    return path


def float_ir_matches_onnxruntime(path, x, tolerance=1e-4):
    """mcugen's float IR of the model at `path` equals onnxruntime's output on the samples x
    (input "x", one sample per run); returns the IR graph."""
    x = np.asarray(x, dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = np.concatenate([session.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
    graph = import_model(onnx.load(str(path)))
    got = run_float(graph, x.astype(np.float64))[graph.output].reshape(want.shape)
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)
    return graph
