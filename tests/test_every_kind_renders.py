"""Every step kind the op registry lowers to renders on every target: a small graph that lowers
to all of them but the embedding lookup (which needs an integer input: a second graph), built
for host, rv32, gap8 and hls. A new op whose step kind has no template on a target (or that
these graphs do not reach) fails here."""
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import mcugen
from mcugen.ops import all_ops
from mcugen.targets import TARGETS
from onnx_factory import make_model, save, tensor

STEP_KINDS = sorted({kind for op in all_ops().values() for kind in op.step_kinds})


def every_kind_model(path):
    """conv2d, add, pad, maxpool, avgpool, concat, constant, reduce_sum, reduce_minmax, mul
    (two broadcasts), matmul, softmax, gather, recode, transpose, layernorm and dense, in one graph."""
    rng = np.random.default_rng(1)
    node = helper.make_node
    nodes = [node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             node("Relu", ["c1"], ["r1"], name="relu1"),
             node("Conv", ["x", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             node("Add", ["r1", "c2"], ["a"], name="add"),
             node("Pad", ["a", "pads"], ["p"], name="pad", mode="constant"),
             node("MaxPool", ["p"], ["m"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]),
             node("AveragePool", ["m"], ["v1"], name="avgpool1", kernel_shape=[2, 2]),
             node("Conv", ["m", "w3", "b3"], ["c3"], name="conv3", kernel_shape=[1, 1]),
             node("AveragePool", ["c3"], ["v2"], name="avgpool2", kernel_shape=[2, 2]),
             node("Concat", ["v1", "v2"], ["cat"], name="concat", axis=1),
             node("Add", ["cat", "pos"], ["catp"], name="position"),     # a constant per element
             node("ReduceMean", ["catp"], ["mean"], name="mean_c", axes=[1], keepdims=1),
             node("ReduceMax", ["cat"], ["peak"], name="max_w", axes=[3], keepdims=1),
             node("Mul", ["catp", "mean"], ["g1"], name="gate_c"),
             node("Mul", ["g1", "peak"], ["g2"], name="gate_w"),
             node("Transpose", ["g2"], ["g2t"], name="swap_hw", perm=[0, 1, 3, 2]),
             node("MatMul", ["g2", "g2t"], ["mm"], name="matmul"),          # of two activations
             node("Softmax", ["mm"], ["att"], name="softmax", axis=-1),     # attention weights
             node("Transpose", ["att"], ["tr"], name="transpose", perm=[0, 2, 3, 1]),
             node("Gather", ["tr", "gi"], ["tg"], name="gather", axis=3),    # an index table
             # per channel, after a transpose: nothing to fuse into, nothing to move past
             node("PRelu", ["tg", "slope"], ["t"], name="prelu"),
             node("ReduceMean", ["t"], ["ln_mu"], name="ln_mean", axes=[-1]),
             node("Sub", ["t", "ln_mu"], ["ln_d"], name="ln_center"),
             node("Mul", ["ln_d", "ln_d"], ["ln_d2"], name="ln_square"),
             node("ReduceMean", ["ln_d2"], ["ln_var"], name="ln_var", axes=[-1]),
             node("Add", ["ln_var", "ln_eps"], ["ln_ve"], name="ln_add_eps"),
             node("Sqrt", ["ln_ve"], ["ln_sd"], name="ln_std"),
             node("Div", ["ln_d", "ln_sd"], ["ln_n"], name="ln_normalize"),
             node("Mul", ["ln_n", "ln_g"], ["ln_ng"], name="ln_gamma"),
             node("Add", ["ln_ng", "ln_b"], ["tn"], name="layernorm"),   # one layernorm step
             node("Flatten", ["tn"], ["f"], name="flatten"),
             node("Gemm", ["f", "gw", "gb"], ["y"], name="fc", transB=1)]
    inits = [("w1", rng.normal(size=(4, 2, 3, 3))), ("b1", rng.normal(size=4) * 0.1),
             ("w2", rng.normal(size=(4, 2, 3, 3))), ("b2", rng.normal(size=4) * 0.1),
             ("w3", rng.normal(size=(2, 4, 1, 1))), ("b3", rng.normal(size=2) * 0.1),
             ("gw", rng.normal(size=(3, 6 * 3 * 3))), ("gb", rng.normal(size=3)),
             ("pos", rng.normal(size=(1, 6, 3, 3))), ("slope", rng.uniform(0.1, 0.3, size=(3, 1, 1))),
             ("ln_eps", np.array(1e-5)), ("ln_g", rng.normal(size=6)), ("ln_b", rng.normal(size=6))]
    model = make_model(nodes, [tensor("x", [1, 2, 6, 6])], [tensor("y", [1, 3])], inits)
    model.graph.initializer.append(numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1]), "pads"))
    model.graph.initializer.append(numpy_helper.from_array(np.array([5, 0, 2, 2, -5, 3]), "gi"))
    return save(model, path)


def token_model(path):
    """Token ids [1, 5] -> an embedding lookup (12 rows of 4) -> a token Linear."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Gather", ["table", "x"], ["e"], name="embed", axis=0),
             helper.make_node("MatMul", ["e", "lw"], ["y"], name="linear")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", onnx.TensorProto.INT64, [1, 5])],
                       [tensor("y", [1, 5, 3])], [("table", rng.normal(size=(12, 4))),
                                                  ("lw", rng.normal(size=(4, 3)))])
    return save(model, path)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_step_kind_renders_on_every_target(target, tmp_path):
    kinds = set()
    for name, model in (("kinds", every_kind_model), ("tokens", token_model)):
        project = mcugen.build(model(tmp_path / f"{name}.onnx"), target=target, out=tmp_path / name,
                               input_range=(-1.0, 1.0))
        kinds |= {step.kind for step in project.schedule.steps}
        sources = "".join(path.read_text() for path in (tmp_path / name).rglob("*")
                          if path.suffix in (".c", ".cpp", ".h") and "pmsis_emu" not in path.parts)
        for step in project.schedule.steps:
            assert step.name in sources, f"{target}: step {step.name} ({step.kind}) is not in the code"
    assert sorted(kinds) == STEP_KINDS, f"the graphs reach {sorted(kinds)}, the registry lowers to {STEP_KINDS}"
