"""`compress search` on a tiny random BERT teacher and tiny data: the rules it keeps (its halving rule is Optuna's,
a config without a search block hashes as before, the chosen student's snippet loads back), a search end to end,
the latency-first rule, resume after kill -9, two workers on one study, and one-line refusals.

Every search starts from one run folder whose teacher is trained once per session (run_folder_copy), so a test's
search reuses the teacher and its cached outputs, as a search does.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.pruners._successive_halving import _is_trial_promotable_to_next_rung
from optuna.study import StudyDirection
from optuna.trial import TrialState
from pydantic import TypeAdapter

from compress.cli import main
from compress.core.config import DEFAULT_CONFIG, RunConfig, StudentConfig, dump_config
from compress.core.hashing import stable_hash
from compress.search.space import snippet, spread_layers
from compress.search.tables import choose, closest
from compress.search.trial import halving_epochs, promoted
from tests.conftest import console_script

ROOT = Path(__file__).parents[3]

# Shapes of a few hundred thousand parameters (the tokenizer's 30,522-row embedding dominates), one epoch each.
SMALL_SEARCH = {
    "min_retained": 0.3, "epochs": 1, "baseline": False, "trials": 3,
    "space": {"families": ["custom_transformer", "bilstm"],
              "custom_transformer": {"num_layers": [1], "hidden_size": [16, 24, 32], "num_heads": [2],
                                     "ffn_ratio": [2], "learning_rate": [1e-3]},
              "bilstm": {"num_layers": [1], "hidden_size": [16, 24], "embedding_size": [16]}},
}


def teacher_run(root: Path, tiny_bert_dir: Path, tiny_csv: Path) -> RunConfig:
    """The run the searches share: the tiny teacher alone, no export (a search's config adds what it needs)."""
    return RunConfig.model_validate({
        "name": "search", "output_dir": str(root / "runs"), "tracking": [],
        "data": {"source": {"kind": "local", "train": str(tiny_csv)}, "max_length": 16},
        "teacher": {"model": str(tiny_bert_dir), "train": {"epochs": 1}},
        "export": {"enabled": False},
        "bench": {"warmup": 1, "iters": 3, "seq_len": 16, "pause_ms": 0},
    })


@pytest.fixture
def searchable(run_folder_copy, tiny_bert_dir, tiny_csv):
    """(config with `search` and `changes` applied, its YAML path): this test's copy of the teacher's run folder."""

    def make(search: dict, **changes) -> tuple[RunConfig, Path]:
        folder = run_folder_copy("search-teacher", lambda root: teacher_run(root, tiny_bert_dir, tiny_csv))
        data = folder.cfg.model_dump(mode="json") | {"search": search} | changes
        cfg = RunConfig.model_validate(data)
        path = folder.root / "search.yaml"
        path.write_text(dump_config(cfg))
        return cfg, path

    return make


def compress(*args: str) -> subprocess.CompletedProcess:
    return console_script(main, "compress", *args)


def study_of(cfg: RunConfig, storage: str | None = None) -> optuna.Study:
    storage = storage or f"sqlite:///{cfg.run_dir / 'search' / 'study.db'}"
    name = json.loads((cfg.run_dir / "search" / "trials.json").read_text())["study"] if storage.startswith(
        "postgresql") else optuna.get_all_study_names(storage)[0]
    return optuna.load_study(study_name=name, storage=storage)


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials that count towards `trials`: they measured a student (a repeat of one already tried does not)."""
    return [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            and "params" in t.user_attrs["record"]]


# ---------------------------------------------------------------- rules, without training


def test_halving_is_optunas_successive_halving_rule():
    """Optuna refuses trial.report in multi-objective studies; the rule applied instead is its pruner's own."""
    rng = random.Random(0)
    for _ in range(300):
        others = [rng.random() for _ in range(rng.randrange(0, 12))]
        value, factor = rng.random(), rng.choice([2, 3, 4])
        expected = _is_trial_promotable_to_next_rung(value, [*others, value], factor, StudyDirection.MAXIMIZE)
        assert promoted(value, others, factor) == expected
    assert halving_epochs(1, 3, 10) == [1, 3, 9]
    assert halving_epochs(1, 3, 3) == [1]  # the last epoch is never a check: nothing is left to save
    assert halving_epochs(2, 2, 2) == []


def test_halving_stops_a_weak_trial_through_optuna():
    """After a halving epoch, a trial below the budget and outside the best 1/factor of the study's trials there is
    stopped with optuna.TrialPruned (Optuna records it as pruned, with the reason in its record); one within the
    budget goes on whatever the others did."""
    from types import SimpleNamespace

    from compress.core.config import SearchConfig
    from compress.search.study import halving

    study = optuna.create_study(directions=["maximize", "minimize"])
    for metrics in ([0.9, 0.95], [0.8, 0.9], [0.85, 0.9]):  # three earlier trials, two epochs each
        study.enqueue_trial({}, user_attrs={"epoch_metrics": metrics})
        study.tell(study.ask(), [metrics[-1], 1.0])
    ctx = SimpleNamespace(search=SearchConfig(epochs=3, halving={"min_epochs": 1, "reduction_factor": 3}),
                          required_metric=0.95, data=SimpleNamespace(task=SimpleNamespace(metric="accuracy")))
    notes = {}
    weak = study.ask()
    after_epoch = halving(weak, ctx, lambda **fields: notes.update(fields), time.perf_counter())
    with pytest.raises(optuna.TrialPruned):
        after_epoch(1, 0.82)  # the best of 4 after epoch 1 go on (0.9): 0.82 is not among them, and under 0.95
    assert notes["why"].startswith("stopped after epoch 1") and notes["epochs_run"] == 1
    assert study._storage.get_trial(weak._trial_id).user_attrs["epoch_metrics"] == [0.82]
    strong = study.ask()
    halving(strong, ctx, lambda **fields: None, time.perf_counter())(1, 0.91)  # the best after epoch 1: goes on
    good = study.ask()
    halving(good, ctx, lambda **fields: None, time.perf_counter())(1, 0.96)  # within the budget: goes on
    halving(good, ctx, lambda **fields: None, time.perf_counter())(2, 0.5)  # epoch 2 is no halving epoch (1, 3)

def test_a_student_no_faster_than_one_within_the_budget_is_neither_trained_nor_a_rival():
    """The search picks the fastest student within the budget: once a trial keeps it at L ms, a shape whose fastest
    untrained graph takes L ms or more cannot be chosen (not trained), and a fast student is halved only against
    the trials that could still be chosen, not against slower ones that learn faster per epoch."""
    from types import SimpleNamespace

    from compress.core.config import SearchConfig
    from compress.search.study import fastest_within_budget, halving, rivals

    study = optuna.create_study(directions=["maximize", "minimize"])
    ctx = SimpleNamespace(search=SearchConfig(epochs=3, halving={"min_epochs": 1, "reduction_factor": 2}),
                          required_metric=0.95, data=SimpleNamespace(task=SimpleNamespace(metric="accuracy")))
    for metric, shipped_ms, untrained_ms, epochs in ((0.97, 2.0, 1.8, [0.93, 0.97]),  # within the budget: 2 ms
                                                     (0.99, 3.0, 3.0, [0.96, 0.99]),  # within, slower
                                                     (0.90, 0.5, 0.5, [0.80, 0.90]),  # fast, below the budget
                                                     (0.80, 0.6, 0.6, [0.70, 0.80])):
        study.enqueue_trial({}, user_attrs={"epoch_metrics": epochs, "record": {
            "metric": metric, "latency_ms": shipped_ms, "latency_ms_best_case": untrained_ms}})
        study.tell(study.ask(), [metric, shipped_ms])
    trial = study.ask()
    assert fastest_within_budget(trial, ctx) == (0, 2.0)
    assert [t.number for t in rivals(trial, ctx)] == [0, 2, 3]  # trial 1 (3 ms untrained) cannot be chosen
    # Against every trial, 0.86 after epoch 1 is outside the best half (0.96, 0.93); against the rivals it goes on.
    assert not promoted(0.86, [0.93, 0.96, 0.80, 0.70], 2) and promoted(0.86, [0.93, 0.80, 0.70], 2)
    halving(trial, ctx, lambda **fields: None, time.perf_counter())(1, 0.86)
    ceiling = SimpleNamespace(search=SearchConfig(epochs=3, max_latency_ms=1.9), required_metric=0.95)
    assert fastest_within_budget(trial, ceiling) is None  # over the ceiling, trial 0 does not count


def test_layer_dropped_keeps_evenly_spread_layers():
    assert spread_layers(3, 6) == [0, 2, 4]  # the demo's minilm-l3
    assert spread_layers(2, 6) == [0, 3]
    assert spread_layers(1, 12) == [0]


def test_a_config_without_search_hashes_as_before():
    """search is hashed only when set (compress.core.hashing.HASHED_WHEN_SET): no stage of an existing run folder
    re-runs after the upgrade, and a search block changes no stage's hash either (stages hash their own parts)."""
    dumped = DEFAULT_CONFIG.model_dump(mode="json")
    assert "search" in dumped and dumped["search"] is None
    assert stable_hash(DEFAULT_CONFIG) == stable_hash({k: v for k, v in dumped.items() if k != "search"})
    searched = RunConfig.model_validate(dumped | {"search": {"min_retained": 0.97}})
    assert stable_hash(searched) != stable_hash(DEFAULT_CONFIG)
    for part in ("data", "teacher", "students", "export", "bench"):
        assert stable_hash(getattr(searched, part) if part != "students" else searched.students[0]) == \
            stable_hash(getattr(DEFAULT_CONFIG, part) if part != "students" else DEFAULT_CONFIG.students[0])


def test_search_block_round_trips_through_config_yaml():
    """The run writes config.yaml with the block as given: lists stay lists, ranges stay ranges."""
    cfg = RunConfig.model_validate({"search": {"min_retained": 0.97, "space": {
        "families": ["custom_transformer"], "custom_transformer": {"num_layers": {"low": 1, "high": 3},
                                                                    "hidden_size": 128}}}})
    text = dump_config(cfg)
    assert "hidden_size:\n      - 128" in text and "low: 1" in text
    assert RunConfig.model_validate(yaml.safe_load(text)) == cfg


@pytest.mark.parametrize("student", [
    {"name": "search-bilstm-1x64", "kind": "bilstm", "num_layers": 1, "hidden_size": 64, "embedding_size": 64,
     "train": {"epochs": 1, "learning_rate": 2e-3}},  # 1 epoch is TrainConfig's default and not a BiLSTM's
    {"name": "search-l2", "kind": "layer_dropped", "layers": [0, 3], "distill": {"method": "intermediate"},
     "train": {"epochs": 3, "learning_rate": 1e-4}},
])
def test_chosen_snippet_loads_back_as_the_same_student(student):
    parsed = TypeAdapter(StudentConfig).validate_python(student)
    pasted = yaml.safe_load(snippet(parsed))
    assert isinstance(pasted, list) and len(pasted) == 1
    assert TypeAdapter(StudentConfig).validate_python(pasted[0]) == parsed


def test_the_chosen_trial_is_the_fastest_within_the_budget():
    def row(number, state, metric, latency, within):
        return {"number": number, "state": state, "metric": metric, "latency_ms": latency, "within_budget": within}

    rows = [row(0, "complete", 0.95, 1.0, True), row(1, "complete", 0.99, 0.5, True), row(2, "pruned", None, None,
                                                                                          False),
            row(3, "complete", 0.80, 0.1, False), row(4, "complete", 0.97, 0.5, True)]
    assert choose(rows)["number"] == 1  # 4 is as fast but keeps less
    assert choose([r for r in rows if not r["within_budget"]]) is None
    assert closest([r for r in rows if r["number"] in (2, 3)])["number"] == 3


# ---------------------------------------------------------------- searches


def test_search_end_to_end(searchable):
    """A tiny search with export and int8: every trial in the table, the plot, the chosen student trained by the
    run and reported as a row, its snippet, and the search plot in report.html."""
    cfg, path = searchable(SMALL_SEARCH, export={"optimize": False, "quantize": {"variants": ["dynamic-qint8"]}})
    out = compress("search", str(path))
    assert out.returncode == 0, out.stderr
    folder = cfg.run_dir / "search"
    rows = list(csv.DictReader((folder / "trials.csv").open()))
    assert len(rows) >= 3 and {r["state"] for r in rows} <= {"complete", "pruned"}
    about = json.loads((folder / "trials.json").read_text())
    assert about["metric"] == "accuracy" and about["split"] == "validation" and about["chosen"] is not None
    trained = next(t for t in about["trials"] if t["state"] == "complete")
    assert set(trained["latency_ms_by_graph"]) == {"torch", "fp32", "dynamic-qint8"}  # timed as they would ship
    assert trained["params"] > 0 and trained["latency_ms"] > 0 and trained["metric"] is not None
    assert (folder / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    chosen = yaml.safe_load((folder / "chosen.yaml").read_text())[0]
    assert chosen["name"].startswith("search-") and f"chosen: {chosen['name']}" in out.stdout
    report = json.loads((cfg.run_dir / "report.json").read_text())
    row = next(r for r in report["rows"] if r["model"] == chosen["name"])
    assert row["role"] == "student" and row["ort_kept"] is not None  # exported, int8 tried, benched like any other
    assert "<h2>Search</h2>" in (cfg.run_dir / "report.html").read_text()
    assert chosen["name"] in (cfg.run_dir / "config.yaml").read_text()  # the run's record of what it trained


def test_a_shape_over_the_latency_ceiling_is_never_trained(searchable):
    cfg, path = searchable(SMALL_SEARCH | {"max_latency_ms": 1e-6})
    out = compress("search", str(path))
    assert out.returncode == 3, out.stderr  # ran, and no trial kept the budget
    assert "budget not met" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    about = json.loads((cfg.run_dir / "search" / "trials.json").read_text())
    measured = [t for t in about["trials"] if not t["why"].startswith("the same student as trial")]  # repeats
    assert len(measured) >= 3
    for trial in about["trials"]:
        assert trial["state"] == "pruned" and trial["metric"] is None and not trial["epoch_metrics"]
    for trial in measured:
        assert trial["why"].startswith("over the latency ceiling untrained") and trial["latency_ms_best_case"] > 1e-6
    assert not (cfg.run_dir / "search" / "trials").exists()  # no training log for any of them
    assert not (cfg.run_dir / "search" / "chosen.yaml").exists()


def test_resume_after_kill_keeps_finished_trials(searchable):
    """kill -9 while a trial trains; the same command again: the finished trials stay as they were (not run
    again), the killed one is failed and run again from its parameters, and the study ends with the trials asked."""
    cfg, path = searchable(SMALL_SEARCH | {"trials": 3})
    killed = None
    for _ in range(3):  # a trial seen running may finish before the kill lands: then start the worker again
        killed = kill_mid_trial(cfg, path)
        if killed is not None:
            break
    assert killed is not None, "no trial was caught running"
    before = {t.number: (t.values, t.user_attrs["record"]["seconds"]) for t in finished(study_of(cfg))}
    logs = {n: (cfg.run_dir / "search" / "trials" / str(n) / "train.jsonl").stat().st_mtime_ns for n in before
            if (cfg.run_dir / "search" / "trials" / str(n) / "train.jsonl").exists()}

    out = compress("search", str(path))
    assert out.returncode == 0, out.stderr
    assert f"trial {killed} stopped with its worker" in out.stdout
    study = study_of(cfg)
    trials = {t.number: t for t in study.get_trials()}
    assert trials[killed].state == TrialState.FAIL
    retry = next(t for t in trials.values() if t.user_attrs.get("retry_of") == killed)
    assert retry.params == trials[killed].params and retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    for number, (values, seconds) in before.items():  # kept, not run again
        assert trials[number].values == values and trials[number].user_attrs["record"]["seconds"] == seconds
    for number, mtime in logs.items():
        assert (cfg.run_dir / "search" / "trials" / str(number) / "train.jsonl").stat().st_mtime_ns == mtime
    assert len(finished(study)) == 3
    rows = json.loads((cfg.run_dir / "search" / "trials.json").read_text())["trials"]
    assert next(r for r in rows if r["number"] == killed)["why"] == \
        f"its worker stopped mid-trial; retried as trial {retry.number}"


def kill_mid_trial(cfg: RunConfig, path: Path) -> int | None:
    """Start `compress search` as a process, kill -9 it once a trial has finished and another is training; the
    number of the trial it was running when it died (None: it died between trials, or finished)."""
    worker = subprocess.Popen([sys.executable, "-m", "compress.cli", "search", str(path)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.05)
            try:
                trials = study_of(cfg).get_trials()
            except Exception:  # no study yet, or it is being created
                continue
            mine = [t for t in trials if t.user_attrs.get("worker", {}).get("pid") == worker.pid]
            if any(t.state == TrialState.COMPLETE for t in mine) and any(
                    t.state == TrialState.RUNNING and "params" in t.user_attrs.get("record", {}) for t in mine):
                os.kill(worker.pid, signal.SIGKILL)  # measured, so it trains next
                break
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait()
    running = [t for t in study_of(cfg).get_trials() if t.state == TrialState.RUNNING and "worker" in t.user_attrs]
    return running[0].number if running else None


@pytest.fixture(scope="module")
def postgresql(tmp_path_factory):
    """A real PostgreSQL server from the pgserver package (a server in a wheel; starts offline in a few seconds),
    or a skip where it or the psycopg2 driver is not installed."""
    pgserver = pytest.importorskip("pgserver")
    pytest.importorskip("psycopg2")
    server = pgserver.get_server(tmp_path_factory.mktemp("postgres"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


def test_two_workers_on_one_storage_finish_distinct_trials(searchable):
    """Two processes on one study (the default SQLite storage in the run folder): a `compress search` process, and
    this one running the same command meanwhile. Each takes trials of its own; the study ends with the trials asked;
    the chosen student is trained once."""
    cfg, path = searchable(SMALL_SEARCH | {"trials": 4})
    other = subprocess.Popen([sys.executable, "-m", "compress.cli", "search", str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        while not (cfg.run_dir / "search" / "teacher.json").exists() and other.poll() is None:
            time.sleep(0.1)  # the other process has the teacher's stages checked: start this one beside it
        here = compress("search", str(path))
        _, err = other.communicate(timeout=300)
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
    assert here.returncode == 0, here.stderr
    assert other.returncode == 0, err
    study = study_of(cfg)
    done = finished(study)
    assert 4 <= len(done) <= 5  # a worker checks the count after each trial: both may start the last one
    workers = {t.number: t.user_attrs["worker"]["pid"] for t in done}
    assert set(workers.values()) == {os.getpid(), other.pid}, workers  # both took trials, each its own
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials())
    chosen = yaml.safe_load((cfg.run_dir / "search" / "chosen.yaml").read_text())[0]
    report = json.loads((cfg.run_dir / "report.json").read_text())
    assert [r["model"] for r in report["rows"]].count(chosen["name"]) == 1



def test_a_study_on_postgresql_resumes_there(searchable, postgresql):
    """--storage on a real PostgreSQL server: the study lives there (no study.db in the run folder), and the same
    command with more trials continues it. (Two processes on one PostgreSQL study were checked by hand the same way
    as the SQLite test above; the suite keeps one process here for time.)"""
    cfg, path = searchable(SMALL_SEARCH | {"trials": 2})
    first = compress("search", str(path), "--storage", postgresql)
    assert first.returncode == 0, first.stderr
    assert not (cfg.run_dir / "search" / "study.db").exists()
    more = compress("search", str(path), "--storage", postgresql, "--trials", "3")
    assert more.returncode == 0, more.stderr
    study = study_of(cfg, postgresql)
    assert len(finished(study)) == 3 and "postgresql://" in json.loads(
        (cfg.run_dir / "search" / "trials.json").read_text())["storage"]

# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("block, fragment", [
    ({"space": {"families": []}}, "search.space.families': is empty"),
    ({"space": {"custom_transformer": {"num_layers": {"low": 4, "high": 2}}}}, "low 4 is above high 2"),
    ({"space": {"bilstm": {"hidden_size": []}}}, "search.space.bilstm.hidden_size': an empty list"),
    ({"min_retained": 0.9, "max_metric_drop": 0.02}, "give one budget"),
    ({"space": {"families": ["bilstm"], "methods": ["tinybert"]}}, "ones need a transformer"),
    ({"space": {"layer_dropped": {"num_layers": [2, 9]}}}, "keeps up to 9 layers, and the teacher has 4"),
])
def test_a_bad_search_block_is_one_line(tmp_path, tiny_bert_dir, tiny_csv, block, fragment):
    path = tmp_path / "c.yaml"
    cfg = teacher_run(tmp_path, tiny_bert_dir, tiny_csv).model_dump(mode="json")
    path.write_text(yaml.safe_dump(cfg | {"search": block}))
    for command in ("validate", "search"):
        out = compress(command, str(path))
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert fragment in out.stderr
    assert not (tmp_path / "runs").exists()


def test_search_without_a_block_or_with_a_bad_storage_is_one_line(tmp_path, tiny_bert_dir, tiny_csv):
    cfg = teacher_run(tmp_path, tiny_bert_dir, tiny_csv)
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    out = compress("search", str(path))
    assert out.returncode == 2 and "the config has no search: block" in out.stderr, out.stderr
    path.write_text(dump_config(RunConfig.model_validate(cfg.model_dump(mode="json") | {"search": {}})))
    out = compress("search", str(path), "--storage", "nosuchdb://user:secret@host/db")
    assert out.returncode == 2 and "cannot open the study storage" in out.stderr, out.stderr
    assert "secret" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (cfg.run_dir / "teacher").exists()  # refused before the teacher trained
