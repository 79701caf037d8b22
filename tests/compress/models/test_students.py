import pytest
import torch
from transformers import AutoModelForSequenceClassification

from compress.core.errors import UserError
from compress.models.students import default_layers, drop_layers


def test_default_is_every_other_layer():
    assert default_layers(6) == [0, 2, 4] and default_layers(12) == [0, 2, 4, 6, 8, 10] and default_layers(1) == [0]


def test_drop_layers_keeps_the_chosen_teacher_layers(tiny_bert_dir):
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    student = drop_layers(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir), [1, 3])
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
    for s_idx, t_idx in enumerate([1, 3]):
        s_state = student.bert.encoder.layer[s_idx].state_dict()
        t_state = teacher.bert.encoder.layer[t_idx].state_dict()
        assert all(torch.equal(s_state[k], t_state[k]) for k in t_state)
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())


def test_dropped_student_round_trips_with_identical_logits(tiny_bert_dir, tmp_path):
    student = drop_layers(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir), None).eval()
    student.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    ids = torch.randint(1000, 2000, (2, 16))
    with torch.no_grad():
        assert torch.equal(student(input_ids=ids).logits, reloaded(input_ids=ids).logits)
    assert reloaded.config.num_hidden_layers == 2


def test_layer_beyond_the_teacher_is_a_user_error(tiny_bert_dir):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    with pytest.raises(UserError, match=r"layer\(s\) \[7\] do not exist: the teacher has 4"):
        drop_layers(model, [0, 7], where="students.0")
