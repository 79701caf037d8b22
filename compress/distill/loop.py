"""The training loop, written out: fine-tuning the teacher and training students (with or without KD).

Runs on Accelerate (device placement, mixed precision and multi-process later); the pipeline around it is not
yet guarded for several processes, so `compress run` is single-process for now.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from transformers import get_linear_schedule_with_warmup

from compress.config import KDConfig, TrainConfig
from compress.data.batching import EncodedSplit, accepted_inputs, make_loader
from compress.distill.intermediate import IntermediateLoss
from compress.distill.losses import hybrid_loss, kd_loss
from compress.progress import track_steps
from compress.tasks import TASKS, Task, loss_targets


@dataclass(frozen=True)
class TrainResult:
    steps: int
    seconds: float
    final_loss: float
    epochs_run: int
    best_epoch: int | None = None  # with validation: the epoch whose weights the model ends with
    best_validation: float | None = None


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases and LayerNorm weights (the BERT recipe)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate)


def step_loss(task: Task, outputs, batch: dict[str, torch.Tensor], kd: KDConfig | None) -> tuple[torch.Tensor, dict]:
    """Cross-entropy, or the distillation loss `kd` names, averaged over the task's targets (QA: start, end)."""
    losses, terms = [], {}
    for student, teacher, labels in loss_targets(task, outputs, batch):
        if kd is not None and kd.method == "hybrid":
            loss, parts = hybrid_loss(student, teacher, labels, kd.temperature, kd.alpha, kd.confidence_threshold,
                                      kd.confident_weight)
        elif kd is not None:
            loss, parts = kd_loss(student, teacher, labels, kd.temperature, kd.alpha)
        else:
            loss = F.cross_entropy(student, labels)
            parts = {"ce": loss.detach()}
        losses.append(loss)
        for name, value in parts.items():
            terms[name] = terms.get(name, 0) + value
    n = len(losses)
    return sum(losses) / n, {name: value / n for name, value in terms.items()}


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """An Accelerator for one model's training. accelerate keeps one process-wide state that refuses a second
    precision, but a run trains several models, each with its own; only that state is reset (the process and its
    distributed setup are kept)."""
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != cfg.mixed_precision:
        AcceleratorState._reset_state()
    return Accelerator(gradient_accumulation_steps=cfg.gradient_accumulation_steps, mixed_precision=cfg.mixed_precision)


