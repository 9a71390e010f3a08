#!/usr/bin/python3
"""Runs a TensorFlow frozen graph with OpenCV's DNN module (Debian python3-opencv), an independent runtime.

usage: opencv-tf-graph.py GRAPH.pb INPUT.f32 N,C,H,W OUT.f32 NAME [NAME ...]
INPUT.f32 is a raw little-endian float32 NCHW blob (OpenCV feeds NHWC TF graphs NCHW blobs); the named outputs are
written one after another to OUT.f32 as raw float32, and their shapes printed as JSON on stdout.
"""
import json
import sys

import cv2
import numpy as np

graph, inp, shape, out, *names = sys.argv[1:]
net = cv2.dnn.readNetFromTensorflow(graph)
net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
blob = np.fromfile(inp, dtype='<f4').reshape([int(d) for d in shape.split(',')])
net.setInput(blob)
outs = net.forward(names)
np.concatenate([o.astype('<f4').ravel() for o in outs]).tofile(out)
print(json.dumps({"opencv": cv2.__version__, "shapes": [list(o.shape) for o in outs]}))
