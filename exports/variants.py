"""A model's deployable ONNX graphs: the plain export, ONNX Runtime's optimised graph and int8 variants, each
scored on the test split; and, once they are timed, the one choice of which to ship within the accuracy budget.

Scores are measured once (export stage); eligibility and the choice are judged from the current config
(`judge_variants`), so changing export.parity_atol or max_metric_drop re-judges without re-exporting.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from compress.compression.quantize import argmax_agreement
from compress.core.config import ExportConfig
from compress.core.errors import UserError
from compress.core.progress import console, warn
from compress.core.results import ExportResult, ExportVariant, Metrics, ModelTimings, ReportVariant
from compress.data.batching import EncodedSplit, make_loader, predict, select_inputs, token_mask
from compress.data.tasks import Task
from exports.mending import Mended, Scored, mend_int8
from exports.onnx import export_hf_model, export_torch_model, parity_max_abs_diff
from exports.ort import create_session, optimize_graph, predict_session, quantize_graph


@dataclass(frozen=True)
class ExportSpec:
    """One model's export: its name (in messages), whether its family is one optimum knows (optimum's export and
    ORT's transformer fusions) or one of ours (torch.onnx), the run's export settings (opset, whether to optimise,
    the parity tolerance, the int8 budget) and the int8 variants to build beside the fp32 graphs, the static ones
    calibrated on `calibration` (training and transfer-set batches)."""

    name: str
    hf_family: bool
    settings: ExportConfig
    int8_variants: list[str] = field(default_factory=list)
    calibration: list[dict[str, np.ndarray]] | None = None
    # Scores a graph on the validation split: int8 variants are mended against it (export.quantize.mend); None: not.
    validation: ValidationScorer | None = None
    # OpenVINO graphs beside ONNX Runtime's (export.openvino, where the extra is installed): fp32, and NNCF int8
    # (calibrated on `calibration`) where the model gets int8 variants.
    openvino: bool = False


class ValidationScorer:
    """A graph's task metric and outputs on the validation split, with ONNX Runtime: what int8 mending decides by,
    so the test split stays the judge of what ships."""

    def __init__(self, tokenizer, validation: EncodedSplit, task: Task, pad_to: int | None,
                 evaluate: Callable[[dict[str, torch.Tensor]], Metrics]) -> None:
        self.tokenizer, self.validation, self.task, self.pad_to, self.evaluate = (tokenizer, validation, task,
                                                                                  pad_to, evaluate)

    def __call__(self, path: Path) -> Scored:
        return self.score_session(open_graph(path))

    def score_session(self, session) -> Scored:
        outputs = predict_session(session, self.validation, self.tokenizer, self.task.outputs, pad_to=self.pad_to)
        return Scored(self.evaluate(outputs)[self.task.metric], outputs)

    def feeds(self, batches: int = 8) -> list[dict[str, np.ndarray]]:
        """The first batches of the split as model feeds (NNCF ranks operators by their outputs on these)."""
        loader = make_loader(self.validation, self.tokenizer, batch_size=16, shuffle=False)
        return [{k: v.numpy() for k, v in select_inputs(b).items()} for _, b in zip(range(batches), loader)]


class GraphScorer:
    """Scores a model's ONNX graphs on the test split: the task metric with ONNX Runtime, and against PyTorch
    fp32 the max abs output difference on 16 held-out examples (fp32 graphs) or the argmax agreement over the
    split (int8 graphs; real tokens only for per-token tasks). `evaluate(outputs)` gives the task's metrics on
    the split; per-token outputs are padded to `pad_to`."""

    def __init__(self, model: torch.nn.Module, tokenizer, test: EncodedSplit, task: Task, pad_to: int | None,
                 evaluate: Callable[[dict[str, torch.Tensor]], Metrics], with_reference: bool) -> None:
        self.model, self.tokenizer, self.test, self.task = model, tokenizer, test, task
        self.pad_to, self.evaluate = pad_to, evaluate
        batch = next(iter(make_loader(test.head(16), tokenizer, batch_size=16, shuffle=False)))
        self.feeds = {k: v.numpy() for k, v in select_inputs(batch).items()}
        self.reference = predict(model, test, tokenizer, task.outputs, pad_to) if with_reference else None
        self.mask = token_mask(test, pad_to) if pad_to else None

    def __call__(self, path: Path, variant: str, relative_to: Path) -> ExportVariant:
        session = open_graph(path)
        outputs = predict_session(session, self.test, self.tokenizer, self.task.outputs, pad_to=self.pad_to)
        metrics = self.evaluate(outputs)
        fp32 = "int8" not in variant
        return ExportVariant(
            variant=variant, precision="fp32" if fp32 else "int8", onnx_path=str(path.relative_to(relative_to)),
            size_mb=graph_size_mb(path), ort_metric=metrics[self.task.metric], ort_metrics=metrics,
            runtime=runtime_of(path),
            parity_max_abs_diff=parity_max_abs_diff(self.model, session, self.feeds) if fp32 else None,
            argmax_agreement=None if fp32 else argmax_agreement(self.reference, outputs, self.mask))


def open_graph(path: Path):
    """A session for a graph of either runtime: ONNX Runtime's for .onnx, OpenVINO's compiled model (behind the
    same run/get_inputs surface) for .xml."""
    if path.suffix == ".xml":
        from exports.openvino import OpenVinoSession  # optional extra: imported only for its graphs

        return OpenVinoSession(path)
    return create_session(path)


def runtime_of(path: Path) -> str:
    return "openvino" if Path(path).suffix == ".xml" else "onnxruntime"


def graph_size_mb(path: Path) -> float:
    """The file that ships: an .onnx, or OpenVINO's .xml with its weights (.bin)."""
    files = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]
    return sum(f.stat().st_size for f in files if f.is_file()) / 1e6


