"""Random valid ONNX graphs (fuzz_graphs.py): every one is refused cleanly or built correctly.

A fixed list of seeds, one test each, so a failure names its seed; reproduce one with
`python bench/fuzz.py --explain SEED`. The seeds mcugen refuses are pinned, each with its
reason, in tests/expected_refusals.toml ([[fuzz]]): a refusal not listed, one whose message no
longer matches its reason and a listed seed that now builds all fail (`python3
tests/test_fuzz.py` prints the current refusals in that file's form). The generated C is
compiled and verified on every C_EVERY-th seed only (compiling dominates the time). The oracle
itself is checked too: it passes real models and fails wrong results.
"""
import re
import tomllib

import numpy as np
import onnx
import pytest

import fuzz_graphs
from refusals import REFUSALS, draft_reason, toml_string
from conftest import require_tool, shared_model
from mcugen.ops import supported_onnx_ops

# plus the seeds bench/fuzz.py found failing beyond the first 400 (kept: they are the bug's test)
FOUND = (3430,)          # last layer's bias rounded to whole accumulator units
SEEDS = list(range(400)) + list(FOUND)
C_EVERY = 40


def pinned_refusals():
    """{seed: reason} of the [[fuzz]] groups in tests/expected_refusals.toml."""
    with REFUSALS.open("rb") as f:
        groups = tomllib.load(f)["fuzz"]
    pinned = {}
    for group in groups:
        for seed in group["seeds"]:
            assert seed not in pinned, f"seed {seed} is pinned twice in {REFUSALS.name}"
            pinned[seed] = group["reason"]
    return pinned


PINNED = pinned_refusals()


def test_pinned_refusals_are_seeds_of_this_test_with_valid_reasons():
    assert set(PINNED) <= set(SEEDS), \
        f"{REFUSALS.name} pins seeds not tested: {sorted(set(PINNED) - set(SEEDS))}"
    for reason in PINNED.values():
        re.compile(reason)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_graph_is_refused_cleanly_or_built_correctly(seed, tmp_path):
    with_c = seed % C_EVERY == 0
    if with_c:
        require_tool("cc")
        require_tool("make")
    case = fuzz_graphs.make_case(seed)
    outcome = fuzz_graphs.check_case(case, with_c=with_c, workdir=tmp_path)
    assert outcome.kind in ("verified", "accepted", "refused"), (
        f"seed {seed}: {outcome.kind}: {outcome.reason}\n  graph: {case.description}\n"
        f"  {outcome.detail}")
    assert outcome.kind != "accepted" or not with_c
    reason = PINNED.get(seed)
    if outcome.kind == "refused":
        assert reason is not None, (
            f"seed {seed}: refused, and {REFUSALS.name} [[fuzz]] does not pin it: "
            f"{outcome.detail}\n  graph: {case.description}")
        assert re.search(reason, outcome.detail), (
            f"seed {seed}: the refusal no longer matches its pinned reason {reason!r}: "
            f"{outcome.detail}")
    else:
        assert reason is None, (f"seed {seed}: {outcome.kind} now, but {REFUSALS.name} pins its "
                                f"refusal ({reason!r}): take the seed off the list")


def test_generator_is_deterministic():
    for seed in (0, 7, 41):
        first, again = fuzz_graphs.make_case(seed), fuzz_graphs.make_case(seed)
        assert first.model.SerializeToString() == again.model.SerializeToString()
        assert (first.input_range, first.scheme) == (again.input_range, again.scheme)


def test_seeds_cover_every_op_mcugen_imports_and_the_odd_cases():
    cases = [fuzz_graphs.make_case(seed) for seed in SEEDS]
    ops = {n.op_type for case in cases for n in case.model.graph.node}
    # the fused types the frontend's patterns produce (Gelu also an opset-20 op,
    # RMSNormalization an opset-23 one: tests/test_layernorm.py) come from the exporters'
    # subgraphs, tagged below
    fused = {"SiLU", "Mish", "Gelu", "RMSNormalization"}
    assert set(supported_onnx_ops()) - fused <= ops, sorted(set(supported_onnx_ops()) - fused - ops)
    tags = set().union(*(case.tags for case in cases))
    wanted = {"instancenorm", "groupnorm", "depthwise", "groups", "dilation", "stride", "auto_pad",
              "pool_pads", "ceil_mode",
              "avg_pads_cip0", "residual", "concat", "names:empty", "names:dup",
              "near_zero_channel", "zero_channel", "large_bias", "symbolic_batch",
              "negative_pad", "pad_value", "bn_after_other", "leaky_negative", "shared_weights",
              "end:maxpool", "end:transpose", "end:flatten", "end:reshape", "end:softmax",
              "end:logsoftmax", "scheme:power", "conv1d", "dead_branch", "constant_nodes",
              "initializers_as_inputs", "names:odd", "add_self", "concat_self", "pattern:silu",
              "pattern:gelu", "pattern:gelu_tanh", "pattern:mish", "squeeze_excite", "reduce"} | {
                  f"opset{v}" for v in fuzz_graphs.OPSETS}
    assert wanted <= tags, sorted(wanted - tags)
    for case in cases[:20]:
        onnx.checker.check_model(case.model, full_check=True)


