"""Peer measurement for the FPGA benchmark: hls4ml 1.3.0 on the same ONNX models.

    python bench/_hls4ml_peer.py                    # every model, a markdown table (~15 min)
    python bench/_hls4ml_peer.py --models sine,mnist_mlp_bn --timeout 200

`hls4ml_result(model_path, x, labels)` asks: does hls4ml's ONNX frontend take the model, how long
is its C simulation build, and what does that simulation compute on `x`? Only the csim is run:
`compile()` is g++ on the generated HLS C++ with the bundled ap_types headers, no Xilinx tools, so
there are no latency or resource numbers here.

Everything hls4ml does runs in a child process (this file with --child), because a converter
crash, a g++ that eats the machine or a hang must not take the benchmark down with it; on timeout
the child's whole process group (g++ included) is killed.

Routes, tried in this order until one converts:
  plain        hls4ml's converter on the file as it is.
  qonnx        qonnx's preprocessing as hls4ml's documentation gives it: cleanup_model,
               ConvertToChannelsLastAndClean, GemmToMatMul, cleanup_model again.
  qonnx+edits  best effort, not something hls4ml documents: the graph edits in EDITS, applied one
               at a time (each followed by the qonnx preprocessing and a conversion attempt) until
               hls4ml converts; the result lists the ones applied. Each edit restates the same
               function in a form qonnx/hls4ml accept, and the child checks that: onnxruntime on
               the edited graph against the original, on the same inputs
               (`edit_check_max_abs_diff`).
Precision is hls4ml's default, untuned: `config_from_onnx_model(granularity="name")` gives the
input and the weights ap_fixed<16,6> (range +-32) and lets hls4ml infer ("auto") accumulator and
result types. Models fed raw 0-255 values (mnist8, resnet8) overflow that input type; that is
part of what is measured, not fixed up.

Known hls4ml 1.3.0 fault, seen while writing this: GlobalAveragePool after qonnx's channels-last
conversion computes wrong values: a toy model (1x1 Conv, Relu, GlobalAveragePool, MatMul; no
edits needed) gives 0.19 where onnxruntime gives 0.41, while the same toy with a full-window
MaxPool in place of the pool matches to 0.006. kws_dscnn and resnet8 go through that pool.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BACKEND = "Vitis"            # Vivado HLS' successor (hls4ml's Vivado backend is the older flow)
ERROR_CHARS = 120
INPUT_FILE, RESULT_FILE, OUTPUT_FILE, LOG_FILE = "x.npy", "result.json", "outputs.npy", "log.txt"
EDITED_FILE = "edited.onnx"  # the graph after the edits, before qonnx: checked against the original


def one_line(text: str, limit: int = ERROR_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def stage_error(stage: str, exc: BaseException) -> str:
    return one_line(f"{stage}: {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------- best-effort graph edits (child)

def drop_io_value_info(model) -> bool:
    """tflite2onnx lists the graph inputs/outputs again in value_info; qonnx asserts one entry."""
    io_names = {v.name for v in [*model.graph.input, *model.graph.output]}
    keep = [v for v in model.graph.value_info if v.name not in io_names]
    if len(keep) == len(model.graph.value_info):
        return False
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
    return True


def pin_batch_to_one(model) -> bool:
    """A symbolic batch (tf2onnx's 'unk__110') leaves qonnx's shapes unknown: hls4ml needs 1."""
    changed = False
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_value <= 0:
            dims[0].dim_value = 1
            changed = True
    if changed:                      # stale symbolic shapes; qonnx's cleanup infers them again
        del model.graph.value_info[:]
    return changed


def upgrade_opset(model, opset: int = 13) -> bool:
    """qonnx's transforms insert opset-13 nodes (Unsqueeze with axes as an input), which an
    opset-8 graph rejects. Opset 13 needs IR 7, where initializers are no longer graph inputs."""
    import onnx.version_converter
    current = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if current >= opset:
        return False
    model.CopyFrom(onnx.version_converter.convert_version(model, opset))
    model.ir_version = max(model.ir_version, 7)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    return True


def same_pads(size: int, kernel: int, stride: int, upper: bool) -> tuple[int, int]:
    """ONNX's SAME_UPPER/SAME_LOWER padding (begin, end) along one axis."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    small, large = total // 2, total - total // 2
    return (small, large) if upper else (large, small)


def inferred_shapes(model) -> dict:
    import onnx
    graph = onnx.shape_inference.infer_shapes(model).graph
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*graph.value_info, *graph.input, *graph.output]}


