"""What a run's config says that the models' own configs (or this environment) can refute, checked before anything
trains: a layer the teacher does not have, a layer map that does not fit, a sequence length beyond the teacher's
positions, a checkpoint student with another vocabulary where the teacher's outputs must meet it token by token (QA,
layer transfer), a tracker not installed or a tracking store MLflow cannot write to, a model name that is empty, a
file, a missing folder or a hub id this machine cannot get, a module a prune entry names that its model lacks.

Reads config.json and vocabulary files as JSON or text only (the packaged teacher, local folders, the hub's local
cache), so `compress validate` stays quick (a prune entry that names modules builds its model without weights); what
a hub model that is not on this machine holds, or a vocabulary in another format (a SentencePiece model), is left to
the run, which compares the loaded tokenizers when the student's stage starts. (config.json's vocab_size cannot
tell: it counts padded embedding rows.)"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
from pathlib import Path

from compress.core.config import (
    CheckpointStudent,
    CustomTransformerStudent,
    HubSource,
    LayerDroppedStudent,
    LocalSource,
    RunConfig,
    SplitFiles,
)
from compress.core.errors import UserError, require_file
from compress.core.kd_methods import kd_method, names_where
from compress.core.packaged import PACKAGED_MODELS, resolve_model_path
from compress.distill.trackers import check_mlflow_target


def check_against_models(cfg: RunConfig) -> None:
    check_trackers_installed(cfg)
    check_model_names(cfg)
    check_prune_layers(cfg)
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
        method = kd_method(student.distill.method)
        if isinstance(student, CheckpointStudent) and (cfg.task == "qa" or method.teacher_tokenizer):
            check_same_vocabulary(cfg, student, where)
        layer_map = student.distill.intermediate.layer_map
        if layer_map is not None and method.layer_transfer is not None:
            student_config = model_config(student.model) if isinstance(student, CheckpointStudent) else None
            layers = student_layers(student, student_config, depth)
            if (layers is not None and len(layer_map) != layers) or any(not 0 <= t < depth for t in layer_map):
                per_layer = f"each of the student's {layers} layers" if layers is not None else "each student layer"
                raise UserError(f"layer_map {layer_map} needs one teacher layer (0..{depth - 1}) for {per_layer}",
                                f"{where}.distill.intermediate.layer_map",
                                "give one teacher layer per student layer, or leave it out for the uniform map")


def check_model_names(cfg: RunConfig) -> None:
    """Every model and tokenizer the run loads is a packaged name, a local folder or a hub id this machine can get:
    an empty value, a file (a CSV where the model goes), a path that is not there, or a hub id that is neither in the
    local cache nor reachable is refused before the teacher trains, rather than when a student's stage starts."""
    names = [("teacher.model", cfg.teacher.model, True)]
    for i, student in enumerate(cfg.students):
        if isinstance(student, CheckpointStudent):
            names.append((f"students.{i}.model", student.model, True))
        if getattr(student, "tokenizer", None) is not None:
            names.append((f"students.{i}.tokenizer", student.tokenizer, False))
    for where, name, is_model in names:
        check_model_name(name, where, is_model)


# What a hub id looks like to be a file someone meant instead (data.csv is a valid hub id by the hub's rules).
FILE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".txt", ".parquet", ".yaml", ".yml", ".safetensors", ".bin",
                 ".onnx", ".pt", ".pth", ".zip", ".gz")
GIVE_A_MODEL = "give 'minilm-l6' (packaged), a hub id such as bert-base-uncased, or a folder save_pretrained wrote"


def check_model_name(name: str, where: str, is_model: bool = True) -> None:
    """One model (`is_model`) or tokenizer name, as check_model_names checks it."""
    if not name.strip():
        raise UserError("is empty", where, GIVE_A_MODEL)
    if name in PACKAGED_MODELS:
        resolve_model_path(name)  # one line where the package is not installed
        return
    path = Path(name).expanduser()
    try:
        is_dir, exists = path.is_dir(), path.exists()
    except OSError as err:  # a name too long for the file system
        raise UserError(f"'{name[:60]}...' cannot be looked up ({err.strerror})", where, GIVE_A_MODEL) from None
    if is_dir:
        if is_model and not (path / "config.json").is_file():
            raise UserError(f"'{name}' has no config.json, so it is not a saved model folder", where, GIVE_A_MODEL)
        return
    if exists:
        raise UserError(f"'{name}' is a file, not a model folder", where,
                        f"{GIVE_A_MODEL}; data files go under data.source" if path.suffix.lower() in FILE_SUFFIXES
                        else GIVE_A_MODEL)
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)  # owner/name: no leading '.', '/' or '~', at most one '/', 96 characters
        looks_like_a_path = path.suffix.lower() in FILE_SUFFIXES
    except HFValidationError:
        looks_like_a_path = True
    if looks_like_a_path:
        raise UserError(f"no folder '{name}' here, and it is not a hub id (owner/name)", where,
                        f"check the path (relative to where you run); {GIVE_A_MODEL}")
    check_hub_id_available(name, where, is_model)


