#!/usr/bin/env python3
"""One MatMulInteger node the size of a CLIP-B/32 MLP product: A int8 [50, 768] (an input, as
DynamicQuantizeLinear would give it) times B int8 [768, 3072] (a constant, like quantized
weights). tract-linalg 0.23.9 on AVX2 without AVX-512 runs it on avx2_mmm_i32_8x8.

    python make_matmulinteger.py matmulinteger.onnx
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(0)
weights = numpy_helper.from_array(rng.integers(-127, 128, size=(768, 3072), dtype=np.int8), "B")
node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
graph = helper.make_graph([node], "matmulinteger", [helper.make_tensor_value_info("A", TensorProto.INT8, [50, 768])],
                          [helper.make_tensor_value_info("Y", TensorProto.INT32, [50, 3072])], initializer=[weights])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1] if len(sys.argv) > 1 else "matmulinteger.onnx")
