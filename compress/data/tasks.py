"""What differs between the tasks, in one place: outputs, export task, metric, data, loss targets.
Everything else (training loop, export, bench, report) is shared. The model class per task is in
compress.models.loading.AUTO_CLASSES (models sit above data)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from compress.data import classification, ner, qa, regression
from compress.data.batching import IGNORE_INDEX


@dataclass(frozen=True)
class Task:
    name: str
    export_task: str  # optimum's task name
    outputs: tuple[str, ...]  # model output attributes that carry the predictions (and the KD targets)
    metric: str  # headline metric in the report
    build: Callable  # (RunConfig, tokenizer, augmentation's word source) -> (splits, label names or None)
    evaluate: Callable  # (outputs, split, RunConfig, label names) -> metrics
    per_token: bool  # outputs run along the sequence
    # How a split that another tokenizer encoded reads the teacher's outputs (split, the teacher's split) -> split;
    # None: row by row as they are (classification), or not supported (QA).
    align_to_teacher: Callable | None = None


TASKS = {
    "classification": Task("classification", "text-classification", ("logits",),
                           "accuracy", classification.build, classification.evaluate, per_token=False),
    # One output per text: optimum's text-classification export with a one-unit head (problem_type regression).
    "regression": Task("regression", "text-classification", ("logits",),
                       "spearman", regression.build, regression.evaluate, per_token=False),
    "ner": Task("ner", "token-classification", ("logits",),
                "f1", ner.build, ner.evaluate, per_token=True, align_to_teacher=ner.aligned_to_teacher),
    "qa": Task("qa", "question-answering", ("start_logits", "end_logits"),
               "f1", qa.build, qa.evaluate, per_token=True),
}


def loss_targets(task: Task, outputs,
                 batch: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
    """(student logits, teacher logits or None, labels) triples, each shaped (M, C) / (M, C) / (M,); regression's
    are scores, (M,) / (M,) / (M,).

    NER keeps only word positions (labels != -100: a label, or NO_LABEL on a transfer sentence), so KD never runs
    over padding, special tokens or non-first sub-words. QA treats start and end as two classifications over the
    sequence positions.
    """
    if task.name == "qa":
        return [(outputs.start_logits, batch.get("teacher_start_logits"), batch["start_positions"]),
                (outputs.end_logits, batch.get("teacher_end_logits"), batch["end_positions"])]
    logits, teacher, labels = outputs.logits, batch.get("teacher_logits"), batch["labels"]
    if task.name == "ner":
        mask = labels != IGNORE_INDEX
        return [(logits[mask], teacher[mask] if teacher is not None else None, labels[mask])]
    if task.name == "regression":
        return [(logits.squeeze(-1), teacher.squeeze(-1) if teacher is not None else None, labels)]
    return [(logits, teacher, labels)]
