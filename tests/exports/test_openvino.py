"""exports/openvino.py on tiny exports: the converter for every family, compiled models that run in the precision they
claim, NNCF's int8 with and without accuracy control, optimum-intel's loaders, and the missing extra."""

import importlib.util
import sys

import numpy as np
import openvino as ov
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

import exports.openvino as xo
from bench.runners import dummy_inputs
from compress.core.errors import UserError
from compress.data.batching import accepted_inputs, predict
from compress.data.classification import encode
from compress.data.sources import Examples
from compress.models.bilstm import BiLSTMConfig, BiLSTMForSequenceClassification
from compress.models.custom import CustomTransformerConfig, CustomTransformerForSequenceClassification
from exports.onnx import export_hf_model, export_torch_model, parity_max_abs_diff
from exports.openvino import (
    XML_NAME,
    OpenVinoSession,
    compile_model,
    convert_onnx,
    embedding_rows,
    load_with_optimum,
    quantize_openvino,
    require_openvino,
)
from exports.ort import create_session, predict_session

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
TEXTS = ["the market rose", "a much longer sentence about the match and the team and its coach", "phones"]


def padded_feeds(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    feeds = dummy_inputs(30522, batch, seq, INPUTS, seed=seed)
    feeds["attention_mask"][:, seq // 2:] = 0  # half of each row is padding: the mask must be honoured
    return feeds


def run(compiled, feeds: dict[str, np.ndarray]) -> np.ndarray:
    names = xo.graph_inputs(compiled)
    return compiled.create_infer_request().infer({k: v for k, v in feeds.items() if k in names})["logits"]


def torch_logits(model, feeds: dict[str, np.ndarray]) -> np.ndarray:
    with torch.inference_mode():
        return model(**{k: torch.from_numpy(feeds[k]) for k in accepted_inputs(model)}).logits.numpy()


def runtime_precisions(compiled) -> set[str]:
    """The precisions the CPU plugin really runs the graph's nodes in."""
    return {op.get_rt_info()["runtimePrecision"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()}


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
    return AutoTokenizer.from_pretrained(tiny_bert_dir)


@pytest.fixture(scope="module")
def hf_fp32(tiny_bert_onnx, tmp_path_factory):
    """The tiny BERT's optimum export converted: a folder with openvino_model.xml, config.json and the tokenizer."""
    return convert_onnx(tiny_bert_onnx, tmp_path_factory.mktemp("ov") / "fp32")


@pytest.fixture(scope="module")
def hf_int8(hf_fp32, tmp_path_factory):
    calibration = [padded_feeds(4, 16, seed=i) for i in range(4)]
    return quantize_openvino(hf_fp32, tmp_path_factory.mktemp("ov") / "int8", calibration)


# ---------------------------------------------------------------- conversion and parity


def family_model(family, tiny_bert_dir):
    torch.manual_seed(0)
    if family == "bert":
        return BertForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    if family == "custom":
        return CustomTransformerForSequenceClassification(CustomTransformerConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=3)).eval()
    return BiLSTMForSequenceClassification(BiLSTMConfig(embedding_size=16, hidden_size=16, num_labels=3)).eval()


@pytest.mark.parametrize("family", ["bert", "custom", "bilstm"])
def test_every_family_matches_pytorch_on_dynamic_shapes(family, tiny_bert_dir, tiny_bert_onnx, tokenizer, tmp_path):
    model = family_model(family, tiny_bert_dir)
    onnx = tiny_bert_onnx if family == "bert" else export_torch_model(model, tokenizer, tmp_path / "onnx", ("logits",),
                                                                       opset=18)
    model.eval()  # torch.onnx.export leaves the model in training mode (it restores the wrapper's mode, recursively)
    xml = convert_onnx(onnx, tmp_path / "openvino")
    assert xml == tmp_path / "openvino" / XML_NAME and (tmp_path / "openvino" / "openvino_model.bin").is_file()
    # The side files come along (config.json, the tokenizer), the ONNX graph does not; nothing temporary is left.
    assert {"config.json", "tokenizer.json", "vocab.txt"} <= {p.name for p in xml.parent.iterdir()}
    assert not list(xml.parent.glob("*.onnx")) and sorted(p.name for p in tmp_path.iterdir()) == (
        ["openvino"] if family == "bert" else ["onnx", "openvino"])
    compiled = compile_model(xml)
    assert all(port.get_partial_shape().is_dynamic for port in compiled.inputs)  # batch and sequence stay free
    for batch, seq in ((1, 8), (3, 40)):
        feeds = padded_feeds(batch, seq, seed=batch)
        assert np.abs(run(compiled, feeds) - torch_logits(model, feeds)).max() <= 1e-4, (batch, seq)
    assert embedding_rows(xml) == 30522


def test_weights_stay_fp32(hf_fp32):
    weights = [op for op in ov.Core().read_model(hf_fp32).get_ordered_ops() if op.get_type_name() == "Constant"]
    assert {w.get_element_type().get_type_name() for w in weights} <= {"f32", "i64", "i32"}  # no f16 compression


def test_compile_model_keeps_fp32_honest(hf_fp32):
    compiled = compile_model(hf_fp32, threads=1)
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert str(compiled.get_property("PERFORMANCE_HINT")).endswith("LATENCY")
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert "bf16" not in runtime_precisions(compiled)  # OpenVINO's default on a bf16-capable CPU would run bf16


def test_a_compiled_model_predicts_what_pytorch_predicts(hf_fp32, tiny_bert_dir, tokenizer):
    split = encode(Examples(TEXTS * 3, [0, 1, 2] * 3), tokenizer, 32)
    model = BertForSequenceClassification.from_pretrained(tiny_bert_dir)
    # A compiled model as NNCF hands it over, behind the session surface exports.variants scores graphs through.
    got = predict_session(OpenVinoSession(compiled=compile_model(hf_fp32)), split, tokenizer, ("logits",),
                          batch_size=4)
    expected = predict(model, split, tokenizer, ("logits",), batch_size=4)
    assert got["logits"].shape == (9, 3) and got["logits"].dtype == torch.float32
    torch.testing.assert_close(got["logits"], expected["logits"], atol=1e-4, rtol=0)


def test_an_openvino_session_scores_like_an_onnx_runtime_one(hf_fp32, tiny_bert_onnx, tiny_bert_dir, tokenizer):
    # The surface exports.variants scores graphs through: parity against PyTorch, and the metric's predictions.
    session = OpenVinoSession(hf_fp32)
    assert [i.name for i in session.get_inputs()] == INPUTS and [o.name for o in session.get_outputs()] == ["logits"]
    model = BertForSequenceClassification.from_pretrained(tiny_bert_dir)
    assert parity_max_abs_diff(model, session, padded_feeds(3, 40)) <= 1e-4
    split = encode(Examples(TEXTS, [0, 1, 2]), tokenizer, 32)
    got = predict_session(OpenVinoSession(compiled=compile_model(hf_fp32)), split, tokenizer, ("logits",))
    torch.testing.assert_close(got["logits"], predict_session(create_session(tiny_bert_onnx), split, tokenizer,
                                                              ("logits",))["logits"], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="a path or a compiled model"):
        OpenVinoSession()


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_hf_folder_loads_with_optimum_intel(precision, hf_fp32, hf_int8, tokenizer):
    xml = hf_fp32 if precision == "fp32" else hf_int8.path
    loaded = load_with_optimum(xml.parent, "classification")
    assert type(loaded).__name__ == "OVModelForSequenceClassification"
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = loaded(**batch).logits.numpy()
    assert np.abs(logits - run(compile_model(xml), {k: v.numpy() for k, v in batch.items()})).max() <= 1e-5


# ---------------------------------------------------------------- int8


def test_post_training_int8_runs_int8_and_stays_close(hf_fp32, hf_int8):
    assert hf_int8.fp32_operators == [] and not hf_int8.accuracy_control
    assert {"config.json", "tokenizer.json"} <= {p.name for p in hf_int8.path.parent.iterdir()}
    graph = ov.Core().read_model(hf_int8.path)
    kinds = {op.get_type_name() for op in graph.get_ordered_ops()}
    int8_weights = [op for op in graph.get_ordered_ops()
                    if op.get_type_name() == "Constant" and op.get_element_type().get_type_name() == "i8"]
    assert "FakeQuantize" in kinds and len(int8_weights) >= 4 * 6  # 6 matrix weights per layer, 4 layers
    quantized = xo._quantized_operators(graph)
    assert "/bert/encoder/layer.3/output/dense/MatMul" in quantized and len(quantized) >= 4 * 7
    compiled = compile_model(hf_int8.path)
    assert {"i8", "u8"} & runtime_precisions(compiled)  # the fp32 precision hint leaves int8 kernels int8
    feeds = padded_feeds(64, 24, seed=7)
    fp32, int8 = run(compile_model(hf_fp32), feeds), run(compiled, feeds)
    # A random tiny BERT's logits are small and close together, so int8 noise is large beside them; still the
    # int8 logits follow the fp32 ones, and the predicted class mostly stays.
    assert np.corrcoef(fp32.ravel(), int8.ravel())[0, 1] >= 0.95
    assert np.abs(fp32 - int8).mean() < 0.3 * np.abs(fp32).mean()
    assert (fp32.argmax(-1) == int8.argmax(-1)).mean() >= 0.9


def test_int8_within_the_budget_needs_no_accuracy_control(hf_fp32, tmp_path):
    calls = []

    def validate(compiled) -> float:
        calls.append(compiled)
        return 0.8

    result = quantize_openvino(hf_fp32, tmp_path / "int8", [padded_feeds(4, 16)], validate=validate, max_drop=0.01)
    assert not result.accuracy_control and result.fp32_operators == []
    assert len(calls) == 2  # the fp32 graph and the int8 one


@pytest.fixture(scope="module")
def one_layer(tokenizer, tmp_path_factory):
    """A 1-layer BERT (few operators, so accuracy control's search takes seconds) converted to OpenVINO."""
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                                                     num_attention_heads=4, intermediate_size=64, num_labels=3))
    root = tmp_path_factory.mktemp("one-layer")
    onnx = export_hf_model(model.eval(), tokenizer, root / "onnx", "text-classification", opset=18)
    return convert_onnx(onnx, root / "openvino")