def check_hub_id_available(name: str, where: str, is_model: bool) -> None:
    """A hub id the run can load: in the local hub cache, or on a hub this machine reaches (asked once, briefly; a
    hub that does not say leaves it to the run)."""
    from huggingface_hub import try_to_load_from_cache

    from compress.core.hub import hub_reachable

    files = ("config.json",) if is_model else ("tokenizer_config.json", "tokenizer.json", "vocab.txt", "config.json")
    if any(isinstance(try_to_load_from_cache(name, file), str) for file in files):
        return
    if not hub_reachable():
        raise UserError(f"'{name}' is not in the local hub cache, and the Hugging Face hub is unreachable", where,
                        "connect once to download it, give a local folder, or use the packaged 'minilm-l6'")
    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        model_info(name, timeout=10)
    except GatedRepoError:  # it is there; whether this user may read it, the download says
        return
    except RepositoryNotFoundError:
        raise UserError(f"'{name}' is not on the Hugging Face hub (or it is private)", where,
                        f"check the id (huggingface-cli login for a private one); {GIVE_A_MODEL}") from None
    except Exception:  # a slow or unusual hub (a mirror, a proxy): the run's own download says what is wrong
        return


def check_prune_layers(cfg: RunConfig) -> None:
    """The modules an unstructured prune entry names (`layers`), looked up in the model it prunes, built without
    weights (compress.models.students.student_skeleton): a name that is not there is refused before the teacher
    trains, not when the prune stage starts after every student has."""
    entries = [(i, entry) for i, entry in enumerate(cfg.prune) if getattr(entry, "layers", None)]
    if not entries:
        return
    # torch and transformers load here, only for a config that names layers (validate stays quick otherwise)
    from compress.compression.prune import unstructured_targets
    from compress.models.students import student_skeleton

    made_from = {entry.name: entry.model for entry in cfg.prune}  # structured pruning keeps the modules' names
    students = {name: s for s in cfg.students for name in (s.name, f"{s.name}-baseline")}
    for i, entry in entries:
        model = entry.model
        while model in made_from:
            model = made_from[model]
        skeleton = student_skeleton(students[model], cfg.task, cfg.teacher) if model in students else None
        if skeleton is not None:
            unstructured_targets(skeleton, entry.layers, f"prune.{i}.layers")


def check_lengths(cfg: RunConfig, limit: int | None) -> None:
    """Sequence lengths the teacher cannot take (`limit`, its max_position_embeddings; None: unknown) fail before
    any training, not in the bench at the end; checked again when a run reads the data
    (compress.pipeline.stages), for a hub teacher that was not on this machine before."""
    for key, value in (("data.max_length", cfg.data.max_length), ("bench.seq_len", cfg.bench.seq_len)):
        if isinstance(limit, int) and value > limit:
            raise UserError(f"{key} is {value} but the teacher takes at most {limit} positions", key,
                            f"set it to {limit} or less")


def check_data_files_present(cfg: RunConfig) -> None:
    """A local data or unlabeled file that is not there, or a table without the columns the config names, which
    `compress run` refuses before it trains (for `compress validate`; the rest of what is in the files is the run's
    to read)."""
    source = cfg.data.source
    files = [source.train, source.validation, source.test] if isinstance(source, SplitFiles) else []
    for path in files:
        if path is not None:
            require_file(Path(path), "data file", str(path), "check data.source paths (relative to where you run)")
            if isinstance(source, LocalSource):
                check_columns(Path(path), [source.text_column, source.text_pair_column, source.label_column])
    for i, path in enumerate(cfg.transfer.unlabeled if cfg.transfer else []):
        require_file(Path(path), "unlabeled file", f"transfer.unlabeled.{i}: {path}",
                     "check the path (relative to where you run)")
    if isinstance(source, HubSource):
        check_hub_dataset_present(source.dataset)


def check_columns(path: Path, columns: list[str | None]) -> None:
    """The columns a local table must have, looked up in its first row, as compress.data.sources refuses them."""
    have = table_columns(path)
    for column in columns:
        if have is not None and column is not None and column not in have:
            raise UserError(f"no column '{column}' (has: {', '.join(have)})", str(path),
                            "set data.source.text_column / text_pair_column / label_column")


