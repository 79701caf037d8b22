"""What a run's config says that the models' own configs can refute, checked before anything trains: a layer the
teacher does not have, a layer map that does not fit. (A checkpoint student's vocabulary is compared by its
tokenizer when the student's stage starts: config.json's vocab_size counts padded embedding rows.)

Reads config.json files as JSON only (the packaged teacher, local folders, the hub's local cache), so `compress
validate` stays quick; a hub model that is not on this machine is left to the run, which says so in one line when
it gets there."""

from __future__ import annotations

import json
from pathlib import Path

from compress.config import (
    LAYER_METHODS,
    CheckpointStudent,
    CustomTransformerStudent,
    LayerDroppedStudent,
    RunConfig,
)
from compress.errors import UserError
from compress.packaged import resolve_model_path


def check_against_models(cfg: RunConfig) -> None:
    teacher = model_config(cfg.teacher.model)
    depth = layer_count(teacher)
    if teacher is None or depth is None:
        return
    for i, student in enumerate(cfg.students):
        where = f"students.{i}"
        if isinstance(student, LayerDroppedStudent) and student.layers:
            bad = [layer for layer in student.layers if not 0 <= layer < depth]
            if bad:
                raise UserError(f"layer(s) {bad} do not exist: the teacher has {depth} (0..{depth - 1})",
                                f"{where}.layers", f"pick layers from 0 to {depth - 1}")
        layer_map = student.distill.intermediate.layer_map
        if layer_map is not None and student.distill.method in LAYER_METHODS:
            student_config = model_config(student.model) if isinstance(student, CheckpointStudent) else None
            layers = student_layers(student, student_config, depth)
            if (layers is not None and len(layer_map) != layers) or any(not 0 <= t < depth for t in layer_map):
                per_layer = f"each of the student's {layers} layers" if layers is not None else "each student layer"
                raise UserError(f"layer_map {layer_map} needs one teacher layer (0..{depth - 1}) for {per_layer}",
                                f"{where}.distill.intermediate.layer_map",
                                "give one teacher layer per student layer, or leave it out for the uniform map")


def model_config(name: str) -> dict | None:
    """The model's config.json; None where it is not on this machine or not readable (the run's own loading then
    says why)."""
    path = Path(resolve_model_path(name))
    if path.exists():
        file = path / "config.json"
    else:  # a hub id: its config only if the hub cache already holds it
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(name, "config.json")
        except ValueError:  # not a valid hub id either (HFValidationError): a local path that does not exist
            cached = None
        file = Path(cached) if isinstance(cached, str) else None
    try:
        config = json.loads(file.read_text(encoding="utf-8")) if file is not None and file.is_file() else None
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def layer_count(config: dict | None) -> int | None:
    """Transformer layers in a config.json (BERT-style `num_hidden_layers`, DistilBERT's `n_layers`)."""
    if config is None:
        return None
    return config.get("num_hidden_layers") or config.get("n_layers")


def student_layers(student, student_config: dict | None, teacher_depth: int) -> int | None:
    if isinstance(student, LayerDroppedStudent):  # without layers: every other one (students.default_layers)
        return len(student.layers) if student.layers else len(range(0, teacher_depth, 2))
    if isinstance(student, CustomTransformerStudent):
        return student.num_layers
    return layer_count(student_config)
