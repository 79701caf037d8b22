"""Distillation losses. They take tensors, not hook dictionaries."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float, alpha: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logit distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network").

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, labels)

    The T^2 factor keeps the soft-target gradients on the same scale as the hard-label ones when T changes.

    Args:
        student_logits, teacher_logits: (B, C).
        labels: (B,) class ids.
        temperature: T > 0; higher softens both distributions.
        alpha: weight of the KD term, in [0, 1].

    Returns:
        The scalar loss (KL summed over classes, mean over the batch) and its terms {"kd", "ce"} for logging.
    """
    kd = kd_term(student_logits, teacher_logits, temperature)
    ce = F.cross_entropy(student_logits, labels)
    return alpha * kd + (1 - alpha) * ce, {"kd": kd.detach(), "ce": ce.detach()}


def kd_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(t / T) || softmax(s / T)) for (B, C) logits: summed over classes, mean over the batch."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                    reduction="batchmean", log_target=True) * (t * t)


def hybrid_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                temperature: float, alpha: float, threshold: float,
                confident_weight: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logit KD plus a confident-teacher term:

    loss = kd_loss + confident_weight * CE(s, argmax t) over the rows where max softmax(t) >= threshold

    The extra term pushes the student hard towards the teacher's answer exactly where the teacher is sure, which
    the softened KL alone does slowly. Rows where the teacher is unsure add nothing (the term is 0 when none is
    sure). Terms {"kd", "ce", "confident", "confident_fraction"} are returned for logging.
    """
    loss, terms = kd_loss(student_logits, teacher_logits, labels, temperature, alpha)
    confident, fraction = confident_term(student_logits, teacher_logits, threshold)
    terms |= {"confident": confident.detach(), "confident_fraction": fraction}
    return loss + confident_weight * confident, terms


def confident_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                   threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """CE(s, argmax t) over the (B, C) rows where max softmax(t) >= threshold (0 when none is), and the share of
    such rows."""
    confidence, teacher_choice = teacher_logits.softmax(dim=-1).max(dim=-1)
    sure = confidence >= threshold
    if sure.any():
        confident = F.cross_entropy(student_logits[sure], teacher_choice[sure])
    else:
        confident = student_logits.sum() * 0.0  # keeps the graph (and the gradient, zero) defined
    return confident, sure.float().mean()


def score_kd_term(student_scores: torch.Tensor, teacher_scores: torch.Tensor) -> torch.Tensor:
    """Regression's KD term: the mean squared error to the teacher's (M,) scores (no temperature: a score has no
    distribution to soften)."""
    return F.mse_loss(student_scores, teacher_scores.to(student_scores.dtype))


def labelled_mse(student_scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Regression's label term: the mean squared error over the (M,) rows that have a score (NaN: a transfer
    set's row has none); 0 with a zero gradient when none has."""
    labelled = ~torch.isnan(labels)
    if not bool(labelled.any()):
        return student_scores.sum() * 0.0
    return F.mse_loss(student_scores[labelled], labels[labelled].to(student_scores.dtype))
