"""What each stage of `compress run` does, as plain functions over the run's config and data: each composes the
domain packages (models, distill, prune, quantize, exports, bench), writes under the run folder and returns
`(outputs written, typed result)`. When to run them, and what they are hashed with, is compress.pipeline.pipeline's.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import set_seed

from bench.devices import best_device, check_device, devices_beside_cpu
from bench.flops import gemm_peak_flops
from bench.measure import OnDevice, time_model_and_graphs, time_on_device
from bench.results import capture_environment
from compress.compression.prune import Pruner, count_nonzero, layer_sparsity
from compress.compression.quantize import HALF_PRECISIONS, argmax_agreement, quantize
from compress.core import distributed
from compress.core.artifacts import compressed_size_mb, folder_size_mb, save_pretrained_atomic, write_json_atomic
from compress.core.config import (
    PER_TEXT_TASKS,
    PruneConfig,
    QuantizeConfig,
    RunConfig,
    StudentConfig,
    TrainConfig,
)
from compress.core.errors import UserError
from compress.core.kd_methods import kd_method
from compress.core.progress import console, track_steps
from compress.core.results import (
    BenchResult,
    CachedOutputs,
    ExportResult,
    ModelArtifact,
    PruneRecord,
    TrainResult,
    to_json,
)
from compress.data.batching import EncodedSplit, make_loader, predict, select_inputs, token_mask, tokenizer_inputs
from compress.data.cache import Data
from compress.data.tasks import Task
from compress.distill.loop import TrainLog, train_model
from compress.distill.objectives import intermediate_loss, layer_transfer, task_loss
from compress.distill.progressive import train_intermediate_stage, train_layers_progressively
from compress.distill.recovery import RecoveryLog, prune_and_recover
from compress.models.int8 import is_int8_model, save_quantized
from compress.models.loading import load_saved_model, load_task_model, load_tokenizer
from compress.models.students import (
    OWN_FAMILIES,
    build_student,
    student_tokenizer,
)
from compress.pipeline.run_data import data_for
from exports.openvino import openvino_installed
from exports.variants import ExportSpec, GraphScorer, ValidationScorer, export_and_score

# ---------------------------------------------------------------- device


def run_device(cfg: RunConfig) -> torch.device:
    """The device `cfg.device` names on this machine (auto: CUDA, then MPS, then the CPU; with several processes on
    CUDA, this process's GPU), or one line: an absent device (there, or in bench.devices), or fp16 training without
    a CUDA GPU."""
    device = best_device() if cfg.device == "auto" else check_device(cfg.device, "device", allow_index=True)
    device = distributed.process_device(device)
    for bench_device in devices_beside_cpu(cfg.bench.devices):
        check_device(bench_device, "bench.devices", allow_index=True)
    trainings = [("teacher.train", cfg.teacher.train)] + [(f"students.{i}.train", s.train)
                                                          for i, s in enumerate(cfg.students)]
    for where, train in trainings:
        if train.mixed_precision == "fp16" and device.type != "cuda":
            raise UserError(f"mixed_precision fp16 needs a CUDA GPU, and this run's device is {device}",
                            f"{where}.mixed_precision", "use bf16 (CPUs with bf16 instructions and GPUs) or no")
    return device


@contextmanager
def training_on(device: torch.device) -> Iterator[None]:
    """Accelerate, which places every training, picks CUDA, then MPS, then the CPU itself, once per process: for the
    run, its CPU switch (ACCELERATE_USE_CPU) says whether the run is on the CPU, its process-wide state starts
    again where an earlier run in this process left it on another device, and "cuda" means the GPU the run names."""
    saved = os.environ.get("ACCELERATE_USE_CPU")
    os.environ["ACCELERATE_USE_CPU"] = "true" if device.type == "cpu" else "false"
    if PartialState._shared_state and PartialState().device.type != device.type:
        AcceleratorState._reset_state(reset_partial_state=True)
    try:
        with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
            yield
    finally:
        if saved is None:
            os.environ.pop("ACCELERATE_USE_CPU", None)
        else:
            os.environ["ACCELERATE_USE_CPU"] = saved


# ---------------------------------------------------------------- models


def finetune_teacher(cfg: RunConfig, data: Data, config_hash: str) -> tuple[list[str], ModelArtifact]:
    """The teacher with a new task head trained on the labels (or, with finetune: false, as it comes)."""
    tokenizer = load_tokenizer(cfg.teacher.model, cfg.teacher.trust_remote_code)
    set_seed(cfg.seed)  # the new head's initial weights must not depend on what ran before in this process
    model = load_task_model(cfg.teacher.model, cfg.task, data.label_names, cfg.teacher.trust_remote_code,
                            new_head=cfg.teacher.finetune)
    trained = None
    if cfg.teacher.finetune:
        trained = train_model(model, data.train, tokenizer, task_loss(data.task, None), cfg.teacher.train, cfg.seed,
                              validate=validator(cfg, cfg.teacher.train, data, tokenizer),
                              log=train_log(cfg, "teacher", config_hash, "fine-tune teacher"))
    return finish_model(cfg, SaveAs("teacher", "teacher"), model, tokenizer, data, trained, config_hash)


def cache_teacher_outputs(cfg: RunConfig, teacher: ModelArtifact, data: Data) -> tuple[list[str], CachedOutputs]:
    """The teacher's outputs on the training split as .npy files (per-token outputs padded to max_length)."""
    model, tokenizer = load_saved(cfg, teacher)
    model = model.to(run_device(cfg))
    outputs = distributed.gather_shares(lambda start, stop: data.predict(model, data.train.part(start, stop),
                                                                         tokenizer), len(data.train))
    if outputs is None:  # another process than the main one: its share is handed over
        raise distributed.LeftToMain("teacher_logits")
    paths = teacher_output_paths(data.task)
    save_outputs_atomic(cfg.run_dir, paths, outputs)
    return [str(p) for p in paths.values()], CachedOutputs(features=len(data.train))


LABEL_BATCH_SIZE = 64  # inference only: no gradients or optimizer state, so larger batches than training fit


def cache_transfer_outputs(cfg: RunConfig, teacher: ModelArtifact, data: Data) -> tuple[list[str], CachedOutputs]:
    """The teacher labels the transfer set once: its outputs as .npy files beside the training split's, batched
    under inference mode with a progress bar. A kill mid-labelling leaves no half-written file (the stage runs
    again from the start on resume)."""
    assert data.transfer is not None, "a transfer set to label"
    model, tokenizer = load_saved(cfg, teacher)
    model = model.to(run_device(cfg))

    def label(start: int, stop: int) -> dict[str, torch.Tensor]:  # this process's share of the rows
        with track_steps("teacher labels the transfer set", math.ceil((stop - start) / LABEL_BATCH_SIZE)) as advance:
            return predict(model, data.transfer.part(start, stop), tokenizer, data.task.outputs, data.pad_to,
                           LABEL_BATCH_SIZE, after_batch=advance)

    outputs = distributed.gather_shares(label, len(data.transfer))
    if outputs is None:
        raise distributed.LeftToMain("teacher_transfer")
    paths = teacher_output_paths(data.task, "transfer")
    save_outputs_atomic(cfg.run_dir, paths, outputs)
    return [str(p) for p in paths.values()], CachedOutputs(features=len(data.transfer))


def save_outputs_atomic(run_dir: Path, paths: dict[str, Path], outputs: dict[str, torch.Tensor]) -> None:
    """Each output to its .npy file through a temporary file, so a reader never finds half of one."""
    (run_dir / "cache").mkdir(exist_ok=True)
    for name, values in outputs.items():
        tmp = run_dir / paths[name].with_suffix(".tmp.npy")
        np.save(tmp, values.numpy())
        tmp.replace(run_dir / paths[name])


def teacher_output_paths(task: Task, split: str = "train") -> dict[str, Path]:
    return {name: Path("cache") / f"teacher_{split}_{name}.npy" for name in task.outputs}


def train_student(cfg: RunConfig, index: int, student: StudentConfig, teacher: ModelArtifact, data: Data,
                  teacher_logits: dict[str, np.ndarray] | None, config_hash: str,
                  transfer_logits: dict[str, np.ndarray] | None = None) -> tuple[list[str], ModelArtifact]:
    """A student of any kind, trained with KD from the teacher's cached outputs (on the training split, and on
    the transfer set when there is one) or, as baseline, on the labelled split alone."""
    kd = teacher_logits is not None
    name, role = (student.name, "student") if kd else (f"{student.name}-baseline", "baseline")
    outputs = TeacherOutputs(teacher_logits, transfer_logits) if kd else None
    log = train_log(cfg, name, config_hash, f"{'distil' if kd else 'train'} {name}")
    model, tokenizer, data, trained = distil_student(cfg, student, f"students.{index}", teacher, data, outputs, log)
    files, result = finish_model(cfg, SaveAs(name, role, student.kind), model, tokenizer, data, trained, config_hash)
    seen = len(data.transfer) if kd and data.transfer is not None else 0  # baselines never see the transfer set
    return files, replace(result, transfer_examples=seen)


@dataclass(frozen=True)
class TeacherOutputs:
    """The teacher's cached outputs a KD student learns from: on the training split, and on the transfer set where
    the run has one."""

    train: dict[str, np.ndarray]
    transfer: dict[str, np.ndarray] | None = None


def distil_student(cfg: RunConfig, student: StudentConfig, where: str, teacher: ModelArtifact, data: Data,
                   outputs: TeacherOutputs | None, log: TrainLog,
                   on_epoch: Callable[[int, float], None] | None = None) -> tuple[torch.nn.Module, object, Data,
                                                                                 TrainResult]:
    """Build `student` (its own checks point at `where`) and train it: with KD from the teacher's cached `outputs`
    (its layer-transfer terms, where its method has them, from the saved teacher), or, with `outputs` None, as the
    baseline on the labelled split alone. The validation split is scored after each epoch where
    `student.train.validate_every_epoch` says so, and always where `on_epoch` is given: `on_epoch(epoch, metric)`
    hears each epoch's metric (1-based, counted from this call's first epoch) and may raise to stop the training
    there. Returns the model (its best epoch's weights where it was validated, on the device it trained on), its
    tokenizer, the data as that tokenizer encodes it, and the training's result (layer stages' seconds included)."""
    kd = outputs is not None
    tokenizer = student_tokenizer(student, cfg.task, cfg.teacher, where)
    data = data_for(cfg, data, tokenizer)
    # HF students start from the teacher's pretrained weights, not its fine-tuned ones, so the baseline learns the
    # task only from labels and the comparison with KD is fair.
    set_seed(cfg.seed)  # same initialisation whether earlier stages ran or were resumed
    model = build_student(student, cfg.task, data.label_names, cfg.teacher, tokenizer, data.word2vec_corpus(),
                          cfg.seed, where=where)
    train = distillation_split(data, outputs.train, outputs.transfer) if kd else data.train
    layers, stage_seconds = kd_method(student.distill.method).layer_transfer if kd else None, 0.0
    loss = task_loss(data.task, student.distill if kd else None)
    if layers is not None:  # the teacher's features come online, from the loss
        layer_terms = layer_transfer(student, model.config, load_saved_model(cfg.run_dir / teacher.dir, cfg.task),
                                     where)
        if layers == "in_the_loss":  # intermediate
            loss = intermediate_loss(data.task, student.distill, layer_terms)
        elif layers == "layer_by_layer_first":  # progressive: then logit KD for the whole student
            stage_seconds = train_layers_progressively(model, layer_terms, train, tokenizer, student.train,
                                                       student.distill, cfg.seed, log)
        else:  # all_layers_first, tinybert: every layer's terms first, then logit KD
            stage_seconds = train_intermediate_stage(model, layer_terms, train, tokenizer, student.train,
                                                     student.distill, cfg.seed, log)
    validate = validator(cfg, student.train, data, tokenizer)
    if on_epoch is not None:
        validate = heard_by(validate or validation_scorer(cfg, data, tokenizer), on_epoch)
    trained = train_model(model, train, tokenizer, loss, student.train, cfg.seed, validate=validate, log=log)
    return model, tokenizer, data, replace(trained, seconds=trained.seconds + stage_seconds)


def heard_by(score: Callable[[torch.nn.Module], float],
             on_epoch: Callable[[int, float], None]) -> Callable[[torch.nn.Module], float]:
    """`score`, telling `on_epoch(epoch, metric)` each metric it gives (epochs 1-based)."""
    epochs = 0

    def validate(model: torch.nn.Module) -> float:
        nonlocal epochs
        metric = score(model)
        epochs += 1
        on_epoch(epochs, metric)
        return metric

    return validate


def distillation_split(data: Data, teacher_logits: dict[str, np.ndarray],
                       transfer_logits: dict[str, np.ndarray] | None) -> EncodedSplit:
    """What a KD student trains on: the labelled split with the teacher's outputs, then (with a transfer set) the
    transfer set with the teacher's outputs and its labels dropped, so its rows add KD terms and never CE."""
    labelled = data.train.with_teacher(teacher_logits)
    if data.transfer is None:
        return labelled
    assert transfer_logits is not None, "a transfer set comes with the teacher's outputs on it"
    return labelled.followed_by(data.transfer.without_labels().with_teacher(transfer_logits))


def prune_model(cfg: RunConfig, index: int, spec: PruneConfig, source: ModelArtifact, data: Data,
                teacher_logits: dict[str, np.ndarray], config_hash: str) -> tuple[list[str], ModelArtifact]:
    """Prune `source` to the target in `spec.steps` steps; after each, recover with KD against the teacher's
    cached outputs and score the validation split (logged, and kept in the report row)."""
    name = spec.name
    model, tokenizer = load_saved(cfg, source)
    data = data_for(cfg, data, tokenizer)
    log = RecoveryLog(name, log_path(cfg, name) if distributed.is_main() else None, lambda step: train_log(
        cfg, f"{name}.step{step}", config_hash, f"recover {name} ({step}/{spec.steps})"))
    steps, seconds = prune_and_recover(Pruner(model, spec, f"prune.{index}"), data.train.with_teacher(teacher_logits),
                                       tokenizer, data.task, cfg.seed, validation_scorer(cfg, data, tokenizer), log,
                                       validate_recovery=True)
    trained = TrainResult(steps=0, seconds=seconds, final_loss=0.0, epochs_run=spec.recovery.epochs * spec.steps)
    files, result = finish_model(cfg, SaveAs(name, "pruned", source.student_kind), model, tokenizer, data, trained,
                                 config_hash)
    for step in range(1, spec.steps + 1):
        checkpoint_path(cfg, f"{name}.step{step}", config_hash).unlink(missing_ok=True)
    sparsity = {k: v for k, v in layer_sparsity(model).items() if v > 0}
    # Recovery trains on the labelled split; the weights it starts from saw what the source saw.
    return files, replace(result, source=source.name, prune=PruneRecord(spec.kind, steps, sparsity),
                          transfer_examples=source.transfer_examples)


def quantize_model(cfg: RunConfig, spec: QuantizeConfig, source: ModelArtifact, data: Data,
                   config_hash: str) -> tuple[list[str], ModelArtifact]:
    """A lower-precision copy of `source`; how often it picks what the fp32 model picks is measured on the test
    split. Int8 runs on the CPU (PyTorch's int8 kernels are CPU ones); bf16 and fp16 on the run's device."""
    fp32, tokenizer = load_saved(cfg, source)
    data = data_for(cfg, data, tokenizer)
    if spec.method in HALF_PRECISIONS:
        fp32 = fp32.to(run_device(cfg))
    model = quantize(fp32, spec.method)
    mask = token_mask(data.test, data.max_length) if data.task.per_token else None
    agreement = argmax_agreement(data.predict(fp32, data.test, tokenizer), data.predict(model, data.test, tokenizer),
                                 mask)
    files, result = finish_model(cfg, SaveAs(spec.name, "quantized", source.student_kind), model, tokenizer, data,
                                 None, config_hash, weights_of=fp32)
    return files, replace(result, source=source.name, argmax_agreement=agreement,
                          transfer_examples=source.transfer_examples,
                          precision="int8" if spec.method == "dynamic_int8" else spec.method)


@dataclass(frozen=True)
class SaveAs:
    """What a finished model is in the run: its name (its folder and report row), its role (teacher, student,
    baseline, pruned, quantized) and the kind of student it is or was made from (None for the teacher)."""

    name: str
    role: str
    student_kind: str | None = None

    @property
    def dir(self) -> str:
        """Its folder, relative to the run folder: teacher/, students/<name>, pruned/<name> or quantized/<name>."""
        if self.role in ("pruned", "quantized"):
            return f"{self.role}/{self.name}"
        return self.name if self.role == "teacher" else f"students/{self.name}"


def finish_model(cfg: RunConfig, save_as: SaveAs, model, tokenizer, data: Data, trained: TrainResult | None,
                 config_hash: str, weights_of=None) -> tuple[list[str], ModelArtifact]:
    """Evaluate on the test split, save atomically, and describe the model for the report. `weights_of` is the
    fp32 model whose parameters an int8 model stores (PyTorch hides packed int8 weights from parameters()).
    With several processes, the main one alone does this: the others stop here (distributed.LeftToMain)."""
    name, role, rel = save_as.name, save_as.role, save_as.dir
    if not distributed.is_main():
        raise distributed.LeftToMain(name)
    metrics = data.task.evaluate(data.predict(model, data.test, tokenizer), data.test, cfg, data.label_names)
    if cfg.task in PER_TEXT_TASKS:  # in config.json, so whoever scores the folder (or its export) feeds it the same
        model.config.trained_on_text_pairs = getattr(cfg.data.source, "text_pair_column", None) is not None
    if role == "quantized" and is_int8_model(model):
        save_quantized(model, tokenizer, cfg.run_dir / rel)
    else:
        save_pretrained_atomic(model, tokenizer, cfg.run_dir / rel)
    checkpoint_path(cfg, name, config_hash).unlink(missing_ok=True)  # the saved model supersedes it
    console.print(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    weights = weights_of if weights_of is not None else model
    params = sum(p.numel() for p in weights.parameters())
    nonzero = count_nonzero(weights)
    # family is the saved architecture (what loads it); student_kind says how the student was made.
    return [rel], ModelArtifact(
        name=name, role=role, family=model.config.model_type, student_kind=save_as.student_kind, dir=rel,
        params=params,
        nonzero_params=nonzero, sparsity=1 - nonzero / params, size_mb=folder_size_mb(cfg.run_dir / rel),
        size_mb_compressed=compressed_size_mb(cfg.run_dir / rel), metrics=metrics,
        train_seconds=round(trained.seconds, 2) if trained else 0.0, epochs_run=trained.epochs_run if trained else 0,
        best_epoch=trained.best_epoch if trained else None, hash=config_hash)


# ---------------------------------------------------------------- export and bench


def export_model(cfg: RunConfig, model_result: ModelArtifact, data: Data, int8_variants: list[str],
                 config_hash: str) -> tuple[list[str], ExportResult]:
    """ONNX (optimum for HF families, torch.onnx for ours), parity against PyTorch, the metric again with ONNX
    Runtime; then the optimised graph and the int8 variants beside it, each scored the same way."""
    name = model_result.name
    model, tokenizer = load_saved(cfg, model_result)
    data = data_for(cfg, data, tokenizer)
    out_dir = cfg.run_dir / "exports" / name

    def evaluate_on(split) -> Callable[[dict[str, torch.Tensor]], dict]:
        return lambda outputs: data.task.evaluate(outputs, split, cfg, data.label_names)

    score = GraphScorer(model, tokenizer, data.test, data.task, data.pad_to, evaluate_on(data.test),
                        with_reference=bool(int8_variants))
    openvino = with_openvino(cfg)
    static = any(v.startswith("static") for v in int8_variants)
    calibration = calibration_batches(cfg, data, tokenizer) if static or openvino and int8_variants else None
    mend = bool(int8_variants) and cfg.export.quantize.mend and len(data.validation) > 0
    validation = ValidationScorer(tokenizer, data.validation, data.task, data.pad_to,
                                  evaluate_on(data.validation)) if mend else None
    spec = ExportSpec(name, model_result.family not in OWN_FAMILIES, cfg.export, int8_variants, calibration,
                      validation, openvino)
    result = export_and_score(model, tokenizer, spec, score, out_dir, cfg.run_dir, config_hash)
    return [str(out_dir.relative_to(cfg.run_dir))], result


def with_openvino(cfg: RunConfig) -> bool:
    """Whether the exports get OpenVINO graphs too: export.openvino, where the openvino extra is installed."""
    return cfg.export.enabled and cfg.export.openvino and openvino_installed()


def calibration_batches(cfg: RunConfig, data: Data, tokenizer) -> list[dict[str, np.ndarray]]:
    """Static int8's activation ranges come from real text the model will meet: the first shuffled training
    batches and, where the run has a transfer set, its batches in turn with them (its unlabelled and augmented text
    widens the ranges the way deployment traffic does)."""
    sources = [iter(make_loader(data.train, tokenizer, batch_size=16, shuffle=True, seed=cfg.seed))]
    if data.transfer is not None and len(data.transfer) > 0:
        sources.append(iter(make_loader(data.transfer, tokenizer, batch_size=16, shuffle=True, seed=cfg.seed)))
    batches, wanted = [], cfg.export.quantize.calibration_batches
    while len(batches) < wanted and sources:
        for source in list(sources):
            batch = next(source, None)
            if batch is None:
                sources.remove(source)
            elif len(batches) < wanted:
                batches.append({k: v.numpy() for k, v in select_inputs(batch).items()})
    return batches


def bench_models(cfg: RunConfig, models: list[ModelArtifact],
                 exports: dict[str, ExportResult]) -> tuple[list[str], BenchResult]:
    """Latency of every model in PyTorch and, interleaved with it, each of its ONNX graphs; bench.json."""
    b = cfg.bench
    if distributed.world_size() > 1 and not b.threads:
        # A launcher runs each process on one thread (torchrun's OMP_NUM_THREADS=1); bench as one process would,
        # on every core, as ONNX Runtime's sessions do.
        torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    results, on_device = {}, {}
    # The CPU's GEMM peak in each precision the models run in (a bf16 row against the bf16 peak); the fp32 one always.
    peaks = {torch.float32: gemm_peak_flops(torch.device("cpu"), torch.get_num_threads())}
    with track_steps("bench", len(models)) as advance:
        for m in models:
            model, tokenizer = load_saved(cfg, m)
            dtype = next(model.parameters()).dtype
            if dtype not in peaks:
                peaks[dtype] = gemm_peak_flops(torch.device("cpu"), torch.get_num_threads(), dtype)
            export = exports.get(m.name)
            graphs = {v.variant: cfg.run_dir / v.onnx_path for v in export.variants if not v.failed} if export else {}
            names = tokenizer_inputs(tokenizer)
            results[m.name] = time_model_and_graphs(model, names, graphs, b, cfg.seed, peaks[dtype])
            if devices_beside_cpu(b.devices):  # kept for the devices beside the CPU, where every model is timed at once
                on_device[m.name] = OnDevice(model, names, graphs.get("fp32"), results[m.name].flops)
            advance()
    for device in devices_beside_cpu(b.devices):
        timed = time_on_device(on_device, device, b, cfg.seed)
        for name, timings in timed.items():
            results[name] = replace(results[name], devices=results[name].devices | {device: timings})
    half_peaks = {f"gemm_peak_{name}_flops_s": peaks[d] for name, d in HALF_PRECISIONS.items() if d in peaks}
    write_json_atomic(cfg.run_dir / "bench.json", {
        "settings": b.model_dump(), "results": to_json(results, BenchResult),
        "environment": capture_environment() | {"gemm_peak_flops_s": peaks[torch.float32]} | half_peaks})
    return ["bench.json"], results


def bench_environment(run_dir: Path) -> dict:
    """The machine the latencies were measured on (bench.json), which a resumed run may not be running on."""
    return json.loads((run_dir / "bench.json").read_text())["environment"]


# ---------------------------------------------------------------- helpers


def validator(cfg: RunConfig, train: TrainConfig, data: Data, tokenizer):
    """model -> the task's headline metric on the validation split, for best-epoch selection and early stopping."""
    return validation_scorer(cfg, data, tokenizer) if train.validate_every_epoch else None


def validation_scorer(cfg: RunConfig, data: Data, tokenizer):
    def score(model) -> float:
        outputs = data.predict(model, data.validation, tokenizer)
        return data.task.evaluate(outputs, data.validation, cfg, data.label_names)[data.task.metric]

    return score


def load_saved(cfg: RunConfig, model_result: ModelArtifact):
    path = cfg.run_dir / model_result.dir
    return load_saved_model(path, cfg.task), load_tokenizer(str(path))


def train_log(cfg: RunConfig, name: str, config_hash: str, description: str) -> TrainLog:
    return TrainLog(description, log_path(cfg, name), checkpoint_path(cfg, name, config_hash),
                    tuple(cfg.tracking), cfg.run_dir, cfg.name, name)


def checkpoint_path(cfg: RunConfig, name: str, config_hash: str) -> Path:
    """Where training state is kept between epochs; the hash in the name keeps a changed config from resuming
    another config's training."""
    return cfg.run_dir / "checkpoints" / f"{name}-{config_hash}.pt"


def log_path(cfg: RunConfig, name: str) -> Path:
    path = cfg.run_dir / "logs" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
