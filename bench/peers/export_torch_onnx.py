"""Export PyTorch's own ONNX of the two benchmark models (eval mode, trained weights: torch_models.realistic_weights).

usage: /usr/bin/python3 bench/peers/export_torch_onnx.py --outdir DIR [--opset 17]
Writes into DIR, for NAME in {seed, imagenet}:
  NAME.onnx            torch.onnx.export, opset 17, input 'input' [N,3,H,W] and
                       output 'logits' [N,classes], dynamic batch axis
  NAME.ref_input.bin   float32 reference input, batch 2 (seeded randn)
  NAME.ref_output.bin  float32 PyTorch eval-mode logits for that input
  NAME.json            shapes, params, file sizes, versions
Prints one JSON line (a summary of all of that) last.
The reference pair lets ort_bench.ts check that ONNX Runtime computes the same
function as PyTorch (max abs diff), so the speed comparison is apples to apples.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from torch_models import MODELS, count_params, realistic_weights  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--outdir", required=True)
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    torch.set_num_threads(args.threads)
    summary = {"torch": torch.__version__, "opset": args.opset, "models": {}}
    for name, (factory, hw, classes) in MODELS.items():
        torch.manual_seed(0)
        model = factory()
        # The weights the PyTorch peer times (real BN statistics, so the reference check covers BN folding too).
        weights = realistic_weights(model, name, hw)
        model.eval()
        path = os.path.join(args.outdir, f"{name}.onnx")
        t0 = time.time()
        with torch.no_grad():
            torch.onnx.export(model, torch.randn(2, 3, hw, hw), path,
                              opset_version=args.opset,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              do_constant_folding=True)
        export_s = time.time() - t0
        xr = torch.randn(2, 3, hw, hw, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            yr = model(xr)
        xr.numpy().astype("<f4").tofile(os.path.join(args.outdir, f"{name}.ref_input.bin"))
        yr.numpy().astype("<f4").tofile(os.path.join(args.outdir, f"{name}.ref_output.bin"))
        meta = {"name": name, "onnx": path, "input_shape": list(xr.shape),
                "output_shape": list(yr.shape), "params": count_params(model),
                "classes": classes, "hw": hw, "onnx_bytes": os.path.getsize(path), "weights": weights,
                "export_s": round(export_s, 2), "opset": args.opset,
                "torch": torch.__version__}
        with open(os.path.join(args.outdir, f"{name}.json"), "w") as f:
            json.dump(meta, f, indent=1)
        summary["models"][name] = meta
        print(f"exported {path} ({meta['onnx_bytes'] / 1e6:.1f} MB, opset {args.opset}, "
              f"{meta['params']:,} params) in {export_s:.1f}s", file=sys.stderr, flush=True)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
