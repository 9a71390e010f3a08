#!/usr/bin/python3
"""Generate the MobileNetV1 golden fixtures in test/fixtures/ from tools/mobilenet_v1.py (PyTorch).

Usage (Debian's PyTorch 1.13, CPU):
    /usr/bin/python3 tools/make-v1-fixtures.py [--out test/fixtures]

Deterministic (fixed seed, one thread). Files written:

  v1-0.25.weights.safetensors   MobileNetV1(alpha=0.25, num_classes=10), torch.manual_seed(2), BN perturbed,
                                floats rounded to fp16 and stored as F16. Both variants (ImageNet strides and
                                the 32x32 CIFAR strides) have the same state dict, so one file serves both.
  v1-0.25.io.safetensors        eval.imagenet.* (64x64, ImageNet strides), eval.cifar.* (32x32, CIFAR strides),
                                train.* / grad.* / running.* (one train-mode forward + backward, CIFAR strides,
                                batch 4); metadata `counts`: parameters and multiply-adds of several
                                (variant, alpha, resolution, classes), counted on the PyTorch model by hooks.

Golden values are computed in float64 from the stored (fp16-rounded) weights and stored as F32.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_common import BN_PERTURB_DOC, perturb_bn, rel_l2  # noqa: E402
from mobilenet_v1 import MobileNetV1, count  # noqa: E402
from safetensors_io import read_safetensors, write_safetensors  # noqa: E402

ALPHA = 0.25
CLASSES = 10

# (variant, alpha, resolution, classes); the first is the paper's 4.2M parameters / 569M multiply-adds.
COUNT_CASES = [
    ("imagenet", 1.0, 224, 1000),
    ("imagenet", 0.75, 192, 1000),
    ("imagenet", 0.5, 160, 1000),
    ("imagenet", 0.25, 128, 1000),
    ("imagenet", 0.35, 96, 5),
    ("cifar", 1.0, 32, 10),
    ("cifar", 0.25, 32, 10),
]
PAPER = (4_231_976, 568_740_352)

KINK_MARGIN = 1e-4


@torch.no_grad()
def clear_kinks(model: nn.Module, x: torch.Tensor) -> list[float]:
    """Shift each BN bias (in module order, float64 train-mode forward of x) by the smallest s, in steps of
    KINK_MARGIN / 2, that leaves every ReLU6 input of its channel KINK_MARGIN or more from 0 and 6. Batch
    statistics do not depend on the bias, so the shift moves that channel's inputs by exactly s; later layers
    are cleared after the earlier ones. Returns the shifts."""
    shifts = []
    pairs = [(bn, act) for bn, act in zip(*[[m for m in model.modules() if isinstance(m, t)] for t in (nn.BatchNorm2d, nn.ReLU6)])]
    for bn, act in pairs:
        seen = []
        h = act.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].detach().clone()))
        copy.deepcopy(model).double().train()(x.double())  # a copy: this forward must not move the running stats
        h.remove()
        v = seen[0].double().transpose(0, 1).reshape(bn.num_features, -1)
        for c in range(bn.num_features):
            for k in range(4000):
                s = (k + 1) // 2 * (KINK_MARGIN / 2) * (1 if k % 2 else -1)  # 0, +d, -d, +2d, ...
                w = v[c] + s
                if torch.minimum(w.abs(), (w - 6).abs()).min().item() >= KINK_MARGIN:
                    break
            else:
                raise SystemExit(f"no bias shift clears the kinks of channel {c} of {bn}")
            bn.bias[c] += s
            shifts.append(abs(s))
    return shifts


def relu6_inputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Forward (in the model's current mode) and return every ReLU6 input (= BN output), in order."""
    seen = []
    # A pre-hook: the ReLU6 is in place, so after the forward its input holds the output.
    hooks = [m.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].detach().clone()))
             for m in model.modules() if isinstance(m, nn.ReLU6)]
    model(x)
    for h in hooks:
        h.remove()
    return seen


def meta(**kw) -> dict:
    md = {"generator": "tools/make-v1-fixtures.py (model: tools/mobilenet_v1.py)", "torch": torch.__version__}
    md.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in kw.items()})
    return md


