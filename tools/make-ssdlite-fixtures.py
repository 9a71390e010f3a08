#!/usr/bin/python3
"""Golden fixture for the native engine's SSDLite training step, from PyTorch autograd.

Usage (Debian's torch 1.13 + torchvision 0.14):
    /usr/bin/python3 tools/make-ssdlite-fixtures.py [--out test/fixtures]

Writes test/fixtures/ssdlite-train.safetensors: one train-mode forward (batch statistics) and backward of
src/model/ssdlite.ts's SSDLite (alpha 0.35 @ 160, 1 class, TF 'SAME' padding, BN eps 1e-3, ReLU6) in float64,
with the fixed loss sum(boxes * R1) + sum(logits * R2), so no box matching is involved.

The model is tools/ssdlite_model.py's twin of the graph (its state-dict names). Weights, the input and R1/R2 are not stored: every tensor is
a hash of its name and element index (init_value below; test/helpers/hash-init.ts computes the same float32
values bit for bit), BN shifts before a ReLU6 at 3 so the step is well conditioned in float32. Stored (float32):
  * out.boxes [N, A, 4], out.logits [N, A, 2], loss [1]
  * sketch.<param>: the parameter's gradient, in full when it has <= SKETCH elements, else its CountSketch
    (element i added with sign s(i) into bucket b(i), both from hash32, SKETCH buckets): a random projection
    whose relative L2 error tracks the full gradient's, so the fixture stays small (every element counts)
  * running.<bn>.running_mean / running_var: the BN running statistics after the step (momentum 0.1)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import write_safetensors  # noqa: E402
from ssdlite_model import SSDLite  # noqa: E402  (the twin of src/model/ssdlite.ts, one copy in tools/)

ALPHA = 0.35
RES = 160
NUM_CLASSES = 1
BATCH = 4
SKETCH = 256
M32 = 0xFFFFFFFF
# Biases no activation follows: the projection BNs of the blocks and the heads' output convs.
LINEAR_BIAS = re.compile(r"^features\.\d+\.conv\.[23]\.bias$|\.module_list\.\d+\.1\.bias$")


# ---- the deterministic tensors (test/helpers/hash-init.ts mirrors these) ----
def mix32(x: np.ndarray) -> np.ndarray:
    """Chris Wellons' lowbias32 on uint32 values held in uint64."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)


def name_hash(name: str) -> int:
    """FNV-1a, 32 bit."""
    h = 0x811C9DC5
    for c in name.encode():
        h = ((h ^ c) * 0x01000193) & M32
    return h


def hash32(name: str, n: int) -> np.ndarray:
    i = np.arange(n, dtype=np.uint64)
    return mix32((np.uint64(name_hash(name)) + i * np.uint64(0x9E3779B9)) & np.uint64(M32))


def hash_uniform(name: str, n: int) -> np.ndarray:
    """n values in [0, 1), float64."""
    return hash32(name, n).astype(np.float64) / 2.0**32


def init_value(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The float32 value of a parameter, BN buffer, input or loss weight (see hash-init.ts)."""
    n = int(np.prod(shape)) if shape else 1
    u = hash_uniform(name, n)
    if name.endswith("num_batches_tracked"):
        v = np.zeros(n)
    elif name.endswith("running_var") or (name.endswith(".weight") and len(shape) == 1):
        v = 0.5 + u  # BN scale and running variance in [0.5, 1.5)
    elif name.endswith(".bias") and not LINEAR_BIAS.search(name):
        # BN shifts before a ReLU6 centre it at 3: at initialization a deep batch-normalized net is chaotic
        # (gradients explode with depth, float32 rounding grows 1000-fold), near-linear it is well conditioned
        v = 3 + 0.1 * (2 * u - 1)
    elif name.endswith(".bias") or name.endswith("running_mean"):
        v = 0.1 * (2 * u - 1)
    elif name.endswith(".weight"):
        fan_in = int(np.prod(shape[1:]))
        v = math.sqrt(3.0 / fan_in) * (2 * u - 1)  # variance 1 / fan_in
    else:
        v = 2 * u - 1  # input, R1, R2
    return v.astype(np.float32).reshape(shape)


def count_sketch(name: str, g: np.ndarray) -> np.ndarray:
    flat = g.reshape(-1).astype(np.float64)
    if flat.size <= SKETCH:
        return flat
    h = hash32("sketch:" + name, flat.size)
    sign = np.where(h >> 31, -1.0, 1.0)
    return np.bincount((h % SKETCH).astype(np.int64), weights=sign * flat, minlength=SKETCH)


def train_step(dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Outputs (and loss), parameter gradients and BN running statistics after one train-mode step in `dtype`."""
    model = SSDLite(ALPHA, NUM_CLASSES)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            t.copy_(torch.from_numpy(init_value(name, tuple(t.shape))))
    model = model.to(dtype).train()
    x = torch.from_numpy(init_value("input", (BATCH, 3, RES, RES))).to(dtype)
    boxes, logits = model(x)
    r1 = torch.from_numpy(init_value("R.boxes", tuple(boxes.shape))).to(dtype)
    r2 = torch.from_numpy(init_value("R.logits", tuple(logits.shape))).to(dtype)
    loss = (boxes * r1).sum() + (logits * r2).sum()
    loss.backward()
    outputs = {"boxes": boxes.detach(), "logits": logits.detach(), "loss": loss.detach().reshape(1)}
    grads = {name: p.grad.detach() for name, p in model.named_parameters()}
    running = {name: b.detach() for name, b in model.named_buffers() if "running" in name}
    return outputs, grads, running


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b).norm() / b.norm()).item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(1)

    # The float64 step is the reference; the float32 one measures what float32 rounding alone costs in this
    # deep batch-normalized network at initialization (PyTorch's CPU BN accumulates its statistics in double).
    out64, grads64, running64 = train_step(torch.float64)
    out32, grads32, _ = train_step(torch.float32)
    tensors: dict[str, object] = {}
    for k, v in out64.items():
        tensors[f"out.{k}"] = v.float()
        tensors[f"f32err.out.{k}"] = torch.tensor([rel_l2(out32[k], v)])
    # BN biases whose gradient is zero in exact arithmetic (a linear conv and a train-mode BN follow them)
    zero = [name for name, g in grads64.items() if g.norm().item() < 1e-8]
    for name, g in grads64.items():
        tensors[f"sketch.{name}"] = count_sketch(name, g.numpy()).astype(np.float32)
        if name not in zero:
            tensors[f"f32err.{name}"] = torch.tensor([rel_l2(grads32[name], g)])
    for name, b in running64.items():
        tensors[f"running.{name}"] = b.float()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "ssdlite-train.safetensors")
    meta = {"alpha": str(ALPHA), "resolution": str(RES), "num_classes": str(NUM_CLASSES), "batch": str(BATCH), "sketch": str(SKETCH),
            "params": str(sum(g.numel() for g in grads64.values())), "structurally_zero": json.dumps(zero)}
    size = write_safetensors(path, {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in tensors.items()}, metadata=meta)
    errs = sorted(v.item() for k, v in tensors.items() if k.startswith("f32err.") and not k.startswith("f32err.out."))
    print(f"{path}: {len(tensors)} tensors, {size} bytes, anchors {out64['boxes'].shape[1]}, loss {out64['loss'].item():.6f}; "
          f"PyTorch float32 vs float64: boxes {tensors['f32err.out.boxes'].item():.2e}, gradients median {errs[len(errs) // 2]:.2e}, worst {errs[-1]:.2e}; "
          f"{len(zero)} structurally zero")


if __name__ == "__main__":
    main()
