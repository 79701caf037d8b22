"""What each stage of `compress run` does, as plain functions over the run's config and data: each composes the
domain packages (models, distill, prune, quantize, exports, bench), writes under the run folder and returns
`(outputs written, typed result)`. When to run them, and what they are hashed with, is compress.pipeline.pipeline's.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import set_seed
from transformers import AutoConfig

from bench.devices import best_device, check_device
from bench.flops import gemm_peak_flops
from bench.measure import OnDevice, time_model_and_graphs, time_on_device
from bench.results import capture_environment
from compress.compression.prune import Pruner, count_nonzero, layer_sparsity, prune_iteratively
from compress.compression.quantize import HALF_PRECISIONS, argmax_agreement, quantize
from compress.core import distributed
from compress.core.artifacts import compressed_size_mb, folder_size_mb, save_pretrained_atomic, write_json_atomic
from compress.core.config import (
    LAYER_METHODS,
    PER_TEXT_TASKS,
    PruneConfig,
    QuantizeConfig,
    RunConfig,
    StudentConfig,
    TrainConfig,
    data_hash,
    stable_hash,
)
from compress.core.errors import UserError
from compress.core.hub import hub_access
from compress.core.progress import console, track_steps
from compress.core.results import (
    BenchResult,
    CachedOutputs,
    ExportResult,
    ModelArtifact,
    PruneRecord,
    TrainResult,
    to_json,
)
from compress.data.augment import Candidates
from compress.data.batching import MODEL_INPUTS, EncodedSplit, make_loader, predict, token_mask
from compress.data.store import load_splits, save_splits
from compress.data.tasks import TASKS, Task
from compress.distill.loop import TrainLog, accumulate_gradients, train_model
from compress.distill.objectives import intermediate_loss, layer_transfer, task_loss
from compress.distill.progressive import train_intermediate_stage, train_layers_progressively
from compress.models.int8 import is_int8_model, save_quantized
from compress.models.loading import load_saved_model, load_task_model, load_tokenizer, resolve_model_path
from compress.models.neighbours import embedding_candidates, mlm_candidates
from compress.models.students import (
    OWN_FAMILIES,
    build_student,
    same_vocabulary,
    student_tokenizer,
    teacher_embeddings,
)
from compress.pipeline import preflight
from exports.variants import GraphScorer, export_and_score


@dataclass(frozen=True)
class Data:
    task: Task
    train: EncodedSplit
    validation: EncodedSplit
    test: EncodedSplit
    label_names: list[str] | None
    max_length: int
    fingerprint: str  # hash of the tokenised splits: an edited data file invalidates what was trained on it
    transfer: EncodedSplit | None = None  # text without labels for KD students (transfer:), labels IGNORE_INDEX
    transfer_fingerprint: str | None = None  # hash of the tokenised transfer set: its files' contents, not paths

    def predict(self, model: torch.nn.Module, split: EncodedSplit, tokenizer) -> dict[str, torch.Tensor]:
        """The model's task outputs on `split` (per-token outputs padded to max_length)."""
        return predict(model, split, tokenizer, self.task.outputs, self.pad_to)

    @property
    def pad_to(self) -> int | None:
        return self.max_length if self.task.per_token else None

    def word2vec_corpus(self) -> list[list[int]]:
        """The token ids a BiLSTM's Word2Vec learns from: the labelled training split and the transfer set's real
        text (the training pool's rest and the unlabeled files, which come first in it; not the augmented copies,
        whose replaced words would teach it false neighbours). A KD student and its baseline share it: text
        without labels is not the teacher's knowledge, so kd_gain still measures only what the teacher adds."""
        ids = [f["input_ids"] for f in self.train.features]
        if self.transfer is None:
            return ids
        found = self.transfer.meta["texts"]
        real = found.from_rest + found.from_files
        text_of = self.transfer.meta.get("features", {}).get("example_index") or range(len(self.transfer))  # QA
        return ids + [f["input_ids"] for f, text in zip(self.transfer.features, text_of) if text < real]


# ---------------------------------------------------------------- device


