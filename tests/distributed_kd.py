"""Run by tests/compress/test_distributed.py under `accelerate launch --num_processes 2 --cpu`: the same logit-KD
training as `compress run` uses (train_model), on a tiny model, sharded across two processes."""

import json
import sys
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from compress.config import KDConfig, TrainConfig
from compress.data.batching import EncodedSplit
from compress.data.tasks import TASKS
from compress.distill.loop import TrainLog, train_model
from compress.distill.objectives import task_loss


def main(model_dir: str, out: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=3)
    texts = [("market shares profit", 0), ("match goal team", 1), ("software phone digital", 2)] * 8
    features = [dict(tokenizer(t), labels=y) for t, y in texts]
    teacher = torch.nn.functional.one_hot(torch.tensor([y for _, y in texts]), 3).float() * 4  # a confident teacher
    split = EncodedSplit(features).with_teacher({"logits": teacher})
    log = Path(out).with_suffix(".jsonl")
    cfg = TrainConfig(epochs=12, batch_size=4, learning_rate=1e-2, warmup_ratio=0.0)
    result = train_model(model, split, tokenizer, task_loss(TASKS["classification"], KDConfig()), cfg, 0,
                         log=TrainLog(log_path=log))
    state = PartialState()
    if state.is_main_process:
        rows = [json.loads(line) for line in log.read_text().splitlines() if "loss" in line]

        def epoch_loss(epoch: int) -> float:
            losses = [r["loss"] for r in rows if r["epoch"] == epoch]
            return sum(losses) / len(losses)

        Path(out).write_text(json.dumps({"processes": state.num_processes, "steps": result.steps,
                                         "first_epoch_loss": epoch_loss(0), "last_epoch_loss": epoch_loss(11)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
