"""What one core of this machine can do on the model's largest matrix product (4096 tokens x
384 -> 1536): float32 through numpy's BLAS, and float32 and int8 (dynamic quantization, as the
int8 model runs it) through onnxruntime. Timed by the thread's CPU time, so that other work on a
busy machine slows the figure less than it slows wall-clock time: a per-core ceiling."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

M, K, N = 4096, 384, 1536
FLOP = 2 * M * K * N


def _gflops(run: Callable[[], object], rounds: int = 5, repeat: int = 4) -> float:
    run()
    rates = []
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(repeat):
            run()
        rates.append(repeat * FLOP / (time.thread_time() - start) / 1e9)
    return statistics.median(rates)


def ceilings() -> dict[str, float]:
    """Per-core GFLOP/s (GOP/s for int8) of the product, by thread CPU time."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from elevenfactor.context._embed_onnx import _ort

    ort = _ort()
    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K), dtype=np.float32)
    w = rng.standard_normal((K, N), dtype=np.float32)
    out: dict[str, float] = {"numpy_fp32": _gflops(lambda: np.matmul(a, w))}
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["y"])],
        "ceiling",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [M, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [M, N])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    sessions: dict[str, Any] = {
        "onnxruntime_fp32": ort.InferenceSession(model.SerializeToString(), options)
    }
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        quantized = Path(tmp) / "int8.onnx"
        onnx.helper.set_model_props(model, {"onnx.quant.pre_process": "onnxruntime.quant"})
        quantize_dynamic(model, quantized, per_channel=True, weight_type=QuantType.QInt8)
        sessions["onnxruntime_int8"] = ort.InferenceSession(str(quantized), options)
    for name, session in sessions.items():
        out[name] = _gflops(lambda s=session: s.run(None, {"a": a}))
    return out