def explicit_pads(model) -> bool:
    """qonnx's constant folding executes Conv with an explicit `pads` attribute only."""
    import onnx
    shapes, changed = inferred_shapes(model), False
    for node in model.graph.node:
        attrs = {a.name: a for a in node.attribute}
        auto_pad = attrs.get("auto_pad")
        if auto_pad is None or auto_pad.s not in (b"SAME_UPPER", b"SAME_LOWER"):
            continue
        kernel = list(attrs["kernel_shape"].ints)
        strides = list(attrs["strides"].ints) if "strides" in attrs else [1] * len(kernel)
        spatial = shapes[node.input[0]][2:]
        begin_end = [same_pads(n, k, s, auto_pad.s == b"SAME_UPPER")
                     for n, k, s in zip(spatial, kernel, strides)]
        for name in ("auto_pad", "pads"):
            if name in attrs:
                node.attribute.remove(attrs[name])
        pads = [b for b, _ in begin_end] + [e for _, e in begin_end]
        node.attribute.append(onnx.helper.make_attribute("pads", pads))
        changed = True
    return changed


def fold_conv_bias_adds(model) -> bool:
    """CNTK exports Conv without bias plus an Add of a rank-3 [C,1,1] constant; qonnx fails to move
    its channels-last Transpose past that Add (a numpy broadcast error). Conv's own bias input is
    the same computation."""
    from onnx import numpy_helper
    initializers = {i.name: i for i in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    n_uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            n_uses[name] = n_uses.get(name, 0) + 1
    folded = []
    for add in (n for n in model.graph.node if n.op_type == "Add"):
        conv = producer.get(add.input[0])
        if (conv is None or conv.op_type != "Conv" or len(conv.input) != 2
                or add.input[1] not in initializers or conv.input[1] not in initializers
                or n_uses[conv.output[0]] != 1):
            continue
        bias = numpy_helper.to_array(initializers[add.input[1]])
        channels = numpy_helper.to_array(initializers[conv.input[1]]).shape[0]
        if bias.size != channels or bias.ndim < 3 or bias.shape[-3] != channels:
            continue                 # not a per-output-channel bias
        name = f"{add.input[1]}_as_conv_bias"
        model.graph.initializer.append(numpy_helper.from_array(bias.reshape(-1), name))
        conv.input.append(name)
        conv.output[0] = add.output[0]
        folded.append(add)
    for add in folded:
        model.graph.node.remove(add)
    return bool(folded)


def global_average_pools(model) -> bool:
    """qonnx's channels-last conversion knows Conv, MaxPool and BatchNormalization only, and
    hls4ml's AveragePool wants channels-last; its GlobalAveragePool does not. An AveragePool whose
    window is the whole unpadded input is a GlobalAveragePool."""
    import onnx
    shapes, changed = inferred_shapes(model), False
    for index, node in enumerate(list(model.graph.node)):
        if node.op_type != "AveragePool":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if (list(attrs["kernel_shape"]) != shapes[node.input[0]][2:] or any(attrs.get("pads", []))
                or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID")):
            continue
        model.graph.node.remove(node)
        model.graph.node.insert(index, onnx.helper.make_node(
            "GlobalAveragePool", list(node.input), list(node.output), name=node.name))
        changed = True
    return changed


def drop_layout_only_transposes(model) -> bool:
    """A Transpose that moves only size-1 axes ([1,64,1,1] -> [1,1,1,64], tflite2onnx's before the
    classifier's Reshape) leaves the data in memory as it was; hls4ml's Transpose layer cannot take
    it after a global pool. When a Reshape is its only user, the Reshape can read its input."""
    shapes, changed = inferred_shapes(model), False
    graph_outputs = {o.name for o in model.graph.output}
    for transpose in [n for n in model.graph.node if n.op_type == "Transpose"]:
        users = [n for n in model.graph.node if transpose.output[0] in n.input]
        shape = shapes.get(transpose.input[0])
        perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), None)
        if (not shape or not perm or len(users) != 1 or users[0].op_type != "Reshape"
                or transpose.output[0] in graph_outputs):
            continue
        moved = [axis for axis in perm if shape[axis] != 1]
        if moved != sorted(moved):
            continue                 # a real transposition of the data
        users[0].input[0] = transpose.input[0]
        model.graph.node.remove(transpose)
        changed = True
    return changed


