"""The KD methods, and what each needs of the student, the task and the teacher: one table.

The config's validation, the checks before a run (compress.pipeline.preflight), the student's tokenizer
(compress.models.students), the losses (compress.distill.objectives) and the student's training stage all read
this table, as torchdistill keeps its losses in one registry, rather than lists of method names of their own.

| method       | transformer student | teacher's tokenizer | classes | pruned recovery | layer transfer         |
| ------------ | ------------------- | ------------------- | ------- | --------------- | ---------------------- |
| logit        |                     |                     |         | yes             |                        |
| hybrid       |                     |                     | yes     | yes             |                        |
| intermediate | yes                 | yes                 |         |                 | in the KD loss         |
| progressive  | yes                 | yes                 |         |                 | layer by layer, first  |
| tinybert     | yes                 | yes                 |         |                 | every layer, first     |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

KDMethodName = Literal["logit", "hybrid", "intermediate", "progressive", "tinybert"]  # distill.method in the YAML


@dataclass(frozen=True)
class KDMethod:
    """One row of the table: what a KD method needs, and where its layer-transfer terms train.

    Every method trains the student on logit KD (the teacher's cached outputs, with the labels' CE); a method with
    layer transfer also matches the hidden states and attention maps of mapped teacher layers, which the teacher
    computes online (compress.distill.intermediate).
    """

    transformer_student: bool = False  # layers and attention maps to match the teacher's: not a BiLSTM
    teacher_tokenizer: bool = False  # compares hidden states token by token: the teacher's vocabulary
    classes: bool = False  # hybrid's term on the teacher's most likely class: not for regression
    pruned_recovery: bool = False  # fit to recover a pruned model, whose shapes no longer match the teacher's layers
    layer_transfer: Literal["in_the_loss", "layer_by_layer_first", "all_layers_first"] | None = None
    # in_the_loss: the layer terms join the KD loss (TinyBERT's terms in one stage); layer_by_layer_first: one stage
    # per student layer, bottom up, then logit KD (MobileBERT); all_layers_first: every layer at once, then logit KD
    # (TinyBERT's two stages).


KD_METHODS: dict[str, KDMethod] = {
    "logit": KDMethod(pruned_recovery=True),
    "hybrid": KDMethod(classes=True, pruned_recovery=True),
    "intermediate": KDMethod(transformer_student=True, teacher_tokenizer=True, layer_transfer="in_the_loss"),
    "progressive": KDMethod(transformer_student=True, teacher_tokenizer=True, layer_transfer="layer_by_layer_first"),
    "tinybert": KDMethod(transformer_student=True, teacher_tokenizer=True, layer_transfer="all_layers_first"),
}


def kd_method(name: str) -> KDMethod:
    """The row of `name` (a validated config's distill.method); an unknown name lists the known ones."""
    if name not in KD_METHODS:
        raise KeyError(f"unknown KD method '{name}' (known: {', '.join(KD_METHODS)})")
    return KD_METHODS[name]


def names_where(**row: object) -> str:
    """The methods whose rows have these values (e.g. transformer_student=False), as "a or b" for a message."""
    return " or ".join(name for name, method in KD_METHODS.items()
                       if all(getattr(method, need) == value for need, value in row.items()))
