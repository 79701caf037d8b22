"""PyTorch dynamic int8: agreement with fp32 on a trained model, and a pickle-free save that reloads exactly."""

import pytest
import torch
from torch.ao.nn.quantized import dynamic as qdynamic
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

from compress.compression.quantize import argmax_agreement
from compress.models.bilstm import BiLSTMConfig
from compress.models.int8 import quantize_dynamic_int8, save_quantized
from compress.models.loading import load_saved_model, resolve_model_path


def batch(n: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Texts of ids from one of three disjoint ranges; the label is the range."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    ids = 1000 + labels[:, None] * 300 + torch.randint(0, 300, (n, 10), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, labels


def trained(config):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(60):
        inputs, labels = batch(32, step)
        torch.nn.functional.cross_entropy(model(**inputs).logits, labels).backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.fixture(scope="module", params=["bert", "bilstm"])
def fp32_model(request):
    if request.param == "bert":
        config = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=128, max_position_embeddings=32, num_labels=3)
    else:
        config = BiLSTMConfig(vocab_size=30522, embedding_size=32, hidden_size=32, num_labels=3)
    return trained(config)


def test_int8_agrees_with_fp32_on_a_trained_model(fp32_model):
    inputs, labels = batch(200, seed=999)
    with torch.inference_mode():
        fp32 = {"logits": fp32_model(**inputs).logits}
        int8 = {"logits": quantize_dynamic_int8(fp32_model)(**inputs).logits}
    assert (fp32["logits"].argmax(-1) == labels).float().mean() > 0.9  # the model did learn the task
    assert argmax_agreement(fp32, int8, None) >= 0.95
    assert not torch.equal(fp32["logits"], int8["logits"])  # int8 really ran


def test_quantized_layers_and_the_fp32_model_left_alone(fp32_model):
    model = quantize_dynamic_int8(fp32_model)
    kinds = {type(m) for m in model.modules()}
    assert kinds & {qdynamic.Linear, qdynamic.LSTM}
    assert not any(isinstance(m, torch.nn.Linear) and type(m) is torch.nn.Linear for m in model.modules())
    assert any(type(m) is torch.nn.Linear for m in fp32_model.modules())


def test_saved_int8_model_reloads_exactly_without_pickle(fp32_model, tmp_path):
    model = quantize_dynamic_int8(fp32_model)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6"))
    save_quantized(model, tokenizer, tmp_path / "int8")
    files = {p.name for p in (tmp_path / "int8").iterdir()}
    assert {"config.json", "quantization.json", "model.int8.safetensors"} <= files
    assert not any(name.endswith((".pt", ".bin", ".pkl")) for name in files)
    reloaded = load_saved_model(tmp_path / "int8", "classification")
    inputs, _ = batch(8, seed=5)
    with torch.inference_mode():
        assert torch.equal(reloaded(**inputs).logits, model(**inputs).logits)
    # int8 weights: the file is smaller than the fp32 model's weights.
    fp32_bytes = sum(p.numel() * 4 for p in fp32_model.parameters())
    assert (tmp_path / "int8" / "model.int8.safetensors").stat().st_size < fp32_bytes


def test_argmax_agreement_counts_real_tokens_only():
    a = {"logits": torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])}
    b = {"logits": torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])}
    assert argmax_agreement(a, b, torch.tensor([[1, 1, 0]])) == 0.5
    assert argmax_agreement(a, b, None) == pytest.approx(1 / 3)
