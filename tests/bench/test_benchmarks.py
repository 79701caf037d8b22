"""pytest-benchmark regression suite (`make bench`). Under `make test` benchmarking is disabled and each body
runs once as a plain test, so CI checks they work without ever failing on timing noise."""

import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from bench.runners import dummy_inputs, ort_runner, torch_runner
from exports.ort import create_session

NAMES = ["input_ids", "attention_mask", "token_type_ids"]


@pytest.fixture(scope="module")
def tiny_onnx(tiny_bert_onnx):
    return tiny_bert_onnx


@pytest.mark.bench
def test_torch_inference(benchmark, tiny_bert_dir):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    out = benchmark(torch_runner(model, dummy_inputs(30522, 1, 128, NAMES)))
    assert out.logits.shape == (1, 3)


@pytest.mark.bench
def test_ort_inference(benchmark, tiny_onnx):
    out = benchmark(ort_runner(create_session(tiny_onnx), dummy_inputs(30522, 1, 128, NAMES)))
    assert out[0].shape == (1, 3)


@pytest.mark.bench
def test_tokenisation(benchmark, tiny_bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    texts = ["The market rallied after the central bank held rates steady."] * 32
    enc = benchmark(lambda: tokenizer(texts, truncation=True, max_length=128))
    assert len(enc["input_ids"]) == 32
