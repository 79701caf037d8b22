"""Architecture-only shapes: exact parameter counts that published tables can be checked against."""

import pytest
import torch

from compress.models.zoo import ZOO, build_zoo_model


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, expected", [
    ("bert-base", 108_898_569),        # BertForTokenClassification, 9 labels (CoNLL-2003)
    ("distilbert-base", 66_369_801),   # DistilBertForTokenClassification, 9 labels
])
def test_published_token_classification_counts(name, expected):
    assert count(build_zoo_model(name, "ner", num_labels=9)) == expected


def test_every_zoo_shape_builds_for_every_task_and_shrinks_from_bert_base():
    sizes = {name: count(build_zoo_model(name, "classification", 4)) for name in ZOO}
    assert all(sizes[name] < sizes["bert-base"] for name in ZOO if name != "bert-base")
    assert sizes["tinybert-4"] < sizes["distilbert-base"]
    ids = torch.randint(1000, 2000, (1, 12))
    with torch.no_grad():
        ner = build_zoo_model("bilstm-2x128", "ner", 9)(input_ids=ids, attention_mask=torch.ones_like(ids))
        qa = build_zoo_model("bilstm-2x128", "qa", 9)(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert ner.logits.shape == (1, 12, 9)
    assert qa.start_logits.shape == qa.end_logits.shape == (1, 12)
