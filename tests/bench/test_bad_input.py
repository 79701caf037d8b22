"""`bench` given bad input, as a careless user would (issue 33): every output flag checked before anything is
measured, and `bench compare` reading its files against the shapes that wrote them. One line, exit code 2, nothing
half-written."""

import json
import subprocess
from pathlib import Path

import pytest

from bench.cli import main
from tests.compress.test_cli import assert_one_line_error
from tests.conftest import console_script


def bench(*args) -> subprocess.CompletedProcess:
    return console_script(main, "bench", *map(str, args))


def latency_file(path: Path) -> Path:
    row = {"name": "x", "backend": "torch", "device": "cpu", "batch_size": 1, "seq_len": 8, "latency_ms_p50": 2.0}
    path.write_text(json.dumps({"command": "latency", "settings": {}, "environment": {}, "results": [row]}))
    return path


UNWRITABLE = Path("/proc/no-such-folder")  # no folder can be made in /proc, as root either


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("command, bad, good", [
    (["latency", "tinybert-4", "--iters", "3"], "--json", "--csv"),
    (["latency", "tinybert-4", "--iters", "3"], "--csv", "--json"),
    (["memory", "tinybert-4", "--iters", "1"], "--json", "--csv"),
    (["profile", "tinybert-4", "--iters", "1"], "--trace", "--json"),
    (["profile", "tinybert-4", "--iters", "1"], "--csv", "--trace"),
    (["zoo", "tinybert-4", "--iters", "3"], "--json", "--csv"),
    (["compare", "A", "A"], "--json", "--csv"),
])
def test_every_output_flag_is_checked_before_measuring(tmp_path, command, bad, good):
    a = latency_file(tmp_path / "a.json")
    command = [str(a) if arg == "A" else arg for arg in command]
    out = bench(*command, bad, UNWRITABLE / "out.json", good, tmp_path / "new" / "deeper" / "out.json")
    assert_one_line_error(out, f"{bad} {UNWRITABLE / 'out.json'}: cannot make the folder {UNWRITABLE}",
                          "pick a writable path")
    assert "p50" not in out.stdout and "operator" not in out.stdout  # nothing was measured
    assert sorted(tmp_path.iterdir()) == [a]  # the good flag's folders were made for the try, and removed


def test_two_outputs_in_one_file_are_refused(tmp_path):
    out = tmp_path / "out.json"
    assert_one_line_error(bench("latency", "tinybert-4", "--json", out, "--csv", out),
                          "--json and --csv name the same file, so one would overwrite the other")
    assert_one_line_error(bench("profile", "tinybert-4", "--trace", out, "--json", tmp_path / "." / "out.json"),
                          "--json and --trace name the same file")
    assert not out.exists()


RUN_SHAPE = {"batch_size": 1, "seq_len": 8}


@pytest.mark.parametrize("document, fragment", [
    # A run's bench.json, read as the BenchResult the bench stage wrote
    ({"settings": RUN_SHAPE, "results": {"teacher": 1}}, "results.teacher: Input should be a dictionary (got 1)"),
    ({"settings": RUN_SHAPE, "results": {"teacher": {"torch": {"latency_ms_p50": "fast"}}}},
     'results.teacher.torch.latency_ms_p50: Input should be a valid number, unable to parse string as a number '
     '(got "fast")'),
    ({"settings": RUN_SHAPE, "results": {"teacher": {"torch": {"latency_ms_p50": 1.0}}}},
     "results.teacher.torch.latency_ms_p90: Field required"),
    ({"settings": {"batch_size": "one", "seq_len": 8}, "results": {}},
     'settings.batch_size is "one", not a whole number'),
    ({"settings": [], "results": {}}, "settings.batch_size is null, not a whole number"),
    # `bench ... --json` rows: the fields rows are matched by, and the compared metric
    ({"results": [{"name": "x", "backend": "torch", "latency_ms_p50": "fast"}]},
     'results.0.latency_ms_p50 is "fast", not a number'),
    ({"results": [{"name": "x", "latency_ms_p50": 1.0}, {"name": "y", "latency_ms_p50": {"p50": 1}}]},
     "results.1.latency_ms_p50 is an object, not a number"),
    ({"results": [{"name": 7, "latency_ms_p50": 1.0}]}, "results.0.name is 7, not text"),
    ({"results": [{"name": "x", "batch_size": "1", "latency_ms_p50": 1.0}]},
     'results.0.batch_size is "1", not a whole number'),
    ({"results": [{"name": "x", "seq_len": True, "latency_ms_p50": 1.0}]}, "results.0.seq_len is true, not a whole"),
])
def test_compare_checks_the_files_inner_shape(tmp_path, document, fragment):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    written = tmp_path / "cmp.json"
    for a, b in ((path, latency_file(tmp_path / "good.json")), (tmp_path / "good.json", path)):
        assert_one_line_error(bench("compare", a, b, "--json", written), f"{path}: {fragment}")
    assert not written.exists()


def test_compare_of_a_deeply_nested_file_is_one_line(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"results": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert_one_line_error(bench("compare", path, path), f"{path}: not JSON (nested too deeply)")
