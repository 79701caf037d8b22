"""Shared fixtures: a tiny random BERT (real tokenizer, seconds to train) and a small learnable text dataset."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from compress.models.loading import resolve_model_path

# Words that make each class learnable in a few steps, plus shared filler.
CLASS_WORDS = {
    "business": ["market", "shares", "profit", "bank", "economy", "investors"],
    "sport": ["match", "goal", "team", "coach", "league", "season"],
    "tech": ["software", "computer", "internet", "phone", "digital", "users"],
}
FILLER = ["the", "a", "said", "on", "with", "new", "year", "people", "after", "report"]


def make_texts(n_per_class: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for label, words in CLASS_WORDS.items():
        for _ in range(n_per_class):
            tokens = rng.choices(words, k=4) + rng.choices(FILLER, k=6)
            rng.shuffle(tokens)
            rows.append((" ".join(tokens), label))
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]], text_column: str = "text", label_column: str = "label") -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([text_column, label_column])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 4-layer, 32-wide random BERT with the packaged uncased WordPiece tokenizer, saved like a checkpoint."""
    path = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128, num_labels=3)
    BertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6")).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert_onnx(tiny_bert_dir, tmp_path_factory) -> Path:
    """tiny_bert_dir exported with optimum (text-classification, opset 18): its model.onnx."""
    from exports.onnx import export_hf_model

    model = BertForSequenceClassification.from_pretrained(tiny_bert_dir)
    out = tmp_path_factory.mktemp("tiny-onnx") / "tiny"
    return export_hf_model(model, AutoTokenizer.from_pretrained(tiny_bert_dir), out, "text-classification", opset=18)


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "train.csv", make_texts(40))


PEOPLE = ["alice", "bob", "carol", "dave"]
PLACES = ["paris", "london", "berlin", "madrid"]


def make_conll(path: Path, n: int, seed: int = 0) -> Path:
    """Sentences like "alice smith flew to paris today" with B-PER I-PER O O B-LOC O tags."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        person, place = rng.choice(PEOPLE), rng.choice(PLACES)
        words = [person, "smith", rng.choice(["flew", "went", "drove"]), "to", place, rng.choice(["today", "again"])]
        tags = ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
        lines += [f"{w} {t}" for w, t in zip(words, tags)] + [""]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_squad(path: Path, n: int, seed: int = 0) -> Path:
    """Contexts naming a person's city; questions ask for it (v1.1 style, one answer each)."""
    import json

    rng = random.Random(seed)
    paragraphs = []
    for i in range(n):
        person, place = rng.choice(PEOPLE), rng.choice(PLACES)
        context = f"{person} lives in {place} and works there every day."
        paragraphs.append({"context": context, "qas": [{
            "id": f"q{i}", "question": f"Where does {person} live?",
            "answers": [{"text": place, "answer_start": context.index(place)}]}]})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path
