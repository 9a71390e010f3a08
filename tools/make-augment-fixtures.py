#!/usr/bin/python3
"""Golden fixtures for src/detect/augment.ts's photometric operations, from torchvision 0.14.

Usage: /usr/bin/python3 tools/make-augment-fixtures.py [--out test/fixtures]

Writes test/fixtures/augment.safetensors: a random float CHW image (3x5x7, with a few pixels of equal channels,
where hue and saturation are undefined) and torchvision.transforms.functional's adjust_brightness,
adjust_contrast, adjust_saturation, adjust_hue on it (the operations RandomPhotometricDistort of
references/detection/transforms.py applies through ColorJitter), plus adjust_contrast on a 1-channel image.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torchvision.transforms.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import write_safetensors  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "test", "fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(9)
    img = torch.rand(3, 5, 7, generator=g)
    img[:, 0, 0] = 0.25  # grey: max == min
    img[:, 0, 1] = torch.tensor([0.8, 0.8, 0.2])  # r == g is the max
    img[:, 0, 2] = torch.tensor([0.1, 0.6, 0.6])  # g == b is the max
    grey = torch.rand(1, 4, 6, generator=g)
    t = {"image": img, "grey": grey}
    t["brightness_1.1"] = F.adjust_brightness(img, 1.1)
    t["contrast_0.6"] = F.adjust_contrast(img, 0.6)
    t["contrast_1.4"] = F.adjust_contrast(img, 1.4)
    t["saturation_0.5"] = F.adjust_saturation(img, 0.5)
    t["saturation_1.5"] = F.adjust_saturation(img, 1.5)
    t["hue_0.05"] = F.adjust_hue(img, 0.05)
    t["hue_-0.3"] = F.adjust_hue(img, -0.3)
    t["grey_contrast_1.3"] = F.adjust_contrast(grey, 1.3)
    path = os.path.join(args.out, "augment.safetensors")
    size = write_safetensors(path, {k: v.to(torch.float32) for k, v in t.items()}, metadata={"torchvision": "0.14"})
    print(f"wrote {path} ({size} bytes, {len(t)} tensors)")


if __name__ == "__main__":
    main()
