"""PyTorch models used by the peer benchmarks (bench/peers/*.py).

seed_model(): the CIFAR-10 seed, kuangliu/pytorch-cifar models/mobilenetv2.py
              (HEAD), from tools/seed_model.py, so state_dict keys match the seed (conv1, bn1, layers.i.{conv1..3,bn1..3,shortcut},
              conv2, bn2, linear). Stem stride 1, stage-2 stride 1, plain ReLU,
              expand conv even for t=1, 1x1 conv+BN projection shortcut on
              stride-1 blocks whose channels change, avg_pool2d(4), 10 classes.
              2,296,922 parameters.
imagenet_model(): torchvision.models.mobilenet_v2(weights=None), alpha 1.0,
              224x224, 1000 classes. 3,504,872 parameters.
"""
import os
import sys



sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'tools'))
from seed_model import MobileNetV2 as SeedMobileNetV2  # noqa: E402  (the seed's code, one copy in tools/)


def seed_model():
    return SeedMobileNetV2()


def imagenet_model():
    import torchvision
    try:
        return torchvision.models.mobilenet_v2(weights=None)
    except TypeError:  # very old torchvision
        return torchvision.models.mobilenet_v2(pretrained=False)


ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
# Trained weights with real BN statistics. Random-init eval-mode BN (mean 0, var 1) gives activation ranges no
# trained model has, and PyTorch's speed on them drifts by up to 2x (denormals, value ranges): not a fair peer.
TRAINED = {
    "seed": os.path.join(ROOT, "models", "fashion-mnist", "model.safetensors"),  # committed, always there
    "imagenet": os.path.join(ROOT, "..", "shared", "data", "imagenet", "weights",
                             "mobilenet_v2_imagenet_torchvision_qat_dequantized.safetensors"),
}


def read_safetensors(path):
    """{name: torch tensor} of a safetensors file (F32 and I64, the dtypes of the project's files)."""
    import json
    import struct
    import numpy as np
    import torch
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        dtype = {"F32": "<f4", "I64": "<i8"}.get(t["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: {name} is {t['dtype']}, expected F32 or I64")
        a, b = t["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(body[a:b], dtype=dtype).copy().reshape(t["shape"]))
    return out


def realistic_weights(model, key, hw):
    """Load trained weights into `model` when the file is there, else give its BN layers statistics from
    forward passes (train mode, cumulative averages over 8 random batches), as a trained model's would be
    measured; returns which of the two it did."""
    import torch
    path = TRAINED[key]
    if os.path.exists(path):
        model.load_state_dict(read_safetensors(path))
        return f"trained: {os.path.relpath(path, ROOT)}"
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    g = torch.Generator().manual_seed(3)
    model.train()
    with torch.no_grad():
        for _ in range(8):
            model(torch.randn(8, 3, hw, hw, generator=g))
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    return "random init, BN statistics from 8 forward passes of random batches"


def count_params(model):
    return sum(p.numel() for p in model.parameters())


# workload name -> (model factory, input H=W, classes)
MODELS = {"seed": (seed_model, 32, 10), "imagenet": (imagenet_model, 224, 1000)}
EXPECTED_PARAMS = {"seed": 2296922, "imagenet": 3504872}
