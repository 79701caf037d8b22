"""TinyBERT-style intermediate transfer: layer maps, head matching, masking, projections, and a loss that falls."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from compress.core.config import (
    CustomTransformerStudent,
    IntermediateConfig,
    KDConfig,
    LayerDroppedStudent,
    TrainConfig,
)
from compress.core.errors import UserError
from compress.data.batching import EncodedSplit
from compress.data.tasks import TASKS
from compress.distill.intermediate import attention_loss, masked_mse, match_heads, uniform_layer_map
from compress.distill.loop import TrainLog, train_model
from compress.distill.objectives import intermediate_loss, layer_transfer
from compress.models.custom import CustomTransformerConfig, CustomTransformerForSequenceClassification


def tiny_pair(tiny_bert_dir):
    """The tiny BERT as teacher (eager attention, so it returns attention maps) and a seeded 2-layer, 16-wide
    custom student: narrower than the teacher, with half its heads."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, attn_implementation="eager").eval()
    torch.manual_seed(0)
    student = CustomTransformerForSequenceClassification(
        CustomTransformerConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                num_labels=3))
    return tokenizer, teacher, student


def test_uniform_map_ends_on_the_last_teacher_layer():
    assert uniform_layer_map(3, 6) == [1, 3, 5]
    assert uniform_layer_map(4, 12) == [2, 5, 8, 11]
    assert uniform_layer_map(2, 2) == [0, 1]


def test_heads_are_averaged_in_groups_down_to_the_smaller_count():
    teacher = torch.arange(4.0).view(1, 4, 1, 1).expand(1, 4, 2, 2)
    student = torch.zeros(1, 2, 2, 2)
    s, t = match_heads(student, teacher)
    assert s.shape == t.shape == (1, 2, 2, 2)
    assert t[0, :, 0, 0].tolist() == [0.5, 2.5]  # heads (0, 1) and (2, 3)
    s, t = match_heads(torch.zeros(1, 3, 2, 2), teacher)  # 3 does not divide 4: one averaged map each
    assert s.shape == t.shape == (1, 1, 2, 2)


