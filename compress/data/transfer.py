"""The transfer set: in-domain text without labels, which the teacher labels once so that every KD student learns
from the teacher's outputs on far more text than the labels cover (DistilBERT and TinyBERT distil on such sets).

Its text comes from the `transfer.unlabeled` files and, with `transfer.rest_of_train`, from the part of the
training pool that `data.max_train_examples` left out (its labels dropped), and with `transfer.augment`, from
copies of the labelled training texts with words replaced (TinyBERT's augmentation, compress.data.augment).
A text is a string (classification), a list of words (NER) or a (question, context) pair (QA).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from compress.core.artifacts import write_text_atomic
from compress.core.config import RunConfig
from compress.core.errors import UserError
from compress.core.hashing import stable_hash
from compress.data.augment import Candidates, augment_pairs, augment_sentences, augment_texts
from compress.data.sources import TABLE_SUFFIXES, TextSplits, read_lines, read_rows, require_file

TEXT_SUFFIXES = (".txt", *TABLE_SUFFIXES)


@dataclass(frozen=True)
class TransferTexts:
    """The transfer set's texts in order (the training pool's rest first, then each file's, then the augmented
    copies), and where they came from, for the console line and the report. A text is a string (classification),
    a list of words (NER) or a (question, context) pair (QA)."""

    texts: list
    from_rest: int  # kept from the training pool's rest
    from_files: int  # kept from the unlabeled files
    left_out: int  # repeats, and texts already in the labelled, validation or test split
    capped: int  # dropped by transfer.max_examples
    from_augment: int = 0  # augmented copies of labelled texts


def transfer_texts(cfg: RunConfig, splits: TextSplits, candidates: Candidates | None = None) -> TransferTexts:
    """The texts of `cfg.transfer` for classification (see assemble); `candidates` proposes the augmented
    copies' replacement words (needed with augment)."""
    transfer = cfg.transfer
    assert transfer is not None, "transfer_texts needs a transfer block"
    column, pair_column = text_columns(cfg)
    files = [text for i, path in enumerate(transfer.unlabeled)
             for text in read_unlabeled(path, column, f"transfer.unlabeled.{i}", pair_column)]
    augment_with = augment_pairs if pair_column else augment_texts
    augmented = augmented_copies(cfg, splits.train.texts, candidates, augment_with) if transfer.augment else []
    labelled = [t for split in (splits.train, splits.validation, splits.test) for t in split.texts]
    return assemble(cfg, labelled, splits.rest_of_train.texts, files, augmented)


def transfer_sentences(cfg: RunConfig, labelled: list[list[str]], train: list[list[str]], rest: list[list[str]],
                       word_column: int, candidates: Candidates | None = None) -> TransferTexts:
    """The sentences (word lists) of `cfg.transfer` for NER (see assemble): `labelled` holds every labelled,
    validation and test sentence, `train` the labelled training ones (augmented), `rest` the training pool's rest;
    unlabeled CoNLL files take their words from `word_column`."""
    transfer = cfg.transfer
    assert transfer is not None, "transfer_sentences needs a transfer block"
    files = [words for i, path in enumerate(transfer.unlabeled)
             for words in read_unlabeled_sentences(path, word_column, f"transfer.unlabeled.{i}")]
    augmented = augmented_copies(cfg, train, candidates, augment_sentences) if transfer.augment else []
    return assemble(cfg, labelled, rest, files, augmented)


def transfer_questions(cfg: RunConfig, labelled: list[tuple[str, str]], train: list[tuple[str, str]],
                       rest: list[tuple[str, str]], files: list[tuple[str, str]],
                       candidates: Candidates | None = None) -> TransferTexts:
    """The (question, context) pairs of `cfg.transfer` for QA (see assemble): `labelled` holds every labelled,
    validation and test pair, `train` the labelled training ones (augmented), `rest` the training pool's rest,
    `files` the unlabeled files' (read by compress.data.qa, answers ignored)."""
    transfer = cfg.transfer
    assert transfer is not None, "transfer_questions needs a transfer block"
    augmented = augmented_copies(cfg, train, candidates, augment_pairs) if transfer.augment else []
    return assemble(cfg, labelled, rest, files, augmented)


