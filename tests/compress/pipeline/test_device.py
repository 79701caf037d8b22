"""`device:` in the run YAML: auto picks CUDA, then MPS, then the CPU; an absent device or fp16 without a GPU is
one line before anything is written; the setting leaves every stage hash alone."""

import os

import pytest
import torch
from pydantic import ValidationError

from bench.devices import devices_beside_cpu
from compress.core.config import RunConfig
from compress.core.errors import UserError
from compress.core.hashing import stable_hash
from compress.pipeline.stages import run_device, training_on

NO_CUDA = not torch.cuda.is_available()


def test_auto_picks_the_best_device_here_and_cpu_is_the_cpu():
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert run_device(RunConfig()).type == expected
    assert run_device(RunConfig(device="cpu")) == torch.device("cpu")


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a GPU")
@pytest.mark.parametrize("device, message", [("cuda", "not available on this machine"),
                                             ("cuda:3", "not available on this machine (no CUDA GPU)")])
def test_an_absent_device_is_one_line(device, message):
    with pytest.raises(UserError) as err:
        run_device(RunConfig(device=device))
    assert message in err.value.what and err.value.where == "device" and "\n" not in err.value.line()


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a GPU")
def test_fp16_without_a_gpu_is_one_line():
    cfg = RunConfig.model_validate({"students": [{"name": "s", "train": {"mixed_precision": "fp16"}}]})
    with pytest.raises(UserError) as err:
        run_device(cfg)
    assert "fp16 needs a CUDA GPU" in err.value.what and err.value.where == "students.0.train.mixed_precision"


def test_a_device_that_is_no_device_fails_at_load():
    with pytest.raises(ValidationError, match="device"):
        RunConfig(device="gpu")


def test_the_device_and_unset_new_keys_leave_every_stage_hash_alone():
    assert stable_hash(RunConfig(device="cpu")) == stable_hash(RunConfig())
    # text_pair_column and a student's tokenizer came after runs existed: unset, they are not in the hash.
    local = {"kind": "local", "train": "t.csv"}
    data = RunConfig.model_validate({"data": {"source": local}}).data
    before_the_key = data.model_dump(mode="json")
    del before_the_key["source"]["text_pair_column"]
    assert stable_hash(data) == stable_hash(before_the_key)
    paired = RunConfig.model_validate({"data": {"source": local | {"text_pair_column": "b"}}}).data
    assert stable_hash(paired) != stable_hash(data)


def test_training_stays_on_the_cpu_when_the_run_says_so():
    from accelerate import Accelerator

    before = os.environ.get("ACCELERATE_USE_CPU")
    with training_on(torch.device("cpu")):
        assert os.environ["ACCELERATE_USE_CPU"] == "true"  # Accelerate's own switch: every training on the CPU
        assert Accelerator().device.type == "cpu"
    assert os.environ.get("ACCELERATE_USE_CPU") == before


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a GPU")
def test_compress_run_on_an_absent_gpu_exits_2_and_writes_nothing(tmp_path):
    from compress.cli import main
    from tests.conftest import console_script

    config = tmp_path / "run.yaml"
    config.write_text(f"output_dir: {tmp_path / 'runs'}\ndevice: cuda\n")
    out = console_script(main, "compress", "run", str(config))
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and "device" in out.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("devices, message", [(["cuda"], "must include cpu"), (["cpu", "tpu"], "unknown device 'tpu'"),
                                              (["cpu", "cpu"], "names a device twice"),
                                              (["cpu", "cuda", "cuda:0"], "cuda is cuda:0")])
def test_bench_devices_are_checked_at_load(devices, message):
    with pytest.raises(ValidationError, match=message):
        RunConfig.model_validate({"bench": {"devices": devices}})


def test_bench_devices_unset_leave_the_bench_hash_alone():
    assert stable_hash(RunConfig().bench) == stable_hash(RunConfig.model_validate({"bench": {"pause_ms": None}}).bench)
    assert devices_beside_cpu(RunConfig().bench.devices) == []
    named = RunConfig.model_validate({"bench": {"devices": ["cpu"]}}).bench  # the default, spelt out
    assert named.devices == ["cpu"]  # the config says what the YAML says; the hash reads it as unset
    assert stable_hash(named) == stable_hash(RunConfig().bench)
    assert devices_beside_cpu(named.devices) == []
    both = RunConfig.model_validate({"bench": {"devices": ["cpu", "cuda:1"]}}).bench
    assert devices_beside_cpu(both.devices) == ["cuda:1"] and stable_hash(both) != stable_hash(named)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a GPU")
def test_an_absent_bench_device_is_one_line_before_anything_runs():
    with pytest.raises(UserError) as err:
        run_device(RunConfig.model_validate({"device": "cpu", "bench": {"devices": ["cpu", "cuda:3"]}}))
    assert err.value.where == "bench.devices" and "no CUDA GPU" in err.value.what


@pytest.mark.parametrize("device, local_rank, gpus, expected", [
    ("cuda", "1", 2, "cuda:1"),  # each process its own GPU, where Accelerate trains it
    ("cpu", "1", 0, "cpu"),
    ("cuda:0", "1", 2, "names one GPU"),  # every process on GPU 0 while Accelerate trains on each one's own
    ("cuda", "2", 2, "has no GPU of its own"),
])
def test_with_several_processes_each_takes_the_gpu_of_its_local_rank(monkeypatch, device, local_rank, gpus,
                                                                       expected):
    from compress.core.distributed import process_device

    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    if ":" in expected or expected == "cpu":
        assert process_device(torch.device(device)) == torch.device(expected)
    else:
        with pytest.raises(UserError) as err:
            process_device(torch.device(device))
        assert expected in err.value.what and err.value.where == "device"


def test_one_process_keeps_the_device_it_names(monkeypatch):
    from compress.core.distributed import process_device

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert process_device(torch.device("cuda", 3)) == torch.device("cuda", 3)
