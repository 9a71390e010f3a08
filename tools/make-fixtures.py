#!/usr/bin/python3
"""Generate the PyTorch golden fixtures in test/fixtures/ (safetensors, hand-written).

Usage (needs Debian's PyTorch: torch 1.13 + torchvision, CPU):
    /usr/bin/python3 tools/make-fixtures.py [--out test/fixtures]

Deterministic (fixed seeds, single thread); rerunning overwrites the files with the
same content. Files written:

  seed-cifar.weights.safetensors   kuangliu/pytorch-cifar MobileNetV2 (seed model, 10 classes),
                                   torch.manual_seed(0), BN perturbed so that no ReLU input is near 0
                                   (checked; the script refuses to write otherwise); full state_dict
  seed-cifar.io.safetensors        eval.* (eval mode; eval.logits32 = float32), train.* / grad.* / running.*
                                   (one train-mode forward+backward on a batch of 8)
  seed-cifar.optim.safetensors     <config>.<param> after 3 optimizer steps, for a subset of the params
                                   (configs and subset in metadata)
  tv-0.35-96.weights.safetensors   torchvision mobilenet_v2(width_mult=0.35), seed 1, BN perturbed,
                                   floats rounded to fp16 and stored as F16
  tv-0.35-96.io.safetensors        eval.input [2,3,96,96], eval.logits [2,1000]
  tv-1.0-224.weights.safetensors   torchvision mobilenet_v2(width_mult=1.0), seed 1, BN perturbed,
                                   floats rounded to fp16 and stored as F16
  tv-1.0-224.io.safetensors        eval.input [2,3,224,224], eval.logits [2,1000]

"Golden" values are computed in float64 and stored as F32 unless noted.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_common import BN_PERTURB_DOC, perturb_bn, rel_l2  # noqa: E402
from safetensors_io import read_safetensors, write_safetensors  # noqa: E402
from seed_model import Block, MobileNetV2  # noqa: E402,F401  (the seed, copied exactly)


# Seed model: BatchNorm2d layers whose output goes straight into F.relu (model bn1/bn2, every Block's bn1/bn2).
RELU_BN_RE = re.compile(r"^(bn1|bn2|layers\.\d+\.bn1|layers\.\d+\.bn2)$")

SEED_BN_PERTURB_DOC = (
    "for every BatchNorm2d in module order (global torch RNG, right after construction): "
    "if it feeds F.relu (model bn1, model bn2, every Block's bn1 and bn2): weight.uniform_(0.085,0.095); "
    "u=torch.rand(C); mag=torch.empty(C).uniform_(0.9,1.1); bias=where(u<0.75,+1,-1)*mag "
    "(so a ReLU input can only reach 0 when the batch-standardised value |x_hat| > ~11); "
    "otherwise (Block bn3, shortcut.1): weight.uniform_(0.5,1.5), bias.normal_(0,0.1); "
    "then for all: running_mean.normal_(0,0.1), running_var.uniform_(0.5,1.5); num_batches_tracked=0"
)


@torch.no_grad()
def perturb_bn_seed(model: nn.Module):
    n_relu, n_other = 0, 0
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            if RELU_BN_RE.match(name):
                m.weight.uniform_(0.085, 0.095)
                u = torch.rand(m.num_features)
                mag = torch.empty(m.num_features).uniform_(0.9, 1.1)
                m.bias.copy_(torch.where(u < 0.75, mag, -mag))
                n_relu += 1
            else:
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                n_other += 1
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.num_batches_tracked.zero_()
    return n_relu, n_other


class ReluProbe:
    """Records min |input| of every F.relu call during a forward, via forward hooks on the BatchNorm2d
    layers that feed F.relu (RELU_BN_RE). F.relu is temporarily wrapped only to check that every ReLU
    input is exactly one of the hooked BN outputs (so no ReLU is missed)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.mins = {}  # bn name -> min |output| (= min |ReLU input|)
        self.n_relu_calls = 0

    def __enter__(self):
        self._live = {}
        self._handles = []
        for name, m in self.model.named_modules():
            if isinstance(m, nn.BatchNorm2d) and RELU_BN_RE.match(name):
                self._handles.append(m.register_forward_hook(self._hook(name)))
        self._orig_relu = F.relu
        probe = self

        def relu(x, *a, **kw):
            if id(x) not in probe._live:
                raise RuntimeError("ReluProbe: F.relu input is not a hooked BatchNorm2d output")
            probe.n_relu_calls += 1
            return probe._orig_relu(x, *a, **kw)

        F.relu = relu
        return self

    def _hook(self, name):
        def hook(mod, inp, out):
            self._live[id(out)] = out
            v = out.detach().abs().min().item()
            self.mins[name] = min(v, self.mins.get(name, float("inf")))
        return hook

    def __exit__(self, *exc):
        F.relu = self._orig_relu
        for h in self._handles:
            h.remove()
        self._live = {}
        return False

    def result(self):
        name = min(self.mins, key=self.mins.get)
        return self.mins[name], name


