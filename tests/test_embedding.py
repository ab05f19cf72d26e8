"""Token ids as the model's input, looking up constant tables (ops/embedding.py), on small
hand-made graphs: the float IR against onnxruntime on int64 ids; the generated C against the
reference bit for bit under ASan/UBSan on ids within the table and past it (both clamp to the
last row; a negative id reads row 0), with 8-bit ids and, for a table of more than 256 rows,
16-bit ids; the calibration's ids checked; the lookups mcugen does not do refused in one line."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import mcugen
from mcugen.errors import MCUGenError
from mcugen.frontend.onnx_reader import import_model
from mcugen.reference.float_ir import run_float
from mcugen.verify import compare
from onnx_factory import make_model, save, tensor

node = helper.make_node
RNG = np.random.default_rng(3)
TOKENS = 7


def ids_input(shape=(1, TOKENS)):
    return helper.make_tensor_value_info("x", onnx.TensorProto.INT64, list(shape))


def lookup_model(rows, row_shape=(2, 3)):
    """ids [1, 7] -> a table [rows, *row_shape] -> plus a position constant -> tokens [1, 7, 6]
    -> a Linear to 4 features."""
    width = int(np.prod(row_shape))
    nodes = [node("Gather", ["table", "x"], ["e"], name="embed", axis=0),
             node("Reshape", ["e", "tokens_shape"], ["t"], name="tokens"),
             node("Add", ["t", "pos"], ["tp"], name="position"),
             node("MatMul", ["tp", "w"], ["y"], name="linear")]
    model = make_model(nodes, [ids_input()], [tensor("y", [1, TOKENS, 4])],
                       [("table", RNG.normal(size=(rows,) + tuple(row_shape))),
                        ("pos", RNG.normal(size=(1, TOKENS, width)) * 0.3), ("w", RNG.normal(size=(width, 4)))])
    model.graph.initializer.append(helper.make_tensor("tokens_shape", onnx.TensorProto.INT64, [3],
                                                      [1, TOKENS, width]))
    return model


@pytest.mark.parametrize("rows", [256, 300])
def test_float_ir_matches_onnxruntime_on_int64_ids(rows, tmp_path):
    path = save(lookup_model(rows), tmp_path / "m.onnx")
    ids = RNG.integers(0, rows, size=(6, TOKENS))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = np.concatenate([session.run(None, {"x": ids[i:i + 1]})[0] for i in range(len(ids))])
    graph = import_model(onnx.load(str(path)))
    assert graph.input_rows == rows
    np.testing.assert_allclose(run_float(graph, ids.astype(np.float64))[graph.output], want,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows, id_type", [(256, "uint8"), (300, "uint16")])
def test_the_c_is_bit_exact_for_ids_in_and_past_the_table(rows, id_type, tmp_path, host_cc):
    path = save(lookup_model(rows), tmp_path / "m.onnx")
    calib = RNG.integers(0, rows, size=(40, TOKENS))
    project = mcugen.build(path, out=tmp_path / "out", calib=calib)
    assert project.schedule.input["dtype"] == id_type and project.schedule.input["mul"] == 1.0
    step = next(s for s in project.schedule.steps if s.kind == "embedding")
    assert step.consts["table"].shape == (rows, 6)
    past = np.array([[rows - 1, rows, rows + 7, 70000, -3, 0, 1]])      # past either end
    ids = np.concatenate([calib[:20], past]).astype(np.float64)
    result = compare(tmp_path / "out", project.schedule, ids, sanitize=True, on="host")
    assert result.n == 21 and result.mismatches == 0, result.first
    integer = np.asarray(project.run(past))
    clamped = np.asarray(project.run(np.clip(past, 0, rows - 1)))
    np.testing.assert_array_equal(integer, clamped)          # past the ends: the end rows


def test_the_embedding_range_is_the_whole_table(tmp_path):
    """Rows no calibration sample reads still fit the output's grid: its range is the table's."""
    model = lookup_model(50)
    table = next(i for i in model.graph.initializer if i.name == "table")
    values = onnx.numpy_helper.to_array(table).copy()
    values[49] = 40.0                                     # a row the samples never read
    table.CopyFrom(onnx.numpy_helper.from_array(values, "table"))
    project = mcugen.build(save(model, tmp_path / "m.onnx"), calib=RNG.integers(0, 49, size=(8, TOKENS)))
    embed = next(n for n in project.qgraph.graph.nodes if n.op == "Embedding")
    assert project.qgraph.encodings[embed.output].range == pytest.approx(40.0)


def test_calibration_ids_must_be_whole_and_within_the_table(tmp_path):
    path = save(lookup_model(20), tmp_path / "m.onnx")
    for bad, shown in ((2.5, "2.5"), (20, "20")):
        bad = np.concatenate([RNG.integers(0, 20, size=(3, TOKENS)), np.full((1, TOKENS), bad)])
        with pytest.raises(MCUGenError, match=rf"token ids indexing a table of 20 rows, but a "
                                              rf"calibration sample holds {shown}: give whole ids "
                                              rf"in \[0, 19\]"):
            mcugen.build(path, calib=bad)


@pytest.mark.parametrize("name, nodes, message", [
    ("computed_ids", [node("Add", ["x", "one"], ["xi"], name="shift"),
                      node("Gather", ["table", "xi"], ["e"], name="embed", axis=0)],
     r"node 'embed' \(Gather\): indexes a constant table by a computed tensor"),
    ("table_columns", [node("Gather", ["table", "x"], ["e"], name="embed", axis=1)],
     r"node 'embed' \(Gather\): gathers along axis 1 of a constant table"),
])
def test_lookups_mcugen_does_not_do_are_refused_in_one_line(name, nodes, message, tmp_path):
    nodes = nodes + [node("MatMul", ["e", "w"], ["y"], name="linear")]
    model = make_model(nodes, [ids_input((1, 3))], [tensor("y", [1, 3, 2])],
                       [("table", RNG.normal(size=(3, 3))), ("w", RNG.normal(size=(3, 2)))])
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(1, dtype=np.int64), "one"))
    with pytest.raises(MCUGenError, match=message) as info:
        mcugen.build(save(model, tmp_path / f"{name}.onnx"), out=tmp_path / "p")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "p").exists()


def bert_like_embeddings(positions):
    """transformers' BERT embeddings at max_position_embeddings = `positions`: the ids reshaped
    (GPT-2's `input_ids.view(-1, n)`) into the word lookup, plus the token type looked up by
    GatherElements of the registered zero buffer [1, positions] at the constant position ids."""
    nodes = [node("Reshape", ["x", "view"], ["ids"], name="view"),
             node("Gather", ["words", "ids"], ["w"], name="word_embeddings", axis=0),
             node("GatherElements", ["type_buffer", "position_ids"], ["types"], name="token_types", axis=1),
             node("Gather", ["type_table", "types"], ["t"], name="token_type_embeddings", axis=0),
             node("Add", ["w", "t"], ["e"], name="embeddings"),
             node("MatMul", ["e", "lw"], ["y"], name="linear")]
    model = make_model(nodes, [ids_input()], [tensor("y", [1, TOKENS, 2])],
                       [("words", RNG.normal(size=(30, 4))), ("type_table", RNG.normal(size=(2, 4))),
                        ("lw", RNG.normal(size=(4, 2)))])
    for name, value in (("view", [-1, TOKENS]), ("type_buffer", np.zeros((1, positions))),
                        ("position_ids", np.arange(TOKENS)[None])):
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(value, dtype=np.int64), name))
    return model


@pytest.mark.parametrize("positions", [32, 512])
def test_bert_embeddings_fold_their_token_types_and_read_ids_through_a_reshape(positions, tmp_path, host_cc):
    """onnx's reference evaluator cannot fold GatherElements over more than 64 positions
    (np.choose); mcugen folds it by numpy."""
    path = save(bert_like_embeddings(positions), tmp_path / "e.onnx")
    ids = RNG.integers(0, 30, size=(40, TOKENS))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = np.concatenate([session.run(None, {"x": ids[i:i + 1]})[0] for i in range(4)])
    project = mcugen.build(path, out=tmp_path / "out", calib=ids)
    graph = project.qgraph.graph
    np.testing.assert_allclose(run_float(graph, ids[:4].astype(np.float64))[graph.output], want,
                               rtol=1e-5, atol=1e-5)
    assert [s.kind for s in project.schedule.steps][:1] == ["embedding"]
    result = compare(tmp_path / "out", project.schedule, ids[:10].astype(np.float64), sanitize=True, on="host")
    assert result.mismatches == 0, result.first


def test_computing_from_the_ids_is_refused_with_the_workaround(tmp_path):
    """RoBERTa computes its position ids from the token ids (Equal to the padding id, CumSum):
    the refusal says how to export instead."""
    nodes = [node("Gather", ["table", "x"], ["e"], name="embed", axis=0),
             node("Equal", ["x", "pad"], ["is_pad"], name="padding"),
             node("Cast", ["is_pad"], ["mask"], to=onnx.TensorProto.FLOAT, name="to_float"),
             node("Unsqueeze", ["mask", "last"], ["mask3"], name="per_token"),
             node("Mul", ["e", "mask3"], ["y"], name="masked")]
    model = make_model(nodes, [ids_input((1, 3))], [tensor("y", [1, 3, 3])], [("table", RNG.normal(size=(5, 3)))])
    for name, value in (("pad", 1), ("last", [2])):
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(value, dtype=np.int64), name))
    with pytest.raises(MCUGenError, match=r"node 'padding' \(Equal\): computes from the token ids .* "
                                          r"export with constant position ids and no mask") as info:
        mcugen.build(save(model, tmp_path / "pad.onnx"), out=tmp_path / "p")
    assert "\n" not in str(info.value)


PAD = 1


def roberta_like_embeddings(spelling):
    """transformers' RoBERTa embeddings: the position ids computed from the token ids
    (pad + the count of non-padding ids so far, pad on padding), as TorchScript writes it
    (Equal, Not, Cast to int32, CumSum, Mul, Cast to int64, Add) or dynamo (Casts around every
    op, and the token types a GatherElements of the zero buffer at those positions), looking up
    the position table; plus the word lookup; then a Linear."""
    i32, i64 = onnx.TensorProto.INT32, onnx.TensorProto.INT64
    nodes = [node("Equal", ["x", "pad"], ["is_pad"], name="padding"),
             node("Not", ["is_pad"], ["real"], name="not_padding"),
             node("Cast", ["real"], ["mask"], to=i32, name="mask")]
    if spelling == "dynamo":
        nodes += [node("Cast", ["mask"], ["mask64"], to=i64, name="widen"),
                  node("CumSum", ["mask64", "axis"], ["count"], name="count"),
                  node("Cast", ["count"], ["count32"], to=i32, name="narrow"),
                  node("Mul", ["count32", "mask"], ["kept"], name="keep"),
                  node("Cast", ["kept"], ["kept64"], to=i64, name="widen_again")]
    else:
        nodes += [node("CumSum", ["mask", "axis"], ["count"], name="count"),
                  node("Mul", ["count", "mask"], ["kept32"], name="keep"),
                  node("Cast", ["kept32"], ["kept64"], to=i64, name="widen")]
    nodes += [node("Add", ["kept64", "pad"], ["positions"], name="positions"),
              node("Gather", ["words", "x"], ["w"], name="word_embeddings", axis=0),
              node("Gather", ["position_table", "positions"], ["p"], name="position_embeddings", axis=0),
              node("Add", ["w", "p"], ["e"], name="embeddings")]
    if spelling == "dynamo":
        nodes += [node("GatherElements", ["type_buffer", "positions"], ["types"], name="token_types", axis=1),
                  node("Gather", ["type_table", "types"], ["t"], name="token_type_embeddings", axis=0),
                  node("Add", ["e", "t"], ["et"], name="with_types")]
    nodes.append(node("MatMul", ["et" if spelling == "dynamo" else "e", "lw"], ["y"], name="linear"))
    model = make_model(nodes, [ids_input()], [tensor("y", [1, TOKENS, 2])],
                       [("words", RNG.normal(size=(30, 4))), ("position_table", RNG.normal(size=(12, 4))),
                        ("type_table", RNG.normal(size=(1, 4))), ("lw", RNG.normal(size=(4, 2)))])
    # transformers' token-type buffer spans 512 positions (onnx's evaluator folds no
    # GatherElements over more than 64 choices: fold.OWN_FOLDS)
    for name, value in (("pad", PAD), ("axis", 1), ("type_buffer", np.zeros((1, 512)))):
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(value, dtype=np.int64), name))
    return model


def ids_with_padding(n):
    ids = RNG.integers(0, 30, size=(n, TOKENS))
    ids[RNG.random(ids.shape) < 0.3] = PAD
    return np.concatenate([ids, np.full((1, TOKENS), PAD), np.full((1, TOKENS), 5)])


@pytest.mark.parametrize("spelling", ["torchscript", "dynamo"])
def test_roberta_position_ids_become_a_position_lookup(spelling, tmp_path, host_cc):
    """The subgraph from the ids to the position table's indices goes; the lookup counts the
    non-padding ids in C: float IR against onnxruntime and the C bit for bit under ASan/UBSan,
    on ids with padding anywhere, all padding and none."""
    path = save(roberta_like_embeddings(spelling), tmp_path / "r.onnx")
    ids = ids_with_padding(30)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = np.concatenate([session.run(None, {"x": ids[i:i + 1]})[0] for i in range(len(ids))])
    project = mcugen.build(path, out=tmp_path / "out", calib=ids)
    graph = project.qgraph.graph
    np.testing.assert_allclose(run_float(graph, ids.astype(np.float64))[graph.output], want,
                               rtol=1e-5, atol=1e-5)
    lookups = [s for s in project.schedule.steps if s.kind == "embedding"]
    assert sorted(s.params["positions"] for s in lookups) == [0, 1]
    result = compare(tmp_path / "out", project.schedule, ids.astype(np.float64), sanitize=True, on="host")
    assert result.mismatches == 0, result.first


def test_positions_by_another_rule_stay_refused(tmp_path):
    """Counting the padding ids instead (Equal without the Not): not RoBERTa's rule, so the ops
    computing it are refused as before."""
    model = roberta_like_embeddings("torchscript")
    del model.graph.node[1]
    model.graph.node[1].input[0] = "is_pad"
    with pytest.raises(MCUGenError, match=r"node 'padding' \(Equal\): computes from the token ids"):
        mcugen.build(save(model, tmp_path / "other.onnx"), out=tmp_path / "p")
    assert not (tmp_path / "p").exists()
