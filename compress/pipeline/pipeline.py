"""`compress run`: data (+ transfer set) -> teacher -> students (KD + baseline) -> prune -> quantise -> export ->
bench -> report.

Read top to bottom, this is the run: each stage is hashed with everything it depends on (chained through the
hashes of the results it reads) and called through the manifest (compress.pipeline.resume), so an interrupted run
resumes and a change re-runs only what is downstream of it. What each stage does is in compress.pipeline.stages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
import numpy as np
import torch
import transformers

from compress.core import distributed, progress
from compress.core.artifacts import remove_stale_temporaries, run_folder_lock, write_text_atomic
from compress.core.config import (
    BiLSTMStudent,
    PruneConfig,
    QuantizeConfig,
    RunConfig,
    StudentConfig,
    dump_config,
)
from compress.core.errors import UserError
from compress.core.progress import track_steps, warn
from compress.core.results import BenchResult, ExportResult, ModelArtifact
from compress.data.tasks import TASKS
from compress.models.loading import damaged_weights, remake
from compress.pipeline import stages
from compress.pipeline.declarations import (
    BASELINE,
    BENCH,
    EXPORT,
    PRUNE,
    QUANTIZE,
    STUDENT,
    TEACHER,
    TEACHER_LOGITS,
    TEACHER_TRANSFER,
)
from compress.pipeline.preflight import check_against_models, run_folder_error
from compress.pipeline.resume import LaterStageNotRun, StageRunner, StageSelection
from compress.pipeline.run_data import RunData
from compress.report.files import write_report_files
from compress.report.model_cards import write_model_cards
from compress.report.tables import build_report, print_report, print_timeline
from compress.report.tracking import write_final_scalars


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    report: dict | None  # report.json's content; None when --only stopped before the report
    ran: list[str]
    skipped: list[str]


def run(cfg: RunConfig, selection: StageSelection = StageSelection()) -> RunResult:
    """Run the whole pipeline for `cfg`, resuming from the run folder's manifest; `selection` re-runs parts."""
    with quiet_libraries():
        return _run(cfg, selection)


def _run(cfg: RunConfig, selection: StageSelection) -> RunResult:
    selection.check(cfg)
    device = stages.run_device(cfg)  # an absent device fails here, before anything is written
    check_against_models(cfg)  # and what the models' configs refute (a layer the teacher lacks), before training
    run_dir = cfg.run_dir
    made = make_run_folder(run_dir)
    main = distributed.is_main()  # with several processes, the main one alone writes (compress.core.distributed)
    with run_folder_lock(run_dir) if main else contextlib.nullcontext(), stages.training_on(device):
        try:
            distributed.start(device)
            if main:
                remove_stale_temporaries(run_dir)  # a killed run's half-written files; their stages run again
                write_text_atomic(run_dir / "config.yaml", dump_config(cfg))
            distributed.wait_for_everyone()
            return _run_in(run_dir, cfg, selection)
        except UserError:
            # Refused before anything ran (bad data) in a folder this call made: leave none. Under the lock, so no
            # other run is using it; a run refused by the lock never gets here.
            if made and main and only_set_up(run_dir):
                shutil.rmtree(run_dir, ignore_errors=True)
                for folder in made[1:]:  # output_dir and the folders above it this call made, now empty
                    with contextlib.suppress(OSError):
                        folder.rmdir()
            raise


def make_run_folder(run_dir: Path) -> list[Path]:
    """Make the run folder (and output_dir above it); the folders this call made, the run folder first (none: it was
    there)."""
    try:
        missing = [run_dir, *(folder for folder in run_dir.parents if not folder.exists())]  # nearest first
        run_dir.mkdir(parents=True)
        return missing
    except FileExistsError as err:
        if run_dir.is_dir():
            return []
        raise run_folder_error(run_dir, err) from None
    except OSError as err:
        raise run_folder_error(run_dir, err) from None


def only_set_up(run_dir: Path) -> bool:
    """Whether the run folder holds only what a run writes before its first stage: its lock, config and data cache."""
    return all(p.name in (".lock", "config.yaml", "cache") for p in run_dir.iterdir())