class Perturbed:
    """A built project whose integer output is made wrong."""

    def __init__(self, project, change):
        self.project, self.change = project, change
        self.qgraph, self.schedule = project.qgraph, project.schedule

    def run(self, x):
        return self.change(np.asarray(self.project.run(x), dtype=np.float64))

    def run_simulated(self, x):
        return self.project.run_simulated(x)


def shared_case(name, input_range):
    import mcugen
    path = shared_model(name)
    case = fuzz_graphs.Case(0, onnx.load(str(path)), input_range, "uniform", [name], set())
    project = mcugen.build(path, scheme="uniform", wbits=8, abits=8, input_range=input_range)
    x = fuzz_graphs.calibration_inputs(case)
    reference = fuzz_graphs.run_onnxruntime(case.model, x)
    return case, project, fuzz_graphs.float_graph(path), x, reference


def wrong_quantizers(qgraph):
    """Copies of a QGraph, each with one choice broken as a bug would break it."""
    import copy
    import dataclasses
    tensor = next(t for t in qgraph.encodings if t != qgraph.graph.input)
    layer = next(iter(qgraph.weights))
    grids = {"a grid half its values' range": lambda e: dataclasses.replace(e, range=e.range / 2),
             "a grid twice too wide": lambda e: dataclasses.replace(e, range=e.range * 2),
             "a grid with 7 bits": lambda e: dataclasses.replace(e, bits=7)}
    for what, change in grids.items():
        broken = copy.copy(qgraph)
        broken.encodings = dict(qgraph.encodings, **{tensor: change(qgraph.encodings[tensor])})
        yield what, broken
    broken = copy.deepcopy(qgraph)
    w_hat = broken.weights[layer].w_hat.reshape(len(broken.weights[layer].w_hat), -1)
    w_hat[0, 0] += 0.02 * np.abs(w_hat[0]).max()
    yield "one weight 2% of its channel's range off", broken


@pytest.mark.parametrize("name,input_range", [("mnist8", (0.0, 255.0)), ("sine", (0.0, 6.2832))])
def test_oracle_passes_real_models_and_fails_wrong_results(name, input_range):
    case, project, graph, x, reference = shared_case(name, input_range)
    good = fuzz_graphs.check_accuracy(case, project, graph, x, reference, len(x))
    assert good.kind == "accepted", good.detail
    scale = float(np.abs(reference).max())

    def one_element_off(y):
        y = y.copy()
        y.reshape(len(y), -1)[3, -1] += 0.25 * scale
        return y
    wrong_outputs = {"integer output scale 25% off": lambda y: y * 1.25,
                     "one integer element off by 25% of the range": one_element_off}
    for what, change in wrong_outputs.items():
        bad = fuzz_graphs.check_accuracy(case, Perturbed(project, change), graph, x, reference, len(x))
        assert bad.kind == "wrong", f"{name}: {what} passed: {bad.metrics}"
    for what, qgraph in wrong_quantizers(project.qgraph):
        assert fuzz_graphs.check_quantizer(case, qgraph), f"{name}: {what} passed"


def print_refusals():
    """Every seed's refusal now, as the [[fuzz]] groups of tests/expected_refusals.toml: a seed
    under the pinned reason its message matches, a new refusal under draft_reason (make that
    a short stable phrase, and decide whether it is a limitation or a bug)."""
    reasons = list(dict.fromkeys(PINNED.values()))
    groups = {}
    for seed in SEEDS:
        outcome = fuzz_graphs.check_case(fuzz_graphs.make_case(seed), with_c=seed % C_EVERY == 0)
        if outcome.kind == "refused":
            reason = next((r for r in reasons if re.search(r, outcome.detail)), None)
            groups.setdefault(reason or draft_reason(outcome.detail), []).append(seed)
    for reason, seeds in groups.items():
        new = "" if reason in reasons else "# new: shorten the reason to a stable phrase\n"
        print(f"{new}[[fuzz]]\nreason = {toml_string(reason)}\nseeds = {seeds}\n")


if __name__ == "__main__":
    print_refusals()
