"""Train two tiny vision transformers (ViTs) on scikit-learn's bundled digits (1,797 8x8 images,
pixels 0..16), build a tiny BERT encoder with random weights, and export each with both of
torch.onnx's exporters, to

  examples/vit_cls_{dynamo,ts17,ts14}.onnx            ViT with a class token
  examples/vit_mean_{dynamo,ts17,ts14}.onnx           ViT with mean pooling, attention written out
  examples/bert_{eager,sdpa}_{dynamo,ts17,ts14}.onnx  transformers' BertModel, two attentions

dynamo: `torch.onnx.export(..., dynamo=True)` at the opset it writes by default (20 with torch
2.14), weights inside the file (external_data=False); ts17 / ts14: the TorchScript exporter
(dynamo=False) at opset 17 (LayerNormalization) / 14 (LayerNorm written out: ReduceMean, Sub,
Pow, ReduceMean, Add, Sqrt, Div, Mul, Add). ViTs: input `pixels` [1,1,8,8] float32 = pixel / 16
in [0, 1], output `logits` [1,10], no Softmax. BERT: input `input_ids` [1,16] int64 and no
attention mask (BertModel then attends to every token), output `hidden` [1,16,32] (its
last_hidden_state). Every batch is static.

Both ViTs: width 32, 2 heads, feed-forward 64 with GELU, 2 pre-LayerNorm blocks; 2x2 patches
by Conv2d(1, 32, 2, stride 2) -> 16 tokens (flatten(2).transpose(1, 2)), learned position
embeddings, a final LayerNorm, Linear(32, 10).
 - vit_cls: a learned class token in front (torch.cat with cls.expand(B, -1, -1): 17 tokens),
   torch's nn.TransformerEncoderLayer(norm_first=True, batch_first=True, dropout 0) x2
   (nn.MultiheadAttention inside), the class token's output x[:, 0]. 18,218 parameters.
 - vit_mean: each block written out: q, k, v Linears, heads by reshape/permute,
   softmax((q @ k^T) * 16^-0.5) @ v, the output Linear; the mean over the 16 tokens.
   18,154 parameters.
Training: AdamW (lr 2e-3, weight decay 0.05), cosine decay, batches of 32, 60 epochs, 30 % of
the images moved by one pixel, each its own way. 93.6 % (vit_cls) and 93.9 % (vit_mean) float
top-1 on the 360 test images (93.8 % and 98.4 % on the 64 saved); the 95 % aimed at was not
reached. What was tried: _digits.train (Adam 3e-3, weight decay 1e-4) with make_act_digits.py's
shifts (the whole batch moved alike) gave 81 % / 78 % after 30 epochs and 88 % / 89 % after 80:
with 2x2 patches a one-pixel shift changes every patch; without shifts 89 % / 93 % after 30
epochs and 90 % / 93 % after 80 (train loss 0.0007: learnt by heart); dropout 0.1 and 0.2 and
label smoothing 0.1 did not help; other seeds of the recipe here gave 92.2 - 94.4 %. For scale,
scikit-learn's SVC (RBF) reaches 94.2 % and LogisticRegression 90.0 % on this split.

BERT: BertModel(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
num_attention_heads=2, intermediate_size=64, max_position_embeddings=32, no dropout),
add_pooling_layer=False) with attn_implementation "eager" (matmul, softmax, matmul) and "sdpa"
(torch's scaled_dot_product_attention), the same weights in both: 20,288 parameters. Not
trained (an example for bit-exactness): BertModel's own init leaves every bias 0 and every
LayerNorm scale 1 (both exporters then share one initializer among them; TorchScript writes 19
Identity nodes for it) and its weights' std 0.02 makes the attention nearly uniform, so every
parameter is redrawn, seeded: N(0, 0.2), LayerNorm scales N(1, 0.2). bert_tokens.npy: 64
sequences of 16 token ids drawn uniformly from 0..63, int64 (64,16).

Split: the first 1,437 images (dataset order) train, the last 360 test. Also writes
vit_digits_inputs.npy (the first 64 test images / 16, float32 (64,1,8,8)) and
vit_digits_labels.npy (int64 (64,)), shared by the six ViT files. Each file is checked with
onnx.checker and against torch by onnxruntime (logits of the 360 test images, hidden states of
the 64 sequences; max abs diff < 1e-4, measured at most 6.7e-6). Needs torch (CPU),
transformers, onnxscript (the dynamo exporter), scikit-learn, onnx, onnxruntime; about 35 s on
one core (11 - 15 s of training per ViT), 10 s more to import. Seeded; on the same torch build
all eighteen files come out byte-identical; the dynamo exporter writes each node's Python
stack trace (file paths and line numbers) into its metadata, which the script drops.
"""
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
from transformers import BertConfig, BertModel