# In the order they are tried; each returns whether it changed the graph (it edits in place).
EDITS = (("drop duplicate input/output value_info", drop_io_value_info),
         ("pin batch to 1", pin_batch_to_one),
         ("opset -> 13, IR 7", upgrade_opset),
         ("SAME auto_pad -> explicit pads", explicit_pads),
         ("bias Add folded into Conv", fold_conv_bias_adds),
         ("full-window AveragePool -> GlobalAveragePool", global_average_pools),
         ("layout-only Transpose before Reshape dropped", drop_layout_only_transposes))


# ---------------------------------------------------------------- conversion and csim (child)

def qonnx_preprocess(model):
    """hls4ml's documented qonnx preprocessing; returns an onnx ModelProto."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model
    wrapped = cleanup_model(ModelWrapper(model))
    wrapped = wrapped.transform(ConvertToChannelsLastAndClean())
    wrapped = wrapped.transform(GemmToMatMul())
    return cleanup_model(wrapped).model


def hls4ml_convert(model, project_dir: Path):
    import hls4ml
    config = hls4ml.utils.config_from_onnx_model(model, granularity="name", backend=BACKEND)
    return hls4ml.converters.convert_from_onnx_model(
        model, output_dir=str(project_dir), backend=BACKEND, io_type="io_parallel",
        hls_config=config)


def qonnx_available() -> bool:
    return importlib.util.find_spec("qonnx") is not None


NOT_TRIED = "not tried: no edit applies to this graph"


class StageFailure(Exception):
    """A route failed; the message is already one line naming the stage."""


def convert_route(model, route: str, project_dir: Path):
    """qonnx preprocessing (except on the plain route), then hls4ml's converter."""
    stage = "preprocess"
    try:
        if route != "plain":
            model = qonnx_preprocess(model)
        stage = "convert"
        return hls4ml_convert(model, project_dir)
    except Exception as exc:         # whatever the converter raises, the route has failed
        raise StageFailure(stage_error(stage, exc)) from exc


def convert_with_edits(model, work_dir: Path, applied: list):
    """Apply the EDITS that change the graph one at a time (cumulatively, in EDITS' order) and
    retry after each: `applied` stops at the edit after which hls4ml converted, and the edits
    later in EDITS are not made."""
    import onnx
    failure = StageFailure(NOT_TRIED)
    for name, edit in EDITS:
        try:
            changed = edit(model)
        except Exception as exc:
            raise StageFailure(stage_error(f"edit '{name}'", exc)) from exc
        if not changed:
            continue
        applied.append(name)
        try:
            hls_model = convert_route(copy.deepcopy(model), "qonnx+edits", work_dir / "prj_edits")
        except StageFailure as exc:
            failure = exc
            continue
        onnx.save(model, work_dir / EDITED_FILE)
        return hls_model
    raise failure


def try_routes(model_path: str, work_dir: Path, status: dict):
    """Convert by the first route that works; returns hls4ml's model, or None."""
    import onnx
    routes = ["plain"] + (["qonnx", "qonnx+edits"] if qonnx_available() else [])
    for route in routes:
        model = onnx.load(model_path)
        try:
            if route == "qonnx+edits":
                hls_model = convert_with_edits(model, work_dir, status["edits"])
            else:
                hls_model = convert_route(model, route, work_dir / f"prj_{route}")
        except StageFailure as failure:
            status["errors"][route] = str(failure)
            continue
        status["route"] = route
        return hls_model
    if not qonnx_available():
        status["errors"]["qonnx"] = "qonnx not installed: pip install qonnx"
    status["unsupported_ops"] = ops_without_handler(onnx.load(model_path))
    return None


def ops_without_handler(model) -> list[str]:
    """Op types of the graph that hls4ml's ONNX frontend has no handler for; what the qonnx
    preprocessing removes (Gemm -> MatMul + Add, Constant folded) does not count."""
    from hls4ml.converters.onnx_to_hls import get_supported_onnx_layers
    removed = {"Gemm", "Constant", "Identity", "Dropout"}
    present = {node.op_type for node in model.graph.node}
    return sorted(present - set(get_supported_onnx_layers()) - removed)


