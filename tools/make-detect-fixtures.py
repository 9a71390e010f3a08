#!/usr/bin/python3
"""Golden fixtures for src/detect (anchors, IoU, box coder, matchers, NMS, SSD losses), from PyTorch.

Usage (Debian's torch 1.13 + torchvision 0.14):
    /usr/bin/python3 tools/make-detect-fixtures.py [--out test/fixtures]

Writes test/fixtures/detect.safetensors (deterministic: fixed seeds, one thread). What is reference and what is
a transcription:
  * torchvision itself: ops.box_iou, BoxCoder((10, 10, 5, 5)) encode_single/decode_single, Matcher
    (allow_low_quality_matches) and SSDMatcher, ops.nms / ops.batched_nms, SSD.postprocess_detections and
    SSD.compute_loss (values and autograd gradients).
  * TF OD API, transcribed here in torch from its sources (TF is not installable here): create_ssd_anchors /
    tile_anchors, FasterRcnnBoxCoder, ArgMaxMatcher(force_match_for_each_row), and SSDMetaArch.loss with
    WeightedSigmoidClassificationLoss, WeightedSmoothL1LocalizationLoss and HardExampleMiner (gradients by
    autograd, the miner's NMS by torchvision.ops.nms).
Anchors are the SSDLite layout at 160x160 (10, 5, 3, 2, 1, 1 -> 540 anchors) to keep the file small.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.ssd import SSD
from torchvision.ops import batched_nms, box_iou, nms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import write_safetensors  # noqa: E402

RES = 160
NUM_CLASSES = 4  # background + 3


def tf_anchors(res: int) -> np.ndarray:
    """create_ssd_anchors(6, 0.2, 0.95, (1, 2, 0.5, 3, 0.3333)) on SSDLite's feature maps; [ycenter, xcenter, h, w]."""
    n = res
    for _ in range(4):
        n = math.ceil(n / 2)
    maps = []
    for _ in range(6):
        maps.append(n)
        n = math.ceil(n / 2)
    scales = [0.2 + (0.95 - 0.2) * i / 5 for i in range(6)] + [1.0]
    out = []
    for k, g in enumerate(maps):
        if k == 0:
            specs = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
        else:
            specs = [(scales[k], ar) for ar in (1.0, 2.0, 0.5, 3.0, 0.3333)] + [(math.sqrt(scales[k] * scales[k + 1]), 1.0)]
        for y in range(g):
            for x in range(g):
                for s, ar in specs:
                    out.append([(y + 0.5) / g, (x + 0.5) / g, s / math.sqrt(ar), s * math.sqrt(ar)])
    return np.array(out, dtype=np.float64)


def center_to_xyxy(c: torch.Tensor) -> torch.Tensor:
    yc, xc, h, w = c.unbind(1)
    return torch.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], 1)


