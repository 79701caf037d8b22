"""`compress run`: data -> teacher -> students (KD + baseline) -> prune -> quantise -> export -> bench -> report.

Each stage is a plain function that writes under the run folder and records itself in manifest.json with a hash
of the config it depends on (chained through the hashes of the stages it reads), so an interrupted run resumes
and a change re-runs only the stages downstream of it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed

from bench.results import capture_environment
from bench.runners import dummy_inputs, ort_runner, torch_runner
from bench.timing import time_interleaved
from bench.flops import count_flops, gemm_peak_flops
from compress.artifacts import (compressed_size_mb, folder_size_mb, remove_stale_temporaries, run_folder_lock,
                                save_pretrained_atomic, write_json_atomic, write_text_atomic)
from compress.config import (KDConfig, PruneConfig, QuantizeConfig, RunConfig, StructuredPrune, StudentConfig,
                             TrainConfig, dump_config, stable_hash)
from compress.data.batching import MODEL_INPUTS, EncodedSplit, accepted_inputs, make_loader, predict
from compress.distill.loop import TrainResult, step_loss, train_model
from compress.manifest import STAGES, Manifest, stage_group
from compress.distill.progressive import train_layers_progressively
from compress.models.students import OWN_FAMILIES, build_student, layer_transfer, transformer_layers
from compress.errors import UserError
from compress.hub import hub_access
from compress.models.teacher import load_saved_model, load_task_model, load_tokenizer, resolve_model_path
from compress.progress import console, track_steps
from compress.prune import (count_nonzero, layer_parts, layer_sparsity, make_permanent, prune_structured,
                            prune_unstructured, target_sparsity, unstructured_targets)
from compress.quantize import argmax_agreement, quantize_dynamic_int8, save_quantized
from compress.report import build_report, print_report, print_timeline
from compress.report_files import write_report_files
from compress.tasks import TASKS, Task
from exports.onnx import export_hf_model, export_torch_model, parity_max_abs_diff
from exports.ort import create_session, optimize_graph, predict_session, quantize_graph


@dataclass(frozen=True)
class Data:
    task: Task
    train: EncodedSplit
    validation: EncodedSplit
    test: EncodedSplit
    label_names: list[str] | None
    max_length: int
    fingerprint: str  # hash of the tokenised splits: an edited data file invalidates what was trained on it


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    report: dict | None  # None when --only stopped before the report
    ran: list[str]
    skipped: list[str]


@dataclass(frozen=True)
class StageSelection:
    """Which stages to re-run. `start` (--from): that group and every later one run again, earlier ones resume as
    usual. `only` (--only): that group runs again; earlier ones must have finished under this config; later ones
    are forgotten (they were made from what the group just rewrote) and run on the next plain `compress run`,
    except the report, which is rewritten after --only bench."""

    start: str | None = None
    only: str | None = None

    def __post_init__(self) -> None:
        for flag, value in (("--from", self.start), ("--only", self.only)):
            if value is not None and value not in STAGES:
                raise UserError(f"unknown stage '{value}'", flag, f"stages: {', '.join(STAGES)}")
        if self.start and self.only:
            raise UserError("--from and --only were both given", "compress run", "give one of them")

    def forces(self, group: str) -> bool:
        """Whether stages of `group` run again even where they finished under this config."""
        if self.only:
            return group == self.only
        return self.start is not None and STAGES.index(group) >= STAGES.index(self.start)

    def after_only(self, group: str) -> bool:
        return self.only is not None and STAGES.index(group) > STAGES.index(self.only)


class LaterStageNotRun(Exception):
    """--only reached a later stage that has not run under this config: the run stops before the report."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        super().__init__(stage)


