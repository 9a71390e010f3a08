#!/usr/bin/python3
"""Small PyTorch .pth fixtures for the TypeScript .pth reader (test/io-pth.test.ts), written with Debian's torch.

Usage: /usr/bin/python3 tools/make-pth-fixtures.py [OUT_DIR]   (default test/fixtures/pth)

  dtypes.pth         zip format: float32/float16/float64/int64/int32/int16/int8/uint8/bool/bfloat16 tensors,
                     a 0-d int64, a Parameter, an empty tensor, two tensors sharing one storage at offsets
  dtypes-legacy.pth  the same state dict in the pre-1.6 format (_use_new_zipfile_serialization=False),
                     the format of torchvision's older checkpoints
  views.pth          non-contiguous views: a transpose, a strided slice, an expanded (stride 0) tensor
  tiny-mnv2.pth      torchvision mobilenet_v2(width_mult=0.35, num_classes=10) state dict (float16), seeded, and
  tiny-mnv2.io.safetensors  its eval logits on a seeded 1x3x96x96 input (to check the loaded weights run)
  evil-system.pth    a state dict with an object whose __reduce__ calls os.system('touch MARKER')
  evil-eval.pth      ... whose __reduce__ calls builtins.eval
  evil-class.pth     ... an instance of an arbitrary class (pickled by __reduce_ex__ -> copyreg)
  truncated.pth      dtypes.pth cut in the middle
  expected.json      every tensor of dtypes.pth / views.pth as (dtype, shape, values) for the test
"""

import io
import json
import os
import sys

import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import write_safetensors  # noqa: E402

MARKER = "/tmp/mnv2-pth-fixture-was-executed"


class EvilSystem:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


class EvilEval:
    def __reduce__(self):
        return (eval, (f"open({MARKER!r}, 'w').close()",))


class Plain:
    def __init__(self):
        self.x = 1


def dtypes_dict():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(10, generator=g)
    sd = {
        "f32": torch.randn(2, 3, generator=g),
        "f16": torch.randn(3, 2, generator=g).half(),
        "f64": torch.randn(4, generator=g).double(),
        "i64": torch.tensor([[-3, 2**40], [7, 0]], dtype=torch.int64),
        "i32": torch.tensor([-5, 6, 2**31 - 1], dtype=torch.int32),
        "i16": torch.tensor([-300, 300], dtype=torch.int16),
        "i8": torch.tensor([-128, 127, 0], dtype=torch.int8),
        "u8": torch.tensor([0, 200, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "bf16": torch.tensor([1.5, -2.25, 3e8], dtype=torch.bfloat16),
        "scalar": torch.tensor(12345, dtype=torch.int64),
        "param": torch.nn.Parameter(torch.arange(6, dtype=torch.float32).reshape(2, 3)),
        "empty": torch.zeros(0, 4),
        # two views of one storage: the second starts at element 4
        "shared_a": base[:4],
        "shared_b": base[4:].view(2, 3),
    }
    return sd


def views_dict():
    m = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    return {
        "transposed": m.t(),
        "strided": m[:, ::2],
        "expanded": torch.tensor([1.0, 2.0]).reshape(2, 1).expand(2, 3),
    }


def describe(sd):
    out = {}
    for k, v in sd.items():
        t = v.detach()
        vals = t.float().flatten().tolist() if t.dtype in (torch.bfloat16, torch.float16) else t.flatten().tolist()
        out[k] = {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape), "values": [float(x) for x in vals]}
    return out


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "pth")
    os.makedirs(out, exist_ok=True)
    p = lambda n: os.path.join(out, n)  # noqa: E731

    sd = dtypes_dict()
    torch.save(sd, p("dtypes.pth"))
    torch.save(sd, p("dtypes-legacy.pth"), _use_new_zipfile_serialization=False)
    torch.save(views_dict(), p("views.pth"))

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10).eval()
    with torch.no_grad():
        for m in model.modules():  # non-trivial BN statistics, so a wrong mapping shows in the logits
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        model.half().float()  # stored as float16 below (half the size); the logits are of the rounded weights
        x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))
        logits = model(x)
    torch.save(model.half().state_dict(), p("tiny-mnv2.pth"))
    write_safetensors(p("tiny-mnv2.io.safetensors"), {"input": x, "logits": logits})

    torch.save({"w": torch.ones(2), "x": EvilSystem()}, p("evil-system.pth"))
    torch.save({"w": torch.ones(2), "x": EvilEval()}, p("evil-eval.pth"))
    torch.save({"w": torch.ones(2), "x": Plain()}, p("evil-class.pth"))

    whole = open(p("dtypes.pth"), "rb").read()
    open(p("truncated.pth"), "wb").write(whole[: len(whole) // 2])

    with open(p("expected.json"), "w") as f:
        json.dump({"dtypes": describe(sd), "views": describe(views_dict()), "marker": MARKER}, f, indent=0)
    for n in sorted(os.listdir(out)):
        print(f"{n}: {os.path.getsize(p(n))} bytes")


if __name__ == "__main__":
    main()
