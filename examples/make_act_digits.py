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


def train(model, x_train, y_train):
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
            loss = loss_fn(model(shifted(x_train[idx], gen)), y_train[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        if epoch % 10 == 9 or epoch == EPOCHS - 1:
            print(f"epoch {epoch + 1:3d}  train loss {total / len(perm):.4f}")


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
    # The TorchScript exporter (dynamo=False) writes GELU as its Erf subgraph at opset 17, the
    # form mcugen's frontend fuses back; it warns that it is the legacy path: silenced.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (dummy,), str(ONNX_PATH), dynamo=False, opset_version=17,
                          input_names=["pixels"], output_names=["logits"],
                          do_constant_folding=True)
    m = onnx.load(str(ONNX_PATH))
    onnx.checker.check_model(m, full_check=True)
    ops = Counter(n.op_type for n in m.graph.node)
    missing = REQUIRED_OPS - set(ops)
    assert not missing, f"exported graph lacks {sorted(missing)}: {dict(ops)}"
    assert "BatchNormalization" not in ops, dict(ops)
    slopes = [i for i in m.graph.initializer if any(n.op_type == "PRelu" and i.name in n.input
                                                     for n in m.graph.node)]
    assert [list(s.dims) for s in slopes] == [[16, 1, 1]], [list(s.dims) for s in slopes]
    return ops


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

    model = ActDigits()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 25_000, n_params
    train(model, x_train, y_train)
    model.eval()
    with torch.no_grad():
        unfolded = model(torch.from_numpy(x_test)).numpy()
        fold_linear_batchnorms(model)
        torch_test = model(torch.from_numpy(x_test)).numpy()
    assert np.abs(torch_test - unfolded).max() < 1e-4, np.abs(torch_test - unfolded).max()
    acc = float((torch_test.argmax(1) == y_test).mean())

    ops = export(model, torch.from_numpy(x_test[:1]))
    sess = ort.InferenceSession(str(ONNX_PATH), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [1, 1, 8, 8], sess.get_inputs()[0].shape
    ort_test = np.concatenate([sess.run(None, {"pixels": x_test[i:i + 1]})[0]
                               for i in range(N_TEST)])
    diff = float(np.abs(ort_test - torch_test).max())
    assert diff < 1e-4, f"onnxruntime vs torch max abs diff {diff}"
    ort_acc = float((ort_test.argmax(1) == y_test).mean())

    np.save(HERE / "act_digits_inputs.npy", x_test[:64].astype(np.float32))
    np.save(HERE / "act_digits_labels.npy", y_test[:64].astype(np.int64))

    print(f"parameters: {n_params}")
    print("ops:", ", ".join(f"{k} x{v}" for k, v in sorted(ops.items())))
    print(f"onnx size: {ONNX_PATH.stat().st_size} bytes; ort vs torch max abs diff {diff:.2e}")
    print(f"test accuracy (float, {N_TEST} images): torch {acc:.4f}, onnxruntime {ort_acc:.4f}")
    acc64 = float((torch_test[:64].argmax(1) == y_test[:64]).mean())
    print(f"accuracy on the 64 saved images: {acc64:.4f}")
    print(f"time: {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