class _Stages:
    """Runs stages through the manifest, as the selection asks, and remembers which ran and which were skipped."""

    def __init__(self, run_dir: Path, selection: StageSelection) -> None:
        self.manifest = Manifest(run_dir)
        self.selection = selection
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def __call__(self, stage: str, config_hash: str, work) -> dict:
        group = stage_group(stage)
        force = self.selection.forces(group) and stage not in self.ran  # teacher_logits is asked for per student
        if self.selection.only and group != self.selection.only and not self.manifest.is_done(stage, config_hash):
            if self.selection.after_only(group):
                raise LaterStageNotRun(stage)
            raise UserError(f"--only {self.selection.only} needs stage '{stage}', which has not finished under "
                            "this config", str(self.manifest.path),
                            f"run without --only first, or use --from {group}")
        result, skipped = self.manifest.run_stage(stage, config_hash, work, force=force)
        if force and self.selection.only:
            self.manifest.forget_after(self.selection.only)
        (self.skipped if skipped else self.ran).append(stage)
        console.print(f"[dim]{'skipped' if skipped else 'done'}[/dim] {stage}" + (" (unchanged)" if skipped else ""))
        return result

    def timeline(self) -> list[dict]:
        """This run's stages in pipeline order, with the seconds each took when it last ran."""
        order = sorted(dict.fromkeys(self.ran + self.skipped), key=lambda s: STAGES.index(stage_group(s)))
        return [{"stage": s, "seconds": self.manifest.stages[s]["seconds"]} for s in order]


def run(cfg: RunConfig, selection: StageSelection = StageSelection()) -> RunResult:
    """Run the whole pipeline for `cfg`, resuming from the run folder's manifest; `selection` re-runs parts."""
    quiet_libraries()
    check_selection(cfg, selection)
    run_dir = cfg.run_dir
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot write the run folder ({err.strerror})", str(run_dir),
                        "set output_dir to a writable folder") from None
    with run_folder_lock(run_dir):
        remove_stale_temporaries(run_dir)  # a killed run's half-written files; their stages run again
        write_text_atomic(run_dir / "config.yaml", dump_config(cfg))
        return _run_in(run_dir, cfg, selection)


def _run_in(run_dir: Path, cfg: RunConfig, selection: StageSelection) -> RunResult:
    stages = _Stages(run_dir, selection)
    if cfg.bench.threads:
        torch.set_num_threads(cfg.bench.threads)
    started = time.perf_counter()
    data = prepare_data(cfg)
    data_seconds = time.perf_counter() - started
    try:
        models, exports, bench = run_stages(cfg, data, stages)
    except LaterStageNotRun as stopped:
        console.print(f"[yellow]report not updated[/]: stage {stopped.stage} is not up to date after --only "
                      f"{selection.only}; run without --only to bring the later stages up to date")
        return RunResult(run_dir, None, stages.ran, stages.skipped)

    started = time.perf_counter()
    timeline = [{"stage": "data", "seconds": round(data_seconds, 3)}] + stages.timeline()
    report = build_report(cfg, models, exports, bench, _bench_environment(run_dir), timeline)
    write_report_files(run_dir, report)
    print_report(report)
    print_timeline(timeline + [{"stage": "report", "seconds": time.perf_counter() - started}], stages.ran)
    return RunResult(run_dir, report, stages.ran, stages.skipped)


def check_selection(cfg: RunConfig, selection: StageSelection) -> None:
    """--from/--only naming a stage this config does not have would silently re-run nothing."""
    chosen = selection.start or selection.only
    empty = {"prune": not cfg.prune, "quantize": not cfg.quantize, "export": not cfg.export.enabled}
    if empty.get(chosen):
        flag = "--from" if selection.start else "--only"
        raise UserError(f"this config has no {chosen} stage", f"{flag} {chosen}",
                        "add it to the config, or name another stage")


def run_stages(cfg: RunConfig, data: Data, stages: _Stages) -> tuple[list[dict], dict[str, dict], dict]:
    """teacher -> students -> prune -> quantize -> export -> bench; returns the models, exports and bench results."""
    teacher = train_teacher(cfg, data, stages)
    models = [teacher]
    for index, student in enumerate(cfg.students):
        logits = teacher_train_logits(cfg, teacher, data, stages)
        models.append(train_student(cfg, index, student, teacher, data, stages, teacher_logits=logits))
        if student.baseline:
            models.append(train_student(cfg, index, student, teacher, data, stages, teacher_logits=None))
    for index, spec in enumerate(cfg.prune):
        logits = teacher_train_logits(cfg, teacher, data, stages)
        source = next(m for m in models if m["name"] == spec.model)
        models.append(prune_model(cfg, index, spec, source, teacher, data, stages, logits))
    for spec in cfg.quantize:
        source = next(m for m in models if m["name"] == spec.model)
        models.append(quantize_model(cfg, spec, source, data, stages))
    exports = {}
    if cfg.export.enabled:
        # PyTorch int8 models have no ONNX export (ONNX Runtime quantises the fp32 export instead).
        exportable = [m for m in models if m["role"] != "quantized"]
        with track_steps("export", len(exportable)) as advance:
            for m in exportable:
                exports[m["name"]] = export_model(cfg, m, data, stages)
                advance()
    bench = benchmark(cfg, models, exports, stages)
    return models, exports, bench


