"""int8 mending (exports.mending): the blocks whose quantisation costs the most stay fp32 until the budget holds."""

import numpy as np
import onnx
import pytest
import torch

from bench.runners import dummy_inputs
from compress.core.config import ExportConfig
from exports.mending import Scored, block_name, graph_blocks, mend_int8
from exports.ort import create_session, optimize_graph, quantize_graph
from exports.variants import ExportSpec, make_graphs, with_mending

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
FEEDS = [dummy_inputs(30522, 16, 24, INPUTS, seed=s) for s in range(8)]
INT8_OPS = {"DynamicQuantizeLinear", "QAttention", "DynamicQuantizeMatMul", "MatMulInteger", "QuantizeLinear",
            "QEmbedLayerNormalization"}


def logits_of(path) -> np.ndarray:
    session = create_session(path)
    return np.concatenate([session.run(None, f)[0] for f in FEEDS])


class AgreementWithFp32:
    """A real metric on 128 random inputs: the share whose predicted class is the fp32 graph's."""

    def __init__(self, fp32_graph) -> None:
        self.reference = logits_of(fp32_graph).argmax(-1)
        self.calls = 0

    def __call__(self, path) -> Scored:
        self.calls += 1
        logits = logits_of(path)
        return Scored(float((logits.argmax(-1) == self.reference).mean()), {"logits": torch.from_numpy(logits)})


class ExactLogits(AgreementWithFp32):
    """A metric no int8 block can keep: minus the largest logit change from the fp32 graph."""

    def __init__(self, fp32_graph) -> None:
        self.reference = logits_of(fp32_graph)

    def __call__(self, path) -> Scored:
        logits = logits_of(path)
        return Scored(-float(np.abs(logits - self.reference).max()), {"logits": torch.from_numpy(logits)})


@pytest.fixture(scope="module")
def optimized(tiny_bert_onnx, tmp_path_factory):
    path = tmp_path_factory.mktemp("mend") / "model_optimized.onnx"
    optimize_graph(tiny_bert_onnx, path, transformer=True)
    return path


def int8_ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node} & INT8_OPS


def test_dynamic_int8_that_misses_a_tight_budget_is_mended_within_it(optimized, tmp_path):
    int8 = tmp_path / "model_dynamic_qint8.onnx"
    quantize_graph(optimized, int8, "dynamic-qint8")
    metric = AgreementWithFp32(optimized)
    assert metric(int8).metric < 1.0  # the tight budget (0) is missed by the plain int8 graph

    mended = mend_int8(optimized, "dynamic-qint8", int8, metric, max_drop=0.0)

    assert mended.validation_int8 < 1.0 and mended.validation_mended == 1.0
    assert mended.path == tmp_path / "model_dynamic_qint8_mended.onnx" and mended.path.is_file()
    assert metric(mended.path).metric == 1.0  # re-scored from the file: it meets the budget
    # The blocks left fp32 are named, and so are their operators, which really are fp32 in the graph.
    assert mended.fp32_blocks and set(mended.fp32_blocks) < set(mended.ranking)
    nodes = {n.name: n.op_type for n in onnx.load(str(mended.path)).graph.node}
    assert mended.fp32_operators and all(nodes.get(name) not in INT8_OPS for name in mended.fp32_operators)
    assert int8_ops(mended.path)  # the rest is still int8
    assert mended.steps[-1].fp32_blocks == tuple(mended.fp32_blocks)
    assert not (tmp_path / "model_dynamic_qint8_trial.onnx").exists()  # trial graphs are gone


def test_static_int8_is_mended_too(tiny_bert_onnx, tmp_path):
    calibration = FEEDS[:2]
    int8 = tmp_path / "model_static_qint8.onnx"
    quantize_graph(tiny_bert_onnx, int8, "static-qint8", calibration)
    metric = AgreementWithFp32(tiny_bert_onnx)
    mended = mend_int8(tiny_bert_onnx, "static-qint8", int8, metric, max_drop=0.0, calibration=calibration)
    assert mended.validation_int8 < 1.0
    assert mended.path is not None and metric(mended.path).metric == 1.0
    assert "QuantizeLinear" in int8_ops(mended.path)


def test_a_variant_within_budget_is_left_as_it_is(optimized, tmp_path):
    int8 = tmp_path / "model_dynamic_qint8.onnx"
    quantize_graph(optimized, int8, "dynamic-qint8")
    metric = AgreementWithFp32(optimized)
    mended = mend_int8(optimized, "dynamic-qint8", int8, metric, max_drop=0.5)
    assert mended.path is None and not mended.ended_at_fp32 and mended.steps == []
    assert metric.calls == 2  # fp32 and int8 scored once each: no ranking when nothing needs mending


