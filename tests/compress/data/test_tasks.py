from types import SimpleNamespace

import pytest
import torch

from compress.core.config import KDConfig
from compress.data.tasks import TASKS, loss_targets
from compress.distill.losses import kd_loss
from compress.distill.objectives import task_loss


def test_ner_kd_runs_only_over_labelled_tokens():
    torch.manual_seed(0)
    logits, teacher = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    labels = torch.tensor([[-100, 1, -100, 2], [-100, 0, -100, -100]])
    batch = {"labels": labels, "teacher_logits": teacher}
    [(s, t, y)] = loss_targets(TASKS["ner"], SimpleNamespace(logits=logits), batch)
    assert s.shape == (3, 3) and y.tolist() == [1, 2, 0]
    # Garbage in ignored positions changes nothing.
    spoiled = teacher.clone()
    spoiled[labels == -100] = 1e4
    kd = task_loss(TASKS["ner"], KDConfig(temperature=2, alpha=0.5))
    loss, _ = kd(batch, SimpleNamespace(logits=logits))
    loss2, _ = kd(batch | {"teacher_logits": spoiled}, SimpleNamespace(logits=logits))
    assert loss.item() == pytest.approx(loss2.item())


def test_qa_loss_averages_start_and_end():
    torch.manual_seed(0)
    out = SimpleNamespace(start_logits=torch.randn(2, 6), end_logits=torch.randn(2, 6))
    batch = {"start_positions": torch.tensor([1, 0]), "end_positions": torch.tensor([2, 0]),
             "teacher_start_logits": torch.randn(2, 6), "teacher_end_logits": torch.randn(2, 6)}
    kd = KDConfig(temperature=2.0, alpha=0.3)
    loss, terms = task_loss(TASKS["qa"], kd)(batch, out)
    start, _ = kd_loss(out.start_logits, batch["teacher_start_logits"], batch["start_positions"], 2.0, 0.3)
    end, _ = kd_loss(out.end_logits, batch["teacher_end_logits"], batch["end_positions"], 2.0, 0.3)
    assert loss.item() == pytest.approx((start.item() + end.item()) / 2)
    assert set(terms) == {"kd", "ce"}