def _run_in(run_dir: Path, cfg: RunConfig, selection: StageSelection) -> RunResult:
    runner = StageRunner(run_dir, selection)
    if cfg.bench.threads:
        torch.set_num_threads(cfg.bench.threads)
    data = RunData(cfg)
    if not data.cached:
        data.load()  # a first run: the data stage prints its line and errors before any stage starts
    try:
        models, exports, bench = run_stages(cfg, data, runner)
    except LaterStageNotRun as stopped:
        warn(f"[yellow]report not updated[/]: stage {stopped.stage} is not up to date after --only "
             f"{selection.only}; run without --only to bring the later stages up to date")
        return RunResult(run_dir, None, runner.ran, runner.skipped)

    if not distributed.is_main():  # the main process writes and prints the report
        return RunResult(run_dir, None, runner.ran, runner.skipped)
    started = time.perf_counter()
    timeline = [{"stage": "data", "seconds": data.seconds}] + runner.timeline()
    report = build_report(cfg, models, exports, bench, stages.bench_environment(run_dir), timeline)
    write_report_files(run_dir, report)
    write_model_cards(cfg, report)
    write_final_scalars(cfg, report)
    print_report(report)
    print_timeline(timeline + [{"stage": "report", "seconds": time.perf_counter() - started}],
                   runner.ran + (["data"] if data.built else []))
    return RunResult(run_dir, report, runner.ran, runner.skipped)


def run_stages(cfg: RunConfig, data: RunData,
               runner: StageRunner) -> tuple[list[ModelArtifact], dict[str, ExportResult], BenchResult]:
    """The declared stages in order (compress.pipeline.declarations): teacher -> its outputs -> students -> prune ->
    quantize -> export -> bench; returns the models, exports and timings."""
    teacher = teacher_stage(cfg, data, runner)
    # The teacher's outputs, labelled once and read by every KD student, recovery and epoch.
    logits = teacher_outputs(cfg, teacher, data, runner) if cfg.students or cfg.prune else None
    transfer = transfer_outputs(cfg, teacher, data, runner) if cfg.students else None
    models = [teacher]
    for index, student in enumerate(cfg.students):
        models.append(student_stage(cfg, index, student, teacher, data, runner, logits, transfer))
        if student.baseline:
            models.append(student_stage(cfg, index, student, teacher, data, runner, None))
    for index, spec in enumerate(cfg.prune):
        models.append(prune_stage(cfg, index, spec, _named(models, spec.model), teacher, data, runner, logits))
    for spec in cfg.quantize:
        models.append(quantize_stage(cfg, spec, _named(models, spec.model), data, runner))
    exports = {}
    if cfg.export.enabled:
        # PyTorch int8 models have no ONNX export (ONNX Runtime quantises the fp32 export instead).
        exportable = [m for m in models if m.role != "quantized"]
        with track_steps("export", len(exportable)) as advance:
            for m in exportable:
                exports[m.name] = export_stage(cfg, m, data, runner)
                advance()
    return models, exports, bench_stage(cfg, models, exports, runner)


# ---------------------------------------------------------------- each stage: its hash, then the call


def teacher_stage(cfg: RunConfig, data: RunData, runner: StageRunner) -> ModelArtifact:
    config_hash = TEACHER.config_hash(cfg.task, data.fingerprint, cfg.data, cfg.teacher, cfg.seed)
    return whole(cfg, runner(TEACHER, config_hash, lambda: stages.finetune_teacher(cfg, data.load(), config_hash)))


def teacher_outputs(cfg: RunConfig, teacher: ModelArtifact, data: RunData,
                    runner: StageRunner) -> dict[str, np.ndarray]:
    """The teacher's outputs on the training split, computed once and reused by every KD student and epoch.
    Memory-mapped, so a large split's outputs (SQuAD: features x positions x 2) are paged in as batches need
    them instead of held in memory."""
    runner(TEACHER_LOGITS, TEACHER_LOGITS.config_hash(teacher.hash),
           lambda: stages.cache_teacher_outputs(cfg, teacher, data.load()))
    return load_cached_outputs(cfg.run_dir, stages.teacher_output_paths(TASKS[cfg.task]))