def export_graph(model: torch.nn.Module, tokenizer, out_dir: Path, hf_family: bool, optimum_task: str,
                 output_names: tuple[str, ...], opset: int) -> Path:
    """The plain ONNX export: optimum for architectures it knows (so users load it with ORTModelFor*), torch.onnx
    for our own families."""
    if hf_family:
        return export_hf_model(model, tokenizer, out_dir, optimum_task, opset)
    return export_torch_model(model, tokenizer, out_dir, output_names, opset)


@dataclass(frozen=True)
class MadeGraph:
    """One graph `make_graphs` made or failed to: its variant, precision and file; what `check` returned for it, or
    the error that stopped making or checking it (its file may then be half-written or absent)."""

    variant: str
    precision: str  # "fp32" or "int8"
    path: Path
    checked: object = None
    error: Exception | None = None
    fused: dict[str, int] | None = None  # the optimised graph's fused operators, once ORT has made it
    mended: Mended | None = None  # an int8 graph checked on the validation split: what mending did (or found)
    openvino_int8: object = None  # OpenVINO's int8 graph: what NNCF's accuracy control left in fp32


def make_graphs(onnx_path: Path, spec: ExportSpec,
                check: Callable[[Path, str], object] | None = None) -> Iterator[MadeGraph]:
    """The plain graph `onnx_path`, then the optimised one (with `spec.settings.optimize`), then each of
    `spec.int8_variants` (each followed by its `-mended` graph where mending made one), then OpenVINO's graphs (with
    `spec.openvino`), made beside `onnx_path` one at a time, in that order; each is handed to `check(path,
    variant)` right after it is made. A graph a runtime cannot make, or that fails its check, is yielded with its
    error, not raised: a finding, not a crash (the plain graph's check alone raises: it is what the others are
    judged against). Dynamic int8 quantises the optimised graph where it was made and checked; static int8 the
    plain one. The caller handles each graph before the next is made."""
    out_dir = onnx_path.parent
    yield MadeGraph("fp32", "fp32", onnx_path, check(onnx_path, "fp32") if check else None)
    optimized = None
    if spec.settings.optimize:
        path, fused = out_dir / "model_optimized.onnx", None
        try:
            fused = optimize_graph(onnx_path, path, spec.hf_family)  # ORT's transformer fusions know HF families
            made = MadeGraph("fp32-optimized", "fp32", path, check(path, "fp32-optimized") if check else None,
                             fused=fused)
            optimized = path
        except Exception as err:  # a graph ORT cannot make or run is a finding for the report, not a crash
            made = MadeGraph("fp32-optimized", "fp32", path, error=err, fused=fused)
        yield made
    fp32_scores: dict[Path, Scored] = {}  # each source graph scored once on the validation split, for mending
    for variant in spec.int8_variants:
        # Dynamic int8 quantises the fused graph (QAttention); static calibration needs the plain one, whose
        # every activation the calibrator can observe.
        src = optimized if optimized and variant.startswith("dynamic") else onnx_path
        path = out_dir / f"model_{variant.replace('-', '_')}.onnx"
        mended = None
        try:
            quantize_graph(src, path, variant, spec.calibration)
            made = MadeGraph(variant, "int8", path, check(path, variant) if check else None)
        except Exception as err:
            made = MadeGraph(variant, "int8", path, error=err)
        if made.error is None and spec.validation is not None and spec.settings.quantize.mend:
            try:
                if src not in fp32_scores:
                    fp32_scores[src] = spec.validation(src)
                mended = mend_int8(src, variant, path, spec.validation, spec.settings.quantize.max_metric_drop,
                                   spec.calibration, fp32_scores[src])
            except Exception as err:  # mending that fails leaves the int8 graph as it was: a finding, not a loss
                warn(f"[yellow]{spec.name}: mending {variant} failed[/]: {str(err).splitlines()[0][:160]}")
            made = replace(made, mended=mended)
        yield made
        if mended is not None and mended.path is not None:
            name = f"{variant}-mended"
            try:
                yield MadeGraph(name, "int8", mended.path, check(mended.path, name) if check else None,
                                mended=mended)
            except Exception as err:
                yield MadeGraph(name, "int8", mended.path, error=err, mended=mended)
    if spec.openvino:
        yield from openvino_graphs(onnx_path, spec, check)


