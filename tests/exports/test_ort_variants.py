"""ONNX Runtime graph optimisation, int8 variants and the choice of which to ship, on tiny exports."""

import numpy as np
import onnx
import pytest
import torch
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertForSequenceClassification,
    pipeline,
)

from bench.runners import dummy_inputs
from compress.core.config import ORT_INT8_VARIANTS
from compress.core.errors import UserError
from compress.core.results import ReportVariant
from compress.models.bilstm import BiLSTMConfig, BiLSTMForSequenceClassification
from exports.onnx import export_hf_model, export_torch_model, parity_max_abs_diff
from exports.ort import create_session, optimize_graph, quantize_graph
from exports.variants import choose_variant

BERT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def padded_feeds(batch: int, seq: int, vocab: int = 30522) -> dict[str, np.ndarray]:
    feeds = dummy_inputs(vocab, batch, seq, BERT_INPUTS, seed=batch)
    feeds["attention_mask"][:, seq // 2:] = 0
    return feeds


def max_diff(a, b, feeds) -> float:
    names_a, names_b = {i.name for i in a.get_inputs()}, {i.name for i in b.get_inputs()}
    out_a = a.run(None, {k: v for k, v in feeds.items() if k in names_a})[0]
    out_b = b.run(None, {k: v for k, v in feeds.items() if k in names_b})[0]
    return float(np.abs(out_a - out_b).max())


@pytest.fixture(scope="module")
def optimized(tiny_bert_onnx):
    path = tiny_bert_onnx.parent / "model_optimized.onnx"
    return path, optimize_graph(tiny_bert_onnx, path, transformer=True)


def test_bert_graph_gets_transformer_fusions_with_parity(tiny_bert_dir, tiny_bert_onnx, optimized):
    path, fused = optimized
    assert fused["Attention"] == 4 and fused["SkipLayerNormalization"] == 8 and fused["EmbedLayerNormalization"] == 1
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= ops and "Softmax" not in ops  # attention really fused
    model = BertForSequenceClassification.from_pretrained(tiny_bert_dir)
    session = create_session(path)
    for batch, seq in ((1, 8), (3, 40)):  # dynamic axes survive the fusions
        assert parity_max_abs_diff(model, session, padded_feeds(batch, seq)) <= 1e-4


def test_other_graphs_get_session_level_optimisation(tiny_bert_dir, tmp_path):
    torch.manual_seed(0)
    model = BiLSTMForSequenceClassification(BiLSTMConfig(vocab_size=30522, embedding_size=16, hidden_size=16,
                                                        num_labels=3))
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    plain = export_torch_model(model, tokenizer, tmp_path / "rnn", ("logits",), opset=18)
    assert optimize_graph(plain, tmp_path / "rnn" / "model_optimized.onnx", transformer=False) == {}
    feeds = padded_feeds(2, 12)
    assert parity_max_abs_diff(model, create_session(tmp_path / "rnn" / "model_optimized.onnx"), feeds) <= 1e-5


@pytest.mark.parametrize("variant", ORT_INT8_VARIANTS)
def test_every_int8_variant_quantises_and_stays_close(tiny_bert_onnx, optimized, tmp_path, variant):
    calibration = [padded_feeds(4, 16) for _ in range(2)] if variant.startswith("static") else None
    src = optimized[0] if variant.startswith("dynamic") else tiny_bert_onnx
    out = tmp_path / f"{variant}.onnx"
    quantize_graph(src, out, variant, calibration)
    graph = onnx.load(str(out)).graph
    ops = {node.op_type for node in graph.node}
    if variant.startswith("dynamic"):
        assert ops & {"DynamicQuantizeLinear", "QAttention", "DynamicQuantizeMatMul", "MatMulInteger"}
    else:
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = {init.name: init for init in graph.initializer}
    int8 = [w for w in weights.values() if w.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)]
    assert int8, "no weight was stored in 8 bits"
    expected = onnx.TensorProto.UINT8 if "quint8" in variant else onnx.TensorProto.INT8
    assert any(w.data_type == expected and len(w.dims) == 2 for w in int8)
    # Per-channel variants keep one scale per output channel of some weight; per-tensor ones one scale each.
    scale_lengths = {int(np.prod(w.dims)) for name, w in weights.items() if name.endswith("_scale")}
    assert (max(scale_lengths) > 1) == variant.endswith("per-channel")
    assert out.stat().st_size < tiny_bert_onnx.stat().st_size / 2.5
    assert max_diff(create_session(tiny_bert_onnx), create_session(out), padded_feeds(2, 16)) < 0.5


def test_static_int8_without_calibration_is_refused(tiny_bert_onnx, tmp_path):
    with pytest.raises(ValueError, match="calibration"):
        quantize_graph(tiny_bert_onnx, tmp_path / "static.onnx", "static-qint8", None)
    assert not list(tmp_path.iterdir())  # nothing half-written


