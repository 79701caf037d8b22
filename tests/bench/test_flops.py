"""FLOPs per forward from PyTorch's counter, including the CPU attention kernel it does not know by itself."""

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification

from bench.flops import count_flops
from compress.models.bilstm import BiLSTMConfig, BiLSTMForSequenceClassification

CONFIG = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
              max_position_embeddings=64, num_labels=3)
FEEDS = {"input_ids": np.ones((1, 16), dtype=np.int64), "attention_mask": np.ones((1, 16), dtype=np.int64)}


def bert(attention: str):
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(**CONFIG, attn_implementation=attention)).eval()


def test_sdpa_attention_is_counted_like_the_eager_matmuls():
    # Eager attention runs Q K^T and probs V as plain matmuls, which the counter sees; SDPA must count the same.
    assert count_flops(bert("sdpa"), FEEDS) == count_flops(bert("eager"), FEEDS)


def test_bert_flops_match_the_hand_formula():
    # Per layer: Q, K, V, O (4 h^2) and the FFN (2 h f) per token, Q K^T and probs V (2 t h); 2 FLOPs a multiply-add.
    # Then the pooler (h^2) and the classifier (3 h) for the first token.
    h, f, t, layers = 32, 64, 16, 2
    per_layer = 2 * t * (4 * h * h + 2 * h * f) + 2 * 2 * t * t * h
    assert count_flops(bert("sdpa"), FEEDS) == layers * per_layer + 2 * (h * h + h * 3)


def test_lstm_flops_are_not_guessed():
    model = BiLSTMForSequenceClassification(BiLSTMConfig(vocab_size=100, num_labels=2)).eval()
    assert count_flops(model, FEEDS) is None


def test_custom_transformer_and_distilbert_flops_match_the_hand_formula():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from compress.models.custom import CustomTransformerConfig, CustomTransformerForSequenceClassification

    h, f, t, layers, labels = 32, 64, 16, 2, 3
    per_layer = 2 * t * (4 * h * h + 2 * h * f) + 2 * 2 * t * t * h
    torch.manual_seed(0)
    custom = CustomTransformerForSequenceClassification(CustomTransformerConfig(
        vocab_size=100, hidden_size=h, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=f,
        max_position_embeddings=64, num_labels=labels)).eval()
    # A masked mean pools the tokens (not a matmul), then one classifier.
    assert count_flops(custom, FEEDS) == layers * per_layer + 2 * h * labels
    distil = DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=100, dim=h, n_layers=layers, n_heads=4, hidden_dim=f, max_position_embeddings=64,
        num_labels=labels)).eval()
    # DistilBERT's head: pre_classifier (h x h) and classifier on the first token.
    assert count_flops(distil, FEEDS) == layers * per_layer + 2 * (h * h + h * labels)


def test_int8_params_count_the_packed_weights():
    from bench.flops import count_params

    model = bert("eager")
    int8 = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    assert count_params(int8) == sum(p.numel() for p in model.parameters())


def test_gemm_peak_is_a_plausible_rate():
    from bench.flops import gemm_peak_flops

    peak = gemm_peak_flops(torch.device("cpu"), torch.get_num_threads())
    assert 1e9 < peak < 1e14  # between a gigaflop and a hundred teraflops on any CPU


def test_speedups_are_ratios_to_the_reference_on_the_same_backend_and_shape():
    from bench.measure import add_speedups

    rows = [{"name": n, "backend": b, "batch_size": 1, "seq_len": 128, "latency_ms_p50": ms}
            for n, b, ms in [("bert-base", "torch", 100.0), ("tiny", "torch", 10.0), ("bert-base", "ort", 50.0),
                             ("tiny", "ort", 2.0)]]
    add_speedups(rows, "bert-base")
    assert [r["speedup_vs_bert_base"] for r in rows] == [1.0, 10.0, 1.0, 25.0]