# ---------------------------------------------------------------- stages


def prepare_data(cfg: RunConfig) -> Data:
    """Load, split and tokenise once (deterministic for a config, so it is recomputed, not cached)."""
    task = TASKS[cfg.task]
    tokenizer = load_tokenizer(cfg.teacher.model, cfg.teacher.trust_remote_code)
    check_lengths(cfg)
    enc, label_names = task.build(cfg, tokenizer)
    labels = f", {len(label_names)} labels ({', '.join(label_names)})" if label_names else ""
    console.print(f"data ({cfg.task}): {len(enc['train'])} train / {len(enc['validation'])} validation / "
                  f"{len(enc['test'])} test features{labels}")
    fingerprint = stable_hash([enc[name].features for name in ("train", "validation", "test")], label_names)
    return Data(task, enc["train"], enc["validation"], enc["test"], label_names, cfg.data.max_length, fingerprint)


def check_lengths(cfg: RunConfig) -> None:
    """Sequence lengths the model cannot take fail here, before any training, not in the bench at the end."""
    from transformers import AutoConfig

    path = resolve_model_path(cfg.teacher.model)
    with hub_access():
        try:
            limit = getattr(AutoConfig.from_pretrained(path, trust_remote_code=cfg.teacher.trust_remote_code),
                            "max_position_embeddings", None)
        except (OSError, ValueError):
            return  # the model load right after reports this properly
    for key, value in (("data.max_length", cfg.data.max_length), ("bench.seq_len", cfg.bench.seq_len)):
        if limit and value > limit:
            raise UserError(f"{key} is {value} but the teacher takes at most {limit} positions", key,
                            f"set it to {limit} or less")


def train_teacher(cfg: RunConfig, data: Data, stages: _Stages) -> dict:
    config_hash = stable_hash("teacher", cfg.task, data.fingerprint, cfg.data, cfg.teacher, cfg.seed)

    def work() -> tuple[list[str], dict]:
        tokenizer = load_tokenizer(cfg.teacher.model, cfg.teacher.trust_remote_code)
        set_seed(cfg.seed)  # the new head's initial weights must not depend on what ran before in this process
        model = load_task_model(cfg.teacher.model, cfg.task, data.label_names, cfg.teacher.trust_remote_code,
                                new_head=cfg.teacher.finetune)
        trained = None
        if cfg.teacher.finetune:
            trained = train_model(model, data.train, tokenizer, cfg.teacher.train, cfg.seed, task=data.task,
                                  log_path=_log_path(cfg, "teacher"), description="fine-tune teacher",
                                  validate=_validator(cfg, cfg.teacher.train, data, tokenizer),
                                  checkpoint=_checkpoint(cfg, "teacher", config_hash))
        return _finish_model(cfg, "teacher", "teacher", None, model, tokenizer, data, trained, config_hash)

    return stages("teacher", config_hash, work)


def teacher_train_logits(cfg: RunConfig, teacher: dict, data: Data, stages: _Stages) -> dict[str, np.ndarray]:
    """The teacher's outputs on the training split, computed once and reused by every KD student and epoch
    (per-token outputs padded to max_length). Stored as .npy and memory-mapped, so a large split's outputs
    (SQuAD: features x positions x 2) are paged in as batches need them instead of held in memory."""
    paths = {name: Path("cache") / f"teacher_train_{name}.npy" for name in data.task.outputs}

    def work() -> tuple[list[str], dict]:
        model, tokenizer = _load_saved(cfg, teacher)
        outputs = _predict(model, data.train, tokenizer, data)
        (cfg.run_dir / "cache").mkdir(exist_ok=True)
        for name, values in outputs.items():
            tmp = cfg.run_dir / paths[name].with_suffix(".tmp.npy")
            np.save(tmp, values.numpy())
            tmp.replace(cfg.run_dir / paths[name])
        return [str(p) for p in paths.values()], {"features": len(data.train)}

    stages("teacher_logits", stable_hash("teacher_logits", teacher["hash"]), work)
    return {name: np.load(cfg.run_dir / path, mmap_mode="r") for name, path in paths.items()}


