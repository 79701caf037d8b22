"""Distillation throughput, side by side: compress's loop over the teacher's cached outputs against a transformers
`Trainer` whose `compute_loss` runs the teacher on every batch (how the seed projects distil). Same student
initialisation, data, batch size, epochs, learning-rate schedule, loss (logit KD at T, mixed with CE by alpha) and
fused AdamW; checkpoints and per-epoch validation off on both sides.

`make bench` times both on a tiny model (tests/bench/test_benchmarks.py); `python -m bench.distill_speed TEACHER`
measures the setting of docs/training-speed.md: a fine-tuned classification teacher folder, BBC News (1,000
articles at 64 tokens), a student of the teacher's layers 0, 2 and 4, 3 epochs, and the test accuracy of both.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

from compress.core.config import KDConfig, TrainConfig
from compress.data.batching import MODEL_INPUTS, EncodedSplit, accepted_inputs, predict, select_inputs
from compress.data.metrics import classification_metrics
from compress.data.tasks import TASKS
from compress.distill.loop import TrainLog, train_model
from compress.distill.losses import kd_loss
from compress.distill.objectives import task_loss


@dataclass(frozen=True)
class Throughput:
    examples: int  # training examples seen, every epoch counted
    seconds: float  # wall time, the teacher's cache included where there is one

    @property
    def per_second(self) -> float:
        return self.examples / self.seconds


def distil_with_cache(student: torch.nn.Module, teacher: torch.nn.Module | None, train: EncodedSplit, tokenizer,
                      cfg: TrainConfig, kd: KDConfig | None, seed: int) -> Throughput:
    """The teacher labels `train` once (timed), then compress's loop trains `student` in place on the cache.
    Without `kd`, plain fine-tuning on the labels (the teacher's own fine-tune)."""
    start = time.perf_counter()
    if kd is not None:
        train = train.with_teacher(predict(teacher, train, tokenizer, ("logits",)))
    train_model(student, train, tokenizer, task_loss(TASKS["classification"], kd), cfg, seed,
                log=TrainLog(description="compress loop"))
    return Throughput(cfg.epochs * len(train), time.perf_counter() - start)


class TeacherInTheLoopTrainer(Trainer):
    """A `Trainer` that runs the teacher on every training batch for logit KD (the seed projects'
    DistillationTrainer)."""

    def __init__(self, teacher: torch.nn.Module, kd: KDConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.teacher, self.kd = teacher.to(self.args.device).eval(), kd  # Trainer moves only the student
        self.teacher_inputs = accepted_inputs(teacher)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        with torch.no_grad():
            teacher_logits = self.teacher(**select_inputs(inputs, self.teacher_inputs)).logits
        loss, _ = kd_loss(outputs.logits, teacher_logits, labels, self.kd.temperature, self.kd.alpha)
        return (loss, outputs) if return_outputs else loss


def distil_with_trainer(student: torch.nn.Module, teacher: torch.nn.Module | None, train: EncodedSplit, tokenizer,
                        cfg: TrainConfig, kd: KDConfig | None, seed: int) -> Throughput:
    """`TeacherInTheLoopTrainer` trains `student` in place with the settings of `cfg`; without `kd`, a plain
    `Trainer` fine-tunes it on the labels."""
    keep = MODEL_INPUTS + ("labels",)
    features = [{k: v for k, v in f.items() if k in keep} for f in train.features]
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(out, per_device_train_batch_size=cfg.batch_size, num_train_epochs=cfg.epochs,
                                 learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                 warmup_ratio=cfg.warmup_ratio, max_grad_norm=cfg.max_grad_norm,
                                 lr_scheduler_type="linear", optim="adamw_torch_fused", seed=seed,
                                 save_strategy="no", eval_strategy="no", logging_strategy="no", report_to=[],
                                 disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=False)
        common = dict(model=student, args=args, train_dataset=features,
                      data_collator=DataCollatorWithPadding(tokenizer))
        trainer = Trainer(**common) if kd is None else TeacherInTheLoopTrainer(teacher, kd, **common)
        start = time.perf_counter()
        trainer.train()
        return Throughput(cfg.epochs * len(train), time.perf_counter() - start)


def accuracy_on(model: torch.nn.Module, test: EncodedSplit, tokenizer) -> float:
    logits = predict(model, test, tokenizer, ("logits",))["logits"]
    return classification_metrics(logits.argmax(-1).tolist(), test.labels)["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", type=Path, help="a fine-tuned classification teacher folder (runs/demo/teacher)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--finetune", action="store_true", help="also time one epoch of fine-tuning the teacher")
    parser.add_argument("--mixed-precision", choices=["no", "bf16"], default="no", help="for our loop only")
    args = parser.parse_args()

    from compress.core.config import RunConfig
    from compress.models.loading import load_saved_model, load_tokenizer
    from compress.models.students import drop_layers

    cfg = RunConfig.model_validate({"name": "speed", "task": "classification", "teacher": {"model": str(args.teacher)},
                                    "data": {"source": {"kind": "bbc_news"}, "max_length": 64,
                                             "max_train_examples": 1000}})
    tokenizer = load_tokenizer(str(args.teacher))
    splits, _ = TASKS["classification"].build(cfg, tokenizer)
    train, test = splits["train"], splits["test"]
    teacher = load_saved_model(args.teacher, "classification").eval()
    student = drop_layers(copy.deepcopy(teacher), [0, 2, 4])
    train_cfg = TrainConfig(epochs=args.epochs, batch_size=16, learning_rate=1e-4, validate_every_epoch=False,
                            mixed_precision=args.mixed_precision)
    kd = KDConfig(method="logit", temperature=2.0, alpha=0.5)
    print(f"teacher test accuracy {accuracy_on(teacher, test, tokenizer):.4f}")
    for name, distil in (("Trainer, teacher every step", distil_with_trainer), ("compress, cached teacher",
                                                                                 distil_with_cache)):
        model = copy.deepcopy(student)
        cost = distil(model, teacher, train, tokenizer, train_cfg, kd, cfg.seed)
        print(f"{name}: {cost.examples} examples in {cost.seconds:.1f} s = {cost.per_second:.1f} examples/s, "
              f"test accuracy {accuracy_on(model, test, tokenizer):.4f}")
    if args.finetune:  # speed only: one epoch on a copy of the already fine-tuned teacher
        once = train_cfg.model_copy(update={"epochs": 1})
        for name, finetune in (("Trainer fine-tune", distil_with_trainer), ("compress fine-tune", distil_with_cache)):
            cost = finetune(copy.deepcopy(teacher).train(), None, train, tokenizer, once, None, cfg.seed)
            print(f"{name}: {cost.examples} examples in {cost.seconds:.1f} s = {cost.per_second:.1f} examples/s")


if __name__ == "__main__":
    main()
