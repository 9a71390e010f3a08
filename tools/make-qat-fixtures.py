#!/usr/bin/python3
"""Golden fixtures of quantization-aware training's fake quantization (test/qat.test.ts), from PyTorch 1.13.

  * act.x0..x2 [2, 5, 3, 3]: three batches through torch.ao.quantization.MovingAverageMinMaxObserver
    (quint8, per-tensor affine, averaging constant 0.01); act.min / act.max [3]: its min_val / max_val after each.
    The third batch is 1.5x wider, so the moving-average range clips it.
  * act.scale, act.zero_point: the uint8 parameters of the final range as src/quant/quantize.ts activationParams
    computes them ((hi - lo) / 255 in float64, stored float32; zero point round(-lo / scale)), and
    act.torch_scale / act.torch_zero_point: the observer's calculate_qparams() for comparison.
  * act.y = torch.fake_quantize_per_tensor_affine(x2, scale, zero_point, 0, 255); act.grad: a random upstream
    gradient, act.dx its backward (straight-through: zero where x2 fell outside the range).
  * w [6, 3, 3, 3]: weights; w.scale = max|w_c| / 63 per output channel (float64, stored float32: the exporter's
    7-bit symmetric scale); w.fq = torch.fake_quantize_per_channel_affine(w, w.scale, 0, axis 0, -63, 63).

Run: /usr/bin/python3 tools/make-qat-fixtures.py (writes test/fixtures/qat.safetensors).
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import torch
from torch.ao.quantization import MovingAverageMinMaxObserver

sys.path.insert(0, os.path.dirname(__file__))
from safetensors_io import write_safetensors  # noqa: E402


def activation_params(lo: float, hi: float) -> tuple[float, int]:
    """src/quant/quantize.ts activationParams."""
    lo, hi = min(0.0, lo), max(0.0, hi)
    if hi == lo:
        return float(np.float32(1 / 255)), 0
    scale = float(np.float32((hi - lo) / 255))
    v = -lo / scale
    zp = math.floor(v)
    if v - zp >= 0.5:
        zp += 1
    return scale, min(255, max(0, zp))


def main() -> None:
    torch.manual_seed(0)
    t: dict[str, torch.Tensor] = {}
    obs = MovingAverageMinMaxObserver(averaging_constant=0.01, dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    mins, maxs = [], []
    xs = [torch.randn(2, 5, 3, 3) * 2 + 0.5 for _ in range(3)]
    xs[2] = xs[2] * 1.5
    for i, x in enumerate(xs):
        obs(x)
        mins.append(obs.min_val.item())
        maxs.append(obs.max_val.item())
        t[f"act.x{i}"] = x
    t["act.min"] = torch.tensor(mins)
    t["act.max"] = torch.tensor(maxs)
    scale, zp = activation_params(mins[-1], maxs[-1])
    ts, tz = obs.calculate_qparams()
    t["act.scale"] = torch.tensor([scale])
    t["act.zero_point"] = torch.tensor([float(zp)])
    t["act.torch_scale"] = ts.float()
    t["act.torch_zero_point"] = tz.float()
    x = xs[2].clone().requires_grad_(True)
    y = torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255)
    g = torch.randn_like(y)
    y.backward(g)
    t["act.y"] = y.detach()
    t["act.grad"] = g
    t["act.dx"] = x.grad

    w = torch.randn(6, 3, 3, 3) * 0.3
    amax = w.abs().reshape(6, -1).amax(1).double()
    wscale = (amax / 63).float()
    t["w"] = w
    t["w.scale"] = wscale
    t["w.fq"] = torch.fake_quantize_per_channel_affine(w, wscale, torch.zeros(6, dtype=torch.int32), 0, -63, 63)
    clipped = int((x.grad == 0).sum())
    path = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "qat.safetensors")
    size = write_safetensors(path, {k: v.detach().to(torch.float32) for k, v in t.items()}, metadata={"torch": torch.__version__, "clipped": str(clipped)})
    print(f"wrote {path} ({size} bytes); {clipped} of {x.numel()} activations outside the range; scale {scale} zp {zp}, torch {ts.item()} {tz.item()}")


if __name__ == "__main__":
    main()