def table_columns(path: Path) -> list[str] | None:
    """A table file's column names from its first row: a CSV/TSV header, a JSONL file's first object, a Parquet
    schema; None where only the whole file would say (a JSON list) or it cannot be read (the run then says why)."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            with path.open(encoding="utf-8-sig", newline="") as f:
                return next(csv.reader(f, delimiter="\t" if suffix == ".tsv" else ","), None)
        if suffix in (".jsonl", ".json"):
            with path.open(encoding="utf-8-sig") as f:
                first = next((line for line in f if line.strip()), "")
            row = json.loads(first) if not first.lstrip().startswith("[") else None  # a list: the whole file
            return list(row) if isinstance(row, dict) else None
        if suffix == ".parquet":
            import pyarrow.parquet  # installed with datasets; only for a Parquet file

            return pyarrow.parquet.read_schema(path).names
    except Exception:  # not UTF-8, not JSON, a damaged Parquet file: compress.data.sources says which, in one line
        return None
    return None


def check_hub_dataset_present(dataset: str) -> None:
    """A hub dataset the run can read: one the hub serves, or (offline) one in the hub's or datasets' local cache."""
    from huggingface_hub import constants

    from compress.core.hub import hub_reachable

    if hub_reachable() or (Path(constants.HF_HUB_CACHE) / f"datasets--{dataset.replace('/', '--')}").is_dir():
        return
    import datasets.config  # seconds to import: only for a hub dataset while the hub is unreachable

    if (Path(datasets.config.HF_DATASETS_CACHE) / dataset.replace("/", "___")).is_dir():
        return
    raise UserError(f"hub dataset '{dataset}' is not in the local cache, and the Hugging Face hub is unreachable",
                    "data.source.dataset", "connect once to download it, or save it to files and use a local source "
                                           "(kind: local, conll or squad)")


def check_run_folder(cfg: RunConfig) -> None:
    """The run folder can be made where output_dir puts it (for `compress validate`; the run makes it, in
    compress.pipeline.pipeline.make_run_folder): the folders missing on the way are made and removed again."""
    made = []
    try:  # (a name too long for the file system fails even the look: OSError from exists())
        folder, missing = cfg.run_dir.absolute(), []
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        if not folder.is_dir():
            raise FileExistsError(errno.EEXIST, "a file is there")
        for new in reversed(missing):
            new.mkdir()
            made.append(new)
    except OSError as err:
        raise run_folder_error(cfg.run_dir, err) from None
    finally:
        for new in reversed(made):
            with contextlib.suppress(OSError):  # another process (a run started meanwhile) may be using it
                new.rmdir()


def run_folder_error(run_dir: Path, err: OSError) -> UserError:
    """The run folder cannot be made: a file where a folder goes, no permission, a name too long."""
    if isinstance(err, FileExistsError | NotADirectoryError):
        reason = "a file is there"
    else:
        reason = err.strerror or type(err).__name__
    if err.errno == errno.ENAMETOOLONG:  # the run's name is at most 100 characters (config.MAX_NAME_LENGTH)
        return UserError(f"cannot write the run folder ({reason})", str(run_dir),
                         "shorten output_dir: a folder name in it, or the whole path, is too long")
    return UserError(f"cannot write the run folder ({reason})", str(run_dir), "set output_dir to a writable folder")


def check_trackers_installed(cfg: RunConfig) -> None:
    """MLflow is an optional extra: asking for it without it installed is found before anything trains, and so is a
    tracking URI it could not log to (compress.distill.trackers.check_mlflow_target)."""
    import importlib.util

    if "mlflow" in cfg.tracking and importlib.util.find_spec("mlflow") is None:
        raise UserError("mlflow is not installed", "tracking", "pip install 'bert-compress[mlflow]', or drop mlflow "
                        "from tracking")
    if "mlflow" in cfg.tracking:
        check_mlflow_target()


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
                    f"use {names_where(teacher_tokenizer=False)}, or a student with the teacher's vocabulary")


def vocabulary(name: str) -> dict | None:
    """Token -> id as the model's tokenizer files hold it (tokenizer.json, vocab.txt or vocab.json); None where none
    of them is on this machine or readable."""
    text = model_file_text(name, "tokenizer.json")
    if text is not None:
        try:
            vocab = json.loads(text).get("model", {}).get("vocab")
        except (ValueError, AttributeError, RecursionError):
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
    except (ValueError, RecursionError):
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