def train_student(cfg: RunConfig, index: int, student: StudentConfig, teacher: dict, data: Data,
                  stages: _Stages, teacher_logits: dict[str, np.ndarray] | None) -> dict:
    """A student of any kind, trained with KD from the teacher's cached outputs or, as baseline, without."""
    kd = teacher_logits is not None
    name, role = (student.name, "student") if kd else (f"{student.name}-baseline", "baseline")
    # Hash only what each one reads: the KD student the fine-tuned teacher (through its logits) and the KD
    # settings; the baseline starts from the same weights and never sees the teacher's training or the KD settings.
    shape = student.model_dump(mode="json", exclude={"name", "distill", "baseline"})
    if kd:
        config_hash = stable_hash("student", teacher["hash"], shape, student.distill)
    else:
        config_hash = stable_hash("baseline", cfg.task, data.fingerprint, cfg.data, cfg.seed, cfg.teacher.model,
                                  cfg.teacher.trust_remote_code, shape)

    def work() -> tuple[list[str], dict]:
        tokenizer = load_tokenizer(cfg.teacher.model, cfg.teacher.trust_remote_code)
        # HF students start from the teacher's pretrained weights, not its fine-tuned ones, so the baseline learns
        # the task only from labels and the comparison with KD is fair.
        set_seed(cfg.seed)  # same initialisation whether earlier stages ran or were resumed
        model = build_student(student, cfg.task, data.label_names, cfg.teacher, tokenizer,
                              [f["input_ids"] for f in data.train.features], cfg.seed, where=f"students.{index}")
        train = data.train.with_teacher(teacher_logits) if kd else data.train
        transfer, teacher_model, stage_seconds = None, None, 0.0
        if kd and student.distill.method in ("intermediate", "progressive"):  # teacher features come online
            teacher_model = load_saved_model(cfg.run_dir / teacher["dir"], cfg.task)
            transfer = layer_transfer(student, model.config, teacher_model.config, where=f"students.{index}")
        if kd and student.distill.method == "progressive":
            stage_seconds = train_layers_progressively(
                model, transformer_layers(model), transfer, teacher_model, train, tokenizer, student.train,
                student.distill.progressive_epochs, cfg.seed, data.task, _log_path(cfg, name), f"distil {name}")
            transfer, teacher_model = None, None  # then logit KD for the whole student
        trained = train_model(model, train, tokenizer, student.train, cfg.seed, task=data.task,
                              kd=student.distill if kd else None, log_path=_log_path(cfg, name),
                              description=f"{'distil' if kd else 'train'} {name}", transfer=transfer,
                              teacher=teacher_model, validate=_validator(cfg, student.train, data, tokenizer),
                              checkpoint=_checkpoint(cfg, name, config_hash))
        trained = replace(trained, seconds=trained.seconds + stage_seconds)
        if student.kind == "checkpoint":  # same vocabulary, but its own input names (DistilBERT: no token types)
            tokenizer = load_tokenizer(student.model, student.trust_remote_code, where=f"students.{index}.model")
        return _finish_model(cfg, name, role, student.kind, model, tokenizer, data, trained, config_hash)

    return stages(f"{role}:{name}", config_hash, work)