def openvino_graphs(onnx_path: Path, spec: ExportSpec,
                    check: Callable[[Path, str], object] | None = None) -> Iterator[MadeGraph]:
    """OpenVINO's graphs of the plain export, each in a folder optimum-intel's OVModelFor* loads: openvino/
    (fp32, OpenVINO's converter from the ONNX graph) and, where the model gets int8 variants, openvino-int8/
    (NNCF's post-training int8, calibrated as static ONNX Runtime int8 is; with accuracy control toward
    export.quantize.max_metric_drop on the validation split where plain int8 misses it)."""
    from exports.openvino import XML_NAME, OpenVinoSession, convert_onnx, quantize_openvino  # optional extra

    out_dir = onnx_path.parent
    xml = out_dir / "openvino" / XML_NAME
    try:
        convert_onnx(onnx_path, xml.parent)
        fp32 = MadeGraph("openvino-fp32", "fp32", xml, check(xml, "openvino-fp32") if check else None)
    except Exception as err:
        fp32 = MadeGraph("openvino-fp32", "fp32", xml, error=err)
    yield fp32
    if fp32.error is not None or not spec.int8_variants or not spec.calibration:
        return
    path, budget = out_dir / "openvino-int8" / XML_NAME, spec.settings.quantize.max_metric_drop
    validation = spec.validation if spec.settings.quantize.mend else None

    def validate(compiled) -> float:  # NNCF hands over compiled models; our metric runs over the whole split
        return validation.score_session(OpenVinoSession(compiled=compiled)).metric

    try:
        int8 = quantize_openvino(xml, path.parent, spec.calibration, validation and validation.feeds(),
                                 validate if validation else None, budget)
        yield MadeGraph("openvino-int8", "int8", int8.path, check(int8.path, "openvino-int8") if check else None,
                        openvino_int8=int8)
    except Exception as err:
        yield MadeGraph("openvino-int8", "int8", path, error=err)


def build_variants(onnx_path: Path, spec: ExportSpec, score: GraphScorer,
                   run_dir: Path) -> tuple[list[ExportVariant], dict[str, int] | None]:
    """Every graph `make_graphs` makes beside `onnx_path`, each scored; returns them (each with its metric drop vs
    the plain graph, and what mending or NNCF's accuracy control did) and the optimised graph's fused operators. A
    graph a runtime cannot make or run is a failed variant (its error kept for the report), not a crash."""
    variants, fused = [], None
    for graph in make_graphs(onnx_path, spec, lambda path, variant: score(path, variant, run_dir)):
        if graph.variant == "fp32-optimized":
            fused = graph.fused
        variant = (graph.checked if graph.error is None else
                   _failed_variant(spec.name, graph.variant, graph.precision, graph.error, graph.path))
        variants.append(with_openvino_int8(with_mending(variant, graph.mended), graph.openvino_int8))
    plain = variants[0]
    return [v if v.failed else replace(v, metric_drop=plain.ort_metric - v.ort_metric) for v in variants], fused