def input_permutation(onnx_shape, hls_shape):
    """qonnx's channels-last conversion keeps the ONNX graph input NCHW (NCW) and puts a Transpose
    after it. hls4ml drops that Transpose when there is one channel (its input is then [H, W, 1])
    and keeps it otherwise (its input is NCHW as in ONNX). The permutation from the ONNX layout to
    hls4ml's, or None when both are the same (with C == 1 both are the same bytes anyway)."""
    per_sample = list(onnx_shape)[1:]
    if per_sample == list(hls_shape) or len(per_sample) < 2:
        return None
    perm = [0, *range(2, len(per_sample) + 1), 1]
    if [per_sample[p - 1] for p in perm[1:]] != list(hls_shape):
        raise ValueError(f"hls4ml input shape {list(hls_shape)} is no layout of {per_sample}")
    return perm


def graph_input_shape(model):
    initializers = {i.name for i in model.graph.initializer}
    first = next(i for i in model.graph.input if i.name not in initializers)
    return [d.dim_value for d in first.type.tensor_type.shape.dim]


def precision_summary(hls_model):
    """Per layer 'accum_t/result_t', and the widest of each over the model, as bits."""
    per_layer, widest = {}, {"accum_t": (0, ""), "result_t": (0, "")}
    for layer in list(hls_model.get_layers()):
        chosen = {k: layer.types[k].precision for k in ("accum_t", "result_t") if k in layer.types}
        if not chosen:
            continue
        per_layer[layer.name] = "/".join(str(p) for p in chosen.values())
        for kind, precision in chosen.items():
            width = getattr(precision, "width", 0) or 0
            if width > widest[kind][0]:
                widest[kind] = (width, layer.name)
    first = list(hls_model.get_layers())[0].types["result_t"].precision
    text = ", ".join(f"{k} {w}b ({name})" for k, (w, name) in widest.items() if w)
    return per_layer, f"{text}; input {first}"


def write_status(work_dir: Path, status: dict):
    (work_dir / RESULT_FILE).write_text(json.dumps(status))


def check_edits(model_path: str, work_dir: Path, status: dict):
    """The edits must not change what the model computes: onnxruntime on the edited graph
    against the original, on the benchmark's own inputs."""
    x = np.load(work_dir / INPUT_FILE)
    edited = float_reference(str(work_dir / EDITED_FILE), x)
    original = float_reference(model_path, x)
    status["edit_check_max_abs_diff"] = float(np.max(np.abs(edited - original)))


def timed_stage(stage: str, action, status: dict, work_dir: Path):
    """Run one stage of the csim, recording it first (a crash or timeout then names it)."""
    status["stage"] = stage
    write_status(work_dir, status)
    start = time.perf_counter()
    try:
        value = action()
    except Exception as exc:
        status["errors"][stage] = stage_error(stage, exc)
        raise StageFailure(status["errors"][stage]) from exc
    status[f"{stage}_s"] = time.perf_counter() - start
    return value


def run_csim(hls_model, model_path: str, work_dir: Path, status: dict):
    """compile() (the g++ build) and predict() on the saved inputs, in hls4ml's layout."""
    import onnx
    x = np.load(work_dir / INPUT_FILE)
    perm = timed_stage("layout", lambda: input_permutation(
        graph_input_shape(onnx.load(model_path)), hls_model.get_input_variables()[0].shape),
        status, work_dir)
    status["input_permutation"] = perm
    timed_stage("compile", hls_model.compile, status, work_dir)
    hls_x = np.ascontiguousarray(x.transpose(perm) if perm else x)
    outputs = timed_stage("predict", lambda: hls_model.predict(hls_x), status, work_dir)
    np.save(work_dir / OUTPUT_FILE, np.asarray(outputs, dtype=np.float64).reshape(len(x), -1))


def run_child(model_path: str, work_dir: Path):
    """The child's whole job: convert, then the csim; the status file is the parent's answer."""
    status = {"stage": "convert", "route": None, "errors": {}, "edits": []}
    write_status(work_dir, status)
    start = time.perf_counter()
    hls_model = try_routes(model_path, work_dir, status)
    status["convert_s"] = time.perf_counter() - start
    if hls_model is not None:
        status["layer_precisions"], status["widest_precision_bits"] = precision_summary(hls_model)
        try:
            if status["edits"]:
                timed_stage("edit check", lambda: check_edits(model_path, work_dir, status),
                            status, work_dir)
            run_csim(hls_model, model_path, work_dir, status)
        except StageFailure:
            return write_status(work_dir, status)     # "stage" stays the one that failed
    status["stage"] = "done"
    write_status(work_dir, status)


