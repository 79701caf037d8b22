import json

import onnx
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from bench.runners import dummy_inputs
from compress.core.errors import UserError
from exports.onnx import parity_max_abs_diff
from exports.ort import create_session


@pytest.fixture(scope="module")
def exported(tiny_bert_onnx):
    return tiny_bert_onnx


def test_export_writes_a_loadable_folder(exported, tiny_bert_dir):
    assert exported.name == "model.onnx"
    graph = onnx.load(str(exported)).graph
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*graph.input, *graph.output]}
    dynamic = ["batch_size", "sequence_length"]
    assert shapes == {"input_ids": dynamic, "attention_mask": dynamic, "token_type_ids": dynamic,
                      "logits": ["batch_size", 3]}  # dynamic axes; the source's 3 labels
    config = json.loads((exported.parent / "config.json").read_text())
    assert config["model_type"] == "bert" and len(config["id2label"]) == 3
    # The tokenizer beside the graph is the source's: it gives the same ids.
    text = "the market rallied after the report"
    assert AutoTokenizer.from_pretrained(exported.parent)(text)["input_ids"] == \
        AutoTokenizer.from_pretrained(tiny_bert_dir)(text)["input_ids"]
    assert not exported.parent.with_name(exported.parent.name + ".tmp").exists()


def test_parity_with_pytorch_on_dynamic_shapes(tiny_bert_dir, exported):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    session = create_session(exported)
    for batch, seq in ((1, 8), (3, 40)):
        feeds = dummy_inputs(30522, batch, seq, ["input_ids", "attention_mask", "token_type_ids"], seed=batch)
        feeds["attention_mask"][:, seq // 2:] = 0  # padded tail
        assert parity_max_abs_diff(model, session, feeds) <= 1e-4


def test_export_loads_with_optimum_ortmodel(exported, tiny_bert_dir):
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import pipeline

    model = ORTModelForSequenceClassification.from_pretrained(exported.parent)
    tokenizer = AutoTokenizer.from_pretrained(exported.parent)
    out = pipeline("text-classification", model=model, tokenizer=tokenizer)("the market rallied")
    # The pipeline's answer is the PyTorch model's: its top class and that class's probability.
    reference = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    with torch.no_grad():
        probs = reference(**tokenizer("the market rallied", return_tensors="pt")).logits.softmax(-1)[0]
    assert out[0]["label"] == reference.config.id2label[int(probs.argmax())]
    assert out[0]["score"] == pytest.approx(float(probs.max()), abs=1e-4)


def test_missing_onnx_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="ONNX file not found"):
        create_session(tmp_path / "none.onnx")


def test_corrupt_onnx_is_a_user_error(tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"not a graph")
    with pytest.raises(UserError, match="cannot load"):
        create_session(path)


def test_unavailable_provider_is_a_user_error(exported):
    with pytest.raises(UserError, match="not available"):
        create_session(exported, provider="MadeUpExecutionProvider")


def test_a_model_optimum_cannot_export_is_a_user_error(tiny_bert_dir, tmp_path):
    from transformers import AutoTokenizer, ErnieConfig, ErnieForSequenceClassification

    from exports.onnx import export_hf_model

    model = ErnieForSequenceClassification(ErnieConfig(vocab_size=100, hidden_size=8, num_hidden_layers=1,
                                                       num_attention_heads=2, intermediate_size=16))
    with pytest.raises(UserError) as err:
        export_hf_model(model, AutoTokenizer.from_pretrained(tiny_bert_dir), tmp_path / "out", "text-classification",
                        opset=18)
    assert "optimum has no ONNX export for ernie models" in err.value.line() and "export.enabled: false" in \
        err.value.line()
    assert not list(tmp_path.iterdir())
