#!/usr/bin/python3
"""Golden fixtures of heads and feature extractors: a MobileNetV2 with a multi-layer classifier head
(test/head.test.ts) and the include_top=False outputs of torchvision's features (test/features.test.ts).

Usage (Debian's PyTorch: torch 1.13 + torchvision, CPU):
    /usr/bin/python3 tools/make-head-fixtures.py [--out test/fixtures]

The backbone is the committed tv-0.35-96.weights.safetensors (torchvision mobilenet_v2 width_mult 0.35), so only
the head is stored. torchvision's classifier becomes the nn.Sequential a Keras/TF.js Dense stack maps onto:

    classifier = Sequential(Dropout(0.2), Linear(1280, 32), ReLU(), Dropout(0.3),
                            Linear(32, 16), ReLU6(), Dropout(0.3), Linear(16, 5))

(state-dict keys classifier.1, classifier.4, classifier.7). File written: tv-0.35-96-head.safetensors with
  classifier.*                     the head's weights (torch.manual_seed(3), torch's default Linear init, biases
                                   normal(0, 0.5) so that the hidden ReLUs are neither all on nor all off)
  eval.input [2,3,96,96], eval.logits [2,5]     eval mode, computed in float64
  train.labels [2], train.loss, grad.<param>    train mode (batch statistics) with every dropout at p = 0
                                   (dropout masks are random in both frameworks), cross-entropy, loss.backward()
                                   in float64; grad.* for the head and the last BN (features.18.1)

and tv-0.35-96-features.safetensors: on tv-0.35-96.io's eval.input, in float64, the last feature map of
model.features (map [2,1280,3,3]), its mean over H, W (avg [2,1280]) and torch.amax over H, W (max [2,1280]).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import read_safetensors, write_safetensors  # noqa: E402

HEAD = [(32, nn.ReLU, 0.3), (16, nn.ReLU6, 0.3)]
CLASSES = 5
GRADS = ["classifier.1.weight", "classifier.1.bias", "classifier.4.weight", "classifier.4.bias",
         "classifier.7.weight", "classifier.7.bias", "features.18.1.weight", "features.18.1.bias"]


def head_model(backbone: str, dropout: bool) -> nn.Module:
    model = torchvision.models.mobilenet_v2(weights=None, width_mult=0.35, num_classes=CLASSES)
    tensors, _ = read_safetensors(backbone)
    sd = model.state_dict()
    for k in sd:
        if k.startswith("features."):
            sd[k] = torch.from_numpy(tensors[k].astype("f4") if tensors[k].dtype.kind == "f" else tensors[k])
    layers = [nn.Dropout(0.2 if dropout else 0.0)]
    width = model.last_channel
    for units, act, p in HEAD:
        layers += [nn.Linear(width, units), act(), nn.Dropout(p if dropout else 0.0)]
        width = units
    layers.append(nn.Linear(width, CLASSES))
    model.classifier = nn.Sequential(*layers)
    torch.manual_seed(3)
    for m in model.classifier:
        if isinstance(m, nn.Linear):
            m.reset_parameters()
            with torch.no_grad():
                m.bias.normal_(0.0, 0.5)
    model.load_state_dict({**model.state_dict(), **{k: v for k, v in sd.items() if k.startswith("features.")}})
    return model


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(here), "test", "fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model = head_model(os.path.join(args.out, "tv-0.35-96.weights.safetensors"), dropout=True)
    torch.manual_seed(4)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        logits = copy.deepcopy(model).double().eval()(x.double())

    train = head_model(os.path.join(args.out, "tv-0.35-96.weights.safetensors"), dropout=False).double().train()
    labels = torch.tensor([1, 3])
    loss = F.cross_entropy(train(x.double()), labels)
    loss.backward()
    params = dict(train.named_parameters())
    hidden = [h[0] for h in HEAD]
    print(f"eval.logits max|.| {logits.abs().max().item():.4f}, train.loss {loss.item():.6f}")

    out = {k: v for k, v in model.state_dict().items() if k.startswith("classifier.")}
    out.update({"eval.input": x, "eval.logits": logits, "train.labels": labels, "train.loss": loss.detach().reshape(1)})
    out.update({f"grad.{k}": params[k].grad for k in GRADS})
    path = os.path.join(args.out, "tv-0.35-96-head.safetensors")
    meta = {"generator": "tools/make-head-fixtures.py", "torch": torch.__version__, "torchvision": torchvision.__version__,
            "backbone": "tv-0.35-96.weights.safetensors", "head": repr(model.classifier), "hidden": str(hidden)}
    size = write_safetensors(path, out, meta, {k: "I64" if k == "train.labels" else "F32" for k in out})
    print(f"wrote {path} ({len(out)} tensors, {size / 1e6:.3f} MB)")
    features(args.out)


def features(out_dir: str):
    model = torchvision.models.mobilenet_v2(weights=None, width_mult=0.35)
    tensors, _ = read_safetensors(os.path.join(out_dir, "tv-0.35-96.weights.safetensors"))
    model.load_state_dict({k: torch.from_numpy(v.astype("f4") if v.dtype.kind == "f" else v) for k, v in tensors.items()})
    io, _ = read_safetensors(os.path.join(out_dir, "tv-0.35-96.io.safetensors"))
    x = torch.from_numpy(io["eval.input"].astype("f8"))
    with torch.no_grad():
        fmap = model.double().eval().features(x)
    out = {"map": fmap, "avg": fmap.mean(dim=(2, 3)), "max": torch.amax(fmap, dim=(2, 3))}
    path = os.path.join(out_dir, "tv-0.35-96-features.safetensors")
    meta = {"generator": "tools/make-head-fixtures.py", "torch": torch.__version__, "torchvision": torchvision.__version__,
            "weights": "tv-0.35-96.weights.safetensors", "input": "tv-0.35-96.io.safetensors eval.input",
            "outputs": "map = model.features(x); avg = map.mean((2, 3)); max = torch.amax(map, (2, 3)); float64, stored F32"}
    size = write_safetensors(path, out, meta, {k: "F32" for k in out})
    print(f"wrote {path} ({len(out)} tensors, {size / 1e6:.3f} MB); max|map| {fmap.abs().max().item():.3f}")


if __name__ == "__main__":
    main()