def run_device(cfg: RunConfig) -> torch.device:
    """The device `cfg.device` names on this machine (auto: CUDA, then MPS, then the CPU; with several processes on
    CUDA, this process's GPU), or one line: an absent device (there, or in bench.devices), or fp16 training without
    a CUDA GPU."""
    device = best_device() if cfg.device == "auto" else check_device(cfg.device, "device", allow_index=True)
    device = distributed.process_device(device)
    for bench_device in cfg.bench.other_devices():
        check_device(bench_device, "bench.devices", allow_index=True)
    trainings = [("teacher.train", cfg.teacher.train)] + [(f"students.{i}.train", s.train)
                                                          for i, s in enumerate(cfg.students)]
    for where, train in trainings:
        if train.mixed_precision == "fp16" and device.type != "cuda":
            raise UserError(f"mixed_precision fp16 needs a CUDA GPU, and this run's device is {device}",
                            f"{where}.mixed_precision", "use bf16 (CPUs with bf16 instructions and GPUs) or no")
    return device


@contextmanager
def training_on(device: torch.device) -> Iterator[None]:
    """Accelerate, which places every training, picks CUDA, then MPS, then the CPU itself, once per process: for the
    run, its CPU switch (ACCELERATE_USE_CPU) says whether the run is on the CPU, its process-wide state starts
    again where an earlier run in this process left it on another device, and "cuda" means the GPU the run names."""
    saved = os.environ.get("ACCELERATE_USE_CPU")
    os.environ["ACCELERATE_USE_CPU"] = "true" if device.type == "cpu" else "false"
    if PartialState._shared_state and PartialState().device.type != device.type:
        AcceleratorState._reset_state(reset_partial_state=True)
    try:
        with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
            yield
    finally:
        if saved is None:
            os.environ.pop("ACCELERATE_USE_CPU", None)
        else:
            os.environ["ACCELERATE_USE_CPU"] = saved


# ---------------------------------------------------------------- data


def prepare_data(cfg: RunConfig) -> Data:
    """Load, split and tokenise once (deterministic for a config, so it is recomputed, not cached)."""
    task = TASKS[cfg.task]
    tokenizer = load_tokenizer(cfg.teacher.model, cfg.teacher.trust_remote_code)
    check_lengths(cfg)
    enc, label_names = task.build(cfg, tokenizer, augmentation_words(cfg, tokenizer))
    data = encoded_data(task, enc, label_names, cfg.data.max_length)
    describe_data(data)
    return data


def describe_data(data: Data) -> None:
    labels = f", {len(data.label_names)} labels ({', '.join(data.label_names)})" if data.label_names else ""
    console.print(f"data ({data.task.name}): {len(data.train)} train / {len(data.validation)} validation / "
                  f"{len(data.test)} test features{labels}")
    if data.transfer is not None:
        console.print(describe_transfer_set(data.transfer))


SPLITS = ("train", "validation", "test", "transfer")


def save_data(data: Data, folder: Path) -> None:
    """The tokenised splits, kept for the next run of this config that must train (compress.data.store), in place
    of the splits of any other data key (nothing reads those: the record of this key says what the data is now)."""
    splits = {name: getattr(data, name) for name in SPLITS if getattr(data, name) is not None}
    about = {"label_names": data.label_names, "max_length": data.max_length, "fingerprint": data.fingerprint,
             "transfer_fingerprint": data.transfer_fingerprint}
    try:
        save_splits(folder, splits, about)
    except (TypeError, OSError, pa.ArrowException) as err:  # a full disk, a meta JSON cannot hold: a speed-up lost
        shutil.rmtree(folder.with_name(folder.name + ".tmp"), ignore_errors=True)
        console.print(f"[dim]data: the tokenised splits were not kept ({type(err).__name__}); the next run that "
                      "trains tokenises them again[/]")
        return
    for other in folder.parent.glob("splits-*"):
        if other.is_dir() and other != folder:
            shutil.rmtree(other, ignore_errors=True)


def load_data(task: Task, folder: Path) -> Data | None:
    """What save_data kept in `folder`; None where nothing whole is there."""
    saved = load_splits(folder)
    if saved is None:
        return None
    splits, about = saved
    return Data(task, splits["train"], splits["validation"], splits["test"], about["label_names"],
                about["max_length"], about["fingerprint"], splits.get("transfer"), about["transfer_fingerprint"])