def assemble(cfg: RunConfig, labelled: list, rest: list, files: list, augmented: list) -> TransferTexts:
    """The transfer set, each text once: the training pool's rest (with rest_of_train), the unlabeled files'
    texts, then the augmented copies.

    A text that is already in the labelled, validation or test split is left out: the student would otherwise
    learn the teacher's answer on a test text, and a labelled one it already sees with its label. With
    `max_examples`, a seeded subset (in the original order) keeps the set reproducible.
    """
    transfer = cfg.transfer
    assert transfer is not None
    rest = rest if transfer.rest_of_train else []
    seen = {_key(t) for t in labelled}
    sources = [_new_texts(found, seen) for found in (rest, files, augmented)]
    texts = [text for kept in sources for text in kept]
    if not texts:
        why = ("every text is already in the labelled, validation or test split" if rest or files or augmented
               else "data.max_train_examples keeps the whole training pool, so no rest is left")
        raise UserError(f"the transfer set is empty: {why}", "transfer",
                        "add unlabeled text, or lower data.max_train_examples")
    kept = len(texts)
    source_of = [n for n, found in enumerate(sources) for _ in found]
    chosen = range(kept)
    if transfer.max_examples is not None and kept > transfer.max_examples:
        chosen = sorted(random.Random(cfg.seed).sample(range(kept), transfer.max_examples))
    counts = [sum(1 for i in chosen if source_of[i] == n) for n in range(3)]
    return TransferTexts([texts[i] for i in chosen], counts[0], counts[1], len(rest) + len(files) + len(augmented)
                         - kept, kept - len(chosen), counts[2])


def augmented_copies(cfg: RunConfig, texts: list, candidates: Candidates | None, augment_with) -> list:
    """TinyBERT-style copies of `texts` (strings or word lists) by `augment_with` (augment_texts or
    augment_sentences), kept in the run's cache: proposing words can take the teacher's MLM minutes, and the data
    is prepared again on every resumed run. The file's name hashes what makes it (the teacher by its name or
    path: a local teacher folder edited in place keeps its old copies)."""
    augment = cfg.transfer.augment if cfg.transfer else None
    assert augment is not None and candidates is not None, "augmentation needs its settings and a word source"
    pairs = bool(texts) and isinstance(texts[0], tuple)
    made_by = stable_hash(texts, augment, cfg.teacher.model, cfg.teacher.trust_remote_code, cfg.data.max_length,
                          cfg.seed)
    path = cfg.run_dir / "cache" / f"augmented-{made_by}.json"
    if path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(cached, list) and len(cached) == len(texts) * augment.copies:
                return [tuple(c) for c in cached] if pairs else cached  # JSON gives pairs back as lists
        except (OSError, ValueError):
            pass  # unreadable: made again below
    augmented = augment_with(texts, augment.copies, augment.probability, candidates, cfg.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(augmented))
    return augmented


def text_columns(cfg: RunConfig) -> tuple[str, str | None]:
    """The columns that hold the text (and the text pair) in unlabeled CSV/JSONL files: the source's, else
    "text"."""
    source = cfg.data.source
    return getattr(source, "text_column", "text"), getattr(source, "text_pair_column", None)


def read_unlabeled(path: Path, column: str, key: str, pair_column: str | None = None) -> list:
    """The texts of one unlabeled file: a .txt file's non-blank lines, or a CSV/TSV/JSONL file's `column`
    (blank cells skipped), with `pair_column` (text, text pair) tuples. `key` (transfer.unlabeled.<i>) leads every
    error's where."""
    where = f"{key}: {path}"
    require_file(path, "unlabeled file", where, "check the path (relative to where you run)")
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise UserError(f"unsupported file type '{suffix}'", where, "use .txt (one text per line), .csv, .tsv, "
                                                                    ".jsonl, .json or .parquet")
    if suffix == ".txt" and pair_column:
        raise UserError("a .txt file holds one text per line, and this run reads text pairs", where,
                        f"give a CSV/JSONL file with the columns '{column}' and '{pair_column}'")
    try:
        texts = _read_txt(path) if suffix == ".txt" else _column_texts(path, column, pair_column)
    except UserError as err:  # the shared readers name the file (and line); lead with the key
        raise UserError(err.what, f"{key}: {err.where}", err.fix) from None
    if not texts:
        raise UserError("no text in the file", where, "give a file with one text per line (.txt) or a header row and "
                                                      "rows of text (CSV/JSONL)")
    return texts


