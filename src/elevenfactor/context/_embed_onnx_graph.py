"""The BERT encoder of ``_embed_bert`` as an ONNX graph, built from its weights (no torch, no
exporter): what ``_embed_onnx`` hands to onnxruntime.

The graph uses onnxruntime's fused CPU operators (domain ``com.microsoft``) where they are the
faster way: ``EmbedLayerNormalization`` (word + position embeddings, LayerNorm, and each row's
count of real tokens), then per layer ``Attention`` (the query, key and value projections in one
product, the softmax with the padding mask, the context), a ``MatMul`` and ``Add, Add,
LayerNormalization`` (bias, residual, LayerNorm), a ``MatMul`` and ``BiasGelu`` (the exact erf
GELU), a ``MatMul`` and ``Add, Add, LayerNormalization``; then the mean of the real tokens'
states, L2-normalised. The weights are those ``_embed_bert.load_bert`` lays out (the query's
``1/sqrt(head size)`` folded in), so both runtimes compute the same thing.

Inputs: ``input_ids`` and ``attention_mask``, int32 ``(batch, length)``, padded on the right
(each row's real tokens first). Output: ``embeddings``, float32 ``(batch, hidden)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from elevenfactor.context._embed_bert import Bert

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto, TensorProto

__all__ = ["GRAPH_VERSION", "build_graph"]

GRAPH_VERSION = 1
"""Bumped whenever the graph built from the same weights changes (it keys the cached file)."""
OPSET = 17
MS = "com.microsoft"
_FLOAT = 1  # onnx.TensorProto.FLOAT


class _Builder:
    """Nodes and initializers, added in order; each node has one output, named as the node."""

    def __init__(self) -> None:
        self.nodes: list[NodeProto] = []
        self.inits: list[TensorProto] = []

    def const(self, name: str, value: npt.NDArray[Any]) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], out: str, domain: str = "", **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [out], name=out, domain=domain, **attrs))
        return out

    def skip_norm(
        self,
        x: str,
        bias: npt.NDArray[Any],
        skip: str,
        gain: npt.NDArray[Any],
        shift: npt.NDArray[Any],
        eps: float,
        out: str,
    ) -> str:
        """``LayerNorm(x + bias + skip)``: two ``Add`` and a ``LayerNormalization`` (several times
        faster than the fused ``SkipLayerNormalization`` of onnxruntime 1.32 on the CPU)."""
        biased = self.node("Add", [x, self.const(out + ".bias", bias)], out + ".biased")
        summed = self.node("Add", [biased, skip], out + ".sum")
        return self.node(
            "LayerNormalization",
            [summed, self.const(out + ".gain", gain), self.const(out + ".shift", shift)],
            out, axis=-1, epsilon=eps,
        )  # fmt: skip


def build_graph(bert: Bert) -> ModelProto:
    """The forward pass of ``bert`` (token type 0, mean pooling, unit vectors) as a model."""
    from onnx import TensorProto, helper

    g = _Builder()
    eps = float(bert.eps)
    g.nodes.append(
        helper.make_node(
            "EmbedLayerNormalization",
            ["input_ids", "", g.const("word", bert.word),
             g.const("position", bert.pos_type),  # token type 0 is folded in
             "", g.const("ln_g", bert.ln_g), g.const("ln_b", bert.ln_b), "attention_mask"],
            ["embedded", "mask_index"],
            name="embed",
            domain=MS,
            epsilon=eps,
        )
    )  # fmt: skip
    x = "embedded"
    for i, w in enumerate(bert.layers):
        p = f"l{i}."
        attended = g.node(
            "Attention",
            [x, g.const(p + "qkv_w", w.qkv_w), g.const(p + "qkv_b", w.qkv_b), "mask_index"],
            p + "attention",
            MS,
            num_heads=bert.heads,
            scale=1.0,  # 1/sqrt(head size) is folded into the query weights
        )
        projected = g.node("MatMul", [attended, g.const(p + "out_w", w.out_w)], p + "projected")
        ln1 = g.skip_norm(projected, w.out_b, x, w.ln1_g, w.ln1_b, eps, p + "ln1")
        inner = g.node("MatMul", [ln1, g.const(p + "ff1_w", w.ff1_w)], p + "inner")
        gelu = g.node("BiasGelu", [inner, g.const(p + "ff1_b", w.ff1_b)], p + "gelu", MS)
        out = g.node("MatMul", [gelu, g.const(p + "ff2_w", w.ff2_w)], p + "ff_out")
        x = g.skip_norm(out, w.ff2_b, ln1, w.ln2_g, w.ln2_b, eps, p + "ln2")
    _pooling(g, x)
    batch_length = ["batch", "length"]
    graph = helper.make_graph(
        g.nodes,
        "all-MiniLM-L6-v2",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT32, batch_length),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT32, batch_length),
        ],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", bert.hidden])],
        g.inits,
        # Every other tensor is float32 (onnx's shape inference cannot see through the
        # com.microsoft operators; the int8 quantizer needs to know).
        value_info=[
            helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None)
            for n in g.nodes
            if n.output[0] != "embeddings"
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)],
        producer_name="elevenfactor",
    )
    model.ir_version = 8  # read by every onnxruntime since 1.10
    return model


def _pooling(g: _Builder, states: str) -> None:
    """``embeddings``: the mean of the real tokens' ``states``, divided by its length."""
    mask = g.node("Cast", ["attention_mask"], "mask_f", to=_FLOAT)
    axis1 = g.const("axis1", np.array([1], np.int64))
    weights = g.node("Unsqueeze", [mask, axis1], "weights")  # (batch, 1, length)
    summed = g.node("MatMul", [weights, states], "summed")  # (batch, 1, hidden)
    summed = g.node("Squeeze", [summed, axis1], "summed_2d")
    count = g.node("ReduceSum", [mask, axis1], "count", keepdims=1)
    count = g.node("Max", [count, g.const("min_count", np.array(1e-9, np.float32))], "count_min")
    mean = g.node("Div", [summed, count], "mean")
    norm = g.node("ReduceL2", [mean], "norm", axes=[1], keepdims=1)
    norm = g.node("Max", [norm, g.const("min_norm", np.array(1e-12, np.float32))], "norm_min")
    g.node("Div", [mean, norm], "embeddings")