def prune_model(cfg: RunConfig, index: int, spec: PruneConfig, source: dict, teacher: dict, data: Data,
                stages: _Stages, teacher_logits: dict[str, np.ndarray]) -> dict:
    """Prune `source` to the target in `spec.steps` steps; after each, recover with KD against the teacher's
    cached outputs and score the validation split (logged, and kept in the report row)."""
    name, where = spec.name, f"prune.{index}"
    config_hash = stable_hash("prune", source["hash"], teacher["hash"], spec.model_dump(mode="json", exclude={"name"}))
    structured = isinstance(spec, StructuredPrune)

    def work() -> tuple[list[str], dict]:
        model, tokenizer = _load_saved(cfg, source)
        train = data.train.with_teacher(teacher_logits)
        validate = _validation_scorer(cfg, data, tokenizer)
        if structured:
            parts = layer_parts(model, where)
            start_heads, start_neurons = [p.heads for p in parts], [p.neurons for p in parts]
        else:
            targets = unstructured_targets(model, spec.layers, where)
        history, seconds, log = [], 0.0, _log_path(cfg, name)
        log.write_text("")
        for step in range(1, spec.steps + 1):
            share = spec.share_after(step)
            set_seed(cfg.seed + step)
            if structured:
                if spec.importance == "taylor":
                    accumulate_gradients(model, train, tokenizer, data.task, spec.recovery.distill, cfg.seed)
                prune_structured(model, spec.head_ratio * share, spec.ffn_ratio * share, spec.importance,
                                 spec.scope, start_heads, start_neurons, where)
            else:
                prune_unstructured(targets, spec.amount * share, spec.scope)
            before = after = validate(model)
            if spec.recovery.epochs:
                trained = train_model(model, train, tokenizer, spec.recovery.train_config(), cfg.seed,
                                      task=data.task, kd=spec.recovery.distill,
                                      log_path=_log_path(cfg, f"{name}.step{step}"),
                                      description=f"recover {name} ({step}/{spec.steps})", validate=validate,
                                      checkpoint=_checkpoint(cfg, f"{name}.step{step}", config_hash))
                seconds += trained.seconds
                after = validate(model)
            parts = layer_parts(model, where) if structured else []
            record = {"step": step, "params": sum(p.numel() for p in model.parameters()) if structured else None,
                      "sparsity": None if structured else target_sparsity(targets),
                      "heads": [p.heads for p in parts] if structured else None,
                      "ffn_sizes": [p.neurons for p in parts] if structured else None,
                      "validation_after_prune": before, "validation": after}
            history.append(record)
            with log.open("a") as f:
                f.write(json.dumps(record) + "\n")
            console.print(f"{name} step {step}/{spec.steps}: validation {before:.4f} after pruning, "
                          f"{record['validation']:.4f} after recovery")
        if not structured:
            make_permanent(targets)
        trained = TrainResult(steps=0, seconds=seconds, final_loss=0.0, epochs_run=spec.recovery.epochs * spec.steps)
        files, result = _finish_model(cfg, name, "pruned", source["student_kind"], model, tokenizer, data, trained,
                                      config_hash, rel=f"pruned/{name}")
        for step in range(1, spec.steps + 1):
            _checkpoint(cfg, f"{name}.step{step}", config_hash).unlink(missing_ok=True)
        sparsity = {k: v for k, v in layer_sparsity(model).items() if v > 0}
        return files, result | {"source": source["name"], "prune": {"kind": spec.kind, "steps": history,
                                                                     "layer_sparsity": sparsity}}

    return stages(f"prune:{name}", config_hash, work)


def accumulate_gradients(model, train: EncodedSplit, tokenizer, task: Task, kd: KDConfig, seed: int,
                         batches: int = 8) -> None:
    """Gradients of the distillation loss over a few training batches, left in .grad for Taylor importance."""
    model.zero_grad(set_to_none=True)
    model.train()
    inputs = accepted_inputs(model)
    device = next(model.parameters()).device  # recovery (Accelerate) may have moved the model to a GPU
    for i, batch in enumerate(make_loader(train, tokenizer, batch_size=16, shuffle=True, seed=seed)):
        if i == batches:
            break
        batch = {k: v.to(device) for k, v in batch.items()}
        outputs = model(**{k: v for k, v in batch.items() if k in inputs})
        step_loss(task, outputs, batch, kd)[0].backward()
    model.eval()


def quantize_model(cfg: RunConfig, spec: QuantizeConfig, source: dict, data: Data, stages: _Stages) -> dict:
    """PyTorch dynamic int8 of `source`; how often it picks what the fp32 model picks is measured on the test split."""
    config_hash = stable_hash("quantize", source["hash"], spec.model_dump(mode="json", exclude={"name"}))

    def work() -> tuple[list[str], dict]:
        fp32, tokenizer = _load_saved(cfg, source)
        model = quantize_dynamic_int8(fp32)
        mask = _token_mask(data.test, data.max_length) if data.task.per_token else None
        agreement = argmax_agreement(_predict(fp32, data.test, tokenizer, data),
                                     _predict(model, data.test, tokenizer, data), mask)
        files, result = _finish_model(cfg, spec.name, "quantized", source["student_kind"], model, tokenizer, data,
                                      None, config_hash, rel=f"quantized/{spec.name}", weights_of=fp32)
        return files, result | {"source": source["name"], "argmax_agreement": agreement}

    return stages(f"quantize:{spec.name}", config_hash, work)


