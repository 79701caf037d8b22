"""The run's tokenised data as the stages read it (`Data`), and keeping it on disk: each split as Arrow
(compress.data.store) beside a record of the fingerprints the stage hashes read, so a run that must train again reads
the splits back instead of tokenising, and a run whose stages are done reads nothing (compress.pipeline.run_data).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import torch

from compress.core.hashing import data_hash
from compress.core.progress import console
from compress.data.batching import EncodedSplit, predict
from compress.data.store import load_splits, save_splits
from compress.data.tasks import Task


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


def file_digest(path: Path) -> str | None:
    """The file's SHA-256; None where it cannot be read (the data stage then says why in one line)."""
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def encoded_data(task: Task, enc: dict[str, EncodedSplit], label_names: list[str] | None, max_length: int) -> Data:
    """Data from a task's encoded splits, fingerprinted by their tokens."""
    transfer = enc.get("transfer")
    return Data(task, enc["train"], enc["validation"], enc["test"], label_names, max_length,
                data_hash([enc[name].features for name in ("train", "validation", "test")], label_names),
                transfer, data_hash(transfer.features) if transfer is not None else None)


def describe_transfer_set(transfer: EncodedSplit) -> str:
    found = transfer.meta["texts"]
    dropped = [f"{found.left_out} repeated or already in a labelled split"] if found.left_out else []
    dropped += [f"{found.capped} over transfer.max_examples"] if found.capped else []
    windows = f" in {len(transfer)} windows" if len(transfer) != len(found.texts) else ""  # QA's long contexts
    return (f"transfer set: {len(found.texts)} texts without labels{windows} ({found.from_rest} from the training "
            f"pool's rest, {found.from_files} from unlabeled files, {found.from_augment} augmented copies)"
            + (f"; left out: {', '.join(dropped)}" if dropped else ""))