def variant(name: str, p50: float, drop: float = 0.0, eligible: bool = True,
            precision: str | None = None) -> ReportVariant:
    return ReportVariant(variant=name, precision=precision or ("int8" if "int8" in name else "fp32"), ort_p50_ms=p50,
                         metric_drop=drop, eligible=eligible)


def test_the_fastest_int8_within_budget_is_kept():
    kept, reason = choose_variant([variant("fp32", 10.0), variant("fp32-optimized", 9.0),
                                   variant("dynamic-qint8", 6.0, drop=0.02, eligible=False),
                                   variant("dynamic-quint8", 7.0, drop=0.005)], max_metric_drop=0.01)
    assert kept == "dynamic-quint8"
    assert "7.00 ms vs fp32 9.00 ms" in reason and "metric -0.0050" in reason


def test_fp32_is_kept_when_int8_is_not_faster():
    kept, reason = choose_variant([variant("fp32", 10.0), variant("fp32-optimized", 9.0),
                                   variant("dynamic-qint8", 9.5)], max_metric_drop=0.01)
    assert kept == "fp32-optimized"
    assert reason.startswith("fp32 kept: int8 is not faster on this machine (dynamic-qint8 9.50 ms")


def test_fp32_is_kept_when_every_int8_loses_too_much():
    kept, reason = choose_variant([variant("fp32", 10.0), variant("static-qint8", 5.0, drop=0.05, eligible=False),
                                   variant("dynamic-qint8", 6.0, drop=0.03, eligible=False)], max_metric_drop=0.01)
    assert kept == "fp32"
    assert "lost more than max_metric_drop 0.01 (least: dynamic-qint8, metric -0.0300)" in reason


def test_a_graph_failing_parity_or_quantisation_is_never_kept():
    variants = [variant("fp32", 10.0), variant("fp32-optimized", 1.0, eligible=False),
                ReportVariant(variant="static-qint8", precision="int8", error="boom")]
    assert choose_variant(variants, 0.01) == ("fp32", "fastest fp32 graph (every int8 variant failed to quantise "
                                                      "or run)")
    assert choose_variant([], 0.01) == (None, "no variant was timed")
    rejected = [variant("fp32", 10.0, eligible=False), variant("dynamic-qint8", 5.0, drop=0.1, eligible=False)]
    kept, reason = choose_variant(rejected, 0.01)
    assert kept is None and reason.startswith("none passed")


def test_an_opset_the_runtime_lacks_is_a_user_error(tmp_path):
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([node], "g", [value("x", onnx.TensorProto.FLOAT, [1])],
                                   [value("y", onnx.TensorProto.FLOAT, [1])])
    path = tmp_path / "future.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 99)]), str(path))
    with pytest.raises(UserError, match="cannot load it.*opset"):
        create_session(path)


@pytest.mark.parametrize("task,auto,ort_class", [
    ("token-classification", AutoModelForTokenClassification, "ORTModelForTokenClassification"),
    ("question-answering", AutoModelForQuestionAnswering, "ORTModelForQuestionAnswering"),
])
def test_hf_exports_load_in_optimum_and_pipeline_for_every_task(tiny_bert_dir, tmp_path, task, auto, ort_class):
    import optimum.onnxruntime

    torch.manual_seed(0)
    model = auto.from_pretrained(tiny_bert_dir, num_labels=3 if task == "token-classification" else 2)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    onnx_path = export_hf_model(model, tokenizer, tmp_path / "export", task, opset=18)
    optimize_graph(onnx_path, onnx_path.parent / "model_optimized.onnx", transformer=True)
    quantize_graph(onnx_path.parent / "model_optimized.onnx", onnx_path.parent / "model_dynamic_qint8.onnx",
                   "dynamic-qint8")
    for file_name in ("model.onnx", "model_optimized.onnx", "model_dynamic_qint8.onnx"):
        loaded = getattr(optimum.onnxruntime, ort_class).from_pretrained(onnx_path.parent, file_name=file_name)
        run = pipeline(task, model=loaded, tokenizer=tokenizer)
        if task == "token-classification":
            # No label is "O", so every word piece comes back tagged with one of the model's labels.
            entities = run("alice flew to paris")
            assert [e["word"] for e in entities] == tokenizer.tokenize("alice flew to paris")
            assert all(e["entity"] in loaded.config.id2label.values() for e in entities)
        else:
            context = "alice flew to paris"
            answer = run(question="who flew?", context=context)
            assert answer["answer"] and context[answer["start"]:answer["end"]] == answer["answer"]
            assert 0 <= answer["score"] <= 1