def random_boxes(g: torch.Generator, n: int, size: float, min_side: float = 4.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * (size - min_side)
    wh = min_side + torch.rand(n, 2, generator=g, dtype=torch.float64) * (size - xy - min_side).clamp(min=1.0)
    return torch.cat([xy, xy + wh], 1)


# ---- TF OD API, transcribed ----
def tf_encode(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """FasterRcnnBoxCoder(10, 10, 5, 5)._encode on xyxy boxes: (ty, tx, th, tw)."""
    eps = 1e-8
    ha = anchors[:, 3] - anchors[:, 1] + eps
    wa = anchors[:, 2] - anchors[:, 0] + eps
    ya = anchors[:, 1] + (anchors[:, 3] - anchors[:, 1]) / 2
    xa = anchors[:, 0] + (anchors[:, 2] - anchors[:, 0]) / 2
    h = boxes[:, 3] - boxes[:, 1] + eps
    w = boxes[:, 2] - boxes[:, 0] + eps
    y = boxes[:, 1] + (boxes[:, 3] - boxes[:, 1]) / 2
    x = boxes[:, 0] + (boxes[:, 2] - boxes[:, 0]) / 2
    return torch.stack([10 * (y - ya) / ha, 10 * (x - xa) / wa, 5 * torch.log(h / ha), 5 * torch.log(w / wa)], 1)


def tf_decode(codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    ha = anchors[:, 3] - anchors[:, 1]
    wa = anchors[:, 2] - anchors[:, 0]
    ya = anchors[:, 1] + ha / 2
    xa = anchors[:, 0] + wa / 2
    ty, tx, th, tw = (codes / torch.tensor([10.0, 10.0, 5.0, 5.0], dtype=codes.dtype)).unbind(1)
    h, w = torch.exp(th) * ha, torch.exp(tw) * wa
    yc, xc = ty * ha + ya, tx * wa + xa
    return torch.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], 1)


def tf_argmax_match(sim: torch.Tensor, thr: float = 0.5) -> torch.Tensor:
    """ArgMaxMatcher(0.5, 0.5, force_match_for_each_row=True) on a [G, A] matrix (np.argmax: first index)."""
    s = sim.numpy()
    matches = s.argmax(0).astype(np.int64)
    vals = s.max(0)
    matches[vals < thr] = -1
    force_cols = s.argmax(1)
    onehot = np.zeros_like(s)
    onehot[np.arange(s.shape[0]), force_cols] = 1
    rows = onehot.argmax(0)
    mask = onehot.max(0) > 0
    return torch.from_numpy(np.where(mask, rows, matches))


def tf_loss(logits, regression, anchors, targets, matches, num_hard=3000, iou_thr=0.99, ratio=3, min_neg=3):
    """SSDMetaArch.loss: weighted sigmoid + weighted smooth L1 + HardExampleMiner, normalized by #matched."""
    loc_total, cls_total = 0.0, 0.0
    normalizer = max(1, int(sum((m >= 0).sum().item() for m in matches)))
    for b, (t, m) in enumerate(zip(targets, matches)):
        pos = m >= 0
        labels = torch.zeros(m.shape[0], dtype=torch.int64)
        labels[pos] = t["labels"][m[pos]]
        onehot = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
        cls = F.binary_cross_entropy_with_logits(logits[b], onehot, reduction="none").sum(1)
        reg_t = torch.zeros(m.shape[0], 4, dtype=logits.dtype)
        reg_t[pos] = tf_encode(t["boxes"][m[pos]], anchors[pos])
        loc = F.huber_loss(regression[b], reg_t, reduction="none", delta=1.0).sum(1) * pos.to(logits.dtype)
        decoded = tf_decode(regression[b].detach(), anchors)
        sel = nms(decoded, cls.detach(), iou_thr)[:num_hard]
        npos = int(pos[sel].sum())
        max_neg = max(min_neg, int(ratio * npos))
        neg_cum = torch.cumsum((m[sel] == -1).to(torch.int64), 0)
        sel = sel[pos[sel] | (neg_cum <= max_neg)]
        loc_total = loc_total + loc[sel].sum()
        cls_total = cls_total + cls[sel].sum()
    return loc_total / normalizer, cls_total / normalizer, normalizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "test", "fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(9)
    t: dict = {}

    center = torch.from_numpy(tf_anchors(RES))
    anchors_px = center_to_xyxy(center) * RES  # pixel xyxy at RES
    num_anchors = center.shape[0]
    t["anchors.center"] = center

    # IoU and the box coder (torchvision; TF transcription in (ty, tx, th, tw)).
    a, b = random_boxes(g, 7, 100.0), random_boxes(g, 9, 100.0)
    b[3] = a[2]  # one exact duplicate
    t["iou.a"], t["iou.b"], t["iou.out"] = a, b, box_iou(a, b)
    coder = det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    gt = random_boxes(g, 32, RES)
    anc = anchors_px[torch.randperm(num_anchors, generator=g)[:32]]
    t["coder.boxes"], t["coder.anchors"] = gt, anc
    t["coder.tv_encoded"] = coder.encode_single(gt, anc)
    t["coder.tf_encoded"] = tf_encode(gt, anc)
    codes = torch.randn(32, 4, generator=g, dtype=torch.float64) * 3
    codes[0, 2:] = 30.0  # exp clamp (torchvision only)
    t["coder.codes"] = codes
    t["coder.tv_decoded"] = coder.decode_single(codes, anc)
    t["coder.tf_decoded"] = tf_decode(codes, anc)

    # Matching: random gts against the anchors, and a hand-made matrix with ties and a shared best anchor.
    gts = [random_boxes(g, 5, RES, 12.0), random_boxes(g, 3, RES, 30.0)]
    gts[1][2] = gts[1][1] + torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64)  # shares its best anchor
    labels = [torch.randint(1, NUM_CLASSES, (len(x),), generator=g) for x in gts]
    tie = torch.tensor([[0.3, 0.7, 0.7, 0.1, 0.0], [0.2, 0.7, 0.1, 0.45, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    t["match.tie_iou"] = tie
    t["match.tie_ssd"] = det_utils.SSDMatcher(0.5)(tie.clone())
    t["match.tie_lowq"] = det_utils.Matcher(0.5, 0.5, allow_low_quality_matches=True)(tie.clone())
    t["match.tie_tf"] = tf_argmax_match(tie)
    ssd_matches, tf_matches = [], []
    for i, (x, l) in enumerate(zip(gts, labels)):
        iou = box_iou(x, anchors_px)
        t[f"gt{i}.boxes"], t[f"gt{i}.labels"] = x, l
        ssd_matches.append(det_utils.SSDMatcher(0.5)(iou))
        tf_matches.append(tf_argmax_match(iou))
        t[f"gt{i}.match_ssd"] = ssd_matches[-1]
        t[f"gt{i}.match_lowq"] = det_utils.Matcher(0.5, 0.5, allow_low_quality_matches=True)(iou)
        t[f"gt{i}.match_tf"] = tf_matches[-1]

    # NMS.
    nb = random_boxes(g, 300, 100.0, 8.0)
    ns = torch.rand(300, generator=g, dtype=torch.float64)
    nc = torch.randint(0, 4, (300,), generator=g)
    t["nms.boxes"], t["nms.scores"], t["nms.classes"] = nb, ns, nc
    t["nms.keep"] = nms(nb, ns, 0.6)
    t["nms.batched_keep"] = batched_nms(nb, ns, nc, 0.6)

    # Losses and post-processing on head outputs for 2 images.
    targets = [{"boxes": x, "labels": l} for x, l in zip(gts, labels)]
    logits = torch.randn(2, num_anchors, NUM_CLASSES, generator=g, dtype=torch.float64) * 2
    regression = torch.randn(2, num_anchors, 4, generator=g, dtype=torch.float64)
    # Make anchor 1 of image 0 predict nearly the same box as anchor 0, so the TF miner's NMS at 0.99 suppresses.
    dec0 = tf_decode(regression[0, :1], anchors_px[:1]) + 0.01
    regression[0, 1] = tf_encode(dec0, anchors_px[1:2])[0]
    assert tf_matches[0][0] == -1 and tf_matches[0][1] == -1
    logits[0, 0, 1], logits[0, 1, 1] = 8.0, 7.5  # both hard negatives: the higher loss (anchor 0) survives the NMS
    t["loss.logits"], t["loss.regression"] = logits, regression

    lg, rg = logits.clone().requires_grad_(), regression.clone().requires_grad_()
    fake = SimpleNamespace(box_coder=coder, neg_to_pos_ratio=3)
    out = SSD.compute_loss(fake, targets, {"bbox_regression": rg, "cls_logits": lg}, [anchors_px] * 2, ssd_matches)
    (out["bbox_regression"] + out["classification"]).backward()
    t["tv.loss"] = torch.stack([out["bbox_regression"], out["classification"]]).detach()
    t["tv.grad_logits"], t["tv.grad_regression"] = lg.grad, rg.grad

    lg, rg = logits.clone().requires_grad_(), regression.clone().requires_grad_()
    loc, cls, norm = tf_loss(lg, rg, anchors_px, targets, tf_matches)
    (loc + cls).backward()
    t["tf.loss"] = torch.stack([loc, cls]).detach()
    t["tf.grad_logits"], t["tf.grad_regression"] = lg.grad, rg.grad
    lg, rg = logits.clone().requires_grad_(), regression.clone().requires_grad_()
    loc, cls, _ = tf_loss(lg, rg, anchors_px, targets, tf_matches, num_hard=40)
    (loc + cls).backward()
    t["tf40.loss"] = torch.stack([loc, cls]).detach()
    t["tf40.grad_logits"] = lg.grad

    post = SimpleNamespace(box_coder=coder, score_thresh=0.3, topk_candidates=num_anchors, nms_thresh=0.6, detections_per_img=100)
    det = SSD.postprocess_detections(post, {"bbox_regression": regression, "cls_logits": logits}, [anchors_px] * 2, [(RES, RES)] * 2)
    for i, d in enumerate(det):
        t[f"post{i}.boxes"], t[f"post{i}.scores"], t[f"post{i}.labels"] = d["boxes"], d["scores"], d["labels"]

    tensors = {}
    for k, v in t.items():
        v = v.detach()
        tensors[k] = v.to(torch.int32) if not v.is_floating_point() else v.to(torch.float32)
    path = os.path.join(args.out, "detect.safetensors")
    size = write_safetensors(path, tensors, metadata={"res": str(RES), "num_classes": str(NUM_CLASSES), "tf_normalizer": str(norm)})
    print(f"wrote {path} ({size} bytes, {len(tensors)} tensors)")
    print("tv loss", t["tv.loss"].tolist(), "tf loss", t["tf.loss"].tolist(), "tf40", t["tf40.loss"].tolist())
    print("matches ssd", [int((m >= 0).sum()) for m in ssd_matches], "tf", [int((m >= 0).sum()) for m in tf_matches])
    print("tie ssd", t["match.tie_ssd"].tolist(), "lowq", t["match.tie_lowq"].tolist(), "tf", t["match.tie_tf"].tolist())
    print("post", [len(d["scores"]) for d in det], "nms keep", len(t["nms.keep"]), len(t["nms.batched_keep"]))


if __name__ == "__main__":
    main()