def with_mending(variant: ExportVariant, mended: Mended | None) -> ExportVariant:
    """An int8 variant with what its check on the validation split found: its drop there and, where it missed the
    budget, what mending did; a mended graph with the blocks and operators it leaves in fp32."""
    if mended is None:
        return variant
    if variant.variant.endswith("-mended"):
        return replace(variant, mended_from=mended.variant, fp32_blocks=mended.fp32_blocks,
                       fp32_operators=mended.fp32_operators,
                       validation_metric_drop=mended.validation_fp32 - mended.validation_mended)
    budget = f"max_metric_drop {mended.max_drop:g}"
    if mended.path is not None:
        note = (f"lost {mended.validation_fp32 - mended.validation_int8:.4f} on validation (> {budget}); "
                f"mended as {mended.variant}-mended with {', '.join(mended.fp32_blocks)} in fp32")
    elif mended.ended_at_fp32:
        note = (f"lost {mended.validation_fp32 - mended.validation_int8:.4f} on validation (> {budget}); mending "
                f"ended at fp32: no mix short of every block ({len(mended.fp32_blocks)}) in fp32 met the budget")
    else:
        note = None
    return replace(variant, validation_metric_drop=mended.validation_fp32 - mended.validation_int8, mending=note)


def with_openvino_int8(variant: ExportVariant, int8) -> ExportVariant:
    """OpenVINO's int8 graph with its plain int8's drop on the validation split (where checked) and what NNCF's
    accuracy control left in fp32, where it ran."""
    if int8 is None or int8.validation_fp32 is None:
        return variant
    drop = int8.validation_fp32 - int8.validation_int8
    if not int8.accuracy_control:
        return replace(variant, validation_metric_drop=drop)
    # One graph here, not two as for ONNX Runtime: plain int8 missed the budget, this is the accuracy-controlled one.
    plain = int8.validation_fp32 - int8.validation_plain_int8
    return replace(variant, validation_metric_drop=drop, fp32_operators=int8.fp32_operators,
                   mending=f"(NNCF's plain int8) lost {plain:.4f} on validation; NNCF's accuracy control left "
                           f"{len(int8.fp32_operators)} operators in fp32 in this graph, which loses {drop:.4f} there")


def export_and_score(model: torch.nn.Module, tokenizer, spec: ExportSpec, score: GraphScorer, out_dir: Path,
                     run_dir: Path, config_hash: str) -> ExportResult:
    """Export `model` to `out_dir` as `spec` says, build and score its variants (paths relative to `run_dir`), and
    warn on the console when the plain graph fails parity."""
    name, parity_atol = spec.name, spec.settings.parity_atol
    onnx_path = export_graph(model, tokenizer, out_dir, spec.hf_family, score.task.export_task, score.task.outputs,
                             spec.settings.opset)
    variants, fused = build_variants(onnx_path, spec, score, run_dir)
    plain = variants[0]
    if plain.parity_max_abs_diff > parity_atol:
        warn(f"[bold red]warning[/]: {name}: ONNX differs from PyTorch by {plain.parity_max_abs_diff:.2e}"
             f" (> export.parity_atol {parity_atol:.0e}); check the export before shipping it")
    console.print(f"{name} graphs: " + ", ".join(
        f"{v.variant} {v.ort_metric:.4f}" for v in variants if not v.failed))
    return ExportResult(onnx_path=plain.onnx_path, parity_max_abs_diff=plain.parity_max_abs_diff,
                        onnx_size_mb=plain.size_mb, ort_metrics=plain.ort_metrics, fused_operators=fused,
                        variants=variants, hash=config_hash)