def transfer_outputs(cfg: RunConfig, teacher: ModelArtifact, data: RunData,
                     runner: StageRunner) -> dict[str, np.ndarray] | None:
    """The teacher's outputs on the transfer set (None without one), computed once for every KD student and
    memory-mapped like the training split's. Hashed with the teacher and the tokenised transfer set, so an edited
    unlabeled file (or another cap, seed or max_length) labels it again."""
    if data.transfer_fingerprint is None:
        return None
    runner(TEACHER_TRANSFER, TEACHER_TRANSFER.config_hash(teacher.hash, data.transfer_fingerprint),
           lambda: stages.cache_transfer_outputs(cfg, teacher, data.load()))
    return load_cached_outputs(cfg.run_dir, stages.teacher_output_paths(TASKS[cfg.task], "transfer"))


def load_cached_outputs(run_dir: Path, paths: dict[str, Path]) -> dict[str, np.ndarray]:
    """The teacher's cached outputs, memory-mapped; a damaged file (a disk that filled up, an edit) is one line."""
    outputs = {}
    for name, path in paths.items():
        try:
            outputs[name] = np.load(run_dir / path, mmap_mode="r")
        except (ValueError, OSError) as err:
            raise UserError(f"the teacher's cached outputs cannot be read ({type(err).__name__})", str(run_dir / path),
                            "delete it and run again: the teacher labels again, nothing else re-runs") from None
    return outputs


def student_stage(cfg: RunConfig, index: int, student: StudentConfig, teacher: ModelArtifact, data: RunData,
                  runner: StageRunner, teacher_logits: dict[str, np.ndarray] | None,
                  transfer_logits: dict[str, np.ndarray] | None = None) -> ModelArtifact:
    """The KD student (with `teacher_logits`, and `transfer_logits` with a transfer set) or its baseline
    (without either)."""
    kd = teacher_logits is not None
    # Hash only what each one reads: the KD student the fine-tuned teacher (through its logits), the KD settings
    # and the transfer set; the baseline starts from the same weights and never sees the teacher's training, the
    # KD settings or the transfer set's teacher outputs. Without a transfer set the hashes are what they were before
    # it existed (and an unset student tokenizer, compress.core.hashing.HASHED_WHEN_SET,
    # leaves them as they were before that key).
    shape = student.model_dump(mode="json", exclude={"name", "distill", "baseline"})
    # A BiLSTM's Word2Vec also reads the transfer set's real text (Data.word2vec_corpus), KD student and baseline.
    transferred = data.transfer_fingerprint is not None
    corpus = [data.word2vec_fingerprint] if transferred and uses_word2vec(student) else []
    if kd:
        transfer = [data.transfer_fingerprint] if transferred else []
        stage, model = STUDENT, student.name
        config_hash = STUDENT.config_hash(teacher.hash, shape, student.distill, *transfer, *corpus)
    else:
        stage, model = BASELINE, f"{student.name}-baseline"
        config_hash = BASELINE.config_hash(cfg.task, data.fingerprint, cfg.data, cfg.seed, cfg.teacher.model,
                                           cfg.teacher.trust_remote_code, shape, *corpus)
    return whole(cfg, runner(stage, config_hash,
                             lambda: stages.train_student(cfg, index, student, teacher, data.load(), teacher_logits,
                                                          config_hash, transfer_logits), model))


def prune_stage(cfg: RunConfig, index: int, spec: PruneConfig, source: ModelArtifact, teacher: ModelArtifact,
                data: RunData, runner: StageRunner, teacher_logits: dict[str, np.ndarray]) -> ModelArtifact:
    config_hash = PRUNE.config_hash(source.hash, teacher.hash, spec.model_dump(mode="json", exclude={"name"}))
    return whole(cfg, runner(PRUNE, config_hash,
                             lambda: stages.prune_model(cfg, index, spec, source, data.load(), teacher_logits,
                                                        config_hash), spec.name))


def quantize_stage(cfg: RunConfig, spec: QuantizeConfig, source: ModelArtifact, data: RunData,
                   runner: StageRunner) -> ModelArtifact:
    config_hash = QUANTIZE.config_hash(source.hash, spec.model_dump(mode="json", exclude={"name"}))
    return whole(cfg, runner(QUANTIZE, config_hash,
                             lambda: stages.quantize_model(cfg, spec, source, data.load(), config_hash), spec.name))