class RunData:
    """The run's data as the pipeline sees it. The stage hashes read only its fingerprints, which are kept in the run
    folder's cache under a key of everything that makes them (`data_key`), so a run whose stages are all done (a
    re-run, `--only report`) neither reads nor tokenises the data; the splits are read on first use (`load`), from
    the copy an earlier run kept beside the fingerprints, or built and kept."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        key = data_key(cfg)
        self.record_path = cfg.run_dir / "cache" / f"data-{key}.json"
        self.splits_path = cfg.run_dir / "cache" / f"splits-{key}"
        self.record = read_data_record(self.record_path)
        self._data: Data | None = None
        self.built = False  # whether this run read and tokenised the data

    @property
    def cached(self) -> bool:
        return self.record is not None

    @property
    def seconds(self) -> float:
        """What building the splits took, in this run or when the record was written."""
        return self.record["seconds"] if self.record is not None else 0.0

    def load(self) -> Data:
        """The splits: those an earlier run of this data kept (with its record), or built now and kept."""
        if self._data is None and self.record is not None:
            self._data = load_data(TASKS[self.cfg.task], self.splits_path)
            if self._data is not None:
                console.print(f"[dim]data: the tokenised splits an earlier run kept (cache/{self.splits_path.name})[/]")
                describe_data(self._data)
        if self._data is None:
            started = time.perf_counter()
            self._data = prepare_data(self.cfg)
            self.built = True
            self.record = data_record(self._data) | {"seconds": round(time.perf_counter() - started, 3)}
            if distributed.is_main():
                save_data(self._data, self.splits_path)  # before the record, which says they are whole
                write_json_atomic(self.record_path, self.record)
        return self._data

    @property
    def fingerprint(self) -> str:
        return self._recorded("fingerprint")

    @property
    def transfer_fingerprint(self) -> str | None:
        return self._recorded("transfer_fingerprint")

    @property
    def word2vec_fingerprint(self) -> str | None:
        return self._recorded("word2vec_fingerprint")

    def _recorded(self, name: str):
        if self.record is None:
            self.load()
        return self.record[name]


def data_record(data: Data) -> dict:
    """The fingerprints the stage hashes read (a BiLSTM's Word2Vec corpus only matters with a transfer set)."""
    corpus = data_hash(data.word2vec_corpus()) if data.transfer is not None else None
    return {"fingerprint": data.fingerprint, "transfer_fingerprint": data.transfer_fingerprint,
            "word2vec_fingerprint": corpus}


def read_data_record(path: Path) -> dict | None:
    """A data record this code wrote; None where there is none or it is damaged (the data is then built again)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    keys = {"fingerprint", "transfer_fingerprint", "word2vec_fingerprint", "seconds"}
    return record if isinstance(record, dict) and set(record) == keys else None


DATA_FORMAT = 1  # raise when a change to the code encodes the same data differently: old records then miss


def data_key(cfg: RunConfig) -> str:
    """Everything that makes the tokenised splits: the task, data and transfer settings, the seed, the teacher (by
    name, and a local folder's tokenizer files by content) and the contents of every local file the data reads. As
    with the augmented copies' cache, a hub dataset is known by its name and a teacher's weights by its name or
    path."""
    source = cfg.data.source
    files = [getattr(source, split, None) for split in ("train", "validation", "test")]
    files += cfg.transfer.unlabeled if cfg.transfer else []
    teacher = Path(resolve_model_path(cfg.teacher.model))
    tokenizer_files = sorted(p for p in teacher.iterdir() if p.is_file() and p.suffix in TOKENIZER_SUFFIXES) \
        if teacher.is_dir() else []
    return stable_hash("data", str(DATA_FORMAT), cfg.task, cfg.data, cfg.transfer, str(cfg.seed), cfg.teacher.model,
                       str(cfg.teacher.trust_remote_code), [file_digest(Path(f)) for f in files if f is not None],
                       [[p.name, file_digest(p)] for p in tokenizer_files])


TOKENIZER_SUFFIXES = (".json", ".txt", ".model")  # tokenizer.json, vocab.txt, merges.txt, SentencePiece models


def file_digest(path: Path) -> str | None:
    """The file's SHA-256; None where it cannot be read (the data stage then says why in one line)."""
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def data_for(cfg: RunConfig, data: Data, tokenizer) -> Data:
    """`data` as `tokenizer` encodes it. The splits are the teacher tokenizer's; a student with a tokenizer of its
    own reads the same texts, in the same order, encoded its way, so the cached outputs still line up by row
    (classification: one output per text), and NER's per-token ones are read at the teacher's token for each
    word (Task.align_to_teacher). Encoded once per data and vocabulary."""
    teacher = load_tokenizer(cfg.teacher.model, cfg.teacher.trust_remote_code)
    if same_vocabulary(tokenizer, teacher):
        return data
    key = data_hash(data.fingerprint, data.transfer_fingerprint, sorted(tokenizer.get_vocab().items()))
    if key not in _ENCODED_FOR:
        enc, label_names = data.task.build(cfg, tokenizer, augmentation_words(cfg, teacher))
        own = encoded_data(data.task, enc, label_names, data.max_length)
        assert [len(split) for split in (own.train, own.transfer) if split is not None] == \
            [len(split) for split in (data.train, data.transfer) if split is not None], "one row per text"
        align = data.task.align_to_teacher
        if align is not None:
            transfer = align(own.transfer, data.transfer) if own.transfer is not None else None
            own = replace(own, train=align(own.train, data.train), transfer=transfer)
        _ENCODED_FOR[key] = own
    return _ENCODED_FOR[key]


_ENCODED_FOR: dict[str, Data] = {}


def encoded_data(task: Task, enc: dict[str, EncodedSplit], label_names: list[str] | None, max_length: int) -> Data:
    """Data from a task's encoded splits, fingerprinted by their tokens."""
    transfer = enc.get("transfer")
    return Data(task, enc["train"], enc["validation"], enc["test"], label_names, max_length,
                data_hash([enc[name].features for name in ("train", "validation", "test")], label_names),
                transfer, data_hash(transfer.features) if transfer is not None else None)


def augmentation_words(cfg: RunConfig, tokenizer) -> Candidates | None:
    """Where transfer.augment's replacement words come from: the teacher's MLM head where its checkpoint has one
    (source mlm or auto), else its input embeddings' nearest words. None without augmentation. Loaded on first
    use, so a resumed run whose copies are cached loads nothing."""
    augment = cfg.transfer.augment if cfg.transfer else None
    if augment is None:
        return None

    @functools.cache
    def load() -> Candidates:
        if augment.source != "embeddings":
            words = mlm_candidates(resolve_model_path(cfg.teacher.model), tokenizer, augment.candidates,
                                   cfg.data.max_length, cfg.teacher.trust_remote_code)
            if words is not None:
                console.print("augmentation: replacement words from the teacher's masked-LM head")
                return words
            if augment.source == "mlm":
                raise UserError(f"the teacher checkpoint '{cfg.teacher.model}' has no masked-LM head",
                                "transfer.augment.source", "use source: embeddings (or auto)")
        console.print("augmentation: replacement words from the teacher's input embeddings")
        return embedding_candidates(teacher_embeddings(cfg.teacher), tokenizer, augment.candidates)

    def candidates(sentences: list[list[str]], positions: list[list[int]]) -> list[list[list[str]]]:
        return load()(sentences, positions)

    return candidates


def describe_transfer_set(transfer: EncodedSplit) -> str:
    found = transfer.meta["texts"]
    dropped = [f"{found.left_out} repeated or already in a labelled split"] if found.left_out else []
    dropped += [f"{found.capped} over transfer.max_examples"] if found.capped else []
    windows = f" in {len(transfer)} windows" if len(transfer) != len(found.texts) else ""  # QA's long contexts
    return (f"transfer set: {len(found.texts)} texts without labels{windows} ({found.from_rest} from the training "
            f"pool's rest, {found.from_files} from unlabeled files, {found.from_augment} augmented copies)"
            + (f"; left out: {', '.join(dropped)}" if dropped else ""))


def check_lengths(cfg: RunConfig) -> None:
    """Sequence lengths the teacher cannot take, from its config as transformers loads it (a hub teacher is on this
    machine by now): preflight checked them where config.json was already here."""
    path = resolve_model_path(cfg.teacher.model)
    with hub_access():
        try:
            limit = getattr(AutoConfig.from_pretrained(path, trust_remote_code=cfg.teacher.trust_remote_code),
                            "max_position_embeddings", None)
        except (OSError, ValueError):
            return  # the model load right after reports this properly
    preflight.check_lengths(cfg, limit)


# ---------------------------------------------------------------- models


def finetune_teacher(cfg: RunConfig, data: Data, config_hash: str) -> tuple[list[str], ModelArtifact]:
    """The teacher with a new task head trained on the labels (or, with finetune: false, as it comes)."""
    tokenizer = load_tokenizer(cfg.teacher.model, cfg.teacher.trust_remote_code)
    set_seed(cfg.seed)  # the new head's initial weights must not depend on what ran before in this process
    model = load_task_model(cfg.teacher.model, cfg.task, data.label_names, cfg.teacher.trust_remote_code,
                            new_head=cfg.teacher.finetune)
    trained = None
    if cfg.teacher.finetune:
        trained = train_model(model, data.train, tokenizer, task_loss(data.task, None), cfg.teacher.train, cfg.seed,
                              validate=validator(cfg, cfg.teacher.train, data, tokenizer),
                              log=train_log(cfg, "teacher", config_hash, "fine-tune teacher"))
    return finish_model(cfg, "teacher", "teacher", None, model, tokenizer, data, trained, config_hash)


def cache_teacher_outputs(cfg: RunConfig, teacher: ModelArtifact, data: Data) -> tuple[list[str], CachedOutputs]:
    """The teacher's outputs on the training split as .npy files (per-token outputs padded to max_length)."""
    model, tokenizer = load_saved(cfg, teacher)
    model = model.to(run_device(cfg))
    outputs = distributed.gather_shares(lambda start, stop: data.predict(model, data.train.part(start, stop),
                                                                         tokenizer), len(data.train))
    if outputs is None:  # another process than the main one: its share is handed over
        raise distributed.LeftToMain("teacher_logits")
    paths = teacher_output_paths(data.task)
    save_outputs_atomic(cfg.run_dir, paths, outputs)
    return [str(p) for p in paths.values()], CachedOutputs(features=len(data.train))


LABEL_BATCH_SIZE = 64  # inference only: no gradients or optimizer state, so larger batches than training fit


def cache_transfer_outputs(cfg: RunConfig, teacher: ModelArtifact, data: Data) -> tuple[list[str], CachedOutputs]:
    """The teacher labels the transfer set once: its outputs as .npy files beside the training split's, batched
    under inference mode with a progress bar. A kill mid-labelling leaves no half-written file (the stage runs
    again from the start on resume)."""
    assert data.transfer is not None, "a transfer set to label"
    model, tokenizer = load_saved(cfg, teacher)
    model = model.to(run_device(cfg))

    def label(start: int, stop: int) -> dict[str, torch.Tensor]:  # this process's share of the rows
        with track_steps("teacher labels the transfer set", math.ceil((stop - start) / LABEL_BATCH_SIZE)) as advance:
            return predict(model, data.transfer.part(start, stop), tokenizer, data.task.outputs, data.pad_to,
                           LABEL_BATCH_SIZE, after_batch=advance)

    outputs = distributed.gather_shares(label, len(data.transfer))
    if outputs is None:
        raise distributed.LeftToMain("teacher_transfer")
    paths = teacher_output_paths(data.task, "transfer")
    save_outputs_atomic(cfg.run_dir, paths, outputs)
    return [str(p) for p in paths.values()], CachedOutputs(features=len(data.transfer))


def save_outputs_atomic(run_dir: Path, paths: dict[str, Path], outputs: dict[str, torch.Tensor]) -> None:
    """Each output to its .npy file through a temporary file, so a reader never finds half of one."""
    (run_dir / "cache").mkdir(exist_ok=True)
    for name, values in outputs.items():
        tmp = run_dir / paths[name].with_suffix(".tmp.npy")
        np.save(tmp, values.numpy())
        tmp.replace(run_dir / paths[name])


def teacher_output_paths(task: Task, split: str = "train") -> dict[str, Path]:
    return {name: Path("cache") / f"teacher_{split}_{name}.npy" for name in task.outputs}


def train_student(cfg: RunConfig, index: int, student: StudentConfig, teacher: ModelArtifact, data: Data,
                  teacher_logits: dict[str, np.ndarray] | None, config_hash: str,
                  transfer_logits: dict[str, np.ndarray] | None = None) -> tuple[list[str], ModelArtifact]:
    """A student of any kind, trained with KD from the teacher's cached outputs (on the training split, and on
    the transfer set when there is one) or, as baseline, on the labelled split alone."""
    kd = teacher_logits is not None
    name, role = (student.name, "student") if kd else (f"{student.name}-baseline", "baseline")
    where = f"students.{index}"
    tokenizer = student_tokenizer(student, cfg.task, cfg.teacher, where)
    data = data_for(cfg, data, tokenizer)
    # HF students start from the teacher's pretrained weights, not its fine-tuned ones, so the baseline learns the
    # task only from labels and the comparison with KD is fair.
    set_seed(cfg.seed)  # same initialisation whether earlier stages ran or were resumed
    model = build_student(student, cfg.task, data.label_names, cfg.teacher, tokenizer, data.word2vec_corpus(),
                          cfg.seed, where=where)
    train = distillation_split(data, teacher_logits, transfer_logits) if kd else data.train
    log = train_log(cfg, name, config_hash, f"{'distil' if kd else 'train'} {name}")
    method, stage_seconds = student.distill.method if kd else None, 0.0
    loss = task_loss(data.task, student.distill if kd else None)
    if method in LAYER_METHODS:  # the teacher's features come online, from the loss
        layer_terms = layer_transfer(student, model.config, load_saved_model(cfg.run_dir / teacher.dir, cfg.task),
                                     where)
        if method == "intermediate":
            loss = intermediate_loss(data.task, student.distill, layer_terms)
        elif method == "progressive":  # layer by layer first, then logit KD for the whole student
            stage_seconds = train_layers_progressively(model, layer_terms, train, tokenizer, student.train,
                                                       student.distill, cfg.seed, log)
        else:  # tinybert: every layer's terms first, then logit KD
            stage_seconds = train_intermediate_stage(model, layer_terms, train, tokenizer, student.train,
                                                     student.distill, cfg.seed, log)
    trained = train_model(model, train, tokenizer, loss, student.train, cfg.seed,
                          validate=validator(cfg, student.train, data, tokenizer), log=log)
    trained = replace(trained, seconds=trained.seconds + stage_seconds)
    files, result = finish_model(cfg, name, role, student.kind, model, tokenizer, data, trained, config_hash)
    seen = len(data.transfer) if kd and data.transfer is not None else 0  # baselines never see the transfer set
    return files, replace(result, transfer_examples=seen)


def distillation_split(data: Data, teacher_logits: dict[str, np.ndarray],
                       transfer_logits: dict[str, np.ndarray] | None) -> EncodedSplit:
    """What a KD student trains on: the labelled split with the teacher's outputs, then (with a transfer set) the
    transfer set with the teacher's outputs and its labels dropped, so its rows add KD terms and never CE."""
    labelled = data.train.with_teacher(teacher_logits)
    if data.transfer is None:
        return labelled
    assert transfer_logits is not None, "a transfer set comes with the teacher's outputs on it"
    return labelled.followed_by(data.transfer.without_labels().with_teacher(transfer_logits))


def prune_model(cfg: RunConfig, index: int, spec: PruneConfig, source: ModelArtifact, data: Data,
                teacher_logits: dict[str, np.ndarray], config_hash: str) -> tuple[list[str], ModelArtifact]:
    """Prune `source` to the target in `spec.steps` steps; after each, recover with KD against the teacher's
    cached outputs and score the validation split (logged, and kept in the report row)."""
    name = spec.name
    model, tokenizer = load_saved(cfg, source)
    data = data_for(cfg, data, tokenizer)
    train = data.train.with_teacher(teacher_logits)
    score = validation_scorer(cfg, data, tokenizer)
    loss = task_loss(data.task, spec.recovery.distill)

    def gradients(m: torch.nn.Module) -> None:
        accumulate_gradients(m, train, tokenizer, loss, cfg.seed)

    def recover(step: int) -> float:
        log = train_log(cfg, f"{name}.step{step}", config_hash, f"recover {name} ({step}/{spec.steps})")
        return train_model(model, train, tokenizer, loss, spec.recovery.train_config(), cfg.seed, validate=score,
                           log=log).seconds

    steps, seconds = prune_iteratively(Pruner(model, spec, f"prune.{index}"), cfg.seed, score,
                                       recover if spec.recovery.epochs else None, gradients,
                                       log_path(cfg, name) if distributed.is_main() else None, name)
    trained = TrainResult(steps=0, seconds=seconds, final_loss=0.0, epochs_run=spec.recovery.epochs * spec.steps)
    files, result = finish_model(cfg, name, "pruned", source.student_kind, model, tokenizer, data, trained,
                                 config_hash, rel=f"pruned/{name}")
    for step in range(1, spec.steps + 1):
        checkpoint_path(cfg, f"{name}.step{step}", config_hash).unlink(missing_ok=True)
    sparsity = {k: v for k, v in layer_sparsity(model).items() if v > 0}
    # Recovery trains on the labelled split; the weights it starts from saw what the source saw.
    return files, replace(result, source=source.name, prune=PruneRecord(spec.kind, steps, sparsity),
                          transfer_examples=source.transfer_examples)


def quantize_model(cfg: RunConfig, spec: QuantizeConfig, source: ModelArtifact, data: Data,
                   config_hash: str) -> tuple[list[str], ModelArtifact]:
    """A lower-precision copy of `source`; how often it picks what the fp32 model picks is measured on the test
    split. Int8 runs on the CPU (PyTorch's int8 kernels are CPU ones); bf16 and fp16 on the run's device."""
    fp32, tokenizer = load_saved(cfg, source)
    data = data_for(cfg, data, tokenizer)
    if spec.method in HALF_PRECISIONS:
        fp32 = fp32.to(run_device(cfg))
    model = quantize(fp32, spec.method)
    mask = token_mask(data.test, data.max_length) if data.task.per_token else None
    agreement = argmax_agreement(data.predict(fp32, data.test, tokenizer), data.predict(model, data.test, tokenizer),
                                 mask)
    files, result = finish_model(cfg, spec.name, "quantized", source.student_kind, model, tokenizer, data, None,
                                 config_hash, rel=f"quantized/{spec.name}", weights_of=fp32)
    return files, replace(result, source=source.name, argmax_agreement=agreement,
                          transfer_examples=source.transfer_examples,
                          precision="int8" if spec.method == "dynamic_int8" else spec.method)


def finish_model(cfg: RunConfig, name: str, role: str, student_kind: str | None, model, tokenizer, data: Data,
                 trained: TrainResult | None, config_hash: str, rel: str | None = None,
                 weights_of=None) -> tuple[list[str], ModelArtifact]:
    """Evaluate on the test split, save atomically, and describe the model for the report. `weights_of` is the
    fp32 model whose parameters an int8 model stores (PyTorch hides packed int8 weights from parameters()).
    With several processes, the main one alone does this: the others stop here (distributed.LeftToMain)."""
    if not distributed.is_main():
        raise distributed.LeftToMain(name)
    metrics = data.task.evaluate(data.predict(model, data.test, tokenizer), data.test, cfg, data.label_names)
    if cfg.task in PER_TEXT_TASKS:  # in config.json, so whoever scores the folder (or its export) feeds it the same
        model.config.trained_on_text_pairs = getattr(cfg.data.source, "text_pair_column", None) is not None
    rel = rel or (name if role == "teacher" else f"students/{name}")
    if role == "quantized" and is_int8_model(model):
        save_quantized(model, tokenizer, cfg.run_dir / rel)
    else:
        save_pretrained_atomic(model, tokenizer, cfg.run_dir / rel)
    checkpoint_path(cfg, name, config_hash).unlink(missing_ok=True)  # the saved model supersedes it
    console.print(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    weights = weights_of if weights_of is not None else model
    params = sum(p.numel() for p in weights.parameters())
    nonzero = count_nonzero(weights)
    # family is the saved architecture (what loads it); student_kind says how the student was made.
    return [rel], ModelArtifact(
        name=name, role=role, family=model.config.model_type, student_kind=student_kind, dir=rel, params=params,
        nonzero_params=nonzero, sparsity=1 - nonzero / params, size_mb=folder_size_mb(cfg.run_dir / rel),
        size_mb_compressed=compressed_size_mb(cfg.run_dir / rel), metrics=metrics,
        train_seconds=round(trained.seconds, 2) if trained else 0.0, epochs_run=trained.epochs_run if trained else 0,
        best_epoch=trained.best_epoch if trained else None, hash=config_hash)


# ---------------------------------------------------------------- export and bench


def export_model(cfg: RunConfig, model_result: ModelArtifact, data: Data, int8_variants: list[str],
                 config_hash: str) -> tuple[list[str], ExportResult]:
    """ONNX (optimum for HF families, torch.onnx for ours), parity against PyTorch, the metric again with ONNX
    Runtime; then the optimised graph and the int8 variants beside it, each scored the same way."""
    name = model_result.name
    model, tokenizer = load_saved(cfg, model_result)
    data = data_for(cfg, data, tokenizer)
    out_dir = cfg.run_dir / "exports" / name

    def evaluate(outputs: dict[str, torch.Tensor]) -> dict:
        return data.task.evaluate(outputs, data.test, cfg, data.label_names)

    score = GraphScorer(model, tokenizer, data.test, data.task.outputs, data.pad_to, evaluate, data.task.metric,
                        with_reference=bool(int8_variants))
    static = any(v.startswith("static") for v in int8_variants)
    calibration = calibration_batches(cfg, data, tokenizer) if static else None
    result = export_and_score(name, model, tokenizer, out_dir, model_result.family not in OWN_FAMILIES,
                              data.task.export_task, cfg.export.opset, cfg.export.optimize, int8_variants,
                              calibration, score, cfg.export.parity_atol, cfg.run_dir, config_hash)
    return [str(out_dir.relative_to(cfg.run_dir))], result


def calibration_batches(cfg: RunConfig, data: Data, tokenizer) -> list[dict[str, np.ndarray]]:
    """Static int8's activation ranges come from real training text: the first shuffled training batches."""
    loader = make_loader(data.train, tokenizer, batch_size=16, shuffle=True, seed=cfg.seed)
    batches = []
    for batch in loader:
        batches.append({k: v.numpy() for k, v in batch.items() if k in MODEL_INPUTS})
        if len(batches) == cfg.export.quantize.calibration_batches:
            break
    return batches


def bench_models(cfg: RunConfig, models: list[ModelArtifact],
                 exports: dict[str, ExportResult]) -> tuple[list[str], BenchResult]:
    """Latency of every model in PyTorch and, interleaved with it, each of its ONNX graphs; bench.json."""
    b = cfg.bench
    if distributed.world_size() > 1 and not b.threads:
        # A launcher runs each process on one thread (torchrun's OMP_NUM_THREADS=1); bench as one process would,
        # on every core, as ONNX Runtime's sessions do.
        torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    results, on_device = {}, {}
    # The CPU's GEMM peak in each precision the models run in (a bf16 row against the bf16 peak); the fp32 one always.
    peaks = {torch.float32: gemm_peak_flops(torch.device("cpu"), torch.get_num_threads())}
    with track_steps("bench", len(models)) as advance:
        for m in models:
            model, tokenizer = load_saved(cfg, m)
            dtype = next(model.parameters()).dtype
            if dtype not in peaks:
                peaks[dtype] = gemm_peak_flops(torch.device("cpu"), torch.get_num_threads(), dtype)
            export = exports.get(m.name)
            graphs = {v.variant: cfg.run_dir / v.onnx_path for v in export.variants if not v.failed} if export else {}
            names = [n for n in MODEL_INPUTS if n in tokenizer.model_input_names]
            results[m.name] = time_model_and_graphs(model, names, graphs, b.batch_size, b.seq_len, b.warmup,
                                                    b.iters, b.threads, cfg.seed, peaks[dtype], b.pause_s())
            if b.other_devices():  # kept for the devices beside the CPU, where every model is timed at once
                on_device[m.name] = OnDevice(model, names, graphs.get("fp32"), results[m.name].flops)
            advance()
    for device in b.other_devices():
        timed = time_on_device(on_device, device, b.batch_size, b.seq_len, b.warmup, b.iters, cfg.seed, b.pause_s())
        for name, timings in timed.items():
            results[name] = replace(results[name], devices=results[name].devices | {device: timings})
    half_peaks = {f"gemm_peak_{name}_flops_s": peaks[d] for name, d in HALF_PRECISIONS.items() if d in peaks}
    write_json_atomic(cfg.run_dir / "bench.json", {
        "settings": b.model_dump(), "results": to_json(results, BenchResult),
        "environment": capture_environment() | {"gemm_peak_flops_s": peaks[torch.float32]} | half_peaks})
    return ["bench.json"], results


def bench_environment(run_dir: Path) -> dict:
    """The machine the latencies were measured on (bench.json), which a resumed run may not be running on."""
    return json.loads((run_dir / "bench.json").read_text())["environment"]


# ---------------------------------------------------------------- helpers


def validator(cfg: RunConfig, train: TrainConfig, data: Data, tokenizer):
    """model -> the task's headline metric on the validation split, for best-epoch selection and early stopping."""
    return validation_scorer(cfg, data, tokenizer) if train.validate_every_epoch else None


def validation_scorer(cfg: RunConfig, data: Data, tokenizer):
    def score(model) -> float:
        outputs = data.predict(model, data.validation, tokenizer)
        return data.task.evaluate(outputs, data.validation, cfg, data.label_names)[data.task.metric]

    return score


def load_saved(cfg: RunConfig, model_result: ModelArtifact):
    path = cfg.run_dir / model_result.dir
    return load_saved_model(path, cfg.task), load_tokenizer(str(path))


def train_log(cfg: RunConfig, name: str, config_hash: str, description: str) -> TrainLog:
    return TrainLog(description, log_path(cfg, name), checkpoint_path(cfg, name, config_hash),
                    tuple(cfg.tracking), cfg.run_dir, cfg.name, name)


def checkpoint_path(cfg: RunConfig, name: str, config_hash: str) -> Path:
    """Where training state is kept between epochs; the hash in the name keeps a changed config from resuming
    another config's training."""
    return cfg.run_dir / "checkpoints" / f"{name}-{config_hash}.pt"


def log_path(cfg: RunConfig, name: str) -> Path:
    path = cfg.run_dir / "logs" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