def _token_mask(split: EncodedSplit, width: int) -> torch.Tensor:
    """(N, width) 1 on real tokens, 0 on the padding predict() adds to per-token outputs."""
    lengths = [len(f["input_ids"]) for f in split.features]
    return torch.tensor([[1] * n + [0] * (width - n) for n in lengths])


def export_model(cfg: RunConfig, model_result: dict, data: Data, stages: _Stages) -> dict:
    """ONNX (optimum for HF families, torch.onnx for ours), parity against PyTorch, the metric again with ONNX
    Runtime; then the optimised graph and the int8 variants beside it, each scored the same way."""
    name = model_result["name"]
    int8_variants = cfg.export.quantize.variants if name in cfg.ort_quantized_models() else []
    static = any(v.startswith("static") for v in int8_variants)
    # Only what changes the graphs or their scores: the budget and parity tolerance are applied by the report.
    config_hash = stable_hash("export", model_result["hash"], cfg.export.opset, cfg.export.optimize, int8_variants,
                              cfg.export.quantize.calibration_batches if static else None)

    def work() -> tuple[list[str], dict]:
        model, tokenizer = _load_saved(cfg, model_result)
        out_dir = cfg.run_dir / "exports" / name
        transformer = model_result["family"] not in OWN_FAMILIES  # optimum and ORT's fusions know HF architectures
        if transformer:
            onnx_path = export_hf_model(model, tokenizer, out_dir, data.task.export_task, cfg.export.opset)
        else:
            onnx_path = export_torch_model(model, tokenizer, out_dir, data.task.outputs, cfg.export.opset)
        score = _export_scorer(cfg, model, tokenizer, data, with_reference=bool(int8_variants))
        variants = [score(onnx_path, "fp32")]
        fused, optimized = None, None
        if cfg.export.optimize:
            path = out_dir / "model_optimized.onnx"
            try:
                fused = optimize_graph(onnx_path, path, transformer)
                variants.append(score(path, "fp32-optimized"))
                optimized = path
            except Exception as err:  # a graph ORT cannot make or run is a finding for the report, not a crash
                variants.append(_failed_variant(name, "fp32-optimized", "fp32", err, path))
        calibration = _calibration_batches(cfg, data, tokenizer) if static else None
        for variant in int8_variants:
            # Dynamic int8 quantises the fused graph (QAttention); static calibration needs the plain one, whose
            # every activation the calibrator can observe.
            src = optimized if optimized and variant.startswith("dynamic") else onnx_path
            path = out_dir / f"model_{variant.replace('-', '_')}.onnx"
            try:
                quantize_graph(src, path, variant, calibration)
                variants.append(score(path, variant))
            except Exception as err:
                variants.append(_failed_variant(name, variant, "int8", err, path))
        plain = variants[0]
        for v in variants:
            if "error" not in v:
                v["metric_drop"] = plain["ort_metric"] - v["ort_metric"]
        if plain["parity_max_abs_diff"] > cfg.export.parity_atol:
            console.print(f"[bold red]warning[/]: {name}: ONNX differs from PyTorch by {plain['parity_max_abs_diff']:.2e}"
                          f" (> export.parity_atol {cfg.export.parity_atol:.0e}); check the export before shipping it")
        console.print(f"{name} (ONNX Runtime): " + ", ".join(
            f"{v['variant']} {v['ort_metric']:.4f}" for v in variants if "error" not in v))
        return [str(out_dir.relative_to(cfg.run_dir))], {
            "onnx_path": plain["onnx_path"], "parity_max_abs_diff": plain["parity_max_abs_diff"],
            "onnx_size_mb": plain["size_mb"],
            "ort_metrics": plain["ort_metrics"], "fused_operators": fused, "variants": variants, "hash": config_hash}

    return stages(f"export:{name}", config_hash, work)


