"""Extractive QA: SQuAD v1.1/v2.0 files, windowed features, n-best post-processing and the official metrics."""

from __future__ import annotations

import collections
import json
import re
import string
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from compress.core.config import HubSource, RunConfig, SquadSource
from compress.core.errors import UserError
from compress.data.augment import Candidates
from compress.data.batching import MODEL_INPUTS, EncodedSplit, select_inputs
from compress.data.rows import ArrowRows
from compress.data.sources import fill_splits, hub_splits, load_hub_split, require_file
from compress.data.transfer import transfer_questions


@dataclass(frozen=True)
class QAExample:
    id: str
    question: str
    context: str
    answers: list[dict] = field(default_factory=list)  # [{"text": str, "answer_start": int}]; empty = unanswerable


# ---------------------------------------------------------------- reading


def read_squad(path: Path, with_answers: bool = True) -> list[QAExample]:
    """Read a SQuAD-format JSON file (v1.1, or v2.0 with `is_impossible`), checking every answer span; without
    answers (a transfer set's file) only ids, questions and contexts are read, and answers are ignored."""
    require_file(path, "data file", str(path), "check data.source paths (relative to where you run)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
        if not isinstance(data, list):
            raise TypeError(f"'data' is a {type(data).__name__}, not a list of articles")
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text", str(path), "save the file as UTF-8") from None
    except (json.JSONDecodeError, KeyError, TypeError, RecursionError) as err:  # Recursion: nested too deeply
        raise UserError(f"not a SQuAD JSON file ({type(err).__name__}: {err})", str(path),
                        "expected {\"data\": [{\"paragraphs\": [{\"context\", \"qas\": [...]}]}]}") from None
    examples = []
    for article in data:
        for paragraph in _field(article, "paragraphs", path, "article"):
            context = _field(paragraph, "context", path, "paragraph")
            for qa in _field(paragraph, "qas", path, "paragraph"):
                qid = str(_field(qa, "id", path, "question") if with_answers else qa.get("id", len(examples)))
                where = f"{path}: example {qid}"
                question = _field(qa, "question", path, f"example {qid}")
                if not with_answers:
                    examples.append(QAExample(qid, question, context))
                    continue
                answers = [] if qa.get("is_impossible") else _field(qa, "answers", path, f"example {qid}")
                for answer in answers:
                    _check_answer(answer, context, where)
                if not answers and not qa.get("is_impossible"):
                    raise UserError("no answers and not marked is_impossible", where,
                                    "add an answer or set is_impossible: true")
                examples.append(QAExample(qid, question, context,
                                          [{"text": a["text"], "answer_start": a["answer_start"]} for a in answers]))
    if not examples:
        raise UserError("no questions", str(path), "the file needs data -> paragraphs -> qas")
    return examples


def _field(obj: dict, key: str, path: Path, what: str):
    if not isinstance(obj, dict) or key not in obj:
        raise UserError(f"{what} has no '{key}' field", str(path), "fix the SQuAD structure")
    return obj[key]


def _check_answer(answer: dict, context: str, where: str) -> None:
    if not isinstance(answer, dict) or "text" not in answer or "answer_start" not in answer:
        raise UserError("an answer lacks 'text' or 'answer_start'", where, "give both for every answer")
    start, text = answer["answer_start"], answer["text"]
    if not isinstance(start, int) or start < 0 or start + len(text) > len(context):
        raise UserError(f"answer_start {start} puts '{text}' outside the context ({len(context)} chars)", where,
                        "fix answer_start")
    if context[start:start + len(text)] != text:
        raise UserError(f"answer_start {start} does not match the answer text '{text}' "
                        f"(context there: '{context[start:start + len(text)]}')", where, "fix answer_start or the text")


# ---------------------------------------------------------------- features


def prepare_features(examples: list[QAExample], tokenizer, max_length: int = 384, doc_stride: int = 128) -> dict:
    """Tokenise question + context into overlapping windows (the context is truncated, never the question).

    Each window records its example, the character offsets of its context tokens (None elsewhere), and start/end
    token positions of the first gold answer; a window that does not contain the answer points both at CLS (0),
    as does an unanswerable question.
    """
    enc = tokenizer([e.question for e in examples], [e.context for e in examples], truncation="only_second",
                    max_length=max_length, stride=doc_stride, return_overflowing_tokens=True,
                    return_offsets_mapping=True, padding="max_length")
    starts, ends, offsets = [], [], []
    for i in range(len(enc["input_ids"])):
        example = examples[enc["overflow_to_sample_mapping"][i]]
        sequence_ids = enc.sequence_ids(i)
        window = [o if sequence_ids[k] == 1 else None for k, o in enumerate(enc["offset_mapping"][i])]
        offsets.append(window)
        start, end = 0, 0
        if example.answers:
            a_start = example.answers[0]["answer_start"]
            a_end = a_start + len(example.answers[0]["text"])
            ctx = [k for k, o in enumerate(window) if o is not None]
            if ctx and window[ctx[0]][0] <= a_start and window[ctx[-1]][1] >= a_end:
                start = next(k for k in ctx if window[k][1] > a_start)
                end = next(k for k in reversed(ctx) if window[k][0] < a_end)
        starts.append(start)
        ends.append(end)
    return select_inputs(enc) | {"example_index": list(enc["overflow_to_sample_mapping"]), "offset_mapping": offsets,
                       "start_positions": starts, "end_positions": ends}


# ---------------------------------------------------------------- post-processing


def postprocess(examples: list[QAExample], features: dict, start_logits: np.ndarray, end_logits: np.ndarray,
                n_best: int = 20, max_answer_length: int = 30, null_threshold: float | None = None) -> dict[str, str]:
    """Best answer text per example id, over all of its windows.

    Candidates are the n-best start and end tokens of each window that lie in the context, end >= start and
    span at most `max_answer_length` tokens; the best by start + end logit wins. With `null_threshold` (SQuAD
    v2.0) the answer is "" when the best null score (CLS start + end, over windows) exceeds the best span score by
    more than the threshold.
    """
    by_example = collections.defaultdict(list)
    for i, example_index in enumerate(features["example_index"]):
        by_example[example_index].append(i)
    answers = {}
    for example_index, example in enumerate(examples):
        best_text, best_score, null_score = "", -np.inf, np.inf
        for i in by_example[example_index]:
            offsets, s, e = features["offset_mapping"][i], start_logits[i], end_logits[i]
            null_score = min(null_score, float(s[0] + e[0]))
            for a in np.argsort(s)[-n_best:][::-1]:
                for b in np.argsort(e)[-n_best:][::-1]:
                    if offsets[a] is None or offsets[b] is None or b < a or b - a + 1 > max_answer_length:
                        continue
                    score = float(s[a] + e[b])
                    if score > best_score:
                        best_score, best_text = score, example.context[offsets[a][0]:offsets[b][1]]
        if null_threshold is not None and null_score - best_score > null_threshold:
            best_text = ""
        answers[example.id] = best_text
    return answers


# ---------------------------------------------------------------- metrics (the official SQuAD script's rules)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:  # unanswerable: right only if both are empty
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(examples: list[QAExample], predictions: dict[str, str]) -> dict[str, float]:
    """Exact match and F1 in percent, each the max over the gold answers ("" for an unanswerable question)."""
    em_total = f1_total = 0.0
    for example in examples:
        golds = [a["text"] for a in example.answers] or [""]
        pred = predictions.get(example.id, "")
        em_total += max(exact_match(pred, g) for g in golds)
        f1_total += max(f1(pred, g) for g in golds)
    return {"exact_match": 100 * em_total / len(examples), "f1": 100 * f1_total / len(examples)}


# ---------------------------------------------------------------- the task


def load_examples(cfg: RunConfig) -> tuple[dict[str, list[QAExample]], list[QAExample]]:
    """train/validation/test questions, and the training pool's rest that data.max_train_examples left out."""
    source = cfg.data.source
    if isinstance(source, SquadSource):
        raw = {split: read_squad(path) if path else None
               for split, path in (("train", source.train), ("validation", source.validation), ("test", source.test))}
    else:
        raw = {key: _hub_examples(source, split) if split else None for key, split in hub_splits(source).items()}
    splits, rest = fill_splits(raw, cfg.data, cfg.seed)
    return splits, rest or []


def _hub_examples(source: HubSource, split: str) -> list[QAExample]:
    ds = load_hub_split(source, split, ("id", "question", "context", "answers"))
    return [QAExample(str(row["id"]), row["question"], row["context"],
                      [{"text": t, "answer_start": a}
                       for t, a in zip(row["answers"]["text"], row["answers"]["answer_start"])])
            for row in ds]


def encode(examples: list[QAExample], tokenizer, max_length: int, doc_stride: int) -> EncodedSplit:
    feats = prepare_features(examples, tokenizer, max_length, doc_stride)
    features = ArrowRows.from_columns(select_inputs(feats, (*MODEL_INPUTS, "start_positions", "end_positions")))
    meta = {"examples": examples, "features": {k: feats[k] for k in ("example_index", "offset_mapping")}}
    return EncodedSplit(features, sequence_outputs=True, meta=meta)


def build(cfg: RunConfig, tokenizer, candidates: Candidates | None = None) -> tuple[dict[str, EncodedSplit], None]:
    """train/validation/test windows, and with a transfer block "transfer": its questions windowed like the
    training split's, without start/end positions. `candidates` proposes the replacement words of
    transfer.augment."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError("QA needs a fast tokenizer (for offsets)", "teacher.model", "use a model with tokenizer.json")
    splits, rest = load_examples(cfg)
    stride = cfg.data.qa.doc_stride or cfg.data.max_length // 3
    encoded = {name: encode(examples, tokenizer, cfg.data.max_length, stride) for name, examples in splits.items()}
    if cfg.transfer is not None:
        files = [pair(e) for i, path in enumerate(cfg.transfer.unlabeled)
                 for e in read_unlabeled_questions(path, f"transfer.unlabeled.{i}")]
        found = transfer_questions(cfg, [pair(e) for split in splits.values() for e in split],
                                   [pair(e) for e in splits["train"]], [pair(e) for e in rest], files, candidates)
        unlabeled = [QAExample(f"transfer-{i}", question, context) for i, (question, context) in enumerate(found.texts)]
        transfer = encode(unlabeled, tokenizer, cfg.data.max_length, stride)
        encoded["transfer"] = replace(transfer.without_labels(), meta=transfer.meta | {"texts": found})
    return encoded, None


def pair(example: QAExample) -> tuple[str, str]:
    return example.question, example.context


def read_unlabeled_questions(path: Path, key: str) -> list[QAExample]:
    """The questions of one unlabeled SQuAD-format file (answers ignored); `key` (transfer.unlabeled.<i>) leads
    every error's where."""
    require_file(path, "unlabeled file", f"{key}: {path}", "check the path (relative to where you run)")
    if path.suffix.lower() != ".json":
        raise UserError(f"unsupported file type '{path.suffix}' for QA", f"{key}: {path}",
                        "use a SQuAD-format .json file (its answers are ignored)")
    try:
        return read_squad(path, with_answers=False)
    except UserError as err:
        raise UserError(err.what, f"{key}: {err.where}", err.fix) from None


def evaluate(outputs: dict[str, torch.Tensor], split: EncodedSplit, cfg: RunConfig, label_names: None) -> dict:
    """Exact match and F1 as fractions (0-1), like every other task's metric in the report."""
    opts = cfg.data.qa
    answers = postprocess(split.meta["examples"], split.meta["features"], outputs["start_logits"].numpy(),
                          outputs["end_logits"].numpy(), opts.n_best, opts.max_answer_length, opts.null_threshold)
    return {k: v / 100 for k, v in squad_metrics(split.meta["examples"], answers).items()}
