import pytest
from transformers import AutoModelForSequenceClassification

from bench.runners import dummy_inputs
from compress.errors import UserError
from exports.onnx import parity_max_abs_diff
from exports.ort import create_session


@pytest.fixture(scope="module")
def exported(tiny_bert_onnx):
    return tiny_bert_onnx


def test_export_writes_a_loadable_folder(exported):
    assert exported.name == "model.onnx" and exported.is_file()
    assert (exported.parent / "config.json").is_file() and (exported.parent / "tokenizer.json").is_file()
    assert not exported.parent.with_name(exported.parent.name + ".tmp").exists()


def test_parity_with_pytorch_on_dynamic_shapes(tiny_bert_dir, exported):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    session = create_session(exported)
    for batch, seq in ((1, 8), (3, 40)):
        feeds = dummy_inputs(30522, batch, seq, ["input_ids", "attention_mask", "token_type_ids"], seed=batch)
        feeds["attention_mask"][:, seq // 2:] = 0  # padded tail
        assert parity_max_abs_diff(model, session, feeds) <= 1e-4


def test_export_loads_with_optimum_ortmodel(exported):
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer, pipeline

    model = ORTModelForSequenceClassification.from_pretrained(exported.parent)
    classify = pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(exported.parent))
    out = classify("the market rallied")
    assert out[0]["label"] in model.config.id2label.values() and 0 <= out[0]["score"] <= 1


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
