"""`bench` through its console-script entry: exit codes, stdout and stderr as a user's shell sees them."""

import json
import subprocess
import sys

import pytest

from bench.cli import main
from tests.conftest import console_script


def bench(*args: str) -> subprocess.CompletedProcess:
    """`bench ARGS` in this process (test_a_real_process_exits_2_with_one_line runs the command itself)."""
    return console_script(main, "bench", *args)


def test_a_real_process_exits_2_with_one_line(tmp_path):
    # A command whose mistake shows before torch loads, so the real interpreter's path costs a second, not ten.
    out = subprocess.run([sys.executable, "-m", "bench.cli", "compare", str(tmp_path / "a.json"),
                          str(tmp_path / "b.json")], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "file not found" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_the_entry_point_exits_1_on_a_regression_and_130_on_ctrl_c(tmp_path, monkeypatch):
    # Through main(), as the installed console script runs: typer outside standalone mode returns these codes
    # rather than exiting, so a test through typer's CliRunner would not see them lost.
    def document(p50: float) -> str:
        row = {"name": "x", "backend": "torch", "device": "cpu", "batch_size": 1, "seq_len": 8, "latency_ms_p50": p50}
        return json.dumps({"command": "latency", "settings": {}, "environment": {}, "results": [row]})

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(document(10.0))
    b.write_text(document(20.0))
    out = bench("compare", str(a), str(b))
    assert out.returncode == 1 and "1 regression(s)" in out.stderr
    assert bench("compare", str(a), str(a)).returncode == 0

    from bench import compare

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(compare, "load_rows", interrupted)
    out = bench("compare", str(a), str(b))
    assert out.returncode == 130 and out.stderr.strip() == "interrupted: run the same command again to resume"


@pytest.fixture(scope="module")
def onnx_file(tiny_bert_onnx):
    return tiny_bert_onnx


def test_latency_on_onnx_and_model_folder(onnx_file, tiny_bert_dir, tmp_path):
    out = bench("latency", str(onnx_file), str(tiny_bert_dir), "--iters", "3", "--warmup", "1", "--seq-len", "16",
                "--json", str(tmp_path / "lat.json"))
    assert out.returncode == 0, out.stderr
    assert "p95" in out.stdout  # the table, beside the JSON
    rows = json.loads((tmp_path / "lat.json").read_text())["results"]
    # Each target on its own backend: the .onnx file on ORT, the model folder on PyTorch.
    assert [(r["backend"], r["path"], r["seq_len"], r["iters"]) for r in rows] == [
        ("ort", str(onnx_file), 16, 3), ("torch", str(tiny_bert_dir), 16, 3)]
    assert all(r["latency_ms_p50"] <= r["latency_ms_p95"] for r in rows)


@pytest.mark.parametrize("device", ["mps", "tpu"])
def test_unavailable_device_is_one_line_exit_2(onnx_file, device):
    import torch

    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    out = bench("latency", str(onnx_file), "--device", device)
    assert out.returncode == 2
    assert out.stderr.startswith("error: --device:") and len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr


def test_unknown_target_is_one_line_exit_2(tmp_path):
    out = bench("latency", str(tmp_path))
    assert out.returncode == 2 and "not a run folder, .onnx file" in out.stderr and "Traceback" not in out.stderr


def test_latency_on_our_own_families_saved_folders(tmp_path):
    from compress.models.zoo import build_zoo_model

    folders = []
    for name in ("custom-2x256", "bilstm-2x128"):
        build_zoo_model(name, "ner", 5).save_pretrained(tmp_path / name)
        folders.append(str(tmp_path / name))
    out = bench("latency", *folders, "--iters", "3", "--warmup", "1", "--seq-len", "16",
                "--json", str(tmp_path / "lat.json"))
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "lat.json").read_text())["results"]
    assert [(r["name"], r["backend"]) for r in rows] == [("custom-2x256", "torch"), ("bilstm-2x128", "torch")]
    custom, bilstm = rows
    assert custom["flops"] > 0 and bilstm["flops"] is None  # an LSTM's FLOPs are not guessed


def test_corrupt_onnx_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    out = bench("latency", str(bad), "--iters", "3")
    assert out.returncode == 2 and "ONNX Runtime cannot load it" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_without_onnx_runtime_a_command_is_one_line(monkeypatch):
    # ONNX Runtime comes from the `cpu` or `gpu` extra; installed without either, a command says which to add.
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # an import of it now fails, as when it is absent
    for name in [m for m in sys.modules if m == "exports.ort" or m.startswith("bench.")]:
        parent, _, child = name.rpartition(".")
        # Imported afresh below; the old modules come back afterwards, in sys.modules and on their packages.
        monkeypatch.setattr(sys.modules[parent], child, sys.modules[name])
        monkeypatch.delitem(sys.modules, name)
    from bench.cli import main as fresh_main

    out = console_script(fresh_main, "bench", "latency", "bert-base", "--iters", "3", "--seq-lens", "8")
    assert out.returncode == 2 and out.stderr.strip() == (
        'error: onnxruntime: ONNX Runtime is not installed -- pip install "bert-compress[cpu]", or '
        '"bert-compress[gpu]" on a CUDA machine')


def test_version_and_json_to_stdout(tmp_path):
    from importlib import metadata

    from compress.cli import main as compress_main

    assert bench("--version").stdout.strip() == f"bert-compress {metadata.version('bert-compress')}"
    assert console_script(compress_main, "compress", "--version").stdout.strip().startswith("bert-compress ")
    row = {"name": "x", "backend": "torch", "device": "cpu", "batch_size": 1, "seq_len": 8, "latency_ms_p50": 2.0}
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"command": "latency", "settings": {}, "environment": {}, "results": [row]}))
    out = bench("compare", str(a), str(a), "--json", "-", "--csv", str(tmp_path / "c.csv"))
    document = json.loads(out.stdout)  # the JSON alone: no table around it
    assert out.returncode == 0 and document["command"] == "compare" and document["results"][0]["ratio"] == 1.0
    assert out.stderr.strip() == f"written: {tmp_path / 'c.csv'}" and not (tmp_path / "-").exists()