# ---------------------------------------------------------------- the parent side

def run_in_child(model_path: str, work_dir: Path, timeout: float):
    """Run --child in its own process group; returns (status dict, seconds, timed out)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", model_path, str(work_dir)]
    start = time.perf_counter()
    with open(work_dir / LOG_FILE, "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            child.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)     # the group: hls4ml's g++ goes too
            child.wait()
            timed_out = True
    seconds = time.perf_counter() - start
    result_path = work_dir / RESULT_FILE
    status = json.loads(result_path.read_text()) if result_path.exists() else {"stage": "start"}
    status["returncode"] = child.returncode
    return status, seconds, timed_out


def last_log_line(work_dir: Path) -> str:
    lines = [l for l in (work_dir / LOG_FILE).read_text(errors="replace").splitlines() if l.strip()]
    return lines[-1] if lines else "no output"


def failure_text(status: dict, timed_out: bool, timeout: float, work_dir: Path):
    """One line for the first stage that failed, None when the csim ran."""
    stage = status.get("stage")
    if timed_out:
        return f"{stage}: timeout after {timeout:.0f} s"
    if stage == "done" and status.get("route") is None:
        tried = [(r, m) for r, m in status["errors"].items() if m != NOT_TRIED]
        route, message = tried[-1]                  # the most forgiving route that was tried
        return one_line(f"{route}/{message}")
    if stage in status["errors"]:
        return status["errors"][stage]
    if stage != "done":
        return one_line(f"{stage}: child died (exit {status['returncode']}): "
                        f"{last_log_line(work_dir)}")
    return None


def float_reference(model_path: str, x: np.ndarray) -> np.ndarray:
    """onnxruntime's float outputs, one input at a time (most models have a fixed batch of 1)."""
    import onnxruntime as ort
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.stack([session.run(None, {name: x[i:i + 1]})[0].reshape(-1) for i in range(len(x))])


def score(model_path: str, x, labels, outputs) -> dict:
    """top1 and agreement with the float argmax, or max |error| for a one-output regressor."""
    if outputs is None:
        return {}
    reference = float_reference(model_path, x)
    if outputs.shape[1] == 1:
        return {"max_abs_err": float(np.max(np.abs(outputs - reference)))}
    scores = {"agreement": float(np.mean(outputs.argmax(1) == reference.argmax(1)))}
    if labels is not None:
        scores["top1"] = float(np.mean(outputs.argmax(1) == np.asarray(labels)))
        scores["float_top1"] = float(np.mean(reference.argmax(1) == np.asarray(labels)))
    return scores


