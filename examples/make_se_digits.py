"""Train two tiny networks with squeeze-excitation (SE) blocks on scikit-learn's bundled digits
(1,797 8x8 images, pixels 0..16) and export each with both of torch.onnx's exporters, to

  examples/se_mbv3_{dynamo,ts13,ts17}.onnx     MobileNetV3-style
  examples/se_effnet_{dynamo,ts13,ts17}.onnx   EfficientNet-style

dynamo: `torch.onnx.export(..., dynamo=True)` at the opset it writes by default (20 with torch
2.14), weights inside the file (external_data=False); ts13 / ts17: the TorchScript exporter
(dynamo=False) at opset 13 / 17. Input `pixels` [1,1,8,8] float32 = pixel / 16 in [0, 1],
output `logits` [1,10], no Softmax; the batch is static (neither exporter's default makes it
dynamic).

Both networks are built from torchvision's own blocks, on the 8x8 input as it is (stem stride
1, two stride-2 blocks: 8x8 -> 4x4 -> 2x2):
 - MobileNetV3: InvertedResidual / InvertedResidualConfig (expand 1x1, depthwise 3x3,
   project 1x1, ReLU or Hardswish), SE `x * Hardsigmoid(Conv1x1(ReLU(Conv1x1(avgpool(x)))))`
   (torchvision.ops.SqueezeExcitation, scale_activation=Hardsigmoid), a 1x1 Conv + Hardswish,
   global pool, Linear + Hardswish + Dropout + Linear.
 - EfficientNet: MBConv / MBConvConfig (SiLU; SE with SiLU and a Sigmoid gate), a 1x1
   Conv + SiLU, global pool, Dropout + Linear.
BatchNorm is used in training; in eval mode the TorchScript exporter folds it into the Convs and
the dynamo exporter's optimizer (onnxscript's FuseBatchNormIntoConv rule) does too: the script
asserts that no BatchNormalization or Dropout node is left.

Training: 15 epochs with one-pixel shifts (make_act_digits.py's); without them both networks
stopped at 95.6 % after 20 epochs. 19,282 (MobileNetV3) and 16,984 (EfficientNet) parameters,
18,770 and 16,464 once BatchNorm is folded; 97.5 % and 96.9 % float top-1 on the test split.

Split: the first 1,437 images (dataset order) train, the last 360 test. Also writes
se_digits_inputs.npy (the first 64 test images / 16, float32 (64,1,8,8)) and
se_digits_labels.npy (int64 (64,)), shared by the six files. Needs torch (CPU), torchvision,
onnxscript (the dynamo exporter), scikit-learn, onnx, onnxruntime; about 20 s on one core
(6 s of training per network). Seeded; on the same torch build the TorchScript files come out
byte-identical; the dynamo exporter writes each node's Python stack trace (file paths and line
numbers) into its metadata, which the script drops.
"""
import time
from collections import Counter
from functools import partial
from pathlib import Path

import onnx
import torch
import torch.nn as nn
from torchvision.models.efficientnet import MBConv, MBConvConfig
from torchvision.models.mobilenetv3 import InvertedResidual, InvertedResidualConfig
from torchvision.ops.misc import Conv2dNormActivation

from _digits import check_and_save, export_checked, seeded_digits_split, train
from make_act_digits import shifted

HERE = Path(__file__).resolve().parent
SEED = 0
N_TEST = 360
EPOCHS = 15
THREADS = 1          # tiny batches: one intra-op thread is the fastest (see make_digits_cnn.py)
# what each network's graph must hold besides the global pool (GlobalAveragePool from the
# TorchScript exporter, ReduceMean from dynamo)
REQUIRED_OPS = {"mbv3": {"Conv", "Relu", "HardSigmoid", "Mul", "Add", "Gemm"},
                "effnet": {"Conv", "Sigmoid", "Mul", "Add", "Gemm"}}


