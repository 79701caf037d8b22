import math

import pytest
import torch

from compress.distill.losses import kd_loss


def hand_kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def softmax(xs: list[float]) -> list[float]:
    exps = [math.exp(x) for x in xs]
    return [e / sum(exps) for e in exps]


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_term_is_kl_at_temperature_times_t_squared(temperature):
    teacher, student = [math.log(3.0), 0.0], [0.0, 0.0]
    _, terms = kd_loss(torch.tensor([student]), torch.tensor([teacher]), torch.tensor([0]), temperature, alpha=1.0)
    expected = hand_kl(softmax([t / temperature for t in teacher]), softmax([s / temperature for s in student]))
    assert terms["kd"].item() == pytest.approx(expected * temperature**2, rel=1e-5)


def test_known_value_at_t1():
    # Teacher probabilities (0.75, 0.25) against a uniform student: 0.75 ln 1.5 + 0.25 ln 0.5.
    _, terms = kd_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([0]), 1.0, 1.0)
    assert terms["kd"].item() == pytest.approx(0.130812, abs=1e-5)
    assert terms["ce"].item() == pytest.approx(math.log(2), abs=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_alpha_mixes_kd_and_ce(alpha):
    torch.manual_seed(0)
    s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    loss, terms = kd_loss(s, t, y, 2.0, alpha)
    assert loss.item() == pytest.approx(alpha * terms["kd"].item() + (1 - alpha) * terms["ce"].item(), rel=1e-6)


def test_batchmean_reduction_averages_over_examples():
    s = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])  # second row: identical, KL 0
    _, terms = kd_loss(s, t, torch.tensor([0, 0]), 1.0, 1.0)
    assert terms["kd"].item() == pytest.approx(0.130812 / 2, abs=1e-5)


def test_identical_logits_give_zero_kd_and_gradients_flow():
    logits = torch.randn(3, 5, requires_grad=True)
    loss, terms = kd_loss(logits, logits.detach().clone(), torch.tensor([1, 2, 3]), 3.0, 0.5)
    assert terms["kd"].item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_hybrid_adds_ce_on_the_teachers_answer_only_where_it_is_confident():
    from compress.distill.losses import hybrid_loss

    student = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    teacher = torch.tensor([[0.0, 5.0], [0.1, 0.0], [0.0, 4.0]])  # sure of class 1 in rows 0 and 2; unsure in row 1
    labels = torch.tensor([0, 0, 0])
    loss, terms = hybrid_loss(student, teacher, labels, temperature=2.0, alpha=0.5, threshold=0.9, confident_weight=0.3)
    base, _ = kd_loss(student, teacher, labels, 2.0, 0.5)
    # CE towards class 1 over rows 0 and 2: -log softmax([0, 0])[1] and -log softmax([1, 0])[1].
    expected_confident = (math.log(2) + (math.log(math.e + 1))) / 2
    assert terms["confident"].item() == pytest.approx(expected_confident, rel=1e-5)
    assert terms["confident_fraction"].item() == pytest.approx(2 / 3)
    assert loss.item() == pytest.approx(base.item() + 0.3 * expected_confident, rel=1e-5)


def test_hybrid_with_no_confident_row_is_plain_kd_and_still_differentiable():
    from compress.distill.losses import hybrid_loss

    student = torch.zeros(2, 3, requires_grad=True)
    teacher, labels = torch.zeros(2, 3), torch.tensor([0, 1])
    loss, terms = hybrid_loss(student, teacher, labels, 1.0, 0.5, threshold=0.9, confident_weight=1.0)
    assert terms["confident"].item() == 0.0 and not math.isnan(loss.item())
    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()


def test_regression_terms_skip_rows_without_a_score():
    import math

    from compress.data.batching import EncodedSplit
    from compress.distill.losses import labelled_mse, score_kd_term

    scores = torch.tensor([1.0, 2.0, 4.0], requires_grad=True)
    labels = torch.tensor([2.0, math.nan, 4.0])  # the middle row is a transfer text's: no score
    assert labelled_mse(scores, labels).item() == pytest.approx(0.5)  # (1 + 0) / 2 rows with a score
    nothing = labelled_mse(scores, torch.full((3,), math.nan))
    nothing.backward()
    assert nothing.item() == 0 and torch.equal(scores.grad, torch.zeros(3))
    assert score_kd_term(scores, torch.tensor([1.0, 2.0, 1.0])).item() == pytest.approx(3.0)  # every row: 9 / 3
    dropped = EncodedSplit([{"input_ids": [1], "labels": 3.5}, {"input_ids": [1], "labels": 2}]).without_labels()
    assert math.isnan(dropped.labels[0]) and dropped.labels[1] == -100  # a score becomes NaN, a class id -100