RELU_MIN_BOUND = 1e-3


def state_dict_tensors(model: nn.Module, float_dtype: str = "F32"):
    """state_dict -> (ordered tensors, dtypes). Floats as float_dtype, ints (num_batches_tracked) as I64."""
    tensors, dtypes = {}, {}
    for k, v in model.state_dict().items():
        tensors[k] = v
        dtypes[k] = float_dtype if v.is_floating_point() else "I64"
    return tensors, dtypes


def f32(d):
    return {k: "F32" for k in d}


def base_meta(**kw):
    md = {
        "generator": "tools/make-fixtures.py",
        "torch": torch.__version__,
    }
    try:
        import torchvision

        md["torchvision"] = torchvision.__version__
    except Exception:  # pragma: no cover
        pass
    for k, v in kw.items():
        md[k] = v if isinstance(v, str) else json.dumps(v)
    return md


WRITTEN = []


def write(out_dir, name, tensors, metadata, dtypes=None):
    path = os.path.join(out_dir, name)
    size = write_safetensors(path, tensors, metadata, dtypes)
    WRITTEN.append(path)
    print(f"wrote {path}  ({len(tensors)} tensors, {size / 1e6:.3f} MB)")
    return path


# ---------------------------------------------------------------------------
# 1. seed CIFAR model
# ---------------------------------------------------------------------------
# Learning rates: tuned (with the ReLU-margin BN init) so that, on this fixed 8-image train-mode batch, the float64
# loss strictly decreases from step to step, including the loss after step 3, for every config (checked; at
# sgd/sgd_nesterov lr 0.01 and sgd_plain lr 0.02 it went up at step 3). momentum / wd / alpha / eps / nesterov as before.
OPTIM_CONFIGS = {
    "sgd": {"type": "SGD", "lr": 0.005, "momentum": 0.9, "weight_decay": 5e-4},
    "sgd_nesterov": {"type": "SGD", "lr": 0.005, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    "sgd_plain": {"type": "SGD", "lr": 0.01},
    "rmsprop": {"type": "RMSprop", "lr": 3e-4, "alpha": 0.9, "eps": 1e-3, "momentum": 0.9, "weight_decay": 4e-5},
}
OPTIM_STEPS = 3
# parameters stored per config in seed-cifar.optim.safetensors (plus every BatchNorm weight and bias)
OPTIM_SUBSET_EXTRA = ["linear.weight", "linear.bias", "conv1.weight", "layers.5.conv2.weight",
                      "layers.10.shortcut.0.weight", "layers.1.conv3.weight"]


def optim_subset(model: nn.Module):
    bn = set()
    for mname, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            bn.add(f"{mname}.weight")
            bn.add(f"{mname}.bias")
    names = [n for n, _ in model.named_parameters() if n in bn or n in OPTIM_SUBSET_EXTRA]
    assert all(n in names for n in OPTIM_SUBSET_EXTRA)
    return names  # model.named_parameters() order


def make_optimizer(cfg, params):
    kw = {k: v for k, v in cfg.items() if k != "type"}
    if cfg["type"] == "SGD":
        return torch.optim.SGD(params, **kw)
    if cfg["type"] == "RMSprop":
        return torch.optim.RMSprop(params, **kw)
    raise ValueError(cfg["type"])


def seed_cifar(out_dir):
    print("== seed CIFAR MobileNetV2 (kuangliu) ==")
    torch.manual_seed(0)
    model = MobileNetV2(num_classes=10)
    n_relu_bn, n_other_bn = perturb_bn_seed(model)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"  params {n_params}, BN layers {n_relu_bn} feeding ReLU + {n_other_bn} other, "
          f"state_dict entries {len(model.state_dict())}")
    assert (n_relu_bn, n_other_bn) == (2 + 2 * 17, 17 + 4)

    eval_input = torch.randn(4, 3, 32, 32)
    train_input = torch.randn(8, 3, 32, 32)
    train_labels = torch.randint(0, 10, (8,), dtype=torch.int64)

    pending = []  # files are written only after every check passed
    failures = []

    def check_relu(probe, what):
        v, where = probe.result()
        ok = v > RELU_MIN_BOUND
        print(f"    min |ReLU input| {what}: {v:.4e} at {where} ({probe.n_relu_calls} ReLU calls)"
              + ("" if ok else f"  <-- VIOLATION (bound {RELU_MIN_BOUND:g})"))
        if not ok:
            failures.append(f"{what}: min |ReLU input| {v:.3e} at {where}")
        return v, where

    # --- weights
    t, d = state_dict_tensors(model, "F32")
    pending.append(("seed-cifar.weights.safetensors", t,
                    base_meta(model="kuangliu/pytorch-cifar MobileNetV2 (seed document copy), num_classes=10",
                              init="torch.manual_seed(0); MobileNetV2(num_classes=10) (PyTorch default init); then "
                                   + SEED_BN_PERTURB_DOC,
                              num_params=str(n_params)), d))

    io = {}
    # --- eval
    with torch.no_grad():
        m64 = copy.deepcopy(model).double().eval()
        io["eval.input"] = eval_input
        io["eval.logits"] = m64(eval_input.double())
        m32 = copy.deepcopy(model).eval()
        io["eval.logits32"] = m32(eval_input)
    print(f"  eval.logits max|.| = {io['eval.logits'].abs().max().item():.6f}; "
          f"fp32 vs fp64 max abs diff {(io['eval.logits32'].double() - io['eval.logits']).abs().max().item():.3e}")

    # --- train step
    def train_fwd_bwd(dtype):
        m = copy.deepcopy(model).to(dtype).train()
        x = train_input.to(dtype).requires_grad_()
        with ReluProbe(m) as probe:
            logits = m(x)
        loss = F.cross_entropy(logits, train_labels)
        loss.backward()
        return m, x, logits.detach(), loss.detach(), probe

    m64t, x64, logits64, loss64, probe64 = train_fwd_bwd(torch.float64)
    m32t, x32, logits32, loss32, probe32 = train_fwd_bwd(torch.float32)
    print(f"  train loss fp64 {loss64.item():.10f}  fp32 {loss32.item():.10f}")
    relu_train = check_relu(probe64, "train forward (float64)")
    print("    min |ReLU input| train forward (float32, info only): %.4e at %s" % probe32.result())
    io["train.input"] = train_input
    io["train.labels"] = train_labels
    io["train.logits"] = logits64
    io["train.loss"] = loss64.reshape(1)
    grads64 = {}
    for name, p in m64t.named_parameters():
        grads64[name] = p.grad.detach().clone()
        io["grad." + name] = p.grad
    io["grad.input"] = x64.grad
    for name, b in m64t.named_buffers():
        if name.endswith("running_mean") or name.endswith("running_var"):
            io["running." + name] = b
    grads32 = {name: p.grad.detach().clone() for name, p in m32t.named_parameters()}
    print(f"  train.logits max|.| = {logits64.abs().max().item():.6f}")

    # gradient statistics (fp32 engine = PyTorch's own fp32 vs the float64 reference)
    tiny = [n for n, g in grads64.items() if g.norm().item() < 1e-10]
    print(f"  params with ||grad64|| < 1e-10 (structurally zero): {len(tiny)} / {len(grads64)}")
    for n in tiny:
        print(f"    {n}: ||g64||={grads64[n].norm().item():.3e}  ||g32||={grads32[n].norm().item():.3e}")
    # Exactly zero in exact arithmetic: a per-channel constant added by these biases reaches a train-mode BN through
    # 1x1 convs only (ReLUs act as identity or zero on a whole channel, since no ReLU input is near 0), and that
    # BN removes it: every bn3.bias and shortcut.1.bias (-> next 1x1 conv -> bn1, or model conv2 -> bn2), every
    # Block bn2.bias (-> conv3 -> bn3) and the model's bn1.bias (-> layers.0.conv1 -> bn1).
    zero_re = re.compile(r"^(bn1\.bias|layers\.\d+\.(bn2|bn3|shortcut\.1)\.bias)$")
    expect_zero = [n for n in grads64 if zero_re.match(n)]
    if tiny != expect_zero:
        failures.append(f"unexpected structurally-zero gradient set: {tiny}")
    rels = sorted((rel_l2(grads32[n], g), n) for n, g in grads64.items() if g.norm().item() > 1e-6)
    vals = [r for r, _ in rels]
    med = vals[len(vals) // 2]
    r_in = rel_l2(x32.grad, x64.grad)
    print(f"  fp32-vs-fp64 grad rel L2 over the {len(vals)} params with ||g64|| > 1e-6: median {med:.3e}, "
          f"max {vals[-1]:.3e} ({rels[-1][1]})")
    print("    worst 5:", ", ".join(f"{n}={r:.2e}" for r, n in rels[-5:]))
    n_gt = {t: sum(v > t for v in vals) for t in (1e-5, 1e-4, 1e-3)}
    print(f"    tensors above 1e-5 / 1e-4 / 1e-3: {n_gt[1e-5]} / {n_gt[1e-4]} / {n_gt[1e-3]}; "
          f"per-tensor: " + ", ".join(f"{n}={r:.1e}" for r, n in rels if r > 1e-4))
    print(f"    grad.input rel L2 {r_in:.3e}; logits rel L2 {rel_l2(logits32, logits64):.3e}")
    grad_summary = {
        "fp32_vs_fp64_rel_l2_over": "params with ||grad64|| > 1e-6",
        "fp32_vs_fp64_rel_l2_count": len(vals),
        "fp32_vs_fp64_rel_l2_median": med,
        "fp32_vs_fp64_rel_l2_max": vals[-1],
        "fp32_vs_fp64_rel_l2_max_param": rels[-1][1],
        "fp32_vs_fp64_rel_l2_input": r_in,
        "fp32_vs_fp64_rel_l2_count_above_1e-5_1e-4_1e-3": [n_gt[1e-5], n_gt[1e-4], n_gt[1e-3]],
        "min_abs_relu_input_fp64": relu_train[0],
        "min_abs_relu_input_fp64_at": relu_train[1],
    }

    pending.append(("seed-cifar.io.safetensors", io,
                    base_meta(
                        weights="seed-cifar.weights.safetensors",
                        eval="eval.logits = model.eval() on eval.input computed in float64 (stored F32); "
                             "eval.logits32 computed in float32",
                        train=("train-mode (batch statistics, BN momentum 0.1, unbiased running_var) forward of "
                               "train.input in float64; train.loss = F.cross_entropy(logits, train.labels) mean "
                               "reduction; grad.* = d loss / d param and grad.input after loss.backward(); running.* = "
                               "BN running stats after that one forward. The BN init keeps every ReLU input away from "
                               "0 (see weights init and grad_summary), so no ReLU switches side in fp32. "
                               "structurally_zero lists the grad.* tensors that are exactly 0 in exact arithmetic "
                               "(~1e-17 here; a per-channel constant reaches a train-mode BN through 1x1 convs only and "
                               "is removed there); compare those with an absolute tolerance. Float32 error elsewhere "
                               "(PyTorch fp32 vs this float64 reference): see grad_summary; it is largest for weight "
                               "gradients whose input is a ReLU output with a large per-channel offset (conv3 / "
                               "depthwise conv2 weights), where the exactly-zero term sum(dy)*offset cancels."),
                        structurally_zero=tiny,  # parameter names (tensor key = "grad." + name)
                        train_loss_fp64=repr(loss64.item()),
                        train_loss_fp32=repr(loss32.item()),
                        grad_summary=grad_summary,
                    ),
                    {k: ("I64" if k == "train.labels" else "F32") for k in io}))

    # --- optimizer steps
    subset = optim_subset(model)
    print(f"  optimizer runs (float64, train mode, same batch each step); storing {len(subset)} params per config")
    optim = {}
    losses = {}
    deltas = {}
    relu_mins = {}

    def run_optim(cfg, dtype, cname):
        m = copy.deepcopy(model).to(dtype).train()
        opt = make_optimizer(cfg, m.parameters())
        x = train_input.to(dtype)
        ls = []
        for step in range(OPTIM_STEPS):
            opt.zero_grad()
            with ReluProbe(m) as probe:
                out = m(x)
            if dtype == torch.float64:
                relu_mins[f"{cname}.step{step + 1}"] = check_relu(probe, f"{cname} step {step + 1} (float64)")
            loss = F.cross_entropy(out, train_labels)
            loss.backward()
            opt.step()
            ls.append(loss.item())
        with torch.no_grad():
            # loss after step 3 (this forward updates running stats again; they are not stored)
            ls.append(F.cross_entropy(m(x), train_labels).item())
        return m, ls

    for cname, cfg in OPTIM_CONFIGS.items():
        m, ls = run_optim(cfg, torch.float64, cname)
        m32o, ls32 = run_optim(cfg, torch.float32, cname)
        losses[cname] = ls
        print(f"    {cname:13s} loss before steps 1..3: {', '.join(f'{v:.6f}' for v in ls[:-1])}; "
              f"after step 3: {ls[-1]:.6f}")
        if not all(v == v and v < u for u, v in zip(ls, ls[1:])):
            failures.append(f"optimizer {cname}: loss did not decrease at every step: {ls}")
        p32 = dict(m32o.named_parameters())
        p64 = dict(m.named_parameters())
        rp = []
        for name in subset:
            p = p64[name].detach()
            optim[f"{cname}.{name}"] = p
            rp.append(((p32[name].detach().double() - p).norm().item() / p.norm().item(), name))
        rp.sort()
        deltas[cname] = {"max": rp[-1][0], "max_param": rp[-1][1], "median": rp[len(rp) // 2][0]}
        print(f"      fp32-vs-fp64 after step 3 over the subset, ||p32-p64||/||p64||: max {rp[-1][0]:.2e} "
              f"({rp[-1][1]}), median {rp[len(rp) // 2][0]:.2e}; fp32 losses {', '.join(f'{v:.6f}' for v in ls32)}")

    pending.append(("seed-cifar.optim.safetensors", optim,
                    base_meta(
                        configs=OPTIM_CONFIGS,
                        steps=str(OPTIM_STEPS),
                        subset=subset,
                        weights="seed-cifar.weights.safetensors",
                        procedure=("for each config: fresh float64 copy of the initial model (incl. BN running stats), "
                                   "model.train(); optimizer over ALL model.parameters() (weight decay applies to all "
                                   "params incl. BN and bias); each step: zero_grad, loss=F.cross_entropy(model("
                                   "train.input), train.labels), backward, step; same 8-image batch every step; "
                                   "<config>.<param> = parameters after step 3 (F32), stored only for the params listed "
                                   "in `subset` (every BN weight/bias + " + ", ".join(OPTIM_SUBSET_EXTRA) + "). "
                                   "torch SGD: buf=momentum*buf+g (buf=g at step 1, no dampening), nesterov: "
                                   "g+momentum*buf. torch RMSprop: square_avg starts at 0, sq=alpha*sq+(1-alpha)g^2, "
                                   "avg=sqrt(sq)+eps (eps outside sqrt), buf=momentum*buf+g/avg, p-=lr*buf; weight "
                                   "decay g+=wd*p before all of this."),
                        losses=losses,
                        fp32_vs_fp64_rel_l2_params_after_steps=deltas,
                    ), f32(optim)))

    if failures:
        print("REFUSING TO WRITE the seed-cifar fixtures:")
        for f_ in failures:
            print("  " + f_)
        raise SystemExit(1)
    for name, tensors, md, dt in pending:
        write(out_dir, name, tensors, md, dt)


# ---------------------------------------------------------------------------
# 2. torchvision mobilenet_v2
# ---------------------------------------------------------------------------
def torchvision_model(out_dir, alpha, res, fp16):
    import torchvision

    tag = f"tv-{alpha}-{res}"
    print(f"== torchvision mobilenet_v2 width_mult={alpha} res={res} ==")
    torch.manual_seed(1)
    model = torchvision.models.mobilenet_v2(weights=None, width_mult=alpha, num_classes=1000)
    nbn = perturb_bn(model)
    if fp16:
        with torch.no_grad():
            for t in model.state_dict().values():
                if t.is_floating_point():
                    assert t.abs().max().item() < 65504, "value out of fp16 range"
                    t.copy_(t.half().float())
    n_params = sum(p.numel() for p in model.parameters())
    print(f"  params {n_params}, BN layers {nbn}, state_dict entries {len(model.state_dict())}")
    x = torch.randn(2, 3, res, res)
    with torch.no_grad():
        logits = copy.deepcopy(model).double().eval()(x.double())
        logits32 = copy.deepcopy(model).eval()(x)
    print(f"  eval.logits max|.| = {logits.abs().max().item():.6f}; fp32 vs fp64 max abs diff "
          f"{(logits32.double() - logits).abs().max().item():.3e}")

    t, d = state_dict_tensors(model, "F16" if fp16 else "F32")
    init = (f"torch.manual_seed(1); torchvision.models.mobilenet_v2(weights=None, width_mult={alpha}, num_classes=1000) "
            f"(torchvision init); then " + BN_PERTURB_DOC)
    if fp16:
        init += "; then every float tensor rounded to fp16 (t.copy_(t.half().float())) and stored as F16"
    write(out_dir, f"{tag}.weights.safetensors", t,
          base_meta(model=f"torchvision mobilenet_v2 width_mult={alpha} num_classes=1000", init=init,
                    num_params=str(n_params)), d)
    write(out_dir, f"{tag}.io.safetensors", {"eval.input": x, "eval.logits": logits},
          base_meta(weights=f"{tag}.weights.safetensors",
                    eval="eval.logits = model.eval() (dropout off) on eval.input computed in float64 from the stored weights, stored F32"),
          {"eval.input": "F32", "eval.logits": "F32"})


# ---------------------------------------------------------------------------
def verify(out_dir):
    print("== verify (read back) ==")
    total = 0
    for path in WRITTEN:
        tensors, md = read_safetensors(path)
        size = os.path.getsize(path)
        total += size
        dts = {}
        for a in tensors.values():
            dts[str(a.dtype)] = dts.get(str(a.dtype), 0) + 1
        print(f"  {os.path.basename(path)}: {len(tensors)} tensors {dts}, metadata keys {sorted(md)}, {size / 1e6:.3f} MB")
        for k, a in tensors.items():
            if k.endswith("logits") or k.endswith("logits32") or k.endswith(".loss") or k.endswith("input") or k.endswith("labels"):
                extra = f" max|.|={abs(a.astype('f8')).max():.6f}" if a.dtype.kind == "f" else f" {a.tolist()}"
                print(f"    {k} {a.dtype} {list(a.shape)}{extra}")
    print(f"  total {total / 1e6:.3f} MB in {len(WRITTEN)} files")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(here), "test", "fixtures"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)  # bitwise-reproducible fp32 reductions across machines/thread counts
    torch.use_deterministic_algorithms(True)
    seed_cifar(args.out)
    torchvision_model(args.out, 0.35, 96, fp16=True)
    torchvision_model(args.out, 1.0, 224, fp16=True)
    verify(args.out)


if __name__ == "__main__":
    main()