class SEMobileNetV3(nn.Module):
    """MobileNetV3-small's layout shrunk to 8x8 digits: torchvision's InvertedResidual blocks
    (their default SE layer: SqueezeExcitation with a Hardsigmoid gate, squeeze channels
    rounded to a multiple of 8)."""

    def __init__(self):
        super().__init__()
        bn = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)   # as torchvision's MobileNetV3
        cnf = partial(InvertedResidualConfig, dilation=1, width_mult=1.0)
        #        in  k  exp out  SE     act  stride
        blocks = [cnf(16, 3, 16, 16, True, "RE", 1),      # 16x8x8, SE 16->8->16, residual
                  cnf(16, 3, 48, 24, False, "RE", 2),     # 24x4x4
                  cnf(24, 3, 48, 24, True, "HS", 1),      # 24x4x4, SE 48->16->48, residual
                  cnf(24, 3, 64, 32, True, "HS", 2)]      # 32x2x2, SE 64->16->64
        self.features = nn.Sequential(
            Conv2dNormActivation(1, 16, 3, stride=1, norm_layer=bn,
                                 activation_layer=nn.Hardswish),
            *[InvertedResidual(c, bn) for c in blocks],
            Conv2dNormActivation(32, 64, 1, norm_layer=bn, activation_layer=nn.Hardswish))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(64, 32), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class SEEfficientNet(nn.Module):
    """EfficientNet-B0's layout shrunk to 8x8 digits: torchvision's MBConv blocks (SE squeeze
    channels = input channels / 4, SiLU inside, Sigmoid gate); no stochastic depth."""

    def __init__(self):
        super().__init__()
        bn = partial(nn.BatchNorm2d, eps=1e-3)
        #                      expand k  stride in out layers
        blocks = [MBConvConfig(1, 3, 1, 16, 16, 1),      # 16x8x8, SE 16->4->16, residual
                  MBConvConfig(4, 3, 2, 16, 24, 1),      # 24x4x4, SE 64->4->64
                  MBConvConfig(4, 3, 2, 24, 32, 1)]      # 32x2x2, SE 96->6->96
        self.features = nn.Sequential(
            Conv2dNormActivation(1, 16, 3, stride=1, norm_layer=bn, activation_layer=nn.SiLU),
            *[MBConv(c, 0.0, bn) for c in blocks],
            Conv2dNormActivation(32, 96, 1, norm_layer=bn, activation_layer=nn.SiLU))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(96, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def export_dynamo(model, dummy, onnx_path):
    """torch.onnx's dynamo exporter as a user calls it (its default opset and optimizer), but
    with the weights inside the .onnx file (by default they go to a side file .onnx.data); then
    the onnx checker: the op counts and the opset."""
    torch.onnx.export(model, (dummy,), str(onnx_path), dynamo=True, external_data=False,
                      input_names=["pixels"], output_names=["logits"], verbose=False)
    assert not onnx_path.with_name(onnx_path.name + ".data").exists()
    m = onnx.load(str(onnx_path), load_external_data=False)
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in m.graph.initializer)
    # each node's metadata is its Python stack trace (this machine's paths, line numbers):
    # dropped, so that the committed file says nothing of where it was made
    for node in m.graph.node:
        del node.metadata_props[:]
    onnx.save(m, str(onnx_path))
    onnx.checker.check_model(m, full_check=True)
    return m, Counter(n.op_type for n in m.graph.node)


def export_all(name, model, dummy, x_test, y_test, torch_test, n_params):
    """The three exports of one network, each checked against torch by onnxruntime."""
    for kind in ("dynamo", "ts13", "ts17"):
        path = HERE / f"se_{name}_{kind}.onnx"
        if kind == "dynamo":
            m, ops = export_dynamo(model, dummy, path)
            missing = REQUIRED_OPS[name] - set(ops)
            assert not missing, f"exported graph lacks {sorted(missing)}: {dict(ops)}"
        else:
            m, ops = export_checked(model, dummy, path, int(kind[2:]), REQUIRED_OPS[name])
        assert not {"BatchNormalization", "Dropout"} & set(ops), dict(ops)
        assert {"GlobalAveragePool", "ReduceMean"} & set(ops), dict(ops)
        assert path.stat().st_size < 200_000, path.stat().st_size
        opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
        print(f"--- {path.name}")
        check_and_save(path, "se_digits", x_test, y_test, torch_test,
                       [f"parameters: {n_params}; opset {opset}, IR version {m.ir_version}",
                        "ops: " + ", ".join(f"{k} x{v}" for k, v in sorted(ops.items()))])


def main():
    t0 = time.time()
    x_train, y_train, x_test, y_test = seeded_digits_split(SEED, THREADS, N_TEST)
    dummy = torch.from_numpy(x_test[:1])
    for name, net in (("mbv3", SEMobileNetV3), ("effnet", SEEfficientNet)):
        t1 = time.time()
        torch.manual_seed(SEED)          # each network's initial weights independent of the other
        model = net()
        n_params = sum(p.numel() for p in model.parameters())
        assert n_params < 50_000, n_params
        print(f"=== {name}: {n_params} parameters")
        train(model, x_train, y_train, EPOCHS, SEED, augment=shifted)
        t_train = time.time() - t1
        model.eval()
        with torch.no_grad():
            torch_test = model(torch.from_numpy(x_test)).numpy()
        export_all(name, model, dummy, x_test, y_test, torch_test, n_params)
        print(f"{name}: training {t_train:.1f} s, exports and checks {time.time() - t1 - t_train:.1f} s")
    print(f"time: {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