def _failed_variant(name: str, variant: str, precision: str, err: Exception, path: Path) -> ExportVariant:
    """A variant ONNX Runtime could not make, load or run: said on the console and in the report, its file gone."""
    message = (err.line() if isinstance(err, UserError) else str(err).splitlines()[0] if str(err) else repr(err))
    warn(f"[yellow]{name}: {variant} failed[/]: {message[:160]}")
    if path.suffix == ".xml":  # an OpenVINO graph is a folder of its own
        shutil.rmtree(path.parent, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    return ExportVariant(variant=variant, precision=precision, error=message[:300], runtime=runtime_of(path))


# ---------------------------------------------------------------- the choice


def judge_variants(variants: list[ExportVariant], timings: ModelTimings | None, torch_p50: float | None,
                   parity_atol: float, max_metric_drop: float) -> tuple[list[ReportVariant], str | None, str | None]:
    """Each variant with its latency (bench stage) beside its scores (export stage), whether it may ship under
    this config (fp32 graphs within `parity_atol` of PyTorch, int8 ones within `max_metric_drop` of the fp32
    export), and which one ships: the fastest eligible. Returns the judged variants, the kept variant's name and
    why, in words a report can print."""
    judged = []
    for v in variants:
        timing = None
        if timings is not None:
            timing = timings.ort if v.variant == "fp32" else timings.ort_variants.get(v.variant)
        p50 = timing.latency_ms_p50 if timing else None
        eligible = None
        if not v.failed:
            eligible = (v.metric_drop <= max_metric_drop if v.precision == "int8"
                        else v.parity_max_abs_diff <= parity_atol)
        judged.append(ReportVariant(**v.__dict__, eligible=eligible, ort_p50_ms=p50,
                                    ort_p95_ms=timing.latency_ms_p95 if timing else None,
                                    speedup_vs_torch=torch_p50 / p50 if torch_p50 and p50 else None))
    if not judged:
        return [], None, None
    kept, reason = choose_variant(judged, max_metric_drop)
    return [replace(v, kept=v.variant == kept) for v in judged], kept, reason


def choose_variant(variants: list[ReportVariant], max_metric_drop: float) -> tuple[str | None, str]:
    """The variant to ship: the fastest (p50) of the eligible ones. Returns its name and why."""
    timed = [v for v in variants if v.ort_p50_ms is not None]
    eligible = [v for v in timed if v.eligible]
    int8 = [v for v in timed if v.precision == "int8"]
    if not timed:
        return None, "no variant was timed"
    if not eligible:
        return None, (f"none passed: the fp32 graphs differ from PyTorch beyond export.parity_atol and no int8 "
                      f"variant stayed within max_metric_drop {max_metric_drop:g}")
    kept = min(eligible, key=lambda v: v.ort_p50_ms)
    fp32 = min((v for v in eligible if v.precision == "fp32"), key=lambda v: v.ort_p50_ms, default=None)
    if kept.precision == "int8":
        versus = f" vs fp32 {fp32.ort_p50_ms:.2f} ms" if fp32 else ""
        return kept.variant, (f"fastest within max_metric_drop {max_metric_drop:g}: {kept.ort_p50_ms:.2f} ms"
                              f"{versus}, metric {metric_change(kept.metric_drop)} vs fp32")
    if not int8:
        failed = any(v.precision == "int8" and v.failed for v in variants)
        return kept.variant, ("fastest fp32 graph (every int8 variant failed to quantise or run)" if failed
                              else "fastest fp32 graph (no int8 variant configured)")
    within = [v for v in int8 if v.eligible]
    if not within:
        least = min(int8, key=lambda v: v.metric_drop)
        return kept.variant, (f"fp32 kept: every int8 variant lost more than max_metric_drop {max_metric_drop:g} "
                              f"(least: {least.variant}, metric {metric_change(least.metric_drop)})")
    fastest = min(within, key=lambda v: v.ort_p50_ms)
    return kept.variant, (f"fp32 kept: int8 is not faster on this machine ({fastest.variant} "
                          f"{fastest.ort_p50_ms:.2f} ms vs {kept.variant} {kept.ort_p50_ms:.2f} ms)")


def fastest_by_runtime(variants: list[dict], precision: str | None = None) -> dict[str, dict]:
    """From report.json's judged variants: each runtime's fastest timed graph that may ship (eligible), of
    `precision` where given; runtime ("onnxruntime", "openvino") -> variant."""
    fastest: dict[str, dict] = {}
    for v in variants:
        if v.get("eligible") and v.get("ort_p50_ms") and (precision is None or v["precision"] == precision):
            runtime = v.get("runtime", "onnxruntime")
            if runtime not in fastest or v["ort_p50_ms"] < fastest[runtime]["ort_p50_ms"]:
                fastest[runtime] = v
    return fastest


def metric_change(metric_drop: float) -> str:
    """A variant's metric minus the fp32 export's, signed: "+0.0000", "-0.0123"."""
    return f"{0.0 - metric_drop:+.4f}"  # 0.0 - 0.0 prints +0.0000, where -0.0 would not
