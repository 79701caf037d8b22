"""The training loop, written out once: a for-loop over batches that minimises a loss object (see
compress.distill.objectives), for the teacher's fine-tuning, every student, progressive stages and pruning
recovery alike. Resume, best epoch, early stopping and logging live here.

Runs on Accelerate (device placement, mixed precision, several processes: each takes whole batches in turn, so a
step covers N batches; compress.core.distributed says which process writes).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from transformers import get_linear_schedule_with_warmup

from compress.core.config import TrainConfig
from compress.core.errors import UserError
from compress.core.progress import track_steps, warn
from compress.core.results import TrainResult
from compress.data.batching import EncodedSplit, accepted_inputs, make_loader, select_inputs
from compress.distill.objectives import WeightedLoss
from compress.distill.trackers import trackers_for


@dataclass(frozen=True)
class TrainLog:
    """Where a training run reports: its progress-bar label, a JSON-lines log of loss terms per step and the
    validation metric per epoch, and a checkpoint file that lets a killed run resume after its last epoch."""

    description: str = "training"
    log_path: Path | None = None
    checkpoint: Path | None = None
    trackers: tuple[str, ...] = ()  # experiment trackers that get the same records (compress.report.tracking)
    run_dir: Path | None = None  # where they write: tensorboard into <run_dir>/tb/<name>/, mlflow's default store
    experiment: str = "run"  # the run's name: MLflow's experiment, the model's `name` its MLflow run
    name: str = "model"


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases and LayerNorm weights (the BERT recipe). Fused (one kernel over all
    parameters, as transformers' Trainer defaults to): the per-tensor loop spent about a fifth of a CPU training
    step updating a copied student's 30k-row embedding table (docs/training-speed.md)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=True)


def make_accelerator(cfg: TrainConfig, log: TrainLog = TrainLog()) -> Accelerator:
    """An Accelerator for one model's training, with the log's trackers. accelerate keeps one process-wide state that
    refuses a second precision, but a run trains several models, each with its own; only that state is reset (the
    process and its distributed setup are kept)."""
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != cfg.mixed_precision:
        AcceleratorState._reset_state()
    # Several processes: a stage may leave parameters out of its loss (TinyBERT's first stage the classifier,
    # a progressive stage the other layers' projections), which DDP must be told to expect.
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1  # a launcher's; asking Accelerate would create its state
    unused = [DistributedDataParallelKwargs(find_unused_parameters=True)] if several else []
    tracking = {"log_with": trackers_for(log.trackers, log.run_dir, log.experiment, log.name),
                "project_dir": str(log.run_dir / "tb")} if log.trackers else {}
    return Accelerator(gradient_accumulation_steps=cfg.gradient_accumulation_steps, mixed_precision=cfg.mixed_precision,
                       kwargs_handlers=unused, **tracking)


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU computes in bf16 natively (x86 flags avx512_bf16 or amx_bf16; Arm's bf16); None when
    /proc/cpuinfo cannot tell (not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = set(cpuinfo.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def train_model(model: torch.nn.Module, train: EncodedSplit, tokenizer, loss: WeightedLoss, cfg: TrainConfig,
                seed: int, validate: Callable[[torch.nn.Module], float] | None = None,
                log: TrainLog = TrainLog()) -> TrainResult:
    """Train `model` in place on `train` to minimise `loss` (prepare() wraps, never copies, its parameters).

    `loss(batch, outputs) -> (loss, named terms)`: KD terms read the teacher's cached outputs from the batch
    (`train.with_teacher(...)`), terms that need the teacher's features run it themselves; the loss's own
    parameters (TinyBERT's projections) train with the model.
    With `validate` (model -> validation metric, higher is better), the model is scored after every epoch, ends
    with the weights of its best epoch, and stops early after `cfg.early_stopping_patience` epochs without gain.

    With `log.checkpoint` (a file path), the training state is saved there every `cfg.checkpoint_every` epochs,
    and a run that finds one resumes after its epoch: the data order is seeded per epoch and the random state is
    saved, so the result is the one an uninterrupted run gives. The caller deletes the file once the model is saved.
    Each step's loss terms, and each epoch's validation metric, go to `log.log_path` as JSON lines.
    """
    set_seed(seed)
    accelerator = make_accelerator(cfg, log)
    loader = make_loader(train, tokenizer, cfg.batch_size, shuffle=True, seed=seed,
                         group_by_length=cfg.group_by_length)
    order = loader.generator  # reseeded every epoch: the data order depends on (seed, epoch) only
    trained = torch.nn.ModuleList([model, loss])
    optimizer = make_optimizer(trained, cfg)
    total = cfg.epochs * math.ceil(len(loader) / cfg.gradient_accumulation_steps)  # optimizer steps
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if cfg.mixed_precision == "bf16" and accelerator.device.type == "cpu" and cpu_has_native_bf16() is False:
        warn("[yellow]mixed_precision bf16 on a CPU without bf16 instructions (avx512_bf16, amx_bf16) is "
             "emulated and many times slower than fp32 (17x measured on an AVX2 EPYC); set "
             "mixed_precision: no on this machine[/]")
    loss = accelerator.prepare(loss) if any(p.requires_grad for p in loss.parameters()) else loss
    student_inputs = accepted_inputs(accelerator.unwrap_model(model))
    model_kwargs = accelerator.unwrap_model(loss).model_kwargs

    best, first_epoch, step = _Best(), 0, 0
    resumable = (trained[0], trained[1], optimizer, scheduler, best)  # the unwrapped model and loss
    if log.checkpoint is not None and log.checkpoint.is_file():
        first_epoch, step = _load_checkpoint(log.checkpoint, *resumable)
    if first_epoch and log.log_path and accelerator.is_main_process:
        _keep_log_up_to(log.log_path, step, first_epoch)  # the epochs after the checkpoint run again
    lines = (log.log_path.open("a" if first_epoch else "w", buffering=1)
             if log.log_path and accelerator.is_main_process else None)
    try:
        if log.trackers:  # a resumed run hides the events it logs again (TensorBoard's purge_step), as the log is cut
            accelerator.init_trackers(log.name, init_kwargs={"tensorboard": {"purge_step": step + 1}} if step else {})
            for tracker in accelerator.trackers:  # MLflow keeps the settings as the run's parameters (TensorBoard's
                if tracker.name == "mlflow":      # hparams would add a timestamped folder per training)
                    tracker.store_init_configuration(cfg.model_dump(mode="json"))
        start, value, epoch = time.perf_counter(), torch.tensor(0.0), first_epoch - 1
        with track_steps(log.description, (cfg.epochs - first_epoch) * len(loader)) as advance:
            for epoch in range(first_epoch, cfg.epochs):
                order.manual_seed(seed + epoch)
                model.train()
                for batch in loader:
                    with accelerator.accumulate(model):
                        outputs = model(**select_inputs(batch, student_inputs), **model_kwargs)
                        value, terms = loss(batch, outputs)
                        _stop_if_not_finite(accelerator, value, step, epoch, log.description)
                        accelerator.backward(value)
                        if accelerator.sync_gradients:
                            accelerator.clip_grad_norm_(trained.parameters(), cfg.max_grad_norm)
                        optimizer.step()  # prepared: steps only when the accumulated gradients are complete
                        scheduler.step()
                        optimizer.zero_grad()
                    step += 1
                    if lines:
                        values = {"lr": scheduler.get_last_lr()[0], "loss": value.item()} | {k: v.item()
                                                                                             for k, v in terms.items()}
                        lines.write(json.dumps({"step": step, "epoch": epoch} | values) + "\n")
                        if log.trackers:
                            accelerator.log({f"train/{k}": v for k, v in values.items()}, step=step)
                    advance(loss=value.item())
                if validate is not None:
                    metric = validate(accelerator.unwrap_model(model))
                    if lines:
                        lines.write(json.dumps({"epoch": epoch, "validation": metric}) + "\n")
                        if log.trackers:
                            accelerator.log({"validation/metric": metric, "validation/epoch": epoch}, step=step)
                    best.update(epoch, metric, accelerator.unwrap_model(model))
                if log.checkpoint is not None and accelerator.is_main_process and cfg.checkpoint_every \
                        and (epoch + 1) % cfg.checkpoint_every == 0:
                    _save_checkpoint(log.checkpoint, epoch, step, *resumable)
                if validate is not None and cfg.early_stopping_patience is not None \
                        and epoch - best.epoch >= cfg.early_stopping_patience:
                    break
    finally:  # a training stopped by a NaN loss or Ctrl-C leaves no open log or tracker run (MLflow's would refuse
        if lines:  # the next run in this process)
            lines.close()
        for tracker in accelerator.trackers:  # not end_training(): it also ends the process group the run uses
            tracker.finish()
    best.restore(accelerator.unwrap_model(model))
    return TrainResult(steps=step, seconds=time.perf_counter() - start, final_loss=float(value.item()),
                       epochs_run=epoch + 1, best_epoch=best.epoch, best_validation=best.metric)


def accumulate_gradients(model: torch.nn.Module, train: EncodedSplit, tokenizer, loss: WeightedLoss, seed: int,
                         batches: int = 8) -> None:
    """Gradients of `loss` over a few shuffled training batches, left in .grad (Taylor importance reads them)."""
    model.zero_grad(set_to_none=True)
    model.train()
    inputs = accepted_inputs(model)
    device = next(model.parameters()).device  # recovery (Accelerate) may have moved the model to a GPU
    for i, batch in enumerate(make_loader(train, tokenizer, batch_size=16, shuffle=True, seed=seed)):
        if i == batches:
            break
        batch = {k: v.to(device) for k, v in batch.items()}
        outputs = model(**select_inputs(batch, inputs), **loss.model_kwargs)
        loss(batch, outputs)[0].backward()
    model.eval()


def _stop_if_not_finite(accelerator: Accelerator, value: torch.Tensor, step: int, epoch: int, where: str) -> None:
    """One line when the loss is NaN or infinite: every later step would be too, and the model is lost. With several
    processes all of them stop at that step, told through Accelerate's trigger (one process stopping alone would
    leave the others waiting for its gradients in DDP's all-reduce)."""
    finite = bool(torch.isfinite(value))
    if not finite:
        accelerator.set_trigger()
    if accelerator.check_trigger():
        seen = f"the loss is {value.item()}" if not finite else "another process's loss is not finite"
        raise UserError(f"{seen} at step {step + 1} (epoch {epoch})", where,
                        "lower train.learning_rate or check the distill settings; the model was not saved")


def _keep_log_up_to(path: Path, step: int, first_epoch: int) -> None:
    """Drop the log lines written after the checkpoint a run resumes from (steps past `step`, validations of
    epochs from `first_epoch` on), so the resumed run's lines follow without repeats."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by the kill
        if record.get("step", 0) <= step and ("step" in record or record.get("epoch", 0) < first_epoch):
            kept.append(line)
    path.write_text("".join(f"{line}\n" for line in kept))


def _save_checkpoint(path: Path, epoch: int, step: int, model: torch.nn.Module, loss: torch.nn.Module, optimizer,
                     scheduler, best: "_Best") -> None:
    state = {"epoch": epoch, "step": step, "model": model.state_dict(), "loss": loss.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
             "best_epoch": best.epoch, "best_metric": best.metric, "best_state": best.state}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # a kill mid-save leaves the previous epoch's checkpoint whole


def _load_checkpoint(path: Path, model: torch.nn.Module, loss: torch.nn.Module, optimizer, scheduler,
                     best: "_Best") -> tuple[int, int]:
    """Restore what _save_checkpoint wrote; returns (first epoch to run, steps done)."""
    state = torch.load(path, weights_only=True)  # tensors and plain values only: no pickled code runs
    if set(state["model"]) != set(model.state_dict()):  # written by an older version in another layout
        warn(f"[yellow]{path.name}: a checkpoint of another layout; training starts again[/]")
        return 0, 0
    model.load_state_dict(state["model"])
    loss.load_state_dict(state.get("loss", {}))
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
