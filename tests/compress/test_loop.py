import json

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from compress.config import DataConfig, KDConfig, LocalSource, TrainConfig
from compress.data.batching import predict
from compress.data.classification import encode
from compress.data.sources import load_splits
from compress.distill.loop import train_model


def setup(tiny_bert_dir, tiny_csv):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    splits = load_splits(DataConfig(source=LocalSource(train=tiny_csv)), seed=0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    return tokenizer, encode(splits.train, tokenizer, 32), model


def test_training_lowers_the_loss_and_logs_each_step(tiny_bert_dir, tiny_csv, tmp_path):
    tokenizer, train, model = setup(tiny_bert_dir, tiny_csv)
    cfg = TrainConfig(epochs=6, batch_size=16, learning_rate=1e-2, warmup_ratio=0.0)
    result = train_model(model, train, tokenizer, cfg, seed=0, log_path=tmp_path / "log.jsonl")
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert result.steps == len(records) == 6 * ((len(train) + 15) // 16)
    first, last = records[0]["loss"], sum(r["loss"] for r in records[-3:]) / 3
    assert last < first * 0.7


def test_kd_training_logs_both_terms_and_moves_toward_the_teacher(tiny_bert_dir, tiny_csv, tmp_path):
    tokenizer, train, model = setup(tiny_bert_dir, tiny_csv)
    teacher_logits = torch.randn(len(train), 3) * 3
    cfg = TrainConfig(epochs=5, batch_size=16, learning_rate=3e-3, warmup_ratio=0.0)
    before = torch.nn.functional.kl_div(predict(model, train, tokenizer, ("logits",))["logits"].log_softmax(-1),
                                        teacher_logits.log_softmax(-1), log_target=True, reduction="batchmean")
    train_model(model, train.with_teacher({"logits": teacher_logits}), tokenizer, cfg, seed=0,
                     kd=KDConfig(temperature=1.0, alpha=1.0), log_path=tmp_path / "kd.jsonl")
    records = [json.loads(line) for line in (tmp_path / "kd.jsonl").read_text().splitlines()]
    assert {"kd", "ce", "loss", "lr"} <= set(records[0])
    after = torch.nn.functional.kl_div(predict(model, train, tokenizer, ("logits",))["logits"].log_softmax(-1),
                                       teacher_logits.log_softmax(-1), log_target=True, reduction="batchmean")
    assert after < before


def test_training_is_seeded(tiny_bert_dir, tiny_csv):
    outs = []
    for _ in range(2):
        tokenizer, train, model = setup(tiny_bert_dir, tiny_csv)
        train_model(model, train, tokenizer, TrainConfig(epochs=1, batch_size=16), seed=3)
        outs.append(predict(model, train, tokenizer, ("logits",))["logits"])
    assert torch.allclose(outs[0], outs[1])