def train_model(model: torch.nn.Module, train: EncodedSplit, tokenizer, cfg: TrainConfig, seed: int,
                task: Task = TASKS["classification"], kd: KDConfig | None = None, log_path: Path | None = None,
                description: str = "training", transfer: IntermediateLoss | None = None,
                teacher: torch.nn.Module | None = None,
                validate: Callable[[torch.nn.Module], float] | None = None, task_loss: bool = True,
                checkpoint: Path | None = None) -> TrainResult:
    """Train `model` in place on `train` (prepare() wraps, never copies, its parameters).

    With `kd`, `train` must carry the teacher's logits. With `transfer`, `teacher` runs alongside (no gradients)
    and the intermediate terms are added; the transfer's projections train with the student.
    With `task_loss` False only the transfer terms count (progressive layer stages).
    With `validate` (model -> validation metric, higher is better), the model is scored after every epoch, ends
    with the weights of its best epoch, and stops early after `cfg.early_stopping_patience` epochs without gain.

    With `checkpoint` (a file path), the training state is saved there after every epoch, and a run that finds
    one resumes after its epoch: the data order is seeded per epoch and the random state is saved, so the result
    is the one an uninterrupted run gives. The caller deletes the file once the model is saved.

    Each step's loss terms, and each epoch's validation metric, go to `log_path` as JSON lines.
    """
    set_seed(seed)
    accelerator = make_accelerator(cfg)
    loader = make_loader(train, tokenizer, cfg.batch_size, shuffle=True, seed=seed)
    order = loader.generator  # reseeded every epoch: the data order depends on (seed, epoch) only
    trained = model if transfer is None else torch.nn.ModuleList([model, transfer])
    optimizer = make_optimizer(trained, cfg)
    total = cfg.epochs * math.ceil(len(loader) / cfg.gradient_accumulation_steps)  # optimizer steps
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if transfer is not None:
        transfer, teacher = accelerator.prepare(transfer, teacher)
        teacher.eval()
    features = {"output_hidden_states": True, "output_attentions": True} if transfer is not None else {}
    student_inputs = accepted_inputs(accelerator.unwrap_model(model))
    teacher_inputs = accepted_inputs(accelerator.unwrap_model(teacher)) if teacher is not None else ()

    best, first_epoch, step = _Best(), 0, 0
    resumable = (trained, optimizer, scheduler, best)
    if checkpoint is not None and checkpoint.is_file():
        first_epoch, step = _load_checkpoint(checkpoint, *resumable)
    log = log_path.open("a" if first_epoch else "w", buffering=1) if log_path and accelerator.is_main_process else None
    start, loss, epoch = time.perf_counter(), torch.tensor(0.0), first_epoch - 1
    with track_steps(description, (cfg.epochs - first_epoch) * len(loader)) as advance:
        for epoch in range(first_epoch, cfg.epochs):
            order.manual_seed(seed + epoch)
            model.train()
            for batch in loader:
                with accelerator.accumulate(model):
                    outputs = model(**{k: v for k, v in batch.items() if k in student_inputs}, **features)
                    loss, terms = step_loss(task, outputs, batch, kd) if task_loss else (0.0, {})
                    if transfer is not None:
                        with torch.no_grad():
                            teacher_outputs = teacher(**{k: v for k, v in batch.items() if k in teacher_inputs},
                                                      **features)
                        extra, extra_terms = transfer(outputs, teacher_outputs, batch["attention_mask"])
                        loss, terms = loss + extra, terms | extra_terms
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(trained.parameters(), cfg.max_grad_norm)
                    optimizer.step()  # prepared: steps only when the accumulated gradients are complete
                    scheduler.step()
                    optimizer.zero_grad()
                step += 1
                if log:
                    record = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0], "loss": loss.item()}
                    log.write(json.dumps(record | {k: v.item() for k, v in terms.items()}) + "\n")
                advance(loss=loss.item())
            if validate is not None:
                metric = validate(accelerator.unwrap_model(model))
                if log:
                    log.write(json.dumps({"epoch": epoch, "validation": metric}) + "\n")
                best.update(epoch, metric, accelerator.unwrap_model(model))
            if checkpoint is not None and accelerator.is_main_process:
                _save_checkpoint(checkpoint, epoch, step, *resumable)
            if validate is not None and cfg.early_stopping_patience is not None \
                    and epoch - best.epoch >= cfg.early_stopping_patience:
                break
    if log:
        log.close()
    best.restore(accelerator.unwrap_model(model))
    return TrainResult(steps=step, seconds=time.perf_counter() - start, final_loss=float(loss.item()),
                       epochs_run=epoch + 1, best_epoch=best.epoch, best_validation=best.metric)


def _save_checkpoint(path: Path, epoch: int, step: int, trained: torch.nn.Module, optimizer, scheduler,
                     best: "_Best") -> None:
    state = {"epoch": epoch, "step": step, "model": trained.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "best_epoch": best.epoch,
             "best_metric": best.metric, "best_state": best.state}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # a kill mid-save leaves the previous epoch's checkpoint whole


def _load_checkpoint(path: Path, trained: torch.nn.Module, optimizer, scheduler, best: "_Best") -> tuple[int, int]:
    """Restore what _save_checkpoint wrote; returns (first epoch to run, steps done)."""
    state = torch.load(path, weights_only=True)  # tensors and plain values only: no pickled code runs
    trained.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    best.epoch, best.metric, best.state = state["best_epoch"], state["best_metric"], state["best_state"]
    return state["epoch"] + 1, state["step"]


class _Best:
    """The best epoch so far by validation metric, and a copy of its weights (in memory: students are small)."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.metric: float | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, metric: float, model: torch.nn.Module) -> None:
        if self.metric is None or metric > self.metric:
            self.epoch, self.metric = epoch, metric
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def restore(self, model: torch.nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)
