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


def count_params(model):
    return sum(p.numel() for p in model.parameters())


# workload name -> (model factory, input H=W, classes)
MODELS = {"seed": (seed_model, 32, 10), "imagenet": (imagenet_model, 224, 1000)}
EXPECTED_PARAMS = {"seed": 2296922, "imagenet": 3504872}
