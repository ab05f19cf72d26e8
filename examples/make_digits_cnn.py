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
import random
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
from sklearn.datasets import load_digits

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
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_train, y_train = torch.from_numpy(x[:-N_TEST]), torch.from_numpy(y[:-N_TEST])
    x_test, y_test = x[-N_TEST:], y[-N_TEST:]

    model = DigitsCNN()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 20_000, n_params
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, EPOCHS)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        total = 0.0
        for i in range(0, len(perm), 32):
            idx = perm[i:i + 32]
            opt.zero_grad()
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        if epoch % 10 == 9 or epoch == EPOCHS - 1:
            print(f"epoch {epoch + 1:3d}  train loss {total / len(perm):.4f}")

    model.eval()
    with torch.no_grad():
        torch_test = model(torch.from_numpy(x_test)).numpy()
    acc = float((torch_test.argmax(1) == y_test).mean())

    dummy = torch.from_numpy(x_test[:1])
    # The TorchScript exporter (dynamo=False) needs nothing beyond torch; in eval mode it folds
    # each BatchNorm into the Conv before it. It warns that it is the legacy path: silenced.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (dummy,), str(ONNX_PATH), dynamo=False, opset_version=13,
                          input_names=["pixels"], output_names=["logits"],
                          do_constant_folding=True)

    m = onnx.load(str(ONNX_PATH))
    onnx.checker.check_model(m, full_check=True)
    ops = Counter(n.op_type for n in m.graph.node)
    missing = REQUIRED_OPS - set(ops)
    assert not missing, f"exported graph lacks {sorted(missing)}: {dict(ops)}"
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1) for n in convs]
    assert 16 in groups, f"no depthwise Conv: groups {groups}"
    pads = [list(next((a.ints for a in n.attribute if a.name == "pads"), [])) for n in convs]
    assert any(any(p) for p in pads), f"no padded Conv: {pads}"

    sess = ort.InferenceSession(str(ONNX_PATH), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["pixels"]
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    assert sess.get_inputs()[0].shape == [1, 1, 8, 8], sess.get_inputs()[0].shape
    ort_test = np.concatenate([sess.run(None, {"pixels": x_test[i:i + 1]})[0]
                               for i in range(N_TEST)])
    diff = float(np.abs(ort_test - torch_test).max())
    assert diff < 1e-4, f"onnxruntime vs torch max abs diff {diff}"
    ort_acc = float((ort_test.argmax(1) == y_test).mean())

    np.save(HERE / "digits_cnn_inputs.npy", x_test[:64].astype(np.float32))
    np.save(HERE / "digits_cnn_labels.npy", y_test[:64].astype(np.int64))

    print(f"parameters: {n_params}")
    print("ops:", ", ".join(f"{k} x{v}" for k, v in sorted(ops.items())))
    print(f"conv groups: {groups}")
    print(f"onnx size: {ONNX_PATH.stat().st_size} bytes; ort vs torch max abs diff {diff:.2e}")
    print(f"test accuracy (float, {N_TEST} images): torch {acc:.4f}, onnxruntime {ort_acc:.4f}")
    acc64 = float((torch_test[:64].argmax(1) == y_test[:64]).mean())
    print(f"accuracy on the 64 saved images: {acc64:.4f}")
    print(f"time: {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
