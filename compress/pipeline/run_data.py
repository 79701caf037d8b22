"""The run's data as the pipeline sees it (`RunData`): its fingerprints are kept under a key of everything that
makes them (`data_key`), so a run whose stages are done neither reads nor tokenises; the splits are built with the
teacher's tokenizer (and, for a student with its own, re-encoded by `data_for`), then kept (compress.data.cache).
"""

from __future__ import annotations

import functools
import time
from dataclasses import replace
from pathlib import Path

from transformers import AutoConfig

from compress.core import distributed
from compress.core.artifacts import write_json_atomic
from compress.core.config import RunConfig
from compress.core.errors import UserError
from compress.core.hashing import data_hash, stable_hash
from compress.core.hub import hub_access
from compress.core.progress import console
from compress.data.augment import Candidates
from compress.data.cache import (
    Data,
    data_record,
    describe_data,
    encoded_data,
    file_digest,
    load_data,
    read_data_record,
    save_data,
)
from compress.data.tasks import TASKS
from compress.models.loading import load_tokenizer, resolve_model_path
from compress.models.neighbours import embedding_candidates, mlm_candidates
from compress.models.students import same_vocabulary, teacher_embeddings
from compress.pipeline import preflight


def prepare_data(cfg: RunConfig) -> Data:
    """Load, split and tokenise once (deterministic for a config, so it is recomputed, not cached)."""
    task = TASKS[cfg.task]
    tokenizer = load_tokenizer(cfg.teacher.model, cfg.teacher.trust_remote_code)
    check_lengths(cfg)
    enc, label_names = task.build(cfg, tokenizer, augmentation_words(cfg, tokenizer))
    data = encoded_data(task, enc, label_names, cfg.data.max_length)
    describe_data(data)
    return data


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