def export_stage(cfg: RunConfig, model: ModelArtifact, data: RunData, runner: StageRunner) -> ExportResult:
    int8_variants = cfg.export.quantize.variants if model.name in int8_models(cfg) else []
    config_hash = export_hash(cfg, model.hash, int8_variants, data.transfer_fingerprint)
    return runner(EXPORT, config_hash, lambda: stages.export_model(cfg, model, data.load(), int8_variants, config_hash),
                  model.name)


def export_hash(cfg: RunConfig, model_hash: str, int8_variants: list[str], transfer: str | None = None) -> str:
    """What an export is reused under: only what changes the graphs or their scores. The parity tolerance is
    applied by the report, and so is the int8 budget, unless int8 variants are mended toward it. `transfer`: the
    transfer set's fingerprint, where the run has one (calibration reads it). Keys are added only where they apply,
    so the hashes of exports they do not touch stay as they were."""
    q = cfg.export.quantize
    static = any(v.startswith("static") for v in int8_variants)
    extra = [("mend", q.max_metric_drop)] if int8_variants and q.mend else []
    openvino = stages.with_openvino(cfg)
    if openvino:  # installing the extra later makes these graphs then
        extra.append(("openvino", q.calibration_batches if int8_variants else None))
    if (static or openvino and int8_variants) and transfer is not None:
        # Calibrated on its text too: a model's hash (a baseline's, a pruned one's) may not cover the transfer set.
        extra.append(("calibrated on the transfer set too", transfer))
    return EXPORT.config_hash(model_hash, cfg.export.opset, cfg.export.optimize, int8_variants,
                              q.calibration_batches if static else None, *extra)


def bench_stage(cfg: RunConfig, models: list[ModelArtifact], exports: dict[str, ExportResult],
                runner: StageRunner) -> BenchResult:
    """Latency of every model in PyTorch and ONNX Runtime, measured side by side in one stage."""
    config_hash = BENCH.config_hash([m.hash for m in models], [e.hash for e in exports.values()], cfg.bench)
    return runner(BENCH, config_hash, lambda: stages.bench_models(cfg, models, exports))


# ---------------------------------------------------------------- helpers


def int8_models(cfg: RunConfig) -> list[str]:
    """The models whose ONNX exports get ONNX Runtime int8 variants: export.quantize.models, by default every student
    (baselines included) and every pruned model."""
    q = cfg.export.quantize
    if not (cfg.export.enabled and q.enabled):
        return []
    return q.models if q.models is not None else cfg.student_names() + [p.name for p in cfg.prune]


def whole(cfg: RunConfig, model: ModelArtifact) -> ModelArtifact:
    """A model a stage saved, or saved in an earlier run and now reuses, checked whole (from its files' sizes and
    headers) before any later stage reads it: a damaged teacher is found here, not after the students have
    retrained on its cached outputs and the export stage loads it."""
    folder = cfg.run_dir / model.dir
    problem = damaged_weights(folder)
    if problem is not None:
        raise UserError(f"the saved model is damaged: {problem}", str(folder), remake(folder))
    return model


def _named(models: list[ModelArtifact], name: str) -> ModelArtifact:
    return next(m for m in models if m.name == name)


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Keep the console for our progress and tables while a run runs: library chatter about new heads, tracing and
    tokenizer padding is expected here and says nothing the report does not (--verbose keeps it). The libraries'
    levels and the warning filters are put back afterwards, so a notebook that calls `compress.run` keeps its own
    (MLflow's: MLFLOW_LOGGING_LEVEL, read when mlflow is first imported, stays set for the process)."""
    if progress.LIBRARY_MESSAGES:
        yield
        return
    before = (transformers.logging.get_verbosity(), huggingface_hub.utils.logging.get_verbosity(),
              logging.getLogger("alembic").level)
    with warnings.catch_warnings():
        transformers.logging.set_verbosity_error()
        huggingface_hub.utils.logging.set_verbosity_error()
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*", category=FutureWarning)
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow's store announces its tables at import
        logging.getLogger("alembic").setLevel(logging.WARNING)  # ... and its migrations
        try:
            yield
        finally:
            transformers.logging.set_verbosity(before[0])
            huggingface_hub.utils.logging.set_verbosity(before[1])
            logging.getLogger("alembic").setLevel(before[2])


def uses_word2vec(student: StudentConfig) -> bool:
    return isinstance(student, BiLSTMStudent) and student.word2vec.enabled
