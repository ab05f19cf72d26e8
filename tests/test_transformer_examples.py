"""The transformer examples (examples/make_transformer_digits.py): the mean-pooling ViT builds
from every export (dynamo, TorchScript 17 with the LayerNormalization op, TorchScript 14 with
it written out) and runs bit-exact on every target; the class-token ViT and the BERT encoders
are refused, each in one line naming what is missing (nn.MultiheadAttention's axis-0 layout,
the embedding lookup of integer token ids): when either lands, these tests say so."""
from pathlib import Path

import numpy as np
import pytest

import mcugen
from conftest import require_tool
from mcugen.errors import MCUGenError
from mcugen.reference.float_ir import run_float
from mcugen.verify import compare

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
INPUTS = np.load(EXAMPLES / "vit_digits_inputs.npy")
LABELS = np.load(EXAMPLES / "vit_digits_labels.npy")
EXPORTS = ("dynamo", "ts17", "ts14")
# target -> (where it runs, inputs, the tools it needs)
RUNS = {"host": ("host", 32, ()), "rv32": ("qemu", 8, ("riscv64-unknown-elf-gcc", "qemu-system-riscv32")),
        "gap8": ("host", 8, ()), "hls": ("host", 2, ("g++",))}
REFUSED = {"vit_cls": r"\(Transpose\): perm \[1, 0, 2\] moves the batch axis",
           "bert_eager": r"\(Gather\): gathers from a constant table \(an embedding lookup\)",
           "bert_sdpa": r"\(Gather\): gathers from a constant table \(an embedding lookup\)"}


@pytest.mark.parametrize("export", EXPORTS)
def test_vit_mean_lowers_to_integer_attention_and_agrees_with_float(export):
    project = mcugen.build(EXAMPLES / f"vit_mean_{export}.onnx", calib=INPUTS)
    kinds = [s.kind for s in project.schedule.steps]
    assert kinds.count("softmax") == 2 and kinds.count("layernorm") == 5
    assert kinds.count("matmul") == 4            # Q K^T and A V in each of two blocks
    graph = project.qgraph.graph
    float_top1 = run_float(graph, INPUTS)[graph.output].reshape(len(INPUTS), -1).argmax(1)
    integer = np.asarray(project.run(INPUTS)).reshape(len(INPUTS), -1).argmax(1)
    assert np.mean(float_top1 == LABELS) >= 0.9
    assert np.mean(integer == float_top1) >= 0.9


@pytest.mark.parametrize("target", sorted(RUNS))
@pytest.mark.parametrize("export", EXPORTS)
def test_vit_mean_is_bit_exact_on_every_target(export, target, tmp_path, host_cc):
    on, n, tools = RUNS[target]
    for tool in tools:
        require_tool(tool)
    project = mcugen.build(EXAMPLES / f"vit_mean_{export}.onnx", target=target,
                           out=tmp_path / "p", calib=INPUTS)
    sanitize = target == "host" and export == "ts14"
    result = compare(tmp_path / "p", project.schedule, INPUTS[:n], sanitize=sanitize, on=on)
    assert result.n == n and result.mismatches == 0, result.first


@pytest.mark.parametrize("export", EXPORTS)
@pytest.mark.parametrize("model", sorted(REFUSED))
def test_what_is_still_missing_is_refused_in_one_line(model, export, tmp_path):
    with pytest.raises(MCUGenError, match=REFUSED[model]) as info:
        mcugen.build(EXAMPLES / f"{model}_{export}.onnx", out=tmp_path / "p", input_range=(0.0, 1.0))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "p").exists()
