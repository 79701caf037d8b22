"""`compress run` across two CPU processes (gloo), as users run it on several GPUs: each process takes half the
batches and the gradients are averaged; the main process alone writes.

Launched with torchrun, which Accelerate reads (RANK, WORLD_SIZE): on CPU `accelerate launch --num_processes 2
--cpu` starts two processes only through MPI (`--mpirun_hostfile`); without it, it silently starts one."""

import json
import os
import subprocess
import sys
from pathlib import Path


def test_compress_run_across_two_processes_writes_once_and_resumes(tiny_bert_dir, tiny_csv, tmp_path):
    """`torchrun --nproc_per_node 2 -m compress.cli run`: both processes train (whole batches in turn) and label
    half the rows each, the main one alone writes; the report has every row, nothing is left half-written, the
    teacher's gathered outputs are the ones one process computes, and the same config run again (here in one
    process) finds every stage done."""
    import numpy as np
    import yaml

    from compress.core.config import load_config
    from compress.core.results import ModelArtifact, from_json
    from compress.pipeline import run_data, stages
    from compress.pipeline.pipeline import run

    config = tmp_path / "two.yaml"
    config.write_text(yaml.safe_dump({
        "name": "two", "output_dir": str(tmp_path / "runs"),
        "data": {"source": {"kind": "local", "train": str(tiny_csv)}, "max_length": 16, "max_train_examples": 20},
        "transfer": {"rest_of_train": True},
        "teacher": {"model": str(tiny_bert_dir), "train": {"epochs": 1, "learning_rate": 3e-3}},
        "students": [{"name": "scratch", "kind": "custom_transformer", "hidden_size": 16, "num_layers": 1,
                      "num_heads": 2, "ffn_size": 32, "train": {"epochs": 2, "learning_rate": 3e-3}}],
        "prune": [{"name": "scratch-pruned", "model": "scratch", "kind": "structured", "head_ratio": 0.5,
                   "ffn_ratio": 0.5, "recovery": {"epochs": 1, "learning_rate": 3e-3}}],
        "export": {"enabled": False},
        "bench": {"warmup": 0, "iters": 3, "seq_len": 8, "pause_ms": 0},
    }))
    launcher = Path(sys.executable).with_name("torchrun")
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[3]), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([str(launcher), "--standalone", "--nproc_per_node", "2", "-m", "compress.cli", "run",
                          str(config)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "runs" / "two"
    report = json.loads((run_dir / "report.json").read_text())
    assert {r["model"] for r in report["rows"]} == {"teacher", "scratch", "scratch-baseline", "scratch-pruned"}
    assert out.stdout.count("report: ") == 1  # one process printed (and wrote) the report
    leftovers = [p for p in run_dir.rglob("*") if ".tmp" in p.name or p.name.endswith(".old")]
    assert leftovers == []
    # Each process took half of every epoch's batches: the teacher's log has half the steps one process takes.
    steps = [json.loads(line) for line in (run_dir / "logs" / "teacher.jsonl").read_text().splitlines()]
    labelled = json.loads((run_dir / "manifest.json").read_text())["stages"]["teacher_logits"]["result"]["features"]
    assert sum("step" in s for s in steps) == -(-labelled // (16 * 2))
    cfg = load_config(config)
    manifest = json.loads((run_dir / "manifest.json").read_text())["stages"]
    teacher, tokenizer = stages.load_saved(cfg, from_json(ModelArtifact, manifest["teacher"]["result"]))
    data = run_data.RunData(cfg).load()
    assert len(data.transfer) > 0
    for split, rows in (("train", data.train), ("transfer", data.transfer)):
        gathered = np.load(run_dir / "cache" / f"teacher_{split}_logits.npy")
        one_process = data.predict(teacher, rows, tokenizer)["logits"].numpy()
        np.testing.assert_allclose(gathered, one_process, atol=1e-5)
    again = run(cfg)
    assert again.ran == [] and set(again.skipped) >= {"teacher", "student:scratch", "baseline:scratch-baseline",
                                                      "prune:scratch-pruned", "bench"}


def _gather_in_process(rank: int, rows: int, port: int, results) -> None:
    import torch

    from compress.core import distributed

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        gathered = distributed.gather_shares(lambda start, stop: {"logits": torch.arange(start, stop).float()}, rows)
        results.put((rank, None if gathered is None else gathered["logits"].tolist()))
    finally:
        torch.distributed.destroy_process_group()


def test_gather_shares_returns_every_row_in_order_to_the_main_process_only():
    """Each of two processes computes its contiguous share; the main one gets all rows in order, also when there
    are fewer rows than processes (a share with none)."""
    import socket

    import torch.multiprocessing as mp

    for rows in (5, 1):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        context = mp.get_context("spawn")
        results = context.Queue()
        mp.start_processes(_gather_in_process, args=(rows, port, results), nprocs=2, start_method="spawn")
        got = dict(results.get(timeout=30) for _ in range(2))
        assert got == {0: [float(i) for i in range(rows)], 1: None}


class _LossNaNInRankOne(__import__("torch").nn.Module):
    """Cross-entropy, NaN in the second process only: what a broken batch does to one process of several."""

    model_kwargs: dict = {}

    def forward(self, batch, outputs):
        import torch

        ce = torch.nn.functional.cross_entropy(outputs.logits, batch["labels"])
        return {"ce": ce * float("nan") if os.environ["RANK"] == "1" else ce}


def _train_in_process(rank: int, bert_dir: str, csv: str, port: int, results) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from compress.core import distributed
    from compress.core.config import DataConfig, LocalSource, TrainConfig
    from compress.core.errors import UserError
    from compress.data.classification import encode
    from compress.data.sources import load_splits
    from compress.distill.loop import TrainLog, train_model
    from compress.distill.objectives import WeightedLoss

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    distributed.start(torch.device("cpu"))
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    train = encode(load_splits(DataConfig(source=LocalSource(train=csv)), seed=0).train, tokenizer, 16)
    model = AutoModelForSequenceClassification.from_pretrained(bert_dir)
    loss = WeightedLoss([_LossNaNInRankOne()], {"ce": 1.0})
    try:
        train_model(model, train, tokenizer, loss, TrainConfig(epochs=2, batch_size=4), seed=0, log=TrainLog("s"))
        results.put((rank, "trained"))
    except UserError as err:
        results.put((rank, err.what))
    finally:
        torch.distributed.destroy_process_group()


def test_a_nan_loss_in_one_process_stops_every_process(tiny_bert_dir, tiny_csv):
    """A loss that is NaN in one process stops both at that step with one line each; the other does not wait for the
    stopped one's gradients for ever."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.get_context("spawn").Queue()
    processes = mp.start_processes(_train_in_process, args=(str(tiny_bert_dir), str(tiny_csv), port, results),
                                   nprocs=2, start_method="spawn", join=False)
    try:
        got = dict(results.get(timeout=120) for _ in range(2))
    finally:
        for process in processes.processes:
            process.join(timeout=30)
            process.kill()
    assert got == {0: "another process's loss is not finite at step 1 (epoch 0)",
                   1: "the loss is nan at step 1 (epoch 0)"}
