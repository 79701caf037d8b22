"""A labelled file outside a run, as `compress evaluate --data` and `compress prune --data` read it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LabelledFile:
    """A labelled file outside a run (`compress evaluate --data`, `compress prune --data`): CSV/TSV/JSONL/JSON/Parquet
    with these columns for classification and regression, CoNLL columns for NER, SQuAD JSON for QA."""

    path: Path
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    max_length: int = 128