def test_padding_does_not_count():
    mask = torch.tensor([[1, 1, 0]])
    student, teacher = torch.zeros(1, 3, 4), torch.ones(1, 3, 4)
    assert masked_mse(student, teacher, mask).item() == pytest.approx(1.0)
    student[0, 2] = 100.0  # a padded position
    assert masked_mse(student, teacher, mask).item() == pytest.approx(1.0)
    s_att = torch.tensor([[[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.3, 0.3, 0.4]]]])
    t_att = torch.tensor([[[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]])
    # Real queries 0 and 1, real keys 0 and 1: squared errors 0.25 + 0.25 + 0 + 0 over 4 pairs.
    assert attention_loss(s_att, t_att, mask, "mse").item() == pytest.approx(0.125)
    assert attention_loss(t_att, t_att, mask, "kl").item() == pytest.approx(0.0, abs=1e-6)


def test_projection_where_widths_differ_and_gradients_reach_it(tiny_bert_dir):
    _, teacher, student = tiny_pair(tiny_bert_dir)
    spec = CustomTransformerStudent(name="c", distill=KDConfig(method="intermediate"))
    transfer = layer_transfer(spec, student.config, teacher, where="students.0")
    assert transfer.layer_map == [1, 3] and isinstance(transfer.hidden_projections[0], torch.nn.Linear)
    ids = torch.randint(1000, 2000, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    batch = {"input_ids": ids, "attention_mask": mask}
    terms = transfer(batch, student(**batch, **transfer.model_kwargs))  # runs the teacher itself
    assert set(terms) == {"hidden", "attention", "embedding"} and all(v.item() > 0 for v in terms.values())
    loss = sum(terms.values())
    loss.backward()
    assert transfer.hidden_projections[0].weight.grad.abs().sum() > 0
    assert student.transformer.encoder.layers[0].attention.query.weight.grad.abs().sum() > 0


def test_layer_dropped_student_maps_to_the_layers_it_was_copied_from(tiny_bert_dir):
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    config = teacher.config
    spec = LayerDroppedStudent(name="s", layers=[0, 3], distill=KDConfig(method="intermediate"))
    transfer = layer_transfer(spec, config.__class__(**(config.to_dict() | {"num_hidden_layers": 2})), teacher, "s")
    assert transfer.layer_map == [0, 3] and isinstance(transfer.hidden_projections[0], torch.nn.Identity)


def test_a_bad_layer_map_is_a_user_error(tiny_bert_dir):
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)  # 4 layers
    student = CustomTransformerConfig(num_hidden_layers=2)
    spec = CustomTransformerStudent(name="c", distill=KDConfig(method="intermediate",
                                                                intermediate=IntermediateConfig(layer_map=[1, 9])))
    with pytest.raises(UserError) as err:
        layer_transfer(spec, student, teacher, where="students.2")
    assert "students.2.distill.intermediate.layer_map" in err.value.line()


def test_training_with_intermediate_transfer_lowers_the_layer_terms(tiny_bert_dir, tmp_path):
    import json

    tokenizer, teacher, student = tiny_pair(tiny_bert_dir)
    texts = ["market shares profit", "match goal team", "software phone digital", "the bank said"] * 6
    features = [dict(tokenizer(t), labels=i % 3) for i, t in enumerate(texts)]
    with torch.no_grad():
        logits = teacher(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    split = EncodedSplit(features).with_teacher({"logits": logits})
    kd = KDConfig(method="intermediate")
    transfer = layer_transfer(CustomTransformerStudent(name="c", distill=kd), student.config, teacher, "s")
    log = tmp_path / "log.jsonl"
    train_model(student, split, tokenizer, intermediate_loss(TASKS["classification"], kd, transfer),
                TrainConfig(epochs=8, batch_size=8, learning_rate=3e-3, warmup_ratio=0), 0, log=TrainLog(log_path=log))
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert {"kd", "ce", "hidden", "attention", "embedding"} <= set(rows[0])
    assert rows[-1]["hidden"] < rows[0]["hidden"] * 0.75


def test_progressive_stages_train_each_layer_alone_and_leave_the_rest(tiny_bert_dir, tmp_path):
    import json

    from compress.distill.progressive import train_layers_progressively

    tokenizer, teacher, student = tiny_pair(tiny_bert_dir)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    spec = CustomTransformerStudent(name="c", distill=KDConfig(method="progressive"))
    transfer = layer_transfer(spec, student.config, teacher, "s")
    split = EncodedSplit([dict(tokenizer(t), labels=0) for t in ["market shares", "goal team", "phone"] * 4])
    train_layers_progressively(student, transfer, split, tokenizer, TrainConfig(batch_size=4, learning_rate=1e-3),
                               spec.distill.model_copy(update={"progressive_epochs": 2}), 0,
                               TrainLog("t", tmp_path / "c.jsonl"))
    after = student.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("transformer.encoder.layers.0.") for k in changed)
    assert any(k.startswith("transformer.encoder.layers.1.") for k in changed)
    assert all(k.startswith("transformer.encoder.layers.") for k in changed)  # embeddings, norm, head frozen
    assert all(p.requires_grad for p in student.parameters())
    for k in (0, 1):
        rows = [json.loads(line) for line in (tmp_path / f"c.layer{k}.jsonl").read_text().splitlines()]
        assert {"hidden", "attention"} <= set(rows[0]) and "kd" not in rows[0] and "embedding" not in rows[0]


def test_tinybert_stage_trains_every_layer_on_the_intermediate_terms_alone(tiny_bert_dir, tmp_path):
    import json

    from compress.distill.progressive import train_intermediate_stage

    tokenizer, teacher, student = tiny_pair(tiny_bert_dir)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    spec = CustomTransformerStudent(name="c", distill=KDConfig(method="tinybert", intermediate_epochs=2))
    transfer = layer_transfer(spec, student.config, teacher, "s")
    split = EncodedSplit([dict(tokenizer(t), labels=0) for t in ["market shares", "goal team", "phone"] * 4])
    train_intermediate_stage(student, transfer, split, tokenizer, TrainConfig(batch_size=4, learning_rate=1e-3),
                             spec.distill, 0, TrainLog("t", tmp_path / "c.jsonl"))
    changed = {k for k in before if not torch.equal(before[k], student.state_dict()[k])}
    assert any(k.startswith("transformer.encoder.layers.0.") for k in changed)
    assert any(k.startswith("transformer.encoder.layers.1.") for k in changed)
    assert any("embed" in k for k in changed)  # the embedding term reaches the embeddings
    rows = [json.loads(line) for line in (tmp_path / "c.intermediate.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 3 and {"hidden", "attention", "embedding"} <= set(rows[0])
    assert "kd" not in rows[0] and "ce" not in rows[0]  # no prediction-layer terms in this stage
    first, last = rows[0], rows[-1]
    assert last["hidden"] < first["hidden"]
