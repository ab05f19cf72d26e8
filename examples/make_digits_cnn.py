"""Train a small CNN on scikit-learn's bundled digits (1,797 8x8 images, pixels 0..16) and
export it with torch.onnx to examples/digits_cnn.onnx (opset 13, input `pixels` [1,1,8,8]
float32 = pixel / 16 in [0, 1], output `logits` [1,10], no Softmax).

The graph is built to cover ONNX ops the other example models lack: Conv with padding, a
depthwise Conv (group == channels), Relu, Clip (ReLU6), LeakyRelu (0.1), MaxPool, Concat of
two branches along channels, Add (a residual), GlobalAveragePool, Flatten, Gemm.

Split: the first 1,437 images (dataset order) train, the last 360 test. Also writes
digits_cnn_inputs.npy (the first 64 test images / 16, float32 (64,1,8,8)) and
digits_cnn_labels.npy (int64 (64,)). Needs torch (CPU), scikit-learn, onnx, onnxruntime;
trains in about 15 s on one core.
"""
import time
from pathlib import Path

import torch
import torch.nn as nn

from _digits import check_and_save, export_checked, seeded_digits_split, train

HERE = Path(__file__).resolve().parent
ONNX_PATH = HERE / "digits_cnn.onnx"
SEED = 0
N_TEST = 360
EPOCHS = 30
# One intra-op thread: with batches of 32 tiny images OpenMP's fork/join costs more than it
# saves, and on a busy 2-core machine 2 threads measured 35-120 ms/step against 8-9 ms for 1.
THREADS = 1
REQUIRED_OPS = {"Conv", "Relu", "Clip", "LeakyRelu", "MaxPool", "Concat", "Add",
                "GlobalAveragePool", "Flatten", "Gemm"}


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        # stem: Conv 3x3 pad 1 (+ BN) + ReLU -> 16x8x8
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU())
        # branch A: pointwise 16->8 + LeakyReLU(0.1)
        self.branch_a = nn.Sequential(nn.Conv2d(16, 8, 1), nn.LeakyReLU(0.1))
        # branch B: depthwise 3x3 (group == 16) (+ BN) + ReLU6, then pointwise 16->8 + ReLU6
        self.branch_b = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
                                      nn.BatchNorm2d(16), nn.ReLU6(),
                                      nn.Conv2d(16, 8, 1), nn.ReLU6())
        self.pool = nn.MaxPool2d(2)                          # 16x8x8 -> 16x4x4
        self.head = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(32), nn.ReLU())
        self.gap = nn.AdaptiveAvgPool2d(1)                   # -> GlobalAveragePool
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        s = self.stem(x)
        y = torch.cat([self.branch_a(s), self.branch_b(s)], dim=1)  # Concat, axis 1
        y = y + s                                                  # residual Add
        y = self.head(self.pool(y))
        y = torch.flatten(self.gap(y), 1)
        return self.fc(y)


def main():
    t0 = time.time()
    x_train, y_train, x_test, y_test = seeded_digits_split(SEED, THREADS, N_TEST)

    model = DigitsCNN()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 20_000, n_params
    train(model, x_train, y_train, EPOCHS, SEED)

    model.eval()
    with torch.no_grad():
        torch_test = model(torch.from_numpy(x_test)).numpy()

    dummy = torch.from_numpy(x_test[:1])
    m, ops = export_checked(model, dummy, ONNX_PATH, 13, REQUIRED_OPS)
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1) for n in convs]
    assert 16 in groups, f"no depthwise Conv: groups {groups}"
    pads = [list(next((a.ints for a in n.attribute if a.name == "pads"), [])) for n in convs]
    assert any(any(p) for p in pads), f"no padded Conv: {pads}"

    check_and_save(ONNX_PATH, "digits_cnn", x_test, y_test, torch_test,
                   [f"parameters: {n_params}",
                    "ops: " + ", ".join(f"{k} x{v}" for k, v in sorted(ops.items())),
                    f"conv groups: {groups}"])
    print(f"time: {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
