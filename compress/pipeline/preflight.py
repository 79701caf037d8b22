"""What a run's config says that the models' own configs (or this environment) can refute, checked before anything
trains: a layer the teacher does not have, a layer map that does not fit, a sequence length beyond the teacher's
positions, a checkpoint student with another vocabulary where the teacher's outputs must meet it token by token (QA,
layer transfer), a tracker not installed.

Reads config.json and vocabulary files as JSON or text only (the packaged teacher, local folders, the hub's local
cache), so `compress validate` stays quick; a hub model that is not on this machine, or a vocabulary in another
format (a SentencePiece model), is left to the run, which compares the loaded tokenizers when the student's stage
starts. (config.json's vocab_size cannot tell: it counts padded embedding rows.)"""

from __future__ import annotations

import json
from pathlib import Path

from compress.core.config import (
    LAYER_METHODS,
    CheckpointStudent,
    CustomTransformerStudent,
    LayerDroppedStudent,
    RunConfig,
    SplitFiles,
)
from compress.core.errors import UserError, require_file
from compress.core.packaged import resolve_model_path


def check_against_models(cfg: RunConfig) -> None:
    check_trackers_installed(cfg)
    teacher = model_config(cfg.teacher.model)
    check_lengths(cfg, (teacher or {}).get("max_position_embeddings"))
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
        if isinstance(student, CheckpointStudent) and (cfg.task == "qa" or student.distill.method in LAYER_METHODS):
            check_same_vocabulary(cfg, student, where)
        layer_map = student.distill.intermediate.layer_map
        if layer_map is not None and student.distill.method in LAYER_METHODS:
            student_config = model_config(student.model) if isinstance(student, CheckpointStudent) else None
            layers = student_layers(student, student_config, depth)
            if (layers is not None and len(layer_map) != layers) or any(not 0 <= t < depth for t in layer_map):
                per_layer = f"each of the student's {layers} layers" if layers is not None else "each student layer"
                raise UserError(f"layer_map {layer_map} needs one teacher layer (0..{depth - 1}) for {per_layer}",
                                f"{where}.distill.intermediate.layer_map",
                                "give one teacher layer per student layer, or leave it out for the uniform map")


def check_lengths(cfg: RunConfig, limit: int | None) -> None:
    """Sequence lengths the teacher cannot take (`limit`, its max_position_embeddings; None: unknown) fail before
    any training, not in the bench at the end; checked again when a run reads the data
    (compress.pipeline.stages), for a hub teacher that was not on this machine before."""
    for key, value in (("data.max_length", cfg.data.max_length), ("bench.seq_len", cfg.bench.seq_len)):
        if isinstance(limit, int) and value > limit:
            raise UserError(f"{key} is {value} but the teacher takes at most {limit} positions", key,
                            f"set it to {limit} or less")


def check_data_files_present(cfg: RunConfig) -> None:
    """A local data or unlabeled file that is not there, which `compress run` refuses before it trains (for
    `compress validate`; what is in the files is the run's to read)."""
    source = cfg.data.source
    files = [source.train, source.validation, source.test] if isinstance(source, SplitFiles) else []
    for path in files:
        if path is not None:
            require_file(Path(path), "data file", str(path), "check data.source paths (relative to where you run)")
    for i, path in enumerate(cfg.transfer.unlabeled if cfg.transfer else []):
        require_file(Path(path), "unlabeled file", f"transfer.unlabeled.{i}: {path}",
                     "check the path (relative to where you run)")


def check_trackers_installed(cfg: RunConfig) -> None:
    """MLflow is an optional extra: asking for it without it installed is found before anything trains."""
    import importlib.util

    if "mlflow" in cfg.tracking and importlib.util.find_spec("mlflow") is None:
        raise UserError("mlflow is not installed", "tracking", "pip install 'bert-compress[mlflow]', or drop mlflow "
                        "from tracking")


def check_same_vocabulary(cfg: RunConfig, student: CheckpointStudent, where: str) -> None:
    """The same refusals as models.students.student_tokenizer, made before the teacher trains."""
    ours, teachers = vocabulary(student.model), vocabulary(cfg.teacher.model)
    if ours is None or teachers is None or ours == teachers:
        return
    if cfg.task == "qa":
        raise UserError("the student's vocabulary is not the teacher's, and for QA the teacher's start and end "
                        "outputs are per token, which are not mapped across tokenizers yet", f"{where}.model",
                        "use a model with the teacher's vocabulary (e.g. distilbert-base-uncased for an uncased "
                        "BERT teacher)")
    raise UserError(f"distill.method '{student.distill.method}' compares hidden states token by token, so it needs "
                    "the teacher's vocabulary, and this student's tokenizer has another", f"{where}.distill.method",
                    "use logit or hybrid, or a student with the teacher's vocabulary")


def vocabulary(name: str) -> dict | None:
    """Token -> id as the model's tokenizer files hold it (tokenizer.json, vocab.txt or vocab.json); None where none
    of them is on this machine or readable."""
    text = model_file_text(name, "tokenizer.json")
    if text is not None:
        try:
            vocab = json.loads(text).get("model", {}).get("vocab")
        except (ValueError, AttributeError):
            return None
        if isinstance(vocab, list):  # a Unigram model: [token, score] in id order
            return {entry[0]: i for i, entry in enumerate(vocab) if isinstance(entry, list) and entry}
        return vocab if isinstance(vocab, dict) else None
    text = model_file_text(name, "vocab.txt")
    if text is not None:
        return {token: i for i, token in enumerate(text.removesuffix("\n").split("\n"))}  # as transformers reads it
    return model_file_json(name, "vocab.json")


def model_config(name: str) -> dict | None:
    """The model's config.json; None where it is not on this machine or not readable (the run's own loading then
    says why)."""
    return model_file_json(name, "config.json")


def model_file_json(name: str, filename: str) -> dict | None:
    """One JSON file of the model, as a mapping; None where it is not on this machine, not readable or not one."""
    text = model_file_text(name, filename)
    try:
        value = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def model_file_text(name: str, filename: str) -> str | None:
    """One file of a packaged model, a local folder or a hub id the hub cache already holds; None where it is not
    on this machine or not readable."""
    path = Path(resolve_model_path(name))
    if path.exists():
        file = path / filename
    else:  # a hub id: the file only if the hub cache already holds it
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(name, filename)
        except ValueError:  # not a valid hub id either (HFValidationError): a local path that does not exist
            cached = None
        file = Path(cached) if isinstance(cached, str) else None
    try:
        return file.read_text(encoding="utf-8") if file is not None and file.is_file() else None
    except (OSError, ValueError):  # ValueError: not UTF-8
        return None


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
