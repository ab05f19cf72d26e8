"""The transformer examples (examples/make_transformer_digits.py), each from every export
(dynamo, TorchScript 17 with the LayerNormalization op, TorchScript 14 with it written out):
the mean-pooling ViT (hand-written attention), the class-token ViT (nn.MultiheadAttention, its
tokens in [T, 1, E]) and the BERT encoders (transformers' eager and sdpa attention; integer
token ids looking up the embedding tables). Each lowers to integer attention, agrees with its
float model, and runs bit-exact from every export on every target."""
from pathlib import Path

import numpy as np
import pytest

import mcugen
from conftest import require_tool
from mcugen.reference.float_ir import run_float
from mcugen.report import format_report
from mcugen.verify import compare

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
INPUTS = np.load(EXAMPLES / "vit_digits_inputs.npy")
LABELS = np.load(EXAMPLES / "vit_digits_labels.npy")
EXPORTS = ("dynamo", "ts17", "ts14")
# target -> (where it runs, inputs, the tools it needs)
RUNS = {"host": ("host", 32, ()), "rv32": ("qemu", 8, ("riscv64-unknown-elf-gcc", "qemu-system-riscv32")),
        "gap8": ("host", 8, ()), "hls": ("host", 2, ("g++",))}
TOKENS = np.load(EXAMPLES / "bert_tokens.npy")
VITS = ("vit_mean", "vit_cls")
BERTS = ("bert_eager", "bert_sdpa")


@pytest.mark.parametrize("export", EXPORTS)
@pytest.mark.parametrize("model", VITS)
def test_vits_lower_to_integer_attention_and_agree_with_float(model, export):
    project = mcugen.build(EXAMPLES / f"{model}_{export}.onnx", calib=INPUTS)
    kinds = [s.kind for s in project.schedule.steps]
    assert kinds.count("softmax") == 2 and kinds.count("layernorm") == 5
    assert kinds.count("matmul") == 4            # Q K^T and A V in each of two blocks
    errors = next(line for line in format_report(project.report).splitlines()
                  if line.startswith("integer steps' worst error against float"))
    assert errors.count(" softmax <= ") == 2 and errors.count(" layernorm ") == 5
    graph = project.qgraph.graph
    float_top1 = run_float(graph, INPUTS)[graph.output].reshape(len(INPUTS), -1).argmax(1)
    integer = np.asarray(project.run(INPUTS)).reshape(len(INPUTS), -1).argmax(1)
    assert np.mean(float_top1 == LABELS) >= 0.9
    assert np.mean(integer == float_top1) >= 0.9


@pytest.mark.parametrize("export", EXPORTS)
@pytest.mark.parametrize("model", BERTS)
def test_berts_look_up_token_ids_and_agree_with_float(model, export):
    """No labels (random weights): the integer encoder's last hidden states against the float
    model's, relative to their spread."""
    project = mcugen.build(EXAMPLES / f"{model}_{export}.onnx", calib=TOKENS)
    kinds = [s.kind for s in project.schedule.steps]
    assert kinds[0] == "embedding" and kinds.count("matmul") == 4 and kinds.count("softmax") == 2
    assert project.schedule.input["dtype"] == "uint8"            # a vocabulary of 64
    graph = project.qgraph.graph
    want = run_float(graph, TOKENS.astype(np.float64))[graph.output].reshape(len(TOKENS), -1)
    got = np.asarray(project.run(TOKENS)).reshape(len(TOKENS), -1)
    assert np.sqrt(np.mean((got - want) ** 2)) <= 0.05 * np.std(want)


MODELS = VITS + BERTS
RUNS_OF = [(model, export, target) for model in MODELS for export in EXPORTS for target in sorted(RUNS)]


@pytest.mark.parametrize("model, export, target", RUNS_OF)
def test_every_model_is_bit_exact_on_every_target(model, export, target, tmp_path, host_cc):
    on, n, tools = RUNS[target]
    for tool in tools:
        require_tool(tool)
    inputs = TOKENS if model in BERTS else INPUTS
    project = mcugen.build(EXAMPLES / f"{model}_{export}.onnx", target=target,
                           out=tmp_path / "p", calib=inputs)
    sanitize = target == "host" and export == "ts14"
    result = compare(tmp_path / "p", project.schedule, inputs[:n], sanitize=sanitize, on=on)
    assert result.n == n and result.mismatches == 0, result.first
