"""Helpers shared by the fixture generators (make-fixtures.py, make-v1-fixtures.py)."""

from __future__ import annotations

import torch
import torch.nn as nn

BN_PERTURB_DOC = ("every BatchNorm2d in module order: weight.uniform_(0.5,1.5), bias.normal_(0,0.1), "
                  "running_mean.normal_(0,0.1), running_var.uniform_(0.5,1.5), num_batches_tracked=0")


@torch.no_grad()
def perturb_bn(model: nn.Module) -> int:
    """Non-trivial BN parameters and statistics (BN_PERTURB_DOC); returns the number of BN layers."""
    n = 0
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.1)
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.num_batches_tracked.zero_()
            n += 1
    return n


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64."""
    a = a.double()
    b = b.double()
    den = b.norm().item()
    num = (a - b).norm().item()
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))
