"""PyTorch models used by the peer benchmarks (bench/peers/*.py).

seed_model(): the CIFAR-10 seed, kuangliu/pytorch-cifar models/mobilenetv2.py
              (HEAD), re-typed here with the same module names so state_dict
              keys match the seed (conv1, bn1, layers.i.{conv1..3,bn1..3,shortcut},
              conv2, bn2, linear). Stem stride 1, stage-2 stride 1, plain ReLU,
              expand conv even for t=1, 1x1 conv+BN projection shortcut on
              stride-1 blocks whose channels change, avg_pool2d(4), 10 classes.
              2,296,922 parameters.
imagenet_model(): torchvision.models.mobilenet_v2(weights=None), alpha 1.0,
              224x224, 1000 classes. 3,504,872 parameters.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    """expand + depthwise + pointwise (kuangliu naming)."""

    def __init__(self, in_planes, out_planes, expansion, stride):
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, 1, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, 1, 0, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, 1, 0, bias=False),
                nn.BatchNorm2d(out_planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + self.shortcut(x) if self.stride == 1 else out
        return out


class SeedMobileNetV2(nn.Module):
    # (expansion, out_planes, num_blocks, stride)
    cfg = [(1, 16, 1, 1),
           (6, 24, 2, 1),  # stride 2 -> 1 for CIFAR10
           (6, 32, 3, 2),
           (6, 64, 4, 2),
           (6, 96, 3, 1),
           (6, 160, 3, 2),
           (6, 320, 1, 1)]

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, 1, 1, bias=False)  # stride 2 -> 1 for CIFAR10
        self.bn1 = nn.BatchNorm2d(32)
        self.layers = self._make_layers(in_planes=32)
        self.conv2 = nn.Conv2d(320, 1280, 1, 1, 0, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.linear = nn.Linear(1280, num_classes)

    def _make_layers(self, in_planes):
        layers = []
        for expansion, out_planes, num_blocks, stride in self.cfg:
            for s in [stride] + [1] * (num_blocks - 1):
                layers.append(Block(in_planes, out_planes, expansion, s))
                in_planes = out_planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.relu(self.bn2(self.conv2(out)))
        out = F.avg_pool2d(out, 4)
        out = out.view(out.size(0), -1)
        return self.linear(out)


def seed_model():
    return SeedMobileNetV2()


def imagenet_model():
    import torchvision
    try:
        return torchvision.models.mobilenet_v2(weights=None)
    except TypeError:  # very old torchvision
        return torchvision.models.mobilenet_v2(pretrained=False)


def count_params(model):
    return sum(p.numel() for p in model.parameters())


# workload name -> (model factory, input H=W, classes)
MODELS = {"seed": (seed_model, 32, 10), "imagenet": (imagenet_model, 224, 1000)}
EXPECTED_PARAMS = {"seed": 2296922, "imagenet": 3504872}
