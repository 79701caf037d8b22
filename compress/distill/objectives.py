"""What a model is trained to minimise, built from the config in one place: a weighted sum of named terms.

    loss(batch, outputs) -> (loss, {term name: value})

Fine-tuning and baselines minimise `ce`; logit KD `alpha * kd + (1 - alpha) * ce` (for regression `kd` is the MSE
to the teacher's score and `ce` the MSE to the label); hybrid adds
`confident_weight * confident`; intermediate (TinyBERT) adds `hidden`, `attention` and `embedding` terms against
the teacher's layers; each progressive stage (MobileBERT) one layer's `hidden` and `attention`; TinyBERT's first
stage the intermediate terms alone; pruning recovery
is logit or hybrid KD. As in torchdistill, each part computes named values and the config gives their weights;
a part that needs the teacher's features runs the teacher itself, so the training loop never does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compress.core.config import KDConfig, LayerDroppedStudent, StudentConfig
from compress.core.kd_methods import kd_method
from compress.data.batching import IGNORE_INDEX
from compress.data.tasks import Task, loss_targets
from compress.distill.intermediate import IntermediateLoss, LayerStage
from compress.distill.losses import confident_term, kd_term, labelled_mse, score_kd_term
from compress.models.students import default_layers


def labelled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE averaged over the rows that have a label: (M, C) logits, (M,) labels, negative (IGNORE_INDEX, NO_LABEL)
    on rows without one (a transfer set's). A batch of transfer rows alone gives 0 (gradient zero), where
    F.cross_entropy gives NaN."""
    labels = labels.masked_fill(labels < 0, IGNORE_INDEX)
    if bool((labels == IGNORE_INDEX).all()):
        return logits.sum() * 0.0  # keeps the graph (and the gradient, zero) defined
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


class LogitTerms(nn.Module):
    """`ce` against the labels (rows without one, a transfer set's, add nothing to it), and with the teacher's
    cached outputs in the batch `kd` (KL at `temperature`, times T^2) over every row and, with a `threshold`,
    `confident` (CE on the teacher's answer where it is sure) and its `confident_fraction`. Each is averaged over
    the task's targets (QA: start and end); NER uses labelled tokens only. Regression's `ce` and `kd` are mean
    squared errors to the label and to the teacher's score."""

    model_kwargs: dict = {}

    def __init__(self, task: Task, temperature: float | None = None, threshold: float | None = None) -> None:
        super().__init__()
        self.task, self.temperature, self.threshold = task, temperature, threshold

    def forward(self, batch: dict[str, torch.Tensor], outputs) -> dict[str, torch.Tensor]:
        per_target: dict[str, list[torch.Tensor]] = {}
        scores = self.task.name == "regression"
        for student, teacher, labels in loss_targets(self.task, outputs, batch):
            values = {}
            if self.temperature is not None:
                values["kd"] = (score_kd_term(student, teacher) if scores
                                else kd_term(student, teacher, self.temperature))
            values["ce"] = labelled_mse(student, labels) if scores else labelled_cross_entropy(student, labels)
            if self.threshold is not None:
                values["confident"], values["confident_fraction"] = confident_term(student, teacher, self.threshold)
            for name, value in values.items():
                per_target.setdefault(name, []).append(value)
        return {name: sum(values) / len(values) for name, values in per_target.items()}


class WeightedLoss(nn.Module):
    """sum over parts of sum over their weighted named values; values without a weight are only logged.

    Parts are modules, so learned pieces of a term (TinyBERT's projections) train and checkpoint with the
    student; `model_kwargs` is what the student's forward must return for them (hidden states, attentions).
    """

    def __init__(self, parts: list[nn.Module], weights: dict[str, float]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.weights = weights
        self.model_kwargs = {k: v for part in parts for k, v in part.model_kwargs.items()}

    def forward(self, batch: dict[str, torch.Tensor], outputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total, logged = None, {}
        for part in self.parts:
            values = part(batch, outputs)
            weighted = [self.weights[name] * value for name, value in values.items() if name in self.weights]
            part_total = weighted[0]
            for value in weighted[1:]:
                part_total = part_total + value
            total = part_total if total is None else total + part_total
            logged |= {name: value.detach() for name, value in values.items()}
        return total, logged


def task_loss(task: Task, kd: KDConfig | None) -> WeightedLoss:
    """Cross-entropy alone (kd None: the teacher's fine-tuning, baselines), or logit KD (hybrid: with the
    confident term) from the teacher's cached outputs; intermediate and progressive students add their terms
    to the logit terms, and progressive students end with these alone."""
    if kd is None:
        return WeightedLoss([LogitTerms(task)], {"ce": 1.0})
    hybrid = kd_method(kd.method).classes  # hybrid: the confident term, on the teacher's most likely class
    weights = {"kd": kd.alpha, "ce": 1 - kd.alpha} | ({"confident": kd.confident_weight} if hybrid else {})
    return WeightedLoss([LogitTerms(task, kd.temperature, kd.confidence_threshold if hybrid else None)], weights)


def intermediate_loss(task: Task, kd: KDConfig, transfer: IntermediateLoss) -> WeightedLoss:
    """TinyBERT's terms in one stage: logit KD plus the hidden-state, attention and embedding terms of `transfer`."""
    logit, layers = task_loss(task, kd), intermediate_stage_loss(kd, transfer)
    return WeightedLoss([*logit.parts, transfer], logit.weights | layers.weights)


def intermediate_stage_loss(kd: KDConfig, transfer: IntermediateLoss) -> WeightedLoss:
    """TinyBERT's first stage: the hidden-state, attention and embedding terms of every mapped layer alone."""
    options = kd.intermediate
    return WeightedLoss([transfer], {"hidden": options.hidden_weight, "attention": options.attention_weight,
                                     "embedding": options.embedding_weight})


def layer_stage_loss(kd: KDConfig, transfer: IntermediateLoss, layer: int) -> WeightedLoss:
    """MobileBERT's progressive stage for one student layer: its hidden-state and attention terms alone."""
    options = kd.intermediate
    return WeightedLoss([LayerStage(transfer, layer)],
                        {"hidden": options.hidden_weight, "attention": options.attention_weight})


def layer_transfer(spec: StudentConfig, student_config, teacher: nn.Module, where: str) -> IntermediateLoss:
    """The intermediate-transfer terms for `spec`. A layer-dropped student maps each layer to the teacher layer
    it was copied from; other students use the uniform map unless distill.intermediate.layer_map says otherwise."""
    options = spec.distill.intermediate
    layer_map = options.layer_map
    if layer_map is None and isinstance(spec, LayerDroppedStudent):
        layer_map = spec.layers or default_layers(teacher.config.num_hidden_layers)
    return IntermediateLoss(student_config, teacher, layer_map, options.attention_loss, where)
