"""What a trial tries, asked of Optuna's trial define-by-run: a family, its shape, a KD method and a learning rate,
as the `StudentConfig` a run would train; and the YAML snippet a user pastes into `students:`.

Each family's parameters are named `<family>.<key>` (e.g. `custom_transformer.hidden_size`), so a parameter always
has one distribution in the study, whichever family a trial picks.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from pydantic import ValidationError

from compress.core.config import (
    BiLSTMStudent,
    CustomTransformerStudent,
    FloatChoice,
    IntChoice,
    KDConfig,
    LayerDroppedStudent,
    RunConfig,
    SearchConfig,
    StudentConfig,
    TrainConfig,
)
from compress.core.errors import UserError

SHORT_FAMILY = {"custom_transformer": "custom", "bilstm": "bilstm", "layer_dropped": "layer-dropped"}


class ShapeRefused(Exception):
    """A sampled combination no student can take (a width its head count does not divide): the trial is pruned
    with this reason, untrained."""


@dataclass(frozen=True)
class Candidate:
    """A trial's student: what was sampled, and the StudentConfig it makes."""

    family: str
    shape: dict[str, int | list[int]]
    method: str
    learning_rate: float
    student: StudentConfig

    def describe(self) -> str:
        """e.g. "custom 2x128 (4 heads, FFN 512), logit"."""
        return f"{describe_shape(self.family, self.shape)}, {self.method}"


def suggest_candidate(trial, search: SearchConfig, teacher_layers: int | None) -> Candidate:
    """The trial's student, sampled from `search.space` through `trial.suggest_*` (an Optuna trial; a retried or
    enqueued trial gets its fixed values back the same way)."""
    space = search.space
    family = trial.suggest_categorical("family", space.families)
    method = trial.suggest_categorical(f"{family}.method", space.methods_for(family))
    train = lambda lr: TrainConfig(epochs=search.epochs, learning_rate=lr)  # noqa: E731
    distill = KDConfig(method=method)
    name = f"trial-{trial.number}"
    if family == "custom_transformer":
        s = space.custom_transformer
        shape = {"num_layers": pick(trial, "custom_transformer.num_layers", s.num_layers),
                 "hidden_size": pick(trial, "custom_transformer.hidden_size", s.hidden_size),
                 "num_heads": pick(trial, "custom_transformer.num_heads", s.num_heads)}
        shape["ffn_size"] = shape["hidden_size"] * pick(trial, "custom_transformer.ffn_ratio", s.ffn_ratio)
        lr = pick(trial, "custom_transformer.learning_rate", s.learning_rate)
        if shape["hidden_size"] % shape["num_heads"]:
            raise ShapeRefused(f"hidden_size {shape['hidden_size']} is not a multiple of num_heads "
                               f"{shape['num_heads']}")
        make = lambda: CustomTransformerStudent(name=name, **shape, train=train(lr), distill=distill,  # noqa: E731
                                                baseline=search.baseline)
    elif family == "bilstm":
        s = space.bilstm
        shape = {"num_layers": pick(trial, "bilstm.num_layers", s.num_layers),
                 "hidden_size": pick(trial, "bilstm.hidden_size", s.hidden_size),
                 "embedding_size": pick(trial, "bilstm.embedding_size", s.embedding_size)}
        lr = pick(trial, "bilstm.learning_rate", s.learning_rate)
        make = lambda: BiLSTMStudent(name=name, **shape, train=train(lr), distill=distill,  # noqa: E731
                                     baseline=search.baseline)
    else:
        s = space.layer_dropped
        kept = pick(trial, "layer_dropped.num_layers", layer_dropped_range(s.num_layers, teacher_layers))
        shape = {"num_layers": kept, "layers": spread_layers(kept, teacher_layers or kept)}
        lr = pick(trial, "layer_dropped.learning_rate", s.learning_rate)
        make = lambda: LayerDroppedStudent(name=name, layers=shape["layers"], train=train(lr),  # noqa: E731
                                           distill=distill, baseline=search.baseline)
    try:
        student = make()
    except ValidationError as err:  # a shape the student's own checks refuse
        raise ShapeRefused(err.errors()[0]["msg"].replace("Value error, ", "")) from None
    return Candidate(family, shape, method, lr, student)


def space_size(search: SearchConfig, teacher_layers: int | None) -> int | None:
    """How many distinct students the space holds; None where a range of floats makes it endless."""
    space, total = search.space, 0
    for family in space.families:
        block = getattr(space, family)
        choices = [getattr(block, key) for key in type(block).model_fields]
        if family == "layer_dropped":
            choices[0] = layer_dropped_range(block.num_layers, teacher_layers)
        count = len(space.methods_for(family))
        for choice in choices:
            if choice.values is not None:
                count *= len(choice.values)
            elif isinstance(choice, IntChoice):
                count *= len(range(choice.low, choice.high + 1, choice.step))
            else:
                return None
        total += count
    return total


