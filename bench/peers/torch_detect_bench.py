"""PyTorch peer of bench/detect.ts: the SSDLite twin (tools/ssdlite_model.py) with the project's weights; prints
one JSON line last.

usage: /usr/bin/python3 bench/peers/torch_detect_bench.py --spec FILE --alpha A --resolution R --classes C
           --mode infer|train [--batch B] [--steps K] [--warmup W] [--threads 2]
The spec file (safetensors, bench/detect.ts writes it) holds the model's weights under the project's names and, flat,
  bench.images [K, 3, R, R]   the inputs; a batch of B takes them cyclically (as the native side does)
  bench.anchors [A, 4]        corner anchors (x1, y1, x2, y2), normalized
  bench.ref.boxes / bench.ref.logits  the native engine's eval outputs on image 0 (infer: the sanity check)
  bench.gt.boxes [G, 4], bench.gt.labels [G], bench.gt.counts [K]  ground truth per image (train)
infer: eval mode, no_grad: batch 1 latency (--steps runs), batch --batch throughput (--steps // 10 runs, at
  least 2), and torchvision's SSD.postprocess_detections (softmax, score > 0.001, top 300 per class,
  batched_nms at IoU 0.55, 300 per image: ssdlite320_mobilenet_v3_large's settings) per image on the outputs
  of the K images.
train: forward + torchvision's SSD loss (box_iou + SSDMatcher(0.5), SSD.compute_loss: smooth L1 and softmax
  cross entropy with 3:1 hard negatives) + backward + SGD (lr 0.01, momentum 0.9, weight decay 4e-5), the
  matching + loss time reported on its own.
PyTorch at its best on CPU: channels_last model and input, torch.set_flush_denormal(True).
Use Debian's /usr/bin/python3 (the pyenv python3 on PATH has no torch).
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))

import torch  # noqa: E402
from torchvision.models.detection import _utils as det_utils  # noqa: E402
from torchvision.models.detection.ssd import SSD  # noqa: E402
from torchvision.ops import boxes as box_ops  # noqa: E402

from ssdlite_model import SSDLite  # noqa: E402
from torch_models import read_safetensors  # noqa: E402

# torchvision's SSD methods, called on just the fields they read (an SSD instance needs a backbone it would not use).
TORCHVISION_SSD = SimpleNamespace(
    box_coder=det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)), neg_to_pos_ratio=3,
    score_thresh=0.001, topk_candidates=300, nms_thresh=0.55, detections_per_img=300)
MATCHER = det_utils.SSDMatcher(0.5)


def stats(ts):
    """Median, min, max (ms) and spread (p90 - p10) / median of step times in seconds."""
    med = statistics.median(ts)
    q = statistics.quantiles(ts, n=10, method="inclusive") if len(ts) > 1 else [ts[0]] * 9
    return {"median_ms": med * 1e3, "min_ms": min(ts) * 1e3, "max_ms": max(ts) * 1e3, "spread": (q[8] - q[0]) / med, "runs": len(ts)}


def timed(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def batch_of(images, n):
    """n images taken cyclically from images, in channels_last."""
    idx = torch.arange(n) % images.shape[0]
    return images[idx].contiguous(memory_format=torch.channels_last)


def infer(model, spec, args):
    images = spec["bench.images"]
    anchors = spec["bench.anchors"]
    out = {}
    with torch.no_grad():
        boxes, logits = model(batch_of(images[:1], 1))
        out["sanity"] = {
            "max_abs_diff_boxes_vs_native": float((boxes[0] - spec["bench.ref.boxes"]).abs().max()),
            "max_abs_diff_logits_vs_native": float((logits[0] - spec["bench.ref.logits"]).abs().max()),
            "max_abs_native_logit": float(spec["bench.ref.logits"].abs().max()),
        }
        x1 = batch_of(images, 1)
        out["b1"] = stats(timed(lambda: model(x1), args.warmup, args.steps))
        xb = batch_of(images, args.batch)
        tb = timed(lambda: model(xb), 1, max(2, args.steps // 10))
        out[f"b{args.batch}"] = {**stats(tb), "img_per_s": args.batch / statistics.median(tb)}
        per_image = [model(batch_of(images[k:k + 1], 1)) for k in range(images.shape[0])]
        counts = []

        def post():
            for b, lg in per_image:
                d = SSD.postprocess_detections(TORCHVISION_SSD, {"bbox_regression": b, "cls_logits": lg}, [anchors], [(1, 1)])
                counts.append(int(d[0]["boxes"].shape[0]))
        tp = timed(post, 1, max(3, args.steps // 5))
        out["postprocess"] = {**stats([t / len(per_image) for t in tp]), "images": len(per_image),
                              "detections_per_image": statistics.median(counts)}
    return out


def train(model, spec, args):
    images = spec["bench.images"]
    anchors = spec["bench.anchors"]
    counts = spec["bench.gt.counts"].long().tolist()
    starts = [sum(counts[:k]) for k in range(len(counts))]
    gt = [{"boxes": spec["bench.gt.boxes"][s:s + c], "labels": spec["bench.gt.labels"][s:s + c].long()} for s, c in zip(starts, counts)]
    targets = [gt[k % len(gt)] for k in range(args.batch)]
    x = batch_of(images, args.batch)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5)
    losses, loss_ts = [], []

    def step():
        opt.zero_grad(set_to_none=True)
        boxes, logits = model(x)
        t0 = time.perf_counter()
        matched = [MATCHER(box_ops.box_iou(t["boxes"], anchors)) for t in targets]
        parts = SSD.compute_loss(TORCHVISION_SSD, targets, {"bbox_regression": boxes, "cls_logits": logits}, [anchors] * len(targets), matched)
        loss = parts["bbox_regression"] + parts["classification"]
        loss_ts.append(time.perf_counter() - t0)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    ts = timed(step, args.warmup, args.steps)
    med = statistics.median(ts)
    return {"train": {**stats(ts), "img_per_s": args.batch / med, "loss_ms": statistics.median(loss_ts[args.warmup:]) * 1e3},
            "sanity": {"loss_first": losses[0], "loss_last": losses[-1]}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--alpha", type=float, required=True)
    ap.add_argument("--resolution", type=int, required=True)
    ap.add_argument("--classes", type=int, required=True)
    ap.add_argument("--mode", choices=["infer", "train"], required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    flush_denormal = torch.set_flush_denormal(True)  # False where the CPU cannot (then it is reported)
    torch.manual_seed(0)
    spec = read_safetensors(args.spec)
    # bench.* tensors are stored flat
    for k, shape in {"bench.images": (-1, 3, args.resolution, args.resolution), "bench.anchors": (-1, 4), "bench.ref.boxes": (-1, 4),
                     "bench.ref.logits": (-1, args.classes + 1), "bench.gt.boxes": (-1, 4)}.items():
        if k in spec:
            spec[k] = spec[k].reshape(shape)
    model = SSDLite(args.alpha, args.classes)
    model.load_state_dict({k: v for k, v in spec.items() if not k.startswith("bench.")})
    model = model.to(memory_format=torch.channels_last).eval()
    res = infer(model, spec, args) if args.mode == "infer" else train(model, spec, args)
    res.update({"engine": "pytorch", "mode": args.mode, "layout": "channels_last", "flush_denormal": flush_denormal,
                "torch": torch.__version__, "num_threads": torch.get_num_threads(),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0})
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