def _failed_variant(name: str, variant: str, precision: str, err: Exception, path: Path) -> dict:
    """A variant ONNX Runtime could not make, load or run: said on the console and in the report, its file gone."""
    message = (err.line() if isinstance(err, UserError) else str(err).splitlines()[0] if str(err) else repr(err))
    console.print(f"[yellow]{name}: {variant} failed[/]: {message[:160]}")
    path.unlink(missing_ok=True)
    return {"variant": variant, "precision": precision, "error": message[:300]}


def _export_scorer(cfg: RunConfig, model, tokenizer, data: Data, with_reference: bool):
    """(graph path, variant) -> the variant's entry: the task metric with ONNX Runtime on the whole test split,
    and against PyTorch fp32: max abs output difference on 16 held-out examples for fp32 graphs, argmax agreement
    over the test split for int8 ones (real tokens only for NER)."""
    batch = next(iter(make_loader(data.test.head(16), tokenizer, batch_size=16, shuffle=False)))
    feeds = {k: v.numpy() for k, v in batch.items() if k in MODEL_INPUTS}
    reference = _predict(model, data.test, tokenizer, data) if with_reference else None
    mask = _token_mask(data.test, data.max_length) if data.task.per_token else None

    def score(path: Path, variant: str) -> dict:
        session = create_session(path)
        outputs = predict_session(session, data.test, tokenizer, data.task.outputs,
                                  pad_to=data.max_length if data.task.per_token else None)
        metrics = data.task.evaluate(outputs, data.test, cfg, data.label_names)
        entry = {"variant": variant, "precision": "int8" if "int8" in variant else "fp32",
                 "onnx_path": str(path.relative_to(cfg.run_dir)), "size_mb": path.stat().st_size / 1e6,
                 "ort_metric": metrics[data.task.metric], "ort_metrics": metrics}
        if entry["precision"] == "fp32":
            entry["parity_max_abs_diff"] = parity_max_abs_diff(model, session, feeds)
        else:
            entry["argmax_agreement"] = argmax_agreement(reference, outputs, mask)
        return entry

    return score


def _calibration_batches(cfg: RunConfig, data: Data, tokenizer) -> list[dict[str, np.ndarray]]:
    """Static int8's activation ranges come from real training text: the first shuffled training batches."""
    loader = make_loader(data.train, tokenizer, batch_size=16, shuffle=True, seed=cfg.seed)
    batches = []
    for batch in loader:
        batches.append({k: v.numpy() for k, v in batch.items() if k in MODEL_INPUTS})
        if len(batches) == cfg.export.quantize.calibration_batches:
            break
    return batches


def benchmark(cfg: RunConfig, models: list[dict], exports: dict[str, dict], stages: _Stages) -> dict:
    """Latency of every model in PyTorch and ONNX Runtime, measured side by side in one stage."""
    b = cfg.bench
    config_hash = stable_hash("bench", [m["hash"] for m in models], [e["hash"] for e in exports.values()], b)

    def work() -> tuple[list[str], dict]:
        results = {}
        peak = gemm_peak_flops(torch.device("cpu"), torch.get_num_threads())
        with track_steps("bench", len(models)) as advance:
            for m in models:
                results[m["name"]] = _bench_model(cfg, m, exports.get(m["name"]), peak)
                advance()
        write_json_atomic(cfg.run_dir / "bench.json", {"settings": b.model_dump(), "results": results,
                                                       "environment": capture_environment()
                                                       | {"gemm_peak_flops_s": peak}})
        return ["bench.json"], results

    return stages("bench", config_hash, work)


def _bench_model(cfg: RunConfig, m: dict, export: dict | None, peak_flops_s: float) -> dict:
    """One model in PyTorch and, interleaved with it, every ONNX graph of its export."""
    b = cfg.bench
    model, tokenizer = _load_saved(cfg, m)
    names = [n for n in MODEL_INPUTS if n in tokenizer.model_input_names]
    feeds = dummy_inputs(model.config.vocab_size, b.batch_size, b.seq_len, names, seed=cfg.seed)
    runners = {"torch": torch_runner(model, feeds)}
    if export:
        # The export and its optimised and int8 graphs, timed side by side with PyTorch on the same inputs: the
        # choice of a graph to ship rests on these ratios.
        runners |= {v["variant"]: ort_runner(create_session(cfg.run_dir / v["onnx_path"], threads=b.threads), feeds)
                    for v in export["variants"] if "error" not in v}
    flops = count_flops(model, feeds)
    # Efficiency: the FLOP/s each fp32 timing achieved, as a share of this machine's measured fp32 GEMM peak (none
    # for int8 graphs: their work is not fp32 FLOPs, and the share could pass 100%).
    timings = {name: t.to_dict() | {"efficiency": flops / (t.latency_ms_p50 / 1e3) / peak_flops_s
                                    if flops and "int8" not in name else None}
               for name, t in time_interleaved(runners, b.warmup, b.iters).items()}
    return {"torch": timings.pop("torch"), "ort": timings.pop("fp32", None), "ort_variants": timings, "flops": flops}