def pick(trial, name: str, choice: IntChoice | FloatChoice):
    """One value of `choice`: categorical over a list, or int/float (log scale unless told) over a range."""
    if choice.values is not None:
        return trial.suggest_categorical(name, choice.values)
    if isinstance(choice, IntChoice):
        return trial.suggest_int(name, choice.low, choice.high, step=choice.step)
    return trial.suggest_float(name, choice.low, choice.high, log=choice.log)


def layer_dropped_range(given: IntChoice | None, teacher_layers: int | None) -> IntChoice:
    """How many teacher layers a layer-dropped student keeps: as given, or 1 to the teacher's layers - 1."""
    if given is not None:
        return given
    if teacher_layers is None or teacher_layers < 2:
        raise UserError(f"the teacher has {teacher_layers or 'an unknown number of'} layer(s), so there is no "
                        "default range of layers to keep", "search.space.layer_dropped.num_layers",
                        "give num_layers as a list or {low, high}, or remove layer_dropped from families")
    return IntChoice(low=1, high=teacher_layers - 1)


def spread_layers(kept: int, teacher_layers: int) -> list[int]:
    """`kept` of the teacher's layers, evenly spread from the first: 3 of 6 -> [0, 2, 4] (DistilBERT's every other
    layer), 2 of 6 -> [0, 3], 1 -> [0]."""
    return [i * teacher_layers // kept for i in range(kept)]


def check_search(cfg: RunConfig, teacher_layers: int | None) -> None:
    """What the search block asks that the teacher refutes (a layer-dropped copy keeping more layers than it has),
    in one line; `compress validate` and `compress search` call it before anything runs."""
    search = cfg.search
    if search is None or "layer_dropped" not in search.space.families:
        return
    choice = layer_dropped_range(search.space.layer_dropped.num_layers, teacher_layers)
    largest = max(choice.values) if choice.values is not None else choice.high
    smallest = min(choice.values) if choice.values is not None else choice.low
    if smallest < 1:
        raise UserError(f"a layer-dropped copy keeps at least 1 layer (got {smallest})",
                        "search.space.layer_dropped.num_layers", "start the range at 1")
    if teacher_layers is not None and largest > teacher_layers:
        raise UserError(f"keeps up to {largest} layers, and the teacher has {teacher_layers}",
                        "search.space.layer_dropped.num_layers", f"keep at most {teacher_layers - 1}")


def describe_shape(family: str, shape: dict) -> str:
    """A shape in a few characters: "custom 2x128 (4 heads, FFN 512)", "bilstm 2x128 (emb 64)", "layer-dropped 3
    of the teacher's layers [0, 2, 4]"."""
    if family == "custom_transformer":
        return (f"custom {shape['num_layers']}x{shape['hidden_size']} ({shape['num_heads']} heads, "
                f"FFN {shape['ffn_size']})")
    if family == "bilstm":
        return f"bilstm {shape['num_layers']}x{shape['hidden_size']} (emb {shape['embedding_size']})"
    return f"layer-dropped {shape['num_layers']} layers {shape['layers']}"


def chosen_name(family: str, shape: dict, taken: list[str]) -> str:
    """The chosen student's name in the run: search-custom-2x128, search-bilstm-2x128, search-l3 (a suffix where a
    student of the run already has the name)."""
    if family == "custom_transformer":
        base = f"search-custom-{shape['num_layers']}x{shape['hidden_size']}"
    elif family == "bilstm":
        base = f"search-bilstm-{shape['num_layers']}x{shape['hidden_size']}"
    else:
        base = f"search-l{shape['num_layers']}"
    name, n = base, 2
    while name in taken or f"{name}-baseline" in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def snippet(student: StudentConfig) -> str:
    """The YAML a user pastes under `students:` to train this student in their own runs: its name, kind and every
    setting that differs from the defaults."""
    settings = student.model_dump(mode="json", exclude_defaults=True, exclude={"name", "kind", "train"})
    # Epochs and learning rate always: a family's own defaults differ from TrainConfig's (a BiLSTM trains 10 epochs
    # unless told), so leaving out what equals TrainConfig's default would change them on the way back.
    train = student.train.model_dump(mode="json", exclude_defaults=True) | {
        "epochs": student.train.epochs, "learning_rate": student.train.learning_rate}
    item = {"name": student.name, "kind": student.kind, **settings, "train": train}
    return yaml.safe_dump([item], sort_keys=False)
