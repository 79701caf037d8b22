"""Shared fixtures: a tiny random BERT (real tokenizer, seconds to train), a small learnable text dataset, and
pipeline run folders built once per session and handed to each test as its own copy.

`pytest --reverse` runs the collected tests in reverse order: no test may depend on another having run first.
"""

from __future__ import annotations

import copy
import csv
import io
import random
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from compress.core.config import RunConfig
from compress.models.loading import resolve_model_path
from compress.pipeline.pipeline import RunResult, run


def console_script(main: Callable[[], None], prog: str, *args: str) -> subprocess.CompletedProcess:
    """`prog ARGS` through its console script's entry point (`main`), in this process: the exit code, stdout and
    stderr a subprocess would give, without a fresh interpreter's seconds of imports per call. (Library logging
    that bypasses sys.stderr is not captured: a test that must see a clean stderr end to end runs a real process.)"""
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.object(sys, "argv", [prog, *args]), redirect_stdout(out), redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) or exit_.code is None else 1
            if isinstance(exit_.code, str):  # as the interpreter does: the message to stderr, exit status 1
                err.write(exit_.code + "\n")
    return subprocess.CompletedProcess([prog, *args], code or 0, out.getvalue(), err.getvalue())


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--reverse", action="store_true",
                     help="run the collected tests in reverse order, to show that none depends on another")


@pytest.hookimpl(trylast=True)  # after any other reordering, so the order run is exactly the reverse
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--reverse"):
        items.reverse()


CALL_PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Remember whether the test itself passed, for fixtures that tidy up only then (see run_folder_copy)."""
    report = yield
    if report.when == "call":
        item.stash[CALL_PASSED] = report.passed
    return report

# Words that make each class learnable in a few steps, plus shared filler.
CLASS_WORDS = {
    "business": ["market", "shares", "profit", "bank", "economy", "investors"],
    "sport": ["match", "goal", "team", "coach", "league", "season"],
    "tech": ["software", "computer", "internet", "phone", "digital", "users"],
}
FILLER = ["the", "a", "said", "on", "with", "new", "year", "people", "after", "report"]


def make_texts(n_per_class: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for label, words in CLASS_WORDS.items():
        for _ in range(n_per_class):
            tokens = rng.choices(words, k=4) + rng.choices(FILLER, k=6)
            rng.shuffle(tokens)
            rows.append((" ".join(tokens), label))
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]], text_column: str = "text", label_column: str = "label") -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([text_column, label_column])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 4-layer, 32-wide random BERT with the packaged uncased WordPiece tokenizer, saved like a checkpoint."""
    path = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128, num_labels=3)
    BertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6")).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert_onnx(tiny_bert_dir, tmp_path_factory) -> Path:
    """tiny_bert_dir exported with optimum (text-classification, opset 18): its model.onnx."""
    from exports.onnx import export_hf_model

    model = BertForSequenceClassification.from_pretrained(tiny_bert_dir)
    out = tmp_path_factory.mktemp("tiny-onnx") / "tiny"
    return export_hf_model(model, AutoTokenizer.from_pretrained(tiny_bert_dir), out, "text-classification", opset=18)


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "train.csv", make_texts(40))


PEOPLE = ["alice", "bob", "carol", "dave"]
PLACES = ["paris", "london", "berlin", "madrid"]


def make_conll(path: Path, n: int, seed: int = 0) -> Path:
    """Sentences like "alice smith flew to paris today" with B-PER I-PER O O B-LOC O tags."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        person, place = rng.choice(PEOPLE), rng.choice(PLACES)
        words = [person, "smith", rng.choice(["flew", "went", "drove"]), "to", place, rng.choice(["today", "again"])]
        tags = ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
        lines += [f"{w} {t}" for w, t in zip(words, tags)] + [""]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_squad(path: Path, n: int, seed: int = 0) -> Path:
    """Contexts naming a person's city; questions ask for it (v1.1 style, one answer each)."""
    import json

    rng = random.Random(seed)
    paragraphs = []
    for i in range(n):
        person, place = rng.choice(PEOPLE), rng.choice(PLACES)
        context = f"{person} lives in {place} and works there every day."
        paragraphs.append({"context": context, "qas": [{
            "id": f"q{i}", "question": f"Where does {person} live?",
            "answers": [{"text": place, "answer_start": context.index(place)}]}]})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


@dataclass(frozen=True)
class RunFolder:
    """A finished `compress run`: its output_dir lies under `root`, `cfg` points there; `result` is what run gave."""

    root: Path
    cfg: RunConfig
    result: RunResult
    source: Path | None = None  # for a copy: the run folder built once per session it was copied from


class BuiltRuns:
    """Pipeline run folders, each built at most once per session under its own name. Tests never run in these:
    they get copies (`run_folder_copy`). A build that failed is not tried again for the next test."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._factory = tmp_path_factory
        self._built: dict[str, RunFolder | Exception] = {}

    def get(self, name: str, make_config: Callable[[Path], RunConfig]) -> RunFolder:
        """The run `make_config(root)` describes, built the first time `name` is asked for."""
        if name not in self._built:
            root = self._factory.mktemp(f"built-{name}")
            cfg = make_config(root)
            try:
                self._built[name] = RunFolder(root, cfg, run(cfg))
            except Exception as err:
                self._built[name] = err
                raise
        built = self._built[name]
        if isinstance(built, Exception):
            pytest.fail(f"building run folder {name!r} failed earlier in this session: {built!r}")
        assert make_config(built.root) == built.cfg, f"two different configs ask for run folder {name!r}"
        return built


@pytest.fixture(scope="session")
def built_runs(tmp_path_factory) -> BuiltRuns:
    return BuiltRuns(tmp_path_factory)


@pytest.fixture
def run_folder_copy(built_runs, tmp_path, request) -> Iterator[Callable[[str, Callable[[Path], RunConfig]], RunFolder]]:
    """`run_folder_copy(name, make_config)`: this test's own copy of a run built once per session, under
    tmp_path/copy-<name>, with a config whose output_dir points at the copy and a deep copy of the run's result.
    Whatever the test does to its folder (re-runs, deleted files, changed configs), no other test sees it.
    A passing test's copies are deleted after it (50-80 MB each); a failing test's stay to be looked at."""

    def copy_run(name: str, make_config: Callable[[Path], RunConfig]) -> RunFolder:
        built = built_runs.get(name, make_config)
        root = tmp_path / f"copy-{name}"
        cfg = built.cfg.model_copy(update={"output_dir": root / built.cfg.output_dir.relative_to(built.root)})
        shutil.copytree(built.cfg.run_dir, cfg.run_dir, symlinks=True)
        result = RunResult(cfg.run_dir, copy.deepcopy(built.result.report), list(built.result.ran),
                           list(built.result.skipped))
        copies.append(root)
        return RunFolder(root, cfg, result, source=built.cfg.run_dir)

    copies: list[Path] = []
    yield copy_run
    if request.node.stash.get(CALL_PASSED, False):
        for root in copies:
            shutil.rmtree(root, ignore_errors=True)
