"""What the digits example scripts share: the seeded, deterministic set-up and the split of
scikit-learn's digits (the last n_test images test), the training loop, and after it the check that
onnxruntime on the exported file matches torch on the whole test split, the first 64 test
images and labels saved next to the model, and the figures printed."""
import random

import numpy as np
import onnxruntime as ort


def seeded_digits_split(seed, threads, n_test):
    """Seeds everything, then (x_train, y_train) as tensors and (x_test, y_test) as arrays,
    pixels / 16 in [0, 1] shaped [N, 1, 8, 8]."""
    import torch
    from sklearn.datasets import load_digits
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    return (torch.from_numpy(x[:-n_test]), torch.from_numpy(y[:-n_test]),
            x[-n_test:], y[-n_test:])


def train(model, x_train, y_train, epochs, seed, augment=None):
    """Adam with cosine decay, batches of 32 in a seeded order; augment(batch, generator)
    transforms each batch when given."""
    import torch
    import torch.nn as nn
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        total = 0.0
        for i in range(0, len(perm), 32):
            idx = perm[i:i + 32]
            batch = x_train[idx] if augment is None else augment(x_train[idx], gen)
            opt.zero_grad()
            loss = loss_fn(model(batch), y_train[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        if epoch % 10 == 9 or epoch == epochs - 1:
            print(f"epoch {epoch + 1:3d}  train loss {total / len(perm):.4f}")


def export_checked(model, dummy, onnx_path, opset, required_ops):
    """torch.onnx's TorchScript exporter (dynamo=False: needs nothing beyond torch; in eval mode
    it folds each BatchNorm into the Conv before it; it warns that it is the legacy path:
    silenced), then the onnx checker and the op list: the loaded model and its op counts."""
    import warnings
    from collections import Counter
    import onnx
    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (dummy,), str(onnx_path), dynamo=False, opset_version=opset,
                          input_names=["pixels"], output_names=["logits"],
                          do_constant_folding=True)
    m = onnx.load(str(onnx_path))
    onnx.checker.check_model(m, full_check=True)
    ops = Counter(n.op_type for n in m.graph.node)
    missing = required_ops - set(ops)
    assert not missing, f"exported graph lacks {sorted(missing)}: {dict(ops)}"
    return m, ops


def check_and_save(onnx_path, prefix, x_test, y_test, torch_test, notes):
    """notes: lines printed before the accuracy figures (parameters, ops, ...)."""
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["pixels"]
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    assert sess.get_inputs()[0].shape == [1, 1, 8, 8], sess.get_inputs()[0].shape
    ort_test = np.concatenate([sess.run(None, {"pixels": x_test[i:i + 1]})[0]
                               for i in range(len(x_test))])
    diff = float(np.abs(ort_test - torch_test).max())
    assert diff < 1e-4, f"onnxruntime vs torch max abs diff {diff}"
    here = onnx_path.parent
    np.save(here / f"{prefix}_inputs.npy", x_test[:64].astype(np.float32))
    np.save(here / f"{prefix}_labels.npy", y_test[:64].astype(np.int64))
    for line in notes:
        print(line)
    print(f"onnx size: {onnx_path.stat().st_size} bytes; ort vs torch max abs diff {diff:.2e}")
    acc = float((torch_test.argmax(1) == y_test).mean())
    ort_acc = float((ort_test.argmax(1) == y_test).mean())
    print(f"test accuracy (float, {len(x_test)} images): torch {acc:.4f}, onnxruntime {ort_acc:.4f}")
    acc64 = float((torch_test[:64].argmax(1) == y_test[:64]).mean())
    print(f"accuracy on the 64 saved images: {acc64:.4f}")
