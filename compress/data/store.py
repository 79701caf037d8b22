"""Tokenised splits kept on disk, so a run that must train again (a killed run, a new student, a changed setting)
reads its splits back instead of reading and tokenising the data again.

A folder per data key (compress.pipeline.run_data.data_key) under the run's cache/: each split's features as an
Arrow IPC file, memory-mapped when read (pages come in as batches need them), and what evaluation needs beside them
(NER's sentences and word ids, QA's examples and offsets, where the transfer set's texts came from) as JSON that
names the dataclasses it holds. JSON, not pickle: a run folder is a thing people hand each other.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pyarrow as pa

from compress.core.artifacts import replace_dir
from compress.data.batching import EncodedSplit
from compress.data.ner import Sentence
from compress.data.qa import QAExample
from compress.data.rows import ArrowRows
from compress.data.transfer import TransferTexts

STORE_FORMAT = 1  # raise when the layout below changes: folders of another format are built again
META_TYPES = {cls.__name__: cls for cls in (Sentence, QAExample, TransferTexts)}


def save_splits(folder: Path, splits: dict[str, EncodedSplit], about: dict) -> None:
    """Write `splits` (name -> split) and `about` (JSON values: label names, fingerprints) to `folder`, whole or
    not at all (a `<folder>.tmp` is left where writing failed)."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    index = {"format": STORE_FORMAT, "about": about, "splits": {}}
    for name, split in splits.items():
        rows = split.features if isinstance(split.features, ArrowRows) else ArrowRows.from_chunks([split.features])
        with pa.OSFile(str(tmp / f"{name}.arrow"), "wb") as sink, pa.ipc.new_file(sink, rows.table.schema) as out:
            out.write_table(rows.table)
        index["splits"][name] = {"sequence_outputs": split.sequence_outputs, "meta": _to_json(split.meta)}
    (tmp / "splits.json").write_text(json.dumps(index), encoding="utf-8")
    replace_dir(tmp, folder)


def load_splits(folder: Path) -> tuple[dict[str, EncodedSplit], dict] | None:
    """The splits and `about` that save_splits wrote to `folder`; None where there are none, or they are of
    another format or damaged (the caller then builds them again)."""
    try:
        index = json.loads((folder / "splits.json").read_text(encoding="utf-8"))
        if index.get("format") != STORE_FORMAT:
            return None
        splits = {}
        for name, split in index["splits"].items():
            table = pa.ipc.open_file(pa.memory_map(str(folder / f"{name}.arrow"))).read_all()
            splits[name] = EncodedSplit(ArrowRows(table), sequence_outputs=split["sequence_outputs"],
                                        meta=_from_json(split["meta"]))
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
        return None
    return splits, index["about"]


def _to_json(value):
    """`value` as JSON values, marking what JSON has no type for: a dataclass by its name, a tuple."""
    if dataclasses.is_dataclass(value):
        return {"__dataclass__": type(value).__name__} | {field.name: _to_json(getattr(value, field.name))
                                                          for field in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return {"__tuple__": [_to_json(v) for v in value]}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _to_json(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise TypeError(f"cannot keep a {type(value).__name__} in the stored splits")


def _from_json(value):
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tuple__" in value:
        return tuple(_from_json(v) for v in value["__tuple__"])
    fields = {k: _from_json(v) for k, v in value.items() if k != "__dataclass__"}
    return META_TYPES[value["__dataclass__"]](**fields) if "__dataclass__" in value else fields
