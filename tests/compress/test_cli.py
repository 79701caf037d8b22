"""`compress` as a user runs it: exit codes, one-line errors, no tracebacks."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compress.cli import main
from tests.conftest import console_script

ROOT = Path(__file__).parents[2]


def compress(*args: str) -> subprocess.CompletedProcess:
    """`compress ARGS` in this process (test_missing_config_file runs the command itself)."""
    return console_script(main, "compress", *args)


def assert_one_line_error(out, *fragments):
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    for fragment in fragments:
        assert fragment in out.stderr


def test_validate_accepts_the_demo():
    out = compress("validate", str(ROOT / "configs" / "demo.yaml"))
    assert out.returncode == 0 and "ok" in out.stdout


def test_missing_config_file(tmp_path):
    out = subprocess.run([sys.executable, "-m", "compress.cli", "run", str(tmp_path / "missing.yaml")],
                         capture_output=True, text=True)
    assert_one_line_error(out, "config file not found", "missing.yaml")


def test_unknown_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\nteacher: {modle: minilm-l6}\n")
    assert_one_line_error(compress("validate", str(path)), "unknown key 'teacher.modle'", str(path))


def test_wrong_value_type(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("bench: {iters: lots}\n")
    assert_one_line_error(compress("run", str(path)), "bench.iters", "'lots'")


def test_unreachable_hub_model_is_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"name: hub\noutput_dir: {tmp_path}\nteacher: {{model: no-such-org/no-such-model}}\n")
    # Fails within seconds here (no network: the hub probe switches to offline mode) and with a network alike.
    assert_one_line_error(compress("run", str(path)), "no-such-org/no-such-model", "teacher.model")


def test_run_smoke_on_tiny_bert(tmp_path, tiny_bert_dir, tiny_csv):
    path = tmp_path / "c.yaml"
    path.write_text(f"""
name: smoke
output_dir: {tmp_path / 'runs'}
data: {{source: {{kind: local, train: {tiny_csv}}}, max_length: 16}}
teacher: {{model: {tiny_bert_dir}, train: {{epochs: 1}}}}
students: [{{name: s, layers: [0], baseline: false, train: {{epochs: 1}}}}]
export: {{enabled: false}}
bench: {{warmup: 0, iters: 3, seq_len: 8, pause_ms: 0}}
""")
    out = compress("run", str(path))
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "runs" / "smoke" / "report.json").read_text())
    assert [r["role"] for r in report["rows"]] == ["teacher", "student"]
    assert report["rows"][1]["ort_p50_ms"] is None  # export disabled: no ORT figure, not a zero
    assert "% of teacher" in out.stdout


@pytest.mark.parametrize("task, kind, filename, content, fragment", [
    ("ner", "conll", "train.txt", "Paris B-LOC\nis O\nnice\n", "train.txt:3"),
    ("ner", "conll", "train.txt", "\n\n", "no sentences"),
    ("qa", "squad", "train.json",
     json.dumps({"data": [{"paragraphs": [{"context": "Paris is nice.", "qas": [
         {"id": "q7", "question": "?", "answers": [{"text": "Paris", "answer_start": 3}]}]}]}]}),
     "example q7: answer_start 3 does not match"),
])
def test_bad_task_data_is_one_line_naming_file_and_place(tmp_path, tiny_bert_dir, task, kind, filename, content,
                                                         fragment):
    data = tmp_path / filename
    data.write_text(content)
    path = tmp_path / "c.yaml"
    path.write_text(f"name: bad\ntask: {task}\noutput_dir: {tmp_path / 'runs'}\n"
                    f"data: {{source: {{kind: {kind}, train: {data}}}}}\nteacher: {{model: {tiny_bert_dir}}}\n")
    assert_one_line_error(compress("run", str(path)), fragment, filename)
    assert not (tmp_path / "runs" / "bad").exists()  # refused before anything ran: no run folder is left


@pytest.mark.parametrize("task, content, columns, fragment", [
    ("classification", "sentence1,sentence2,label\na cat,a dog,x\n", "text_pair_column: question2",
     "no column 'question2'"),
    ("regression", "sentence1,sentence2,score\na cat,a dog,3.5\na car,a bus,high\n",
     "text_pair_column: sentence2, label_column: score", "regression label 'high' is not a finite number"),
])
def test_bad_pairs_and_scores_leave_no_run_folder(tmp_path, tiny_bert_dir, task, content, columns, fragment):
    """A pair column that is not there, a score that is not a number: one line, exit 2, and no run folder; a run
    folder that was there before keeps what it held."""
    data = tmp_path / "pairs.csv"
    data.write_text(content)
    path = tmp_path / "c.yaml"
    path.write_text(f"name: bad\ntask: {task}\noutput_dir: {tmp_path / 'runs'}\nteacher: {{model: {tiny_bert_dir}}}\n"
                    f"data: {{source: {{kind: local, train: {data}, text_column: sentence1, {columns}}}}}\n")
    assert_one_line_error(compress("run", str(path)), fragment)
    assert not (tmp_path / "runs" / "bad").exists()
    (tmp_path / "runs" / "bad").mkdir(parents=True)
    (tmp_path / "runs" / "bad" / "notes.txt").write_text("mine")
    assert_one_line_error(compress("run", str(path)), fragment)
    assert (tmp_path / "runs" / "bad" / "notes.txt").read_text() == "mine"


def test_a_run_refused_by_the_lock_leaves_the_running_one_alone(tmp_path, tiny_bert_dir, tiny_csv):
    """A second run of a new name, started while the first holds the folder, is refused and deletes nothing of the
    first's, however little the first has written yet."""
    from compress.core.artifacts import run_folder_lock

    path = tmp_path / "c.yaml"
    path.write_text(f"name: busy\noutput_dir: {tmp_path / 'runs'}\nteacher: {{model: {tiny_bert_dir}}}\n"
                    f"data: {{source: {{kind: local, train: {tiny_csv}}}}}\n")
    run_dir = tmp_path / "runs" / "busy"
    run_dir.mkdir(parents=True)
    with run_folder_lock(run_dir):  # the first run, just started: its lock and config
        (run_dir / "config.yaml").write_text("name: busy\n")
        assert_one_line_error(compress("run", str(path)), "another compress run is using this run folder")
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "config.yaml"]


