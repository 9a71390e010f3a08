#!/usr/bin/python3
"""Convert a PyTorch state dict / checkpoint (.pth, .pt) to safetensors (hand-written writer, no safetensors pkg).

Usage:
    /usr/bin/python3 tools/pth-to-safetensors.py IN.pth OUT.safetensors [--fp32]

    # e.g. a kuangliu/pytorch-cifar checkpoint ({'net': state_dict, 'acc': ..., 'epoch': ...}):
    /usr/bin/python3 tools/pth-to-safetensors.py checkpoint/ckpt.pth seed-cifar-trained.safetensors

Accepts a bare state dict, or a dict holding it under 'state_dict', 'net' or 'model'; a leading
'module.' (DataParallel) prefix is stripped from every key. Tensors keep their dtype (F32/F16/F64/I64/...;
bfloat16 -> F32); --fp32 casts every floating tensor to F32. Other scalar top-level checkpoint entries
(e.g. 'acc', 'epoch') are recorded as strings in __metadata__.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import write_safetensors  # noqa: E402


def load(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        # older torch without weights_only, or checkpoints holding numpy scalars etc.
        return torch.load(path, map_location="cpu")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--fp32", action="store_true", help="cast floating tensors to float32")
    args = ap.parse_args()

    obj = load(args.input)
    meta = {"source": os.path.basename(args.input), "converter": "tools/pth-to-safetensors.py"}
    sd = obj
    if isinstance(obj, dict):
        for key in ("state_dict", "net", "model"):
            if key in obj and isinstance(obj[key], dict):
                sd = obj[key]
                for k, v in obj.items():
                    if k != key and isinstance(v, (int, float, str, bool)):
                        meta[k] = str(v)
                    elif k != key and torch.is_tensor(v) and v.numel() == 1:
                        meta[k] = str(v.item())
                break
    if hasattr(sd, "state_dict") and not isinstance(sd, dict):  # a whole nn.Module was saved
        sd = sd.state_dict()
    if not isinstance(sd, dict):
        raise SystemExit(f"{args.input}: no state dict found (got {type(sd).__name__})")

    tensors = {}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            print(f"  skipping non-tensor entry {k!r} ({type(v).__name__})", file=sys.stderr)
            continue
        name = k[len("module."):] if k.startswith("module.") else k
        v = v.detach().cpu()
        if v.dtype == torch.bfloat16 or (args.fp32 and v.is_floating_point()):
            v = v.float()
        tensors[name] = v.contiguous()
    size = write_safetensors(args.output, tensors, meta)
    n = sum(t.numel() for t in tensors.values() if t.is_floating_point())
    print(f"wrote {args.output}: {len(tensors)} tensors, {n} float elements, {size / 1e6:.3f} MB")


if __name__ == "__main__":
    main()