def test_accuracy_control_reverts_operators_to_exact_fp32(one_layer, tmp_path):
    # The metric: how far the graph's logits are from the fp32 graph's on held-out inputs, relative to their size
    # (0 for fp32 itself: NNCF divides by the fp32 metric, which quantize_openvino guards against). A budget of
    # 1e-6 is one plain int8 cannot meet.
    held_out = padded_feeds(32, 16, seed=99)
    reference = run(compile_model(one_layer), held_out)

    def validate(compiled) -> float:
        return -float(np.abs(run(compiled, held_out) - reference).mean() / np.abs(reference).mean())

    calibration = [padded_feeds(4, 16, seed=i) for i in range(4)]
    validation = [padded_feeds(2, 16, seed=50 + i) for i in range(2)]
    result = quantize_openvino(one_layer, tmp_path / "int8", calibration, validation, validate, max_drop=1e-6)
    assert result.accuracy_control
    plain = quantize_openvino(one_layer, tmp_path / "plain", calibration)
    assert validate(compile_model(plain.path)) < -1e-6  # plain int8 really missed the budget
    assert "/bert/encoder/layer.0/intermediate/dense/MatMul" in result.fp32_operators
    assert set(result.fp32_operators) <= {op.get_friendly_name() for op in ov.Core().read_model(one_layer).get_ops()}
    saved = ov.Core().read_model(result.path)
    assert not set(result.fp32_operators) & set(xo._quantized_operators(saved))  # really left in fp32
    # Every operator reverted, and reverted exactly: the graph gives the fp32 logits (with SmoothQuant, which
    # quantize_openvino turns off for accuracy control, reverted operators computed something else).
    assert validate(compile_model(result.path)) >= -1e-6


