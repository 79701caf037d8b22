"""Published teacher/student pairs, set beside the ones a run measured.

A student is matched to a published pair by its shape relative to its teacher (depth and width ratios), so the
comparison holds for any teacher: a 3-layer copy of a 6-layer MiniLM is DistilBERT's recipe (half the layers, same
width) even though neither model is BERT-base. The published figures are the papers' own; ours are measured in
the same run (PyTorch fp32, the report's bench shape). PASS: we kept at least as much of the teacher's metric and
were at least as much faster; WARN says which of the two fell short.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Shape:
    model_type: str
    layers: int | None
    width: int | None


@dataclass(frozen=True)
class Anchor:
    name: str
    pair: str  # the published student and teacher, in words
    retained: float  # student metric / teacher metric, as published
    speedup: float  # teacher latency / student latency, as published
    source: str
    matches: Callable[[Shape, Shape], bool]  # (student, teacher) -> is this the published recipe?
    zoo_name: str  # the published student's shape in compress.models.zoo, timed against bert-base by `bench zoo`


def _half_depth_same_width(student: Shape, teacher: Shape) -> bool:
    return (None not in (student.layers, teacher.layers) and student.layers * 2 == teacher.layers
            and student.width == teacher.width)


def _tinybert4_ratios(student: Shape, teacher: Shape) -> bool:
    """A third of the layers at 312/768 of the width (TinyBERT-4 of BERT-base), width within 15%."""
    if None in (student.layers, teacher.layers, student.width, teacher.width):
        return False
    return student.layers * 3 == teacher.layers and abs(student.width / teacher.width / (312 / 768) - 1) <= 0.15


ANCHORS: tuple[Anchor, ...] = (
    Anchor("DistilBERT", "6-layer DistilBERT of 12-layer BERT-base (half the depth, same width)", 0.97, 1.6,
           "Sanh et al. 2019: 97% of BERT-base's GLUE score, 60% faster", _half_depth_same_width,
           "distilbert-base"),
    Anchor("TinyBERT-4", "4-layer, 312-wide TinyBERT of BERT-base (a third of the depth, 41% of the width)", 0.968,
           9.4, "Jiao et al. 2020: 96.8% of BERT-base on GLUE, 9.4x faster", _tinybert4_ratios, "tinybert-4"),
    Anchor("MobileBERT", "MobileBERT of BERT-base (24 bottleneck layers)", 77.7 / 78.3, 5.5,
           "Sun et al. 2020: GLUE 77.7 vs BERT-base 78.3, 5.5x faster (Pixel 4)",
           lambda student, teacher: student.model_type == "mobilebert", "mobilebert"),
)


def add_zoo_anchors(rows: list[dict]) -> None:
    """`published_speedup` and `vs_published` (PASS/WARN) on `bench zoo` rows of a published student's shape:
    speed only, the zoo's weights are random."""
    by_zoo_name = {a.zoo_name: a for a in ANCHORS}
    for row in rows:
        anchor = by_zoo_name.get(row["name"])
        measured = row.get("speedup_vs_bert_base")
        row["published_speedup"] = anchor.speedup if anchor else None
        row["vs_published"] = (None if anchor is None or measured is None
                               else "PASS" if measured >= anchor.speedup else "WARN")


def read_shape(model_dir: Path) -> Shape:
    """Depth and width of a transformer from its saved config.json, whatever the family names them. Other
    families (a BiLSTM's layers and per-direction width are another kind of size) get None: no published
    transformer recipe is theirs."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if not any(k in config for k in ("num_attention_heads", "n_heads")):
        return Shape(config.get("model_type", ""), None, None)
    layers = next((config[k] for k in ("num_hidden_layers", "n_layers") if k in config), None)
    width = next((config[k] for k in ("hidden_size", "dim") if k in config), None)
    return Shape(config.get("model_type", ""), layers, width)


def compare_with_anchors(rows: list[dict], run_dir: Path) -> list[dict]:
    """One entry per (KD student, published pair it matches): both figures and PASS/WARN."""
    teacher = next(r for r in rows if r["role"] == "teacher")
    teacher_shape = read_shape(run_dir / teacher["model_dir"])
    entries = []
    for row in rows:
        if row["role"] != "student":
            continue
        shape = read_shape(run_dir / row["model_dir"])
        for anchor in ANCHORS:
            if anchor.matches(shape, teacher_shape):
                entries.append(_verdict(anchor, row))
    return entries


def _verdict(anchor: Anchor, row: dict) -> dict:
    retained, speedup = row["retained"], row["speedup"]
    short = []
    if retained is None or retained < anchor.retained:
        short.append("kept less of the teacher")
    if speedup is None or speedup < anchor.speedup:
        short.append("less of a speed-up")
    return {"anchor": anchor.name, "pair": anchor.pair, "source": anchor.source, "model": row["model"],
            "published_retained": anchor.retained, "published_speedup": anchor.speedup,
            "measured_retained": retained, "measured_speedup": speedup,
            "verdict": "WARN" if short else "PASS", "why": ", ".join(short) if short else "both at least as published"}
