#!/usr/bin/python3
"""Run a TFLite classifier with Debian's python3-pyarmnn (Arm NN's CpuRef backend): an independent reference for
`mnv2 import tflite` (test/import-tflite.test.ts runs it when pyarmnn is installed).

Usage: /usr/bin/python3 tools/tflite-reference.py MODEL.tflite INPUT.bin N OUTPUT.json
  INPUT.bin  N images, each the model's input tensor as raw bytes (e.g. uint8 NHWC 224x224x3)
  OUTPUT.json  {"outputs": [[float, ...], ...]}: the output tensor of each image, dequantized
               (scale * (q - zero_point)) when the output is quantized
"""

import json
import sys
import warnings

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import pyarmnn as ann


def main():
    model, input_path, n, out_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    parser = ann.ITfLiteParser()
    network = parser.CreateNetworkFromBinaryFile(model)
    graph = 0
    in_name = parser.GetSubgraphInputTensorNames(graph)[0]
    out_name = parser.GetSubgraphOutputTensorNames(graph)[0]
    in_binding = parser.GetNetworkInputBindingInfo(graph, in_name)
    out_binding = parser.GetNetworkOutputBindingInfo(graph, out_name)
    runtime = ann.IRuntime(ann.CreationOptions())
    opt, _ = ann.Optimize(network, [ann.BackendId("CpuRef")], runtime.GetDeviceSpec(), ann.OptimizerOptions())
    net_id, _ = runtime.LoadNetwork(opt)

    in_info = in_binding[1]
    dtype = {ann.DataType_QAsymmU8: np.uint8, ann.DataType_QAsymmS8: np.int8, ann.DataType_Float32: np.float32}[in_info.GetDataType()]
    data = np.fromfile(input_path, dtype=dtype)
    per = in_info.GetNumElements()
    if data.size != n * per:
        sys.exit(f"{input_path}: {data.size} values, expected {n} x {per}")
    out_info = out_binding[1]
    outputs = []
    for i in range(n):
        inputs = ann.make_input_tensors([in_binding], [data[i * per:(i + 1) * per]])
        outs = ann.make_output_tensors([out_binding])
        runtime.EnqueueWorkload(net_id, inputs, outs)
        y = ann.workload_tensors_to_ndarray(outs)[0].astype(np.float64).ravel()
        if out_info.IsQuantized():
            y = out_info.GetQuantizationScale() * (y - out_info.GetQuantizationOffset())
        outputs.append(y.tolist())
    with open(out_path, "w") as f:
        json.dump({"outputs": outputs}, f)


if __name__ == "__main__":
    main()