def test_quantize_without_calibration_is_refused(hf_fp32, tmp_path):
    with pytest.raises(ValueError, match="calibration"):
        quantize_openvino(hf_fp32, tmp_path / "int8", [])
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- errors


def test_unreadable_files_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="OpenVINO model not found") as err:
        compile_model(tmp_path / "gone.xml")
    assert err.value.where == str(tmp_path / "gone.xml")
    broken = tmp_path / "broken.xml"
    broken.write_text("<net>not a graph")
    with pytest.raises(UserError, match="OpenVINO cannot load it") as err:
        compile_model(broken)
    assert "\n" not in err.value.line() and "convert the model again" in err.value.fix
    bad_onnx = tmp_path / "bad" / "model.onnx"
    bad_onnx.parent.mkdir()
    bad_onnx.write_bytes(b"not a graph")
    with pytest.raises(UserError, match="OpenVINO cannot convert it") as err:
        convert_onnx(bad_onnx, tmp_path / "out")
    assert "\n" not in err.value.line()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "broken.xml"]  # nothing half-written


def test_without_the_extra_each_entry_point_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    assert not xo.openvino_installed()
    line = f'{tmp_path}: OpenVINO is not installed -- pip install "bert-compress[openvino]"'
    with pytest.raises(UserError) as err:
        require_openvino(str(tmp_path))
    assert err.value.line() == line
    for call in (lambda: convert_onnx(tmp_path / "model.onnx", tmp_path / "out"), lambda: compile_model(tmp_path),
                 lambda: quantize_openvino(tmp_path, tmp_path / "out", [{}])):
        with pytest.raises(UserError, match="OpenVINO is not installed"):
            call()
    # The module itself imports without openvino, nncf or optimum.intel (they are imported where used).
    for name in ("nncf", "optimum.intel"):
        monkeypatch.setitem(sys.modules, name, None)
    spec = importlib.util.spec_from_file_location("openvino_module_copy", xo.__file__)
    copy = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, copy)
    spec.loader.exec_module(copy)
    assert not copy.openvino_installed()