CONLL_SUFFIXES = (".conll", ".iob", ".bio")


def read_unlabeled_sentences(path: Path, word_column: int, key: str) -> list[list[str]]:
    """The sentences (word lists) of one unlabeled NER file: CoNLL columns (a word per line in `word_column`, tags
    ignored, a blank line between sentences) or one sentence per line, split at whitespace. A .txt file is read as
    CoNLL when it has blank lines and its lines have at most 4 columns (a word and its tags), else as lines."""
    where = f"{key}: {path}"
    require_file(path, "unlabeled file", where, "check the path (relative to where you run)")
    suffix = path.suffix.lower()
    if suffix not in (".txt", *CONLL_SUFFIXES):
        raise UserError(f"unsupported file type '{suffix}' for NER", where,
                        "use .txt (one sentence per line, or CoNLL columns) or .conll")
    try:
        lines = read_lines(path)
    except UserError as err:
        raise UserError(err.what, f"{key}: {err.where}", err.fix) from None
    filled = [line.split() for line in lines if line.strip()]
    columns = sorted(len(words) for words in filled)
    conll = suffix in CONLL_SUFFIXES or (len(filled) < len(lines) and bool(columns) and columns[len(columns) // 2] <= 4)
    sentences = _conll_words(lines, word_column, where) if conll else filled
    if not sentences:
        raise UserError("no sentences in the file", where, "give one sentence per line, or CoNLL columns")
    return sentences


def _conll_words(lines: list[str], word_column: int, where: str) -> list[list[str]]:
    sentences, words = [], []
    for number, line in enumerate(lines, start=1):
        columns = line.split()
        if not columns or columns[0] == "-DOCSTART-":
            if words:
                sentences.append(words)
            words = []
            continue
        if word_column >= len(columns):
            raise UserError(f"no column {word_column} for the word (the line has {len(columns)})",
                            f"{where}:{number}", "set data.source.word_column, or write one word per line")
        words.append(columns[word_column])
    return sentences + ([words] if words else [])


def _read_txt(path: Path) -> list[str]:
    return [line.strip() for line in read_lines(path) if line.strip()]


def _column_texts(path: Path, column: str, pair_column: str | None = None) -> list:
    texts = []
    for line, row in read_rows(path):
        parts = []
        for name in filter(None, (column, pair_column)):
            if name not in row:
                raise UserError(f"no column '{name}' (has: {', '.join(map(str, row))})", f"{path}:{line}",
                                "name the text columns as data.source.text_column (and text_pair_column) do "
                                "('text' by default)")
            text = row[name]
            if text is not None and not isinstance(text, str):
                raise UserError(f"the text is a {type(text).__name__}, not a string", f"{path}:{line}",
                                "write the text as a string")
            parts.append(text)
        if all(text and text.strip() for text in parts):
            texts.append(tuple(parts) if pair_column else parts[0])
    return texts


def _key(text: str | list[str] | tuple[str, str]) -> str:
    """Texts that differ only in spacing are the same text (a sentence is its words, a question and context pair
    its two texts)."""
    if isinstance(text, tuple):
        return "\n".join(_key(part) for part in text)
    return " ".join(text.split() if isinstance(text, str) else text)


def _new_texts(texts: list, seen: set[str]) -> list:
    """`texts` without those in `seen` or repeated (first one kept); `seen` grows with the kept ones."""
    kept = []
    for text in texts:
        key = _key(text)
        if key not in seen:
            seen.add(key)
            kept.append(text)
    return kept
