"""MobileNetV1 (Howard et al. 2017) in PyTorch, written independently of src/model, for the golden fixtures.

Table 1 of the paper: a full 3x3 conv (stride 2) to 32 channels, then 13 depthwise-separable pairs
(3x3 depthwise conv + BN + ReLU6, 1x1 pointwise conv + BN + ReLU6), global average pool, fully connected.
Width α scales every layer's channels to int(c * α) (the paper's αM; keras.applications.MobileNet's rule).
The table lists the last depthwise conv as s2, but its input and output are both 7x7: stride 1, as in Keras.

State-dict names, torchvision style (what src/model/mobilenetv1.ts emits):
  features.0.0 / features.0.1                  stem conv / BN
  features.N.0.0 / features.N.0.1  (N=1..13)   depthwise conv / BN
  features.N.1.0 / features.N.1.1              pointwise conv / BN
  classifier.1                                 Linear (classifier.0 is the dropout)

cifar=True is the 32x32 variant: the stem and the first stride-2 pair get stride 1, as the seed's CIFAR-10
MobileNetV2 does (stem stride 1, its first stride-2 stage stride 1), so 32x32 input ends at 4x4.
"""

from __future__ import annotations

import torch
import torch.nn as nn

# Table 1 after the stem: (depthwise stride s, pointwise output channels c).
PAIRS = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
         (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024)]


def conv_bn_relu6(inp: int, out: int, k: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, out, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out),
        nn.ReLU6(inplace=True),
    )


class MobileNetV1(nn.Module):
    def __init__(self, alpha: float = 1.0, num_classes: int = 1000, cifar: bool = False, dropout: float = 0.0):
        super().__init__()
        ch = lambda c: int(c * alpha)  # noqa: E731
        inp = ch(32)
        layers = [conv_bn_relu6(3, inp, 3, 1 if cifar else 2)]
        first_s2 = True
        for s, c in PAIRS:
            if cifar and s == 2 and first_s2:
                s, first_s2 = 1, False
            layers.append(nn.Sequential(conv_bn_relu6(inp, inp, 3, s, groups=inp), conv_bn_relu6(inp, ch(c), 1, 1)))
            inp = ch(c)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(inp, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def count(model: nn.Module, res: int) -> tuple[int, int]:
    """(parameters, multiply-adds per image): convs H*W*Cout*(Cin/groups)*k*k and linear in*out, by forward hooks."""
    macs = [0]

    def conv_hook(m, inp, out):
        macs[0] += out.shape[2] * out.shape[3] * m.out_channels * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, inp, out):
        macs[0] += m.in_features * m.out_features

    hooks = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, res, res))
    for h in hooks:
        h.remove()
    return sum(p.numel() for p in model.parameters()), macs[0]