def test_int8_classification_export_loads_in_optimum(tiny_bert_onnx, optimized, tiny_bert_dir):
    from optimum.onnxruntime import ORTModelForSequenceClassification

    int8 = tiny_bert_onnx.parent / "model_dynamic_quint8.onnx"
    quantize_graph(optimized[0], int8, "dynamic-quint8")
    model = ORTModelForSequenceClassification.from_pretrained(tiny_bert_onnx.parent,
                                                             file_name="model_dynamic_quint8.onnx")
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    out = pipeline("text-classification", model=model, tokenizer=tokenizer)("the market rallied")
    # The pipeline ran the int8 graph: its answer is that graph's top class and probability.
    feeds = {k: v.numpy() for k, v in tokenizer("the market rallied", return_tensors="pt").items()}
    logits = create_session(int8).run(None, feeds)[0][0]
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert out[0]["label"] == model.config.id2label[int(probs.argmax())]
    assert out[0]["score"] == pytest.approx(float(probs.max()), abs=1e-5)


def test_a_failed_optimisation_or_quantisation_leaves_no_file_behind(tmp_path):
    from exports.ort import optimize_graph, quantize_graph

    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(Exception):
        optimize_graph(bad, tmp_path / "model_optimized.onnx", transformer=False)
    with pytest.raises(Exception):
        quantize_graph(bad, tmp_path / "model_dynamic_qint8.onnx", "dynamic-qint8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.parametrize("failing", ["optimize", "score-optimized", "quantize-static", "score-dynamic", None])
def test_variants_are_made_in_order_and_a_failure_to_make_or_score_one_is_kept(tmp_path, monkeypatch, failing):
    """build_variants: the plain graph, the optimised one, then each int8 variant, in that order; a graph whose
    making or scoring fails is a failed variant (its file gone) and the rest go on; dynamic int8 quantises the
    optimised graph only where it was made and scored. make_graphs without a check makes the same files."""
    from compress.core.config import ExportConfig
    from compress.core.results import ExportVariant
    from exports import variants as module

    made_from = {}

    def fake_optimize(src, dst, hf_family):
        if failing == "optimize":
            raise RuntimeError("no fusion\nmore")
        dst.write_bytes(b"optimized")
        return {"Attention": 2}

    def fake_quantize(src, dst, variant, calibration=None):
        made_from[variant] = src.name
        if failing == f"quantize-{variant.split('-')[0]}":
            raise RuntimeError(f"cannot quantise {variant}")
        dst.write_bytes(b"int8")

    def score(path, variant, run_dir):
        if failing == f"score-{variant.split('-')[-1]}" or (failing == "score-dynamic" and "dynamic" in variant):
            raise RuntimeError(f"cannot run {variant}")
        return ExportVariant(variant=variant, precision="int8" if "int8" in variant else "fp32",
                             onnx_path=path.name, ort_metric=0.9 if variant == "fp32" else 0.8)

    monkeypatch.setattr(module, "optimize_graph", fake_optimize)
    monkeypatch.setattr(module, "quantize_graph", fake_quantize)
    plain = tmp_path / "model.onnx"
    plain.write_bytes(b"plain")
    int8 = ["dynamic-qint8", "static-qint8"]
    spec = module.ExportSpec("m", True, ExportConfig(), int8, calibration=[])
    variants, fused = module.build_variants(plain, spec, score, tmp_path)

    order = ["fp32", "fp32-optimized", *int8]
    assert [v.variant for v in variants] == order
    failed = {v.variant for v in variants if v.failed}
    expected = {"optimize": {"fp32-optimized"}, "score-optimized": {"fp32-optimized"},
                "quantize-static": {"static-qint8"}, "score-dynamic": {"dynamic-qint8"}, None: set()}[failing]
    assert failed == expected
    optimised_ok = failing not in ("optimize", "score-optimized")
    assert made_from == {"dynamic-qint8": "model_optimized.onnx" if optimised_ok else "model.onnx",
                         "static-qint8": "model.onnx"}
    assert fused == (None if failing == "optimize" else {"Attention": 2})  # fusions are ORT's, scored or not
    assert all(v.metric_drop == pytest.approx(0.1) for v in variants[1:] if not v.failed)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {"model.onnx", "model_optimized.onnx", "model_dynamic_qint8.onnx", "model_static_qint8.onnx"}
        - {f"model_{v.replace('fp32-', '').replace('-', '_')}.onnx" for v in failed})

    if hasattr(module, "make_graphs"):  # the same graphs, unscored (compress search's untrained shapes)
        for path in tmp_path.glob("model_*.onnx"):
            path.unlink()
        made = list(module.make_graphs(plain, spec))
        assert [g.variant for g in made] == order
        unscored_failures = {"optimize": {"fp32-optimized"}, "quantize-static": {"static-qint8"}}.get(failing, set())
        assert {g.variant for g in made if g.error is not None} == unscored_failures
        assert all(g.checked is None for g in made)