# ---------------------------------------------------------------- helpers


def quiet_libraries() -> None:
    """Keep the console for our progress and tables: library chatter about new heads, tracing and
    tokenizer padding is expected here and says nothing the report does not."""
    import warnings

    import huggingface_hub
    import transformers

    transformers.logging.set_verbosity_error()
    huggingface_hub.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", message=".*deprecated.*", category=FutureWarning)


def _validator(cfg: RunConfig, train: TrainConfig, data: Data, tokenizer):
    """model -> the task's headline metric on the validation split, for best-epoch selection and early stopping."""
    return _validation_scorer(cfg, data, tokenizer) if train.validate_every_epoch else None


def _validation_scorer(cfg: RunConfig, data: Data, tokenizer):
    def score(model) -> float:
        outputs = _predict(model, data.validation, tokenizer, data)
        return data.task.evaluate(outputs, data.validation, cfg, data.label_names)[data.task.metric]

    return score


def _finish_model(cfg: RunConfig, name: str, role: str, student_kind: str | None, model, tokenizer, data: Data,
                  trained: TrainResult | None, config_hash: str, rel: str | None = None,
                  weights_of=None) -> tuple[list[str], dict]:
    """Evaluate on the test split, save atomically, and describe the model for the report. `weights_of` is the
    fp32 model whose parameters an int8 model stores (PyTorch hides packed int8 weights from parameters())."""
    metrics = data.task.evaluate(_predict(model, data.test, tokenizer, data), data.test, cfg, data.label_names)
    rel = rel or (name if role == "teacher" else f"students/{name}")
    if role == "quantized":
        save_quantized(model, tokenizer, cfg.run_dir / rel)
    else:
        save_pretrained_atomic(model, tokenizer, cfg.run_dir / rel)
    _checkpoint(cfg, name, config_hash).unlink(missing_ok=True)  # the saved model supersedes it
    console.print(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    weights = weights_of if weights_of is not None else model
    params = sum(p.numel() for p in weights.parameters())
    nonzero = count_nonzero(weights)
    # family is the saved architecture (what loads it); student_kind says how the student was made.
    return [rel], {"name": name, "role": role, "family": model.config.model_type, "student_kind": student_kind,
                   "dir": rel, "params": params, "nonzero_params": nonzero, "sparsity": 1 - nonzero / params,
                   "size_mb": folder_size_mb(cfg.run_dir / rel),
                   "size_mb_compressed": compressed_size_mb(cfg.run_dir / rel), "metrics": metrics,
                   "train_seconds": round(trained.seconds, 2) if trained else 0.0,
                   "epochs_run": trained.epochs_run if trained else 0,
                   "best_epoch": trained.best_epoch if trained else None, "hash": config_hash}


def _load_saved(cfg: RunConfig, model_result: dict):
    path = cfg.run_dir / model_result["dir"]
    return load_saved_model(path, cfg.task), load_tokenizer(str(path))


def _predict(model, split: EncodedSplit, tokenizer, data: Data) -> dict[str, torch.Tensor]:
    return predict(model, split, tokenizer, data.task.outputs, pad_to=data.max_length if data.task.per_token else None)


def _bench_environment(run_dir: Path) -> dict:
    """The machine the latencies were measured on (bench.json), which a resumed run may not be running on."""
    return json.loads((run_dir / "bench.json").read_text())["environment"]


def _checkpoint(cfg: RunConfig, name: str, config_hash: str) -> Path:
    """Where training state is kept between epochs; the hash in the name keeps a changed config from resuming
    another config's training."""
    return cfg.run_dir / "checkpoints" / f"{name}-{config_hash}.pt"


def _log_path(cfg: RunConfig, name: str) -> Path:
    path = cfg.run_dir / "logs" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
