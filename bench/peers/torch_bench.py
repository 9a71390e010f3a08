"""PyTorch peer benchmark for one MobileNetV2 workload; prints one JSON line last.

usage: /usr/bin/python3 bench/peers/torch_bench.py --workload W [--batch N]
           [--steps K] [--warmup W] [--threads 2] [--layout nchw|channels_last]
workloads:
  train-seed      seed CIFAR model, train mode: forward + softmax CE + backward
  train-seed-sgd  the same + SGD update (lr 0.1, momentum 0.9, weight decay 5e-4)
  train-224       torchvision mobilenet_v2 (alpha 1.0, 224x224, ReLU6), train mode, as train-seed
  infer-seed      seed CIFAR model, eval mode, no_grad
  infer-224       torchvision mobilenet_v2 (alpha 1.0, 224x224), eval, no_grad
PyTorch at its best on CPU: torch.set_flush_denormal(True), trained weights with
real BN statistics (the committed Fashion-MNIST model for the seed network, the
real ImageNet weights in ../shared/data when present, else BN statistics from
forward passes: see torch_models.realistic_weights), and --layout channels_last
(model and input in torch.channels_last) beside the default NCHW.
Timing: --warmup untimed steps, then --steps timed steps; reports the median,
min, p10/p90 and max step time, spread = (p90 - p10) / median, img/s = batch /
median, the process CPU/wall ratio over the timed section, and the process peak
RSS (ru_maxrss).
Sanity fields: parameter count vs the expected one, the loss trajectory for
training (starts near ln 10 = 2.303; on the repeated batch it drops when SGD
is on), and whether the outputs are finite.
Inputs are random (seeded): speed only.
Use Debian's /usr/bin/python3 (the pyenv python3 on PATH has no torch).
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from torch_models import MODELS, EXPECTED_PARAMS, count_params, realistic_weights  # noqa: E402

WORKLOADS = {
    # name: (model key, train?, sgd?, default batch, default warmup, default steps)
    "train-seed": ("seed", True, False, 128, 2, 5),
    "train-seed-sgd": ("seed", True, True, 128, 2, 5),
    "train-224": ("imagenet", True, False, 32, 2, 5),
    "infer-seed": ("seed", False, False, 128, 2, 10),
    "infer-224": ("imagenet", False, False, 1, 10, 50),
}


def loaded_blas():
    """Which BLAS shared objects this process actually mapped."""
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.split()[-1]
                if "blas" in p.lower() or "mkl" in p.lower():
                    libs.add(p)
    except OSError:
        pass
    return sorted(libs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layout", choices=["nchw", "channels_last"], default="nchw")
    args = ap.parse_args()
    key, train, sgd, d_batch, d_warm, d_steps = WORKLOADS[args.workload]
    batch = args.batch or d_batch
    steps = args.steps or d_steps
    warmup = d_warm if args.warmup is None else args.warmup

    default_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    flush_denormal = torch.set_flush_denormal(True)  # False where the CPU cannot (then it is reported)
    torch.manual_seed(0)
    factory, hw, classes = MODELS[key]
    model = factory()
    params = count_params(model)
    weights = realistic_weights(model, key, hw)
    x = torch.randn(batch, 3, hw, hw)
    if args.layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,))
    losses = []
    finite = [True]

    if train:
        model.train()
        lossf = nn.CrossEntropyLoss()
        opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
               if sgd else None)

        def step():
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            else:
                for p in model.parameters():
                    p.grad = None
            loss = lossf(model(x), y)
            loss.backward()
            if opt is not None:
                opt.step()
            losses.append(float(loss))
    else:
        model.eval()

        def step():
            with torch.no_grad():
                out = model(x)
            finite[0] = finite[0] and bool(torch.isfinite(out).all())

    for _ in range(warmup):
        step()
    ts = []
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t0)
    cpu_util = (time.process_time() - c0) / (time.perf_counter() - w0)
    med = statistics.median(ts)
    q = statistics.quantiles(ts, n=10, method="inclusive") if len(ts) > 1 else [ts[0]] * 9

    res = {
        "workload": args.workload, "engine": "pytorch", "batch": batch,
        "warmup": warmup, "steps": steps,
        "ms_per_step": med * 1e3, "median_ms": med * 1e3,
        "min_ms": min(ts) * 1e3, "max_ms": max(ts) * 1e3,
        "p10_ms": q[0] * 1e3, "p90_ms": q[8] * 1e3, "spread": (q[8] - q[0]) / med,
        "layout": args.layout, "flush_denormal": flush_denormal, "weights": weights,
        "img_per_s": batch / med, "cpu_util": cpu_util,
        # ru_maxrss is KiB on Linux
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "torch": torch.__version__, "num_threads": torch.get_num_threads(),
        "default_num_threads": default_threads,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "blas_loaded": loaded_blas(),
        "sanity": {"params": params, "params_expected": EXPECTED_PARAMS[key],
                   "params_ok": params == EXPECTED_PARAMS[key]},
    }
    if train:
        res["sanity"]["loss_first"] = losses[0]
        res["sanity"]["loss_last"] = losses[-1]
        res["sanity"]["ln_classes"] = math.log(classes)
        res["sanity"]["losses_finite"] = all(math.isfinite(v) for v in losses)
    else:
        res["sanity"]["outputs_finite"] = finite[0]
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