def test_sequence_longer_than_the_model_fails_before_training(tmp_path, tiny_bert_dir, tiny_csv):
    path = tmp_path / "c.yaml"
    path.write_text(f"name: long\noutput_dir: {tmp_path / 'runs'}\n"
                    f"data: {{source: {{kind: local, train: {tiny_csv}}}}}\n"
                    f"teacher: {{model: {tiny_bert_dir}}}\nbench: {{seq_len: 512}}\n")
    assert_one_line_error(compress("run", str(path)), "bench.seq_len is 512 but the teacher takes at most 128")
    assert not (tmp_path / "runs").exists()  # found from the teacher's config.json, before the run folder is made
    assert_one_line_error(compress("validate", str(path)), "bench.seq_len is 512 but the teacher takes at most 128")
    assert not (tmp_path / "runs" / "long" / "teacher").exists()


def test_unknown_stage_name():
    out = compress("run", "--from", "studnets")
    assert_one_line_error(out, "--from: unknown stage 'studnets'", "stages: teacher, students")


def test_every_command_has_an_example_and_completion_is_on():
    from bench.cli import main as bench_main

    for command in ("run", "validate", "export", "answer", "tag"):
        assert "Example: compress " + command in compress(command, "--help").stdout
    for command in ("latency", "memory", "profile", "compare", "zoo"):
        assert "Example: bench " + command in console_script(bench_main, "bench", command, "--help").stdout
    assert "--install-completion" in compress("--help").stdout


def test_stage_names_complete_in_the_shell():
    import os

    typed = {"COMP_WORDS": "compress run --only st", "COMP_CWORD": "3"}  # what bash hands the completion script
    env = os.environ | {"_COMPRESS_COMPLETE": "complete_bash"} | typed
    script = Path(sys.executable).with_name("compress")  # the installed console script: completion keys on its name
    out = subprocess.run([str(script)], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["students"]


def test_quiet_prints_only_the_result_and_verbose_with_it_is_refused(tmp_path):
    from bench.cli import main as bench_main
    from compress.core import progress

    zoo = ["zoo", "custom-2x256", "--iters", "3", "--warmup", "0"]
    out = console_script(bench_main, "bench", "-q", *zoo, "--json", str(tmp_path / "zoo.json"))
    assert out.returncode == 0 and out.stdout == f"written: {tmp_path / 'zoo.json'}\n"  # no table, no bar
    assert json.loads((tmp_path / "zoo.json").read_text())["results"][0]["name"] == "custom-2x256"
    assert "custom-2x256" in console_script(bench_main, "bench", "-q", *zoo).stdout  # no file: the table is the result
    assert progress.console.quiet is False  # --quiet held for its command only
    assert_one_line_error(compress("-q", "-v", "validate", "configs/demo.yaml"), "--quiet and --verbose together")
