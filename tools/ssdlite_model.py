"""The PyTorch twin of src/model/ssdlite.ts (SSDLite + MobileNetV2 as TF's Object Detection API builds it), with
the project's parameter names, so a state dict of the project loads into it as it is. Shared by
tools/make-ssdlite-fixtures.py (the training-step fixture) and bench/peers/torch_detect_bench.py (the detection bench).

torchvision's MobileNetV2 features (TF 'SAME' padding, BN eps 1e-3, ReLU6), feature maps at block 13's expand
activation (stride 16) and the last conv (stride 32), four extra layers and the SSDLite heads under torchvision's
SSDLite names. forward returns (boxes [N, A, 4], logits [N, A, C + 1]) in TF's anchor order.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

BN_EPS = 1e-3
EXTRA_DEPTHS = (512, 256, 256, 128)
ANCHORS = (3, 6, 6, 6, 6, 6)
MIN_DEPTH = 16  # TF's min_depth of the extras


class SameConv2d(nn.Conv2d):
    """Conv with TF 'SAME' padding (the extra padding after), the graph's `keras` padding mode. Symmetric padding
    (every stride-1 conv) is the conv's own, so only the stride-2 convs pay for an explicit pad."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in ((x.shape[3], self.kernel_size[1], self.stride[1]), (x.shape[2], self.kernel_size[0], self.stride[0])):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if pads[0] == pads[1] and pads[2] == pads[3]:
            return F.conv2d(x, self.weight, self.bias, self.stride, (pads[2], pads[0]), 1, self.groups)
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, 1, self.groups)


def conv_bn_act(i: int, o: int, k: int, s: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(SameConv2d(i, o, k, s, groups=groups, bias=False), nn.BatchNorm2d(o, eps=BN_EPS), nn.ReLU6())


class Heads(nn.Module):
    def __init__(self, channels: list[int], k: int) -> None:
        super().__init__()
        self.k = k
        self.module_list = nn.ModuleList(
            nn.Sequential(conv_bn_act(c, c, 3, 1, c), SameConv2d(c, a * k, 1, 1, bias=True)) for c, a in zip(channels, ANCHORS))

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        # [N, A·k, H, W] -> [N, H, W, A·k] -> [N, H·W·A, k], concatenated over the maps (TF's anchor order)
        return torch.cat([m(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.k) for m, x in zip(self.module_list, maps)], 1)


class SSDLite(nn.Module):
    def __init__(self, alpha: float, num_classes: int) -> None:
        super().__init__()
        self.features = torchvision.models.mobilenet_v2(width_mult=alpha).features
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                m.__class__ = SameConv2d
            if isinstance(m, nn.BatchNorm2d):
                m.eps = BN_EPS
        assert not self.features[14].use_res_connect
        depth = lambda c: max(int(c * alpha), MIN_DEPTH)  # noqa: E731
        chans = [self.features[14].conv[0][0].out_channels, self.features[18][0].out_channels]
        extra = []
        for d in EXTRA_DEPTHS:
            mid = depth(d / 2)
            extra.append(nn.Sequential(conv_bn_act(chans[-1], mid, 1, 1), conv_bn_act(mid, mid, 3, 2, mid), conv_bn_act(mid, depth(d), 1, 1)))
            chans.append(depth(d))
        self.extra = nn.ModuleList(extra)
        self.head = nn.Module()
        self.head.regression_head = Heads(chans, 4)
        self.head.classification_head = Heads(chans, num_classes + 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for i, f in enumerate(self.features):
            if i == 14:
                # TF's layer_15/expansion_output: block 13's expand conv + BN + ReLU6
                tap = f.conv[0](x)
                x = f.conv[3](f.conv[2](f.conv[1](tap)))
            else:
                x = f(x)
        maps = [tap, x]
        for e in self.extra:
            maps.append(e(maps[-1]))
        return self.head.regression_head(maps), self.head.classification_head(maps)
