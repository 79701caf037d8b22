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