def counts() -> list[dict]:
    out = []
    for variant, alpha, res, classes in COUNT_CASES:
        params, macs = count(MobileNetV1(alpha, classes, cifar=variant == "cifar"), res)
        print(f"  {variant:8s} alpha {alpha:<4} @ {res:3d}, {classes:4d} classes: {params:,} params, {macs:,} MACs")
        out.append({"variant": variant, "alpha": alpha, "resolution": res, "classes": classes, "params": params, "macs": macs})
    assert (out[0]["params"], out[0]["macs"]) == PAPER, f"alpha 1.0 @ 224 gives {out[0]}, not the paper's {PAPER}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(here), "test", "fixtures"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    print("== parameter and multiply-add counts (PyTorch forward hooks) ==")
    count_table = counts()

    print(f"== MobileNetV1 alpha {ALPHA}, {CLASSES} classes ==")
    torch.manual_seed(2)
    cifar = MobileNetV1(ALPHA, CLASSES, cifar=True)
    perturb_bn(cifar)
    with torch.no_grad():
        for t in cifar.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    x = torch.randn(4, 3, 32, 32)
    labels = torch.randint(0, CLASSES, (4,), dtype=torch.int64)
    # ReLU6 inputs within fp32 noise of 0 or 6 would switch side between engines; one switch in a 4x4 map moves
    # every earlier gradient by ~1% (measured before this step: 9 of 1.25M inputs within 1e-5 of a kink).
    shifts = clear_kinks(cifar, x)
    imagenet = MobileNetV1(ALPHA, CLASSES, cifar=False)
    imagenet.load_state_dict(cifar.state_dict())  # same names and shapes, other strides

    io = {}
    with torch.no_grad():
        for tag, model, res in (("imagenet", imagenet, 64), ("cifar", cifar, 32)):
            xe = torch.randn(2, 3, res, res)
            io[f"eval.{tag}.input"] = xe
            io[f"eval.{tag}.logits"] = copy.deepcopy(model).double().eval()(xe.double())
            l32 = copy.deepcopy(model).eval()(xe)
            print(f"  eval {tag} @ {res}: max|logit| {io[f'eval.{tag}.logits'].abs().max().item():.4f}, "
                  f"fp32 vs fp64 max abs diff {(l32.double() - io[f'eval.{tag}.logits']).abs().max().item():.2e}")

    def train_step(dtype):
        m = copy.deepcopy(cifar).to(dtype).train()
        xi = x.to(dtype).requires_grad_()
        logits = m(xi)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        return m, xi, logits.detach(), loss.detach()

    m64, x64, logits64, loss64 = train_step(torch.float64)
    m32, x32, logits32, _ = train_step(torch.float32)
    io["train.input"] = x
    io["train.labels"] = labels
    io["train.logits"] = logits64
    io["train.loss"] = loss64.reshape(1)
    for name, p in m64.named_parameters():
        io["grad." + name] = p.grad
    io["grad.input"] = x64.grad
    for name, b in m64.named_buffers():
        if name.endswith("running_mean") or name.endswith("running_var"):
            io["running." + name] = b

    # How close the ReLU6 inputs come to the kinks at 0 and 6 (cleared above), and PyTorch's own float32.
    r64 = relu6_inputs(copy.deepcopy(cifar).double().train(), x.double())
    dist = min(torch.minimum(t.abs(), (t - 6).abs()).min().item() for t in r64)
    assert dist >= KINK_MARGIN * 0.999, f"a ReLU6 input is {dist:.2e} from a kink"
    g32 = dict(m32.named_parameters())
    rels = sorted((rel_l2(g32[n].grad, p.grad), n) for n, p in m64.named_parameters())
    summary = {
        "relu6_inputs": sum(t.numel() for t in r64), "relu6_inputs_below_0": sum(int((t < 0).sum()) for t in r64),
        "relu6_inputs_above_6": sum(int((t > 6).sum()) for t in r64), "min_distance_to_0_or_6": dist,
        "bias_shift_max": max(shifts), "bias_shift_mean": sum(shifts) / len(shifts),
        "bias_shifted_channels": sum(s > 0 for s in shifts), "bn_channels": len(shifts),
        "torch_fp32_vs_fp64_grad_rel_l2_max": rels[-1][0], "torch_fp32_vs_fp64_grad_rel_l2_max_param": rels[-1][1],
        "torch_fp32_vs_fp64_grad_rel_l2_median": rels[len(rels) // 2][0],
        "torch_fp32_vs_fp64_input_grad_rel_l2": rel_l2(x32.grad, x64.grad),
        "torch_fp32_vs_fp64_logits_rel_l2": rel_l2(logits32, logits64),
    }
    print(f"  train loss {loss64.item():.8f}; " + ", ".join(f"{k} {v}" for k, v in summary.items()))

    weights = cifar.state_dict()
    wfile = "v1-0.25.weights.safetensors"
    files = [
        (wfile, dict(weights), meta(
            model=f"tools/mobilenet_v1.py MobileNetV1(alpha={ALPHA}, num_classes={CLASSES}) (cifar=True and False share it)",
            init=f"torch.manual_seed(2); MobileNetV1(alpha={ALPHA}, num_classes={CLASSES}, cifar=True) (torchvision-style init); "
                 f"then {BN_PERTURB_DOC}; then every float tensor rounded to fp16; then clear_kinks() on train.input "
                 f"(BN biases shifted by multiples of {KINK_MARGIN / 2:g}, see train_summary). Conv and linear weights "
                 "stored as F16 (exact), BN tensors and the linear bias as F32",
            num_params=str(sum(p.numel() for p in cifar.parameters()))),
         {k: ("F16" if v.dim() >= 2 else "F32") if v.is_floating_point() else "I64" for k, v in weights.items()}),
        ("v1-0.25.io.safetensors", io, meta(
            weights=wfile,
            eval="eval.<variant>.logits = model.eval() on eval.<variant>.input in float64 (stored F32); "
                 "imagenet: ImageNet strides at 64x64, cifar: CIFAR strides at 32x32",
            train="CIFAR strides, train mode (batch statistics, momentum 0.1, unbiased running_var), float64: "
                  "train.loss = F.cross_entropy(logits, train.labels); grad.* after loss.backward(); running.* = BN "
                  f"running stats after that forward. Every ReLU6 input is at least {KINK_MARGIN:g} from 0 and 6 "
                  "(clear_kinks), so none switches side in float32.",
            train_summary=summary,
            counts=count_table),
         {k: "I64" if k == "train.labels" else "F32" for k in io}),
    ]
    total_bytes = 0
    for name, tensors, md, dtypes in files:
        path = os.path.join(args.out, name)
        size = write_safetensors(path, tensors, md, dtypes)
        back, _ = read_safetensors(path)
        assert list(back) == list(tensors), f"{path}: read-back keys differ"
        total_bytes += size
        print(f"wrote {path} ({len(tensors)} tensors, {size / 1e6:.3f} MB)")
    print(f"total {total_bytes / 1e6:.3f} MB")


if __name__ == "__main__":
    main()