from _digits import check_and_save, seeded_digits_split

HERE = Path(__file__).resolve().parent
SEED = 0
N_TEST = 360
EPOCHS = 60
LR = 2e-3
WEIGHT_DECAY = 0.05
SHIFT_P = 0.3        # share of the training images moved by one pixel, each its own way
THREADS = 1          # tiny batches: one intra-op thread is the fastest (see make_digits_cnn.py)
D = 32               # token width
HEADS = 2
FF = 64              # feed-forward width
KINDS = ("dynamo", "ts17", "ts14")
BERT_CONFIG = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64, max_position_embeddings=32, hidden_dropout_prob=0.0,
                   attention_probs_dropout_prob=0.0)
BERT_STD = 0.2       # every BERT parameter redrawn: N(0, 0.2), LayerNorm scales N(1, 0.2)
N_TOKENS = 16
N_SEQUENCES = 64


class ViTCls(nn.Module):
    """ViT with a class token: 2x2 patches (Conv stride 2) -> 16 tokens, class token in front,
    learned positions, torch's own TransformerEncoderLayer x2 (pre-LayerNorm, GELU), final
    LayerNorm, the class token's Linear."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(1, D, 2, stride=2)
        self.cls = nn.Parameter(torch.zeros(1, 1, D))
        self.pos = nn.Parameter(torch.zeros(1, 17, D))
        nn.init.trunc_normal_(self.cls, std=0.02)
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*[
            nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True) for _ in range(2)])
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)                    # [B, 16, D]
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)  # [B, 17, D]
        x = self.norm(self.blocks(x + self.pos))
        return self.head(x[:, 0])


class Attention(nn.Module):
    """Multi-head self-attention written out: q, k, v Linears, heads by reshape/permute."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.proj = (nn.Linear(D, D) for _ in range(4))
        self.scale = (D // HEADS) ** -0.5

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = (f(x).reshape(b, n, HEADS, c // HEADS).permute(0, 2, 1, 3)
                   for f in (self.q, self.k, self.v))                    # [B, H, N, c/H]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(-1)     # [B, H, N, N]
        return self.proj((attn @ v).permute(0, 2, 1, 3).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.attn = Attention()
        self.mlp = nn.Sequential(nn.Linear(D, FF), nn.GELU(), nn.Linear(FF, D))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTMean(nn.Module):
    """ViT without a class token: the same patches and positions, hand-written blocks, final
    LayerNorm, the mean over the 16 tokens, Linear."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(1, D, 2, stride=2)
        self.pos = nn.Parameter(torch.zeros(1, 16, D))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(Block(), Block())
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos           # [B, 16, D]
        return self.head(self.norm(self.blocks(x)).mean(dim=1))


class BertHidden(nn.Module):
    """transformers' BertModel (no pooler) called with input_ids alone: last_hidden_state."""

    def __init__(self, impl):
        super().__init__()
        self.bert = BertModel(BertConfig(**BERT_CONFIG, attn_implementation=impl),
                              add_pooling_layer=False)
        # BertModel's own init leaves every bias 0 and every LayerNorm scale 1 (the exporters
        # then share one initializer among them) and its weights' std 0.02 makes attention
        # nearly uniform: all redrawn, in named_parameters order
        with torch.no_grad():
            for name, p in self.bert.named_parameters():
                p.normal_(1.0 if name.endswith("LayerNorm.weight") else 0.0, BERT_STD)

    def forward(self, input_ids):
        return self.bert(input_ids=input_ids).last_hidden_state


def shifted(batch, gen):
    """A random SHIFT_P of the images each moved by up to one pixel each way, each image its
    own shift (make_act_digits.py's `shifted` moves the whole batch alike, every batch)."""
    n = len(batch)
    padded = nn.functional.pad(batch, (1, 1, 1, 1))
    shift = torch.randint(0, 9, (n,), generator=gen)
    shift[torch.rand(n, generator=gen) >= SHIFT_P] = 4          # 4: (1, 1), not moved
    out = torch.empty_like(batch)
    for k in range(9):
        dy, dx = divmod(k, 3)
        out[shift == k] = padded[shift == k, :, dy:dy + 8, dx:dx + 8]
    return out


def train(model, x_train, y_train, gen):
    """_digits.train's loop (cosine decay, batches of 32 in a seeded order) with AdamW at
    LR / WEIGHT_DECAY instead of Adam at 3e-3 / 1e-4, and the per-image shifts above."""
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, EPOCHS)
    loss_fn = nn.CrossEntropyLoss()
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


def export(model, dummy, path, kind, in_name, out_name):
    """One of the three exports, then the onnx checker: the loaded model and its op counts.
    dynamo: its default opset and optimizer, the weights inside the file, each node's metadata
    (its Python stack trace: this machine's paths) dropped; ts17 / ts14: the TorchScript
    exporter (its legacy-path warning silenced) at that opset, constants folded."""
    if kind == "dynamo":
        torch.onnx.export(model, (dummy,), str(path), dynamo=True, external_data=False,
                          input_names=[in_name], output_names=[out_name], verbose=False)
        assert not path.with_name(path.name + ".data").exists()
        m = onnx.load(str(path), load_external_data=False)
        assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in m.graph.initializer)
        for node in m.graph.node:
            del node.metadata_props[:]
        onnx.save(m, str(path))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            # transformers' sdpa path turns `q_length > 1` into a Python bool (is_causal, False
            # here either way): the tracer's warning about it silenced
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(model, (dummy,), str(path), dynamo=False,
                              opset_version=int(kind[2:]), input_names=[in_name],
                              output_names=[out_name], do_constant_folding=True)
        m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    assert path.stat().st_size < 200_000, path.stat().st_size
    ops = Counter(n.op_type for n in m.graph.node)
    assert {"MatMul", "Softmax"} <= set(ops), dict(ops)
    # LayerNormalization exists from opset 17: at 14 the exporter writes its ReduceMean form
    assert ("LayerNormalization" in ops) == (kind != "ts14"), dict(ops)
    assert not {"Dropout", "Identity"} & set(ops), dict(ops)
    return m, ops


def describe(m, ops, n_params):
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    return [f"parameters: {n_params}; opset {opset}, IR version {m.ir_version}",
            "ops: " + ", ".join(f"{k} x{v}" for k, v in sorted(ops.items(),
                                                              key=lambda kv: (-kv[1], kv[0])))]


def vits(x_train, y_train, x_test, y_test):
    dummy = torch.from_numpy(x_test[:1])
    for name, net in (("cls", ViTCls), ("mean", ViTMean)):
        t1 = time.time()
        torch.manual_seed(SEED)
        model = net()
        n_params = sum(p.numel() for p in model.parameters())
        print(f"=== vit_{name}: {n_params} parameters")
        train(model, x_train, y_train, torch.Generator().manual_seed(SEED))
        t_train = time.time() - t1
        model.eval()
        with torch.no_grad():
            torch_test = model(torch.from_numpy(x_test)).numpy()
        for kind in KINDS:
            path = HERE / f"vit_{name}_{kind}.onnx"
            m, ops = export(model, dummy, path, kind, "pixels", "logits")
            print(f"--- {path.name}")
            check_and_save(path, "vit_digits", x_test, y_test, torch_test,
                           describe(m, ops, n_params))
        print(f"vit_{name}: training {t_train:.1f} s, exports and checks "
              f"{time.time() - t1 - t_train:.1f} s")


def berts():
    tokens = torch.randint(0, BERT_CONFIG["vocab_size"], (N_SEQUENCES, N_TOKENS),
                           generator=torch.Generator().manual_seed(SEED))
    np.save(HERE / "bert_tokens.npy", tokens.numpy())
    for impl in ("eager", "sdpa"):
        torch.manual_seed(SEED)          # the same weights for both attention implementations
        model = BertHidden(impl).eval()
        n_params = sum(p.numel() for p in model.parameters())
        print(f"=== bert_{impl}: {n_params} parameters")
        with torch.no_grad():
            torch_out = np.concatenate([model(tokens[i:i + 1]).numpy()
                                        for i in range(len(tokens))])
        for kind in KINDS:
            path = HERE / f"bert_{impl}_{kind}.onnx"
            print(f"--- {path.name}")
            m, ops = export(model, tokens[:1], path, kind, "input_ids", "hidden")
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            assert [i.name for i in sess.get_inputs()] == ["input_ids"]
            assert [o.name for o in sess.get_outputs()] == ["hidden"]
            assert sess.get_inputs()[0].shape == [1, N_TOKENS], sess.get_inputs()[0].shape
            ort_out = np.concatenate([sess.run(None, {"input_ids": tokens[i:i + 1].numpy()})[0]
                                      for i in range(len(tokens))])
            diff = float(np.abs(ort_out - torch_out).max())
            assert diff < 1e-4, f"onnxruntime vs torch max abs diff {diff}"
            for line in describe(m, ops, n_params):
                print(line)
            print(f"onnx size: {path.stat().st_size} bytes; ort vs torch max abs diff {diff:.2e} "
                  f"on {len(tokens)} sequences")


def main():
    t0 = time.time()
    x_train, y_train, x_test, y_test = seeded_digits_split(SEED, THREADS, N_TEST)
    vits(x_train, y_train, x_test, y_test)
    berts()
    print(f"time: {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
