"""bench/memory.py: one probe process per runnable, its rows, and how a failing probe reaches the user.

Each real probe is a fresh Python process (seconds of imports), so only one runs here (the CLI tests run more);
the probe's output is tested in this process, and the parent's handling of what a probe returns on stand-in
results."""

import json
import subprocess
import sys

import psutil
import pytest

import bench.memory
from bench.memory import MB, _peak_rss_bytes, memory_rows
from bench.targets import Runnable
from compress.core.errors import UserError

ROW_KEYS = ["name", "backend", "path", "device", "batch_size", "seq_len", "peak_rss_mb", "rss_increase_mb",
            "cuda_max_allocated_mb", "mps_current_allocated_mb", "mps_driver_allocated_mb", "provider"]


def run_probe_main(monkeypatch, capsys, runnable, device="cpu"):
    """`python -m bench.memory SPEC` in this process (its imports are loaded already): exit code, stdout, stderr.
    The reset of the RSS high-water mark is skipped, so pytest's own is left alone."""
    spec = {"runnable": runnable.to_dict(), "device": device, "batch_size": 2, "seq_len": 8, "iters": 2,
            "threads": None}
    monkeypatch.setattr(sys, "argv", ["bench.memory", json.dumps(spec)])
    monkeypatch.setattr(bench.memory, "_reset_peak_rss", lambda: None)
    try:
        bench.memory.main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_probe_prints_its_figures_as_one_json_line(monkeypatch, capsys, tiny_bert_onnx):
    code, out, err = run_probe_main(monkeypatch, capsys, Runnable("tiny", "ort", str(tiny_bert_onnx), None))
    assert code == 0 and len(out.strip().splitlines()) == 1
    figures = json.loads(out)
    assert list(figures) == ROW_KEYS[6:]
    assert figures["provider"] == "CPUExecutionProvider"
    assert figures["peak_rss_mb"] >= figures["rss_increase_mb"] >= 0
    # PyTorch's device counters cannot see ONNX Runtime's allocations: n/a, never 0.
    assert figures["cuda_max_allocated_mb"] is figures["mps_current_allocated_mb"] is None


def test_the_probes_user_errors_are_one_line_with_exit_2(monkeypatch, capsys, tiny_bert_dir):
    code, out, err = run_probe_main(monkeypatch, capsys, Runnable("tiny", "torch", str(tiny_bert_dir),
                                                                  str(tiny_bert_dir)), device="tpu")
    assert code == 2 and out == ""
    assert err == "error: --device: unknown device 'tpu' -- use cpu, cuda or mps\n"


def test_a_corrupt_onnx_is_the_probes_one_line_user_error(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    code, out, err = run_probe_main(monkeypatch, capsys, Runnable("bad", "ort", str(bad), None))
    assert code == 2 and err.startswith(f"error: {bad}: ONNX Runtime cannot load it")


class FakeProbes:
    """Stands in for subprocess.run: records each command and answers with the given results, in turn."""

    def __init__(self, *results):
        self.results, self.commands = list(results), []

    def __call__(self, command, **kwargs):
        self.commands.append(command)
        returncode, stdout, stderr = self.results.pop(0)
        return subprocess.CompletedProcess(command, returncode, stdout, stderr)


def test_each_runnable_gets_its_own_probe_with_the_whole_spec(monkeypatch):
    measured = {"peak_rss_mb": 900.0, "rss_increase_mb": 120.0, "cuda_max_allocated_mb": None,
                "mps_current_allocated_mb": None, "mps_driver_allocated_mb": None, "provider": "torch-cpu"}
    probes = FakeProbes((0, "a warning printed first\n" + json.dumps(measured) + "\n", ""),
                        (0, json.dumps({**measured, "peak_rss_mb": 1000.0}), ""))
    monkeypatch.setattr(bench.memory.subprocess, "run", probes)
    runnables = [Runnable("a", "torch", "a-dir", "a-dir", "ner"), Runnable("b", "torch", "bert-base", "bert-base")]
    rows = memory_rows(runnables, "cpu", 4, 32, 3, 2)
    assert [c[:3] for c in probes.commands] == [[sys.executable, "-m", "bench.memory"]] * 2
    assert json.loads(probes.commands[0][3]) == {"runnable": runnables[0].to_dict(), "device": "cpu",
                                                 "batch_size": 4, "seq_len": 32, "iters": 3, "threads": 2}
    assert rows[0] == {"name": "a", "backend": "torch", "path": "a-dir", "device": "cpu", "batch_size": 4,
                       "seq_len": 32, **measured}  # the probe's last line is its result
    assert rows[1]["peak_rss_mb"] == 1000.0


@pytest.mark.parametrize("returncode, stderr, line", [
    # Exit 2: the probe's own one-line error, as the user should see it.
    (2, "some warning\nerror: m.onnx: ONNX Runtime cannot load it -- re-export the model\n",
     "m.onnx: ONNX Runtime cannot load it -- re-export the model"),
    # Any other failure: the last line of its traceback, attributed to the model.
    (1, "Traceback (most recent call last):\n  File ...\nKeyError: 'nope'\n",
     "m.onnx: the memory probe failed (KeyError: 'nope') -- run `bench latency` on it to see whether it loads and "
     "runs"),
    # Killed (e.g. out of memory) without a word.
    (-9, "", "m.onnx: the memory probe failed (no output) -- run `bench latency` on it to see whether it loads and "
             "runs"),
])
def test_a_failed_probe_is_one_user_error_line(monkeypatch, returncode, stderr, line):
    monkeypatch.setattr(bench.memory.subprocess, "run", FakeProbes((returncode, "", stderr)))
    with pytest.raises(UserError) as err:
        memory_rows([Runnable("m", "ort", "m.onnx", None)], "cpu", 1, 8, 1, None)
    assert err.value.line() == line


def test_the_peak_is_at_least_what_the_process_holds_now():
    assert MB == 2**20
    assert _peak_rss_bytes() >= psutil.Process().memory_info().rss
