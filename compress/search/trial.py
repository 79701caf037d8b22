"""What one trial does, in three steps a trial record follows:

1. `measure_shape`: build the student untrained (no Word2Vec, no embedding initialisation: a shape to time, not to
   train), export it as the run would (ONNX, ORT's optimised graph, each int8 variant) and time PyTorch and every
   graph side by side at bench.batch_size / bench.seq_len. A shape whose fastest graph misses the latency ceiling is
   never trained.
2. `train_candidate`: distil it from the run's teacher's cached outputs (training split and transfer set), as the
   run's student stage does, scoring the validation split after every epoch; the caller's `after_epoch` may stop it
   there (successive halving, `promoted`).
3. `ship`: export the trained student again, score each graph on the validation split, and let the run's own rule
   (exports.variants.judge_variants: the fastest graph within export.quantize.max_metric_drop) pick the graph that
   would ship; the trial's metric is that graph's, its latency that graph's untrained timing.

Trials are judged on the validation split; the chosen student's row in the report is scored on the test split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed

from bench.measure import time_model_and_graphs
from compress.core.config import BiLSTMStudent, CustomTransformerStudent, RunConfig, SearchConfig, Word2VecConfig
from compress.core.results import ModelArtifact, ModelTimings, TrainResult
from compress.data.batching import tokenizer_inputs
from compress.data.cache import Data
from compress.distill.loop import TrainLog
from compress.models.students import OWN_FAMILIES, build_student, student_tokenizer
from compress.pipeline.run_data import data_for
from compress.pipeline.stages import TeacherOutputs, calibration_batches, distil_student
from compress.search.space import Candidate
from exports.variants import ExportSpec, GraphScorer, build_variants, export_graph, judge_variants, make_graphs

WHERE = "search.space"  # where a student's own checks point a user


@dataclass(frozen=True)
class SearchContext:
    """What every trial of a search shares: the run's config, its data, the teacher and its cached outputs."""

    cfg: RunConfig
    data: Data  # the run's splits, as the teacher's tokenizer encodes them
    teacher: ModelArtifact
    teacher_logits: dict[str, np.ndarray]
    transfer_logits: dict[str, np.ndarray] | None
    teacher_metric: float  # the teacher's on the validation split, what "% kept" divides by
    teacher_layers: int | None
    peak_flops_s: float  # the CPU's fp32 GEMM peak (time_model_and_graphs reports efficiency against it)
    folder: Path  # runs/<name>/search

    @property
    def search(self) -> SearchConfig:
        assert self.cfg.search is not None
        return self.cfg.search

    @property
    def required_metric(self) -> float:
        return self.search.required_metric(self.teacher_metric)

    @property
    def int8_variants(self) -> list[str]:
        """The int8 graphs each trial builds: search.space.int8, or the run's own variants."""
        export = self.cfg.export
        if not (export.enabled and export.quantize.enabled):
            return []
        given = self.search.space.int8
        return list(given if given is not None else export.quantize.variants)


@dataclass(frozen=True)
class Measured:
    """The untrained shape: its size, and PyTorch and each graph timed side by side."""

    params: int
    flops: int | None
    timings: ModelTimings
    failed_graphs: dict[str, str]  # graphs ONNX Runtime could not make: variant -> why

    def latency_ms(self) -> dict[str, float]:
        """p50 by runtime: torch, fp32 (the plain export), fp32-optimized, each int8 variant."""
        t = self.timings
        found = {"torch": t.torch.latency_ms_p50} | ({"fp32": t.ort.latency_ms_p50} if t.ort else {})
        return found | {name: timing.latency_ms_p50 for name, timing in t.ort_variants.items()}

    def best_case_ms(self) -> float:
        """The fastest this shape can ship: the ceiling is checked against it before any training."""
        return min(self.latency_ms().values())


@dataclass(frozen=True)
class Shipped:
    """The graph that would ship (the run's rule) after training, scored on the validation split."""

    graph: str  # "pytorch" or an ONNX variant name
    metric: float
    latency_ms: float
    why: str


def measure_shape(ctx: SearchContext, candidate: Candidate, out_dir: Path) -> Measured:
    """Time the untrained student as it would ship: PyTorch and, with export enabled, each ONNX graph the run
    would make of it (files under `out_dir`)."""
    cfg = ctx.cfg
    student = shape_only(candidate.student)
    tokenizer = student_tokenizer(student, cfg.task, cfg.teacher, WHERE)
    data = data_for(cfg, ctx.data, tokenizer)
    set_seed(cfg.seed)
    model = build_student(student, cfg.task, data.label_names, cfg.teacher, tokenizer, [], cfg.seed, where=WHERE)
    model.eval()
    graphs, failed = build_graphs(ctx, model, tokenizer, data, out_dir) if cfg.export.enabled else ({}, {})
    timings = time_model_and_graphs(model, tokenizer_inputs(tokenizer), graphs, cfg.bench, cfg.seed,
                                    ctx.peak_flops_s)
    return Measured(sum(p.numel() for p in model.parameters()), timings.flops, timings, failed)


def shape_only(student):
    """The student as a shape: a BiLSTM without its Word2Vec training, a custom transformer without the teacher's
    projected embeddings (neither changes a forward's cost)."""
    if isinstance(student, BiLSTMStudent):
        return student.model_copy(update={"word2vec": Word2VecConfig(enabled=False)})
    if isinstance(student, CustomTransformerStudent):
        return student.model_copy(update={"init_embeddings_from_teacher": False})
    return student