def test_the_fallback_ends_at_fp32_when_nothing_meets_the_budget(optimized, tmp_path):
    int8 = tmp_path / "model_dynamic_qint8.onnx"
    quantize_graph(optimized, int8, "dynamic-qint8")
    mended = mend_int8(optimized, "dynamic-qint8", int8, ExactLogits(optimized), max_drop=0.0)
    blocks = graph_blocks(optimized)
    assert mended.path is None and mended.ended_at_fp32
    # Every block but the last was tried in fp32, costliest first; with the last it would be the fp32 graph.
    assert len(mended.steps) == len(blocks) - 1 and all(s.validation_metric < 0 for s in mended.steps)
    assert sorted(mended.fp32_blocks) == sorted(b.name for b in blocks)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_dynamic_qint8.onnx"]  # nothing half-made left
    note = with_mending(_variant("dynamic-qint8"), mended).mending
    assert "ended at fp32" in note


def test_blocks_follow_the_layers_of_every_export_layout(tiny_bert_onnx, optimized):
    plain = [b.name for b in graph_blocks(tiny_bert_onnx)]
    fused = [b.name for b in graph_blocks(optimized)]
    layers = [f"layer {i} {part}" for i in range(4) for part in ("attention", "ffn")]
    assert plain == ["embeddings", *layers, "head"]
    assert fused == ["embeddings", *layers, "head"]  # ONNX Runtime's fused Attention nodes by their order
    # torch.onnx's names for our custom transformer and BiLSTM
    assert block_name("/model/transformer/encoder/layers.0/attention_residual/attention/query/MatMul", "MatMul",
                      0) == "layer 0 attention"
    assert block_name("/model/transformer/encoder/layers.1/feed_forward_residual/feed_forward/up/MatMul", "MatMul",
                      0) == "layer 1 ffn"
    assert block_name("/model/encoder/layers.1/backward_lstm/LSTM", "LSTM", 0) == "layer 1 lstm"
    assert block_name("/model/transformer/embeddings/embedding/Gather", "Gather", 0) == "embeddings"
    assert block_name("/model/head/Gemm", "Gemm", 0) == "head"
    assert block_name("/distilbert/transformer/layer.5/ffn/lin1/MatMul", "MatMul", 0) == "layer 5 ffn"
    assert block_name("/qa_outputs/MatMul", "MatMul", 0) == "head"


def test_make_graphs_yields_the_mended_graph_after_its_variant(optimized, tiny_bert_onnx, tmp_path):
    import shutil

    plain = tmp_path / "model.onnx"
    shutil.copy(tiny_bert_onnx, plain)
    settings = ExportConfig(optimize=True, quantize={"max_metric_drop": 0.0})
    spec = ExportSpec("tiny", True, settings, ["dynamic-qint8"], validation=AgreementWithFp32(plain))
    made = list(make_graphs(plain, spec, check=lambda path, variant: _variant(variant)))
    assert [m.variant for m in made] == ["fp32", "fp32-optimized", "dynamic-qint8", "dynamic-qint8-mended"]
    original, mended = (with_mending(m.checked, m.mended) for m in made[2:])
    assert original.validation_metric_drop > 0 and "mended as dynamic-qint8-mended with" in original.mending
    assert mended.mended_from == "dynamic-qint8" and mended.fp32_blocks and mended.validation_metric_drop == 0
    assert made[3].path.is_file()

    off = ExportSpec("tiny", True, ExportConfig(quantize={"max_metric_drop": 0.0, "mend": False}), ["dynamic-qint8"],
                     validation=AgreementWithFp32(plain))
    assert [m.variant for m in make_graphs(plain, off)] == ["fp32", "fp32-optimized", "dynamic-qint8"]


def _variant(name: str):
    from compress.core.results import ExportVariant

    return ExportVariant(variant=name, precision="int8" if "int8" in name else "fp32")


def test_openvino_int8_says_what_its_plain_int8_lost_and_what_accuracy_control_kept():
    from pathlib import Path

    from exports.openvino import OpenVinoInt8
    from exports.variants import with_openvino_int8

    plain = OpenVinoInt8(Path("x.xml"), validation_fp32=0.9, validation_int8=0.895, validation_plain_int8=0.895)
    assert with_openvino_int8(_variant("openvino-int8"), plain).validation_metric_drop == pytest.approx(0.005)
    assert with_openvino_int8(_variant("openvino-int8"), plain).mending is None
    controlled = OpenVinoInt8(Path("x.xml"), ["MatMul_1", "MatMul_2"], True, 0.9, 0.895, 0.8)
    checked = with_openvino_int8(_variant("openvino-int8"), controlled)
    assert checked.fp32_operators == ["MatMul_1", "MatMul_2"] and "left 2 operators in fp32" in checked.mending
    assert "lost 0.1000 on validation" in checked.mending and "which loses 0.0050 there" in checked.mending
    assert checked.validation_metric_drop == pytest.approx(0.005)  # this graph's drop, as the schema says
    assert with_openvino_int8(_variant("openvino-int8"), OpenVinoInt8(Path("x.xml"))) == _variant("openvino-int8")
