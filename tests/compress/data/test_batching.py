"""The training loader: padding as the tokenizer pads, teacher outputs read a batch at a time, length grouping."""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from compress.data.batching import MODEL_INPUTS, EncodedSplit, RowsOf, make_loader, select_inputs, tokenizer_inputs

TEXTS = ["a short one", "a somewhat longer text about markets and shares", "goal", "the team won the match at home",
         "phones", "software and digital services grew again this quarter", "x y", "rates held"] * 3


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
    return AutoTokenizer.from_pretrained(tiny_bert_dir)


def split_of(tokenizer, texts=TEXTS, per_token=False) -> EncodedSplit:
    enc = tokenizer(texts, [t[::-1] for t in texts], truncation=True, max_length=32)  # pairs: token types vary
    features = [{k: enc[k][i] for k in MODEL_INPUTS} for i in range(len(texts))]
    for i, f in enumerate(features):
        f["labels"] = [i % 3] * len(f["input_ids"]) if per_token else i % 3
    return EncodedSplit(features, sequence_outputs=per_token)


@pytest.mark.parametrize("side", ["right", "left"])
def test_batches_are_padded_on_the_right_as_the_tokenizer_pads(tokenizer, side):
    """Always on the right, whatever the tokenizer's side: per-token labels and cached teacher outputs start at
    position 0 of every row."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer.name_or_path, padding_side=side)
    split = split_of(tokenizer)
    batch = next(iter(make_loader(split, tokenizer, batch_size=8, shuffle=False)))
    tokenizer.padding_side = "right"
    expected = tokenizer.pad([{k: f[k] for k in MODEL_INPUTS} for f in split.features[:8]], return_tensors="pt")
    for key in MODEL_INPUTS:
        assert torch.equal(batch[key], expected[key]), key
    assert batch["labels"].tolist() == [i % 3 for i in range(8)]


def test_per_token_labels_and_teacher_outputs_are_cut_to_the_batch(tokenizer):
    split = split_of(tokenizer, per_token=True)
    outputs = np.random.default_rng(0).normal(size=(len(split), 32, 3)).astype(np.float32)
    batch = next(iter(make_loader(split.with_teacher({"logits": outputs}), tokenizer, batch_size=4, shuffle=False)))
    length = batch["input_ids"].shape[1]
    assert batch["teacher_logits"].shape == (4, length, 3)
    assert torch.equal(batch["teacher_logits"], torch.from_numpy(outputs[:4, :length]))
    for row, feature in zip(batch["labels"], split.features):
        n = len(feature["input_ids"])
        assert row[:n].tolist() == feature["labels"] and set(row[n:].tolist()) <= {-100}


def test_teacher_rows_come_whole_from_memory_maps_and_joined_splits(tokenizer, tmp_path):
    split = split_of(tokenizer)
    first, second = np.arange(len(split) * 2, dtype=np.float32).reshape(-1, 2), -np.ones((len(split), 2), np.float32)
    np.save(tmp_path / "first.npy", first)
    mapped = np.load(tmp_path / "first.npy", mmap_mode="r")
    tail = split.with_teacher({"logits": torch.from_numpy(second)})
    joined = split.with_teacher({"logits": mapped}).followed_by(tail)
    indices = [len(split) + 1, 0, 5, len(split) * 2 - 1]
    rows = joined.__getitems__(indices)
    assert rows["teacher"]["logits"].tolist() == [second[1].tolist(), first[0].tolist(), first[5].tolist(),
                                                  second[-1].tolist()]
    assert len(RowsOf(mapped, second)) == 2 * len(split)
    assert [f["input_ids"] for f in rows["features"]] == [joined.features[i]["input_ids"] for i in indices]


def test_length_grouped_batches_pad_less_and_keep_the_seeded_order(tokenizer):
    split = split_of(tokenizer, TEXTS * 8)

    def batches(group: bool, seed: int) -> list[torch.Tensor]:
        return [b["attention_mask"] for b in make_loader(split, tokenizer, 8, shuffle=True, seed=seed,
                                                          group_by_length=group)]

    def padding(masks) -> int:
        return sum(int((m == 0).sum()) for m in masks)

    grouped = batches(True, 0)
    assert sum(int(m.sum()) for m in grouped) == sum(split.lengths)  # every example once
    assert padding(grouped) < padding(batches(False, 0)) / 2
    assert all(torch.equal(a, b) for a, b in zip(grouped, batches(True, 0)))
    assert not all(torch.equal(a, b) for a, b in zip(grouped, batches(True, 1)))


def test_inputs_are_selected_by_name_in_the_order_of_the_names(tokenizer):
    """What a tokenizer makes and what a model or graph takes are picked out of a batch by one function, in the
    order of the names (an encoding's columns are kept in MODEL_INPUTS order, whatever order the tokenizer uses)."""
    enc = tokenizer(["a short one"])
    assert list(enc) == ["input_ids", "token_type_ids", "attention_mask"]  # BERT's own order
    assert list(select_inputs(enc)) == list(MODEL_INPUTS) == tokenizer_inputs(tokenizer)
    batch = {"labels": 1, "attention_mask": 2, "input_ids": 3, "teacher_logits": 4}
    assert select_inputs(batch) == {"input_ids": 3, "attention_mask": 2}
    assert list(select_inputs(batch, ["attention_mask", "input_ids"])) == ["attention_mask", "input_ids"]
    distilbert_like = type("Tokenizer", (), {"model_input_names": ["input_ids", "attention_mask"]})()
    assert tokenizer_inputs(distilbert_like) == ["input_ids", "attention_mask"]