def build_graphs(ctx: SearchContext, model: torch.nn.Module, tokenizer, data: Data,
                 out_dir: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """The graphs the run's export stage would make of `model` (exports.variants.make_graphs, as build_variants
    makes them, without scoring them: an untrained model's scores say nothing): variant -> file, and the variants
    that failed."""
    plain, spec = export_plain(ctx, "untrained", model, tokenizer, data, out_dir)
    graphs, failed = {}, {}
    for graph in make_graphs(plain, spec):  # as build_variants: a graph ORT cannot make is a finding, not a crash
        if graph.error is None:
            graphs[graph.variant] = graph.path
        else:
            failed[graph.variant] = _first_line(graph.error)
    return graphs, failed


def export_plain(ctx: SearchContext, name: str, model: torch.nn.Module, tokenizer, data: Data,
                 out_dir: Path) -> tuple[Path, ExportSpec]:
    """The plain ONNX export of `model` in `out_dir`, as the run's export stage makes it, and the spec its other
    graphs are made by (`name` in its messages; static int8 calibrated on the training batches the run's are)."""
    cfg = ctx.cfg
    hf_family = model.config.model_type not in OWN_FAMILIES
    plain = export_graph(model, tokenizer, out_dir, hf_family, data.task.export_task, data.task.outputs,
                         cfg.export.opset)
    static = any(v.startswith("static") for v in ctx.int8_variants)
    calibration = calibration_batches(cfg, data, tokenizer) if static else None
    return plain, ExportSpec(name, hf_family, cfg.export, ctx.int8_variants, calibration)


def train_candidate(ctx: SearchContext, candidate: Candidate, log_path: Path, description: str,
                    after_epoch: Callable[[int, float], None]) -> tuple[torch.nn.Module, object, Data, TrainResult]:
    """Distil the candidate from the teacher's cached outputs with the run's student stage
    (compress.pipeline.stages.distil_student: the same seed, split, loss and loop, so the chosen student trained by
    the run matches its trial), scoring the validation split after every epoch; `after_epoch(epoch, metric)` hears
    each epoch's validation metric (1-based epochs) and may raise to stop the training there. Returns the model (its
    best epoch's weights, on the CPU), its tokenizer and data, and the training's result."""
    outputs = TeacherOutputs(ctx.teacher_logits, ctx.transfer_logits)
    model, tokenizer, data, trained = distil_student(ctx.cfg, candidate.student, WHERE, ctx.teacher, ctx.data,
                                                     outputs, TrainLog(description, log_path), on_epoch=after_epoch)
    model.cpu().eval()  # trained where the run's device is; exported and scored on the CPU, as the run's export is
    return model, tokenizer, data, trained


def ship(ctx: SearchContext, name: str, model: torch.nn.Module, tokenizer, data: Data, trained: TrainResult,
         measured: Measured, out_dir: Path) -> Shipped:
    """The graph that would ship, by the run's rule, with its validation metric and its (untrained) latency."""
    cfg = ctx.cfg
    torch_p50 = measured.timings.torch.latency_ms_p50
    pytorch_metric = trained.best_validation
    if not cfg.export.enabled:
        return Shipped("pytorch", pytorch_metric, torch_p50, "export disabled: PyTorch ships")

    def evaluate(outputs: dict[str, torch.Tensor]) -> dict:
        return data.task.evaluate(outputs, data.validation, cfg, data.label_names)

    score = GraphScorer(model, tokenizer, data.validation, data.task, data.pad_to, evaluate,
                        with_reference=bool(ctx.int8_variants))
    plain, spec = export_plain(ctx, name, model, tokenizer, data, out_dir)
    variants, _ = build_variants(plain, spec, score, out_dir)
    judged, kept, why = judge_variants(variants, measured.timings, torch_p50, cfg.export.parity_atol,
                                       cfg.export.quantize.max_metric_drop)
    if kept is None:
        return Shipped("pytorch", pytorch_metric, torch_p50, why or "no graph was kept: PyTorch ships")
    graph = next(v for v in judged if v.variant == kept)
    return Shipped(kept, graph.ort_metric, graph.ort_p50_ms, why)


# ---------------------------------------------------------------- successive halving


def halving_epochs(min_epochs: int, reduction_factor: int, epochs: int) -> list[int]:
    """The epochs after which a trial must be promoted to go on (1-based): min_epochs, min_epochs * factor, ...,
    before its last epoch (a trial at its last epoch has nothing left to save)."""
    found, epoch = [], min_epochs
    while epoch < epochs:
        found.append(epoch)
        epoch *= reduction_factor
    return found


def promoted(value: float, others: list[float], reduction_factor: int) -> bool:
    """Optuna's SuccessiveHalvingPruner rule (optuna/pruners/_successive_halving.py), metric up: among `value` and
    the values other trials had after the same epoch, the best 1/reduction_factor go on (the best one while fewer
    than reduction_factor have got there)."""
    competing = sorted([*others, value], reverse=True)
    keep = max(len(competing) // reduction_factor, 1)
    return value >= competing[keep - 1]


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else repr(err))[:200]
