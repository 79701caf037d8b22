"""The custom transformer and the BiLSTM: every task head, save/load, padding independence, ONNX export, and
a few training steps whose loss falls."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from compress.core.config import BiLSTMStudent, CustomTransformerStudent, TeacherConfig, TrainConfig
from compress.data.batching import EncodedSplit
from compress.data.tasks import TASKS
from compress.distill.loop import TrainLog, train_model
from compress.distill.objectives import task_loss
from compress.models.bilstm import reverse_within_length
from compress.models.loading import AUTO_CLASSES
from compress.models.students import build_student, project_embeddings, word2vec_vectors
from exports.onnx import export_torch_model, parity_max_abs_diff
from exports.ort import create_session

LABELS = ["neg", "pos", "neutral"]
SPECS = {
    "custom": CustomTransformerStudent(name="c", hidden_size=32, num_layers=2, num_heads=4, ffn_size=64),
    "bilstm": BiLSTMStudent(name="b", embedding_size=16, hidden_size=16),
}


def build(kind, task, tiny_bert_dir, train_ids=([101, 2000, 2001, 102],)):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    labels = None if task == "qa" else LABELS
    torch.manual_seed(0)
    model = build_student(SPECS[kind], task, labels, TeacherConfig(model=str(tiny_bert_dir)), tokenizer,
                          list(train_ids), seed=0, where="students.0")
    return model.eval(), tokenizer


def outputs(model, tokenizer, texts, task):
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch)
    return [getattr(out, name) for name in TASKS[task].outputs], batch["attention_mask"]


@pytest.mark.parametrize("kind", ["custom", "bilstm"])
@pytest.mark.parametrize("task", ["classification", "ner", "qa"])
def test_every_head_has_the_task_shapes_and_round_trips(kind, task, tiny_bert_dir, tmp_path):
    model, tokenizer = build(kind, task, tiny_bert_dir)
    assert model.config.model_type == kind
    texts = ["the market rose", "a much longer sentence about the match and the team"]
    before, mask = outputs(model, tokenizer, texts, task)
    width = {"classification": (2, 3), "ner": (2, mask.shape[1], 3), "qa": (2, mask.shape[1])}[task]
    assert all(tuple(o.shape) == width for o in before)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == kind
    reloaded = AUTO_CLASSES[task].from_pretrained(tmp_path).eval()  # through the registered Auto classes
    after, _ = outputs(reloaded, tokenizer, texts, task)
    assert all(torch.equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("kind", ["custom", "bilstm"])
def test_a_text_gets_the_same_outputs_alone_or_padded_in_a_batch(kind, tiny_bert_dir):
    model, tokenizer = build(kind, "ner", tiny_bert_dir)
    alone, _ = outputs(model, tokenizer, ["the market rose"], "ner")
    batched, mask = outputs(model, tokenizer, ["the market rose", "a much longer sentence about the match"], "ner")
    n = alone[0].shape[1]
    assert mask[0, n:].sum() == 0  # the short text really was padded
    torch.testing.assert_close(batched[0][0, :n], alone[0][0], atol=1e-5, rtol=1e-5)


def test_reverse_within_length_leaves_padding_in_place():
    x = torch.arange(10.0).view(2, 5, 1)
    out = reverse_within_length(x, torch.tensor([3, 5]))
    assert out[:, :, 0].tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]
    assert torch.equal(reverse_within_length(out, torch.tensor([3, 5])), x)


def test_custom_embeddings_start_from_the_teachers_projected(tiny_bert_dir):
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    wide = teacher.get_input_embeddings().weight.detach()
    narrow = project_embeddings(wide, 8)
    assert narrow.shape == (wide.shape[0], 8)
    # The top principal components keep more variance than any 8 raw columns.
    assert narrow.var(dim=0).sum() > (wide - wide.mean(0)).var(dim=0).sort(descending=True).values[:8].sum() * 0.99
    model, _ = build("custom", "classification", tiny_bert_dir)  # width 32 == teacher's: copied, rescaled
    got = model.get_input_embeddings().weight.detach()
    cosine = torch.nn.functional.cosine_similarity(got[1000:1010], wide[1000:1010], dim=1)
    assert torch.allclose(cosine, torch.ones(10), atol=1e-5)


def test_word2vec_vectors_are_reproducible_and_fill_the_bilstm_embeddings(tiny_bert_dir):
    sequences = [[101, 2000 + i % 7, 2100 + i % 5, 102] for i in range(50)]
    first = word2vec_vectors(sequences, 16, epochs=2, window=2, min_count=1, seed=3)
    again = word2vec_vectors(sequences, 16, epochs=2, window=2, min_count=1, seed=3)
    assert set(first) == {101, 102} | {2000 + i for i in range(7)} | {2100 + i for i in range(5)}
    assert all(torch.equal(first[k], again[k]) for k in first)
    model, _ = build("bilstm", "classification", tiny_bert_dir, train_ids=sequences)
    learned = word2vec_vectors(sequences, 16, 10, 5, 1, seed=0)  # the BiLSTMStudent defaults
    got = model.get_input_embeddings().weight.detach()
    cosine = torch.nn.functional.cosine_similarity(got[list(learned)], torch.stack(list(learned.values())), dim=1)
    assert torch.allclose(cosine, torch.ones(len(learned)), atol=1e-5)  # the Word2Vec vectors, rescaled


@pytest.mark.parametrize("kind", ["custom", "bilstm"])
@pytest.mark.parametrize("task", ["classification", "ner", "qa"])
def test_exports_to_onnx_with_parity_and_dynamic_axes(kind, task, tiny_bert_dir, tmp_path):
    model, tokenizer = build(kind, task, tiny_bert_dir)
    path = export_torch_model(model, tokenizer, tmp_path / "export", TASKS[task].outputs, opset=18)
    saved = json.loads((tmp_path / "export" / "config.json").read_text())
    assert saved["model_type"] == kind
    assert [o.name for o in create_session(path).get_outputs()] == list(TASKS[task].outputs)
    session = create_session(path)
    for texts in (["one"], ["three texts here", "of different", "lengths to check the axes are dynamic"]):
        feeds = {k: v.numpy() for k, v in tokenizer(texts, padding=True, return_tensors="pt").items()}
        assert parity_max_abs_diff(model, session, feeds) < 1e-4


@pytest.mark.parametrize("kind", ["custom", "bilstm"])
def test_training_a_few_steps_lowers_the_loss(kind, tiny_bert_dir):
    model, tokenizer = build(kind, "classification", tiny_bert_dir)
    texts = [("market shares profit", 0), ("match goal team", 1), ("software phone digital", 2)] * 8
    features = [dict(tokenizer(t), labels=y) for t, y in texts]
    split = EncodedSplit(features)
    loss = torch.nn.functional.cross_entropy
    batch = tokenizer([t for t, _ in texts], padding=True, return_tensors="pt")
    labels = torch.tensor([y for _, y in texts])
    with torch.no_grad():
        before = loss(model(**batch).logits, labels).item()
    train_model(model, split, tokenizer, task_loss(TASKS["classification"], None),
                TrainConfig(epochs=20, batch_size=8, learning_rate=3e-3, warmup_ratio=0.0), 0)
    model.eval()
    with torch.no_grad():
        after = loss(model(**batch).logits, labels).item()
    assert after < before * 0.5


def token_features(tokenizer, task):
    """NER: a word's tag says whether it is a city; QA: the answer is the city's token."""
    rows = []
    for i in range(24):
        city = ["paris", "london", "berlin"][i % 3]
        enc = tokenizer(f"alice flew to {city} today")
        ids = enc["input_ids"]
        position = ids.index(tokenizer.convert_tokens_to_ids(city))
        if task == "ner":
            labels = [-100 if t in (tokenizer.cls_token_id, tokenizer.sep_token_id) else int(j == position)
                      for j, t in enumerate(ids)]
            rows.append(dict(enc, labels=labels))
        else:
            rows.append(dict(enc, start_positions=position, end_positions=position))
    return EncodedSplit(rows, sequence_outputs=True)


@pytest.mark.parametrize("kind", ["custom", "bilstm"])
@pytest.mark.parametrize("task", ["ner", "qa"])
def test_per_token_heads_learn_in_a_few_steps(kind, task, tiny_bert_dir, tmp_path):

    model, tokenizer = build(kind, task, tiny_bert_dir)
    log = tmp_path / "log.jsonl"
    train_model(model, token_features(tokenizer, task), tokenizer, task_loss(TASKS[task], None),
                TrainConfig(epochs=20, batch_size=8, learning_rate=3e-3, warmup_ratio=0.0), 0,
                log=TrainLog(log_path=log))
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    first = sum(r["loss"] for r in rows if r["epoch"] == 0) / 3
    last = sum(r["loss"] for r in rows if r["epoch"] == 19) / 3
    assert last < 0.5 * first
