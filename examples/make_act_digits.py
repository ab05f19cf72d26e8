"""Train a small CNN on scikit-learn's bundled digits (1,797 8x8 images, pixels 0..16) whose
activations are the smooth and non-monotone ones, and export it with torch.onnx to
examples/act_digits.onnx (opset 17, input `pixels` [1,1,8,8] float32 = pixel / 16 in [0, 1],
output `logits` [1,10], no Softmax).

Each activation follows a Conv or a Linear, as torch 2.13's TorchScript exporter writes it:
SiLU (Sigmoid, Mul), per-channel PReLU (PRelu, slope [C,1,1]), GELU (Div, Erf, Add, Mul, Mul),
HardSwish, LeakyReLU(0.1), GELU tanh approximation (Mul x3 for the cube, Add, Mul, Tanh, Add,
Mul, Mul), Tanh, Sigmoid.

Training uses BatchNorm (folded away before export), dropout and one-pixel shifts: without
them this depth of Sigmoid/Tanh layers reached only 93 % on the test split.

Split: the first 1,437 images (dataset order) train, the last 360 test. Also writes
act_digits_inputs.npy (the first 64 test images / 16, float32 (64,1,8,8)) and
act_digits_labels.npy (int64 (64,)). Needs torch (CPU), scikit-learn, onnx, onnxruntime;
trains in about 8 s on one core and writes byte-identical files on the same torch build.
"""
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from _digits import check_and_save, export_checked, seeded_digits_split, train

HERE = Path(__file__).resolve().parent
ONNX_PATH = HERE / "act_digits.onnx"
SEED = 0
N_TEST = 360
EPOCHS = 40
THREADS = 1          # tiny batches: one intra-op thread is the fastest (see make_digits_cnn.py)
REQUIRED_OPS = {"Conv", "Sigmoid", "Mul", "PRelu", "Div", "Erf", "Add", "HardSwish",
                "LeakyRelu", "Tanh", "MaxPool", "Flatten", "Gemm"}


class ActDigits(nn.Module):
    def __init__(self):
        super().__init__()
        # the exporter folds each BatchNorm2d into its Conv; fold_linear_batchnorms the others
        self.features = nn.Sequential(
            nn.Conv2d(1, 12, 3, padding=1), nn.BatchNorm2d(12), nn.SiLU(),        # 12x8x8
            nn.Conv2d(12, 16, 3, padding=1), nn.BatchNorm2d(16), nn.PReLU(16),    # 16x8x8
            nn.MaxPool2d(2),                                                      # 16x4x4
            nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.GELU(),       # 24x4x4
            nn.Conv2d(24, 24, 1), nn.BatchNorm2d(24), nn.Hardswish(),
            nn.Conv2d(24, 24, 3, padding=1), nn.BatchNorm2d(24), nn.LeakyReLU(0.1),
            nn.MaxPool2d(2))                                                      # 24x2x2
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.2),
            nn.Linear(96, 48), nn.BatchNorm1d(48), nn.GELU(approximate="tanh"),
            nn.Linear(48, 32), nn.BatchNorm1d(32), nn.Tanh(),
            nn.Linear(32, 32), nn.BatchNorm1d(32), nn.Sigmoid(),
            nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


def shifted(batch, gen):
    """The batch moved by up to one pixel each way (one random shift per batch), since the
    writers did not centre their digits alike."""
    dy, dx = torch.randint(0, 3, (2,), generator=gen).tolist()
    return nn.functional.pad(batch, (1, 1, 1, 1))[:, :, dy:dy + 8, dx:dx + 8]


def fold_linear_batchnorms(model):
    """Each eval-mode BatchNorm1d into the Linear before it (the exporter keeps them as
    BatchNormalization nodes), so that every activation of the graph follows a Conv or Gemm."""
    layers = list(model.classifier)
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.BatchNorm1d):
            linear = layers[i - 1]
            scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
            with torch.no_grad():
                linear.weight.mul_(scale[:, None])
                linear.bias.copy_((linear.bias - layer.running_mean) * scale + layer.bias)
            model.classifier[i] = nn.Identity()


def export(model, dummy):
    # at opset 17 the exporter writes GELU as its Erf subgraph, the form mcugen's frontend fuses
    m, ops = export_checked(model, dummy, ONNX_PATH, 17, REQUIRED_OPS)
    assert "BatchNormalization" not in ops, dict(ops)
    slopes = [i for i in m.graph.initializer if any(n.op_type == "PRelu" and i.name in n.input
                                                     for n in m.graph.node)]
    assert [list(s.dims) for s in slopes] == [[16, 1, 1]], [list(s.dims) for s in slopes]
    return ops


def main():
    t0 = time.time()
    x_train, y_train, x_test, y_test = seeded_digits_split(SEED, THREADS, N_TEST)

    model = ActDigits()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 25_000, n_params
    train(model, x_train, y_train, EPOCHS, SEED, augment=shifted)
    model.eval()
    with torch.no_grad():
        unfolded = model(torch.from_numpy(x_test)).numpy()
        fold_linear_batchnorms(model)
        torch_test = model(torch.from_numpy(x_test)).numpy()
    assert np.abs(torch_test - unfolded).max() < 1e-4, np.abs(torch_test - unfolded).max()

    ops = export(model, torch.from_numpy(x_test[:1]))
    check_and_save(ONNX_PATH, "act_digits", x_test, y_test, torch_test,
                   [f"parameters: {n_params}",
                    "ops: " + ", ".join(f"{k} x{v}" for k, v in sorted(ops.items()))])
    print(f"time: {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