def hls4ml_result(model_path, x, labels=None, timeout=400, work_dir=None) -> dict:
    """hls4ml's conversion and csim of the ONNX model at `model_path` on `x`, given in the ONNX
    model's own layout (NCHW for images; the child transposes for a channels-last conversion).
    `work_dir` keeps the hls4ml project and log there; by default a temporary folder is removed.

    Keys: converted, route ("plain", "qonnx", "qonnx+edits" or None), error (one line: the first
    stage that failed, or None), errors (per route and stage), edits, edit_check_max_abs_diff,
    unsupported_ops, timed_out, convert_s, compile_s (the csim build), predict_s, wall_s,
    outputs (N, k) or None, input_permutation, widest_precision_bits, layer_precisions; then
    agreement with onnxruntime's argmax and, with labels, top1 and float_top1 (k > 1), or
    max_abs_err against onnxruntime (k == 1)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="hls4ml_peer_") as scratch:
        work = Path(work_dir or scratch)
        work.mkdir(parents=True, exist_ok=True)
        for stale in (RESULT_FILE, OUTPUT_FILE):     # a kept work_dir may hold a past run's
            (work / stale).unlink(missing_ok=True)
        np.save(work / INPUT_FILE, x)
        status, wall_s, timed_out = run_in_child(str(model_path), work, timeout)
        error = failure_text(status, timed_out, timeout, work)
        outputs = np.load(work / OUTPUT_FILE) if (work / OUTPUT_FILE).exists() else None
    result = {"converted": status.get("route") is not None, "route": status.get("route"),
              "error": error, "errors": status.get("errors", {}), "edits": status.get("edits", []),
              "timed_out": timed_out, "wall_s": wall_s, "outputs": outputs,
              "input_permutation": status.get("input_permutation"),
              "unsupported_ops": status.get("unsupported_ops", [])}
    for key in ("convert_s", "compile_s", "predict_s", "widest_precision_bits", "layer_precisions",
                "edit_check_max_abs_diff"):
        result[key] = status.get(key)
    result.update(score(model_path, x, labels, outputs))
    return result


# ---------------------------------------------------------------- the benchmark table (main)

SHARED = Path(__file__).resolve().parents[1] / "models"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def benchmark_inputs():
    """(name, model path, x in the ONNX layout, labels or None): small, seeded sets from
    bench/_data.py (the same data the other benchmarks use) and the examples' own inputs."""
    import _data
    mnist_images, mnist_labels, _ = _data.mnist8_data(100)
    mlp_x, mlp_labels, _ = _data.mnist_mlp_data(100)
    example = {name: (np.load(EXAMPLES / f"{name}_inputs.npy"),
                      np.load(EXAMPLES / f"{name}_labels.npy"))
               for name in ("digits_cnn", "act_digits")}
    return [
        ("sine", SHARED / "sine.onnx", _data.sine_data(100)[0], None),
        ("mnist_mlp_bn", SHARED / "mnist_mlp_bn.onnx", mlp_x, mlp_labels),          # pixels / 255
        ("mnist8", SHARED / "mnist8.onnx", mnist_images, mnist_labels),             # raw 0-255
        ("digits_cnn", EXAMPLES / "digits_cnn.onnx", *example["digits_cnn"]),
        ("act_digits", EXAMPLES / "act_digits.onnx", *example["act_digits"]),
        ("resnet8", SHARED / "resnet8.onnx", _data.photo_patches(20, seed=1), None),  # 0-255
        ("kws_dscnn", SHARED / "kws_dscnn.onnx", _data.kws_features(20, seed=2), None),
    ]


def accuracy_text(result: dict) -> str:
    if "max_abs_err" in result:
        return f"max abs err {result['max_abs_err']:.4g} vs onnxruntime"
    if "agreement" not in result:
        return "-"
    text = f"agreement {100 * result['agreement']:.0f}%"
    if "top1" in result:
        text = (f"top-1 {100 * result['top1']:.0f}% (float {100 * result['float_top1']:.0f}%), "
                + text)
    return text


def table_row(name: str, n: int, result: dict) -> list:
    converts = result["route"] or f"no: {result['error']}"
    if result["unsupported_ops"]:
        converts += f" (ops hls4ml lacks: {', '.join(result['unsupported_ops'])})"
    if result["route"] and result["error"]:
        converts += f", then {result['error']}"
    seconds = lambda key: "-" if result.get(key) is None else f"{result[key]:.1f}"
    return [name, n, converts, seconds("compile_s"), accuracy_text(result), seconds("wall_s")]


def note_line(name: str, result: dict) -> str:
    """What the table leaves out: the edits (and their onnxruntime check), the precisions hls4ml
    chose, and each route's failure."""
    edits = "none"
    if result["edits"]:
        edits = (f"{'; '.join(result['edits'])} (edited graph vs original in onnxruntime: "
                 f"max diff {result['edit_check_max_abs_diff']})")
    return (f"- {name}: edits: {edits}. Precision: {result['widest_precision_bits'] or '-'}. "
            f"Convert {result['convert_s'] or 0:.1f} s. Route failures: {result['errors'] or '-'}")


def main(argv=None):
    import _markdown
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated subset of the models")
    parser.add_argument("--timeout", type=float, default=400, help="seconds per model")
    args = parser.parse_args(argv)
    chosen = set(args.models.split(",")) if args.models else None
    rows, notes = [], []
    for name, path, x, labels in benchmark_inputs():
        if chosen and name not in chosen:
            continue
        result = hls4ml_result(path, x, labels, timeout=args.timeout)
        rows.append(table_row(name, len(x), result))
        notes.append(note_line(name, result))
        print(f"{name}: {rows[-1]}", file=sys.stderr, flush=True)
    _markdown.table(["model", "n", "converts (route or failure)", "csim build s", "accuracy",
                     "wall s"], rows)
    _markdown.emit("\n".join(notes))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        run_child(sys.argv[2], Path(sys.argv[3]))
    else:
        main()
