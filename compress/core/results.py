"""What stages hand each other, and the report row built from them: frozen dataclasses, stored as JSON in
manifest.json and report.json.

`to_json` and `from_json` are the only way in and out, so a stage resumed from the manifest hands on exactly the
type it would have computed. report.json's rows are `ReportRow`s; docs/report-schema.md is generated from that
class (`python -m compress.core.results`), so the documented contract cannot drift from the code. Keys are added over
time, never renamed or removed.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import TypeVar, Union, get_args, get_origin, get_type_hints

from pydantic import TypeAdapter

# A task's metrics: the headline and the others as fractions, and NER's F1 per entity type.
Metrics = dict[str, Union[float, dict[str, float]]]

T = TypeVar("T")


def to_json(value: T, cls: type[T] | None = None) -> dict:
    """A result (of type `cls`, default its own) as plain JSON-able values."""
    return TypeAdapter(cls or type(value)).dump_python(value)


def from_json(cls: type[T], data: object) -> T:
    """A result type read back (and checked) from what `to_json` wrote."""
    return TypeAdapter(cls).validate_python(data)


# ---------------------------------------------------------------- models


@dataclass(frozen=True)
class PruneStep:
    """One prune + recover step, as logged to logs/<name>.jsonl and kept in the report row."""

    step: int
    params: int | None  # structured: the model's parameters after the step
    sparsity: float | None  # unstructured: zeros among the pruned weights
    heads: list[int] | None  # structured: heads left per layer
    ffn_sizes: list[int] | None  # structured: FFN neurons left per layer
    validation_after_prune: float
    validation: float  # after recovery (the same as before it when recovery is off)


@dataclass(frozen=True)
class PruneRecord:
    kind: str
    steps: list[PruneStep]
    layer_sparsity: dict[str, float]  # weight matrices with zeros in them, by parameter name


@dataclass(frozen=True)
class ModelArtifact:
    """A trained, pruned or quantised model saved in the run folder, evaluated on the test split."""

    name: str
    role: str  # teacher | student | baseline | pruned | quantized
    family: str  # the saved architecture's model_type (what loads it)
    student_kind: str | None  # the `kind` that built it; None for the teacher
    dir: str  # relative to the run folder
    params: int
    nonzero_params: int
    sparsity: float
    size_mb: float
    size_mb_compressed: float
    metrics: Metrics
    train_seconds: float
    epochs_run: int
    best_epoch: int | None
    hash: str  # the config hash of the stage that made it: what later stages chain their hashes from
    source: str | None = None  # the model a pruned or quantised one was made from
    argmax_agreement: float | None = None  # quantised: how often it picks what the fp32 model picks
    prune: PruneRecord | None = None
    transfer_examples: int = 0  # transfer-set examples it trained on (per epoch); pruned/int8: its source's
    precision: str | None = None  # quantised rows: int8, bf16 or fp16 (None: fp32, or an int8 row of older runs)


@dataclass(frozen=True)
class CachedOutputs:
    """The teacher's outputs on the training split (or the transfer set), cached under cache/ for every KD
    student."""

    features: int


@dataclass(frozen=True)
class TrainResult:
    steps: int
    seconds: float
    final_loss: float
    epochs_run: int
    best_epoch: int | None = None  # with validation: the epoch whose weights the model ends with
    best_validation: float | None = None


# ---------------------------------------------------------------- exports


@dataclass(frozen=True)
class ExportVariant:
    """One ONNX graph of a model's export, scored on the test split with ONNX Runtime; `error` (and nothing else
    measured) where ORT could not make, load or run it."""

    variant: str  # fp32 | fp32-optimized | an int8 variant name
    precision: str  # fp32 | int8
    onnx_path: str | None = None
    size_mb: float | None = None
    ort_metric: float | None = None
    ort_metrics: Metrics | None = None
    parity_max_abs_diff: float | None = None  # fp32 graphs: max |ORT - PyTorch| on 16 test examples
    argmax_agreement: float | None = None  # int8 graphs: vs PyTorch fp32 over the test split
    metric_drop: float | None = None  # the fp32 export's metric minus this graph's
    error: str | None = None
    # The runtime that runs the graph: onnxruntime (.onnx) or openvino (.xml, OpenVINO's IR; onnx_path names it).
    runtime: str = "onnxruntime"
    # int8 graphs checked on the validation split (export.quantize.mend): the fp32 graph's metric there minus this's.
    validation_metric_drop: float | None = None
    # A mended graph (<variant>-mended): the variant it mends, the blocks and operators it leaves in fp32.
    mended_from: str | None = None
    fp32_blocks: list[str] | None = None
    fp32_operators: list[str] | None = None
    # An int8 variant that missed the budget on the validation split: what mending it did, in words.
    mending: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass(frozen=True)
class ExportResult:
    onnx_path: str
    parity_max_abs_diff: float
    onnx_size_mb: float
    ort_metrics: Metrics
    fused_operators: dict[str, int] | None
    variants: list[ExportVariant]
    hash: str


# ---------------------------------------------------------------- bench


@dataclass(frozen=True)
class Latency:
    """Per-call latency in milliseconds over `iters` timed calls."""

    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_p95: float
    latency_ms_p99: float
    latency_ms_mean: float
    latency_ms_std: float
    iters: int

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Timing(Latency):
    """The latency of one model or graph at the bench shape, and its efficiency (achieved FLOP/s over the
    machine's measured GEMM peak; None where it cannot be said, e.g. int8 graphs)."""

    efficiency: float | None = None


@dataclass(frozen=True)
class ModelTimings:
    """A model in PyTorch and, timed interleaved with it, every ONNX graph of its export."""

    torch: Timing
    ort: Timing | None  # the plain fp32 export
    ort_variants: dict[str, Timing]  # the other graphs, by variant name
    flops: int | None  # per forward at the bench shape
    # On each other device of bench.devices: "torch" and the fp32 graphs ORT can run there, by variant name.
    devices: dict[str, dict[str, Timing]] = field(default_factory=dict)


# The bench stage's result: each model's timings by model name.
BenchResult = dict[str, ModelTimings]


# ---------------------------------------------------------------- report


def _doc(text: str, default: object = dataclasses.MISSING):
    """A report field with the sentence docs/report-schema.md prints for it."""
    if default is dataclasses.MISSING:
        return field(metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


@dataclass(frozen=True)
class ReportVariant(ExportVariant):
    """An export variant as the report shows it: its scores beside its timing and whether it may ship."""

    eligible: bool | None = None
    ort_p50_ms: float | None = None
    ort_p95_ms: float | None = None
    speedup_vs_torch: float | None = None
    kept: bool = False


@dataclass(frozen=True)
class ReportRow:
    """One model of the run, as report.json's `rows` hold it."""

    model: str = _doc("model name (`teacher`, the student's name, `<student>-baseline`, a prune or quantize entry)")
    role: str = _doc("`teacher`, `student` (trained with KD), `baseline` (same student, no KD), `pruned` or "
                     "`quantized`")
    family: str = _doc("the saved architecture's `model_type`: `bert`, `distilbert`, `custom`, `bilstm`, ... "
                       "(what loads it)")
    params: int = _doc("parameters, counted from the model (int8 rows: the fp32 model's)")
    size_mb: float = _doc("size of the saved model folder's weights, MB (10^6 bytes)")
    metric: float = _doc("the task's headline metric named by the top-level `metric` (`accuracy`; `f1` for NER and "
                         "QA, as fractions; `spearman` for regression, -1 to 1), on the test split")
    retained: float | None = _doc("`metric / teacher metric`; none where the teacher's metric is 0 or below (a "
                                  "regression's correlation can be: there is no share of it to keep)")
    torch_p50_ms: float | None = _doc("median latency in PyTorch eager (CPU), batch and length as in `bench`; "
                                      "`null` when not measured")
    ort_p50_ms: float | None = _doc("median latency of the plain ONNX export in ONNX Runtime (CPU); `null` when "
                                    "not exported")
    speedup: float | None = _doc("teacher PyTorch p50 / this model's PyTorch p50, measured in the same run")
    ort_speedup: float | None = _doc("teacher PyTorch p50 / this model's ORT p50")
    torch_p95_ms: float | None = _doc("95th percentile latency in PyTorch")
    ort_p95_ms: float | None = _doc("95th percentile latency of the plain ONNX export")
    metrics: Metrics = _doc("every metric of the task on the test split (NER: also F1 per entity type)")
    onnx_path: str | None = _doc("the plain ONNX export, relative to the run folder")
    parity_max_abs_diff: float | None = _doc("the largest absolute difference between ONNX Runtime's and PyTorch's "
                                             "outputs on 16 test examples")
    parity_ok: bool | None = _doc("`parity_max_abs_diff <= export.parity_atol`")
    student_kind: str | None = _doc("the `kind` that built it: `layer_dropped`, `checkpoint`, `custom_transformer`, "
                                    "`bilstm`; `null` for the teacher")
    train_seconds: float = _doc("seconds of training (pruned rows: of recovery)")
    epochs_run: int | None = _doc("epochs trained (early stopping may end sooner)")
    best_epoch: int | None = _doc("0-based epoch whose weights were kept, by the validation metric; `null` "
                                  "without validation")
    nonzero_params: int | None = _doc("parameters that are not exactly zero, counted from the weights")
    sparsity: float | None = _doc("`1 - nonzero_params / params`")
    size_mb_compressed: float | None = _doc("the weights after zlib (level 1, 4 MB chunks): what zeroed weights "
                                            "save on disk or over the wire")
    flops: int | None = _doc("FLOPs per forward at the bench shape (`null` where the counter cannot see the work: "
                             "LSTM, int8)")
    source: str | None = _doc("the model a pruned or quantised row was made from")
    precision: str = _doc("what its weights and arithmetic are in PyTorch: `fp32`, `int8` (dynamic), `bf16` or "
                          "`fp16`")
    devices: dict[str, dict[str, float | None]] | None = _doc(
        "per device of `bench.devices` other than the CPU: `torch_p50_ms`, `torch_p95_ms`, `torch_efficiency` (vs "
        "that device's GEMM peak in the model's precision), `speedup` (the teacher's PyTorch p50 there / this "
        "one's); `ort_p50_ms` and `ort_speedup` for the fp32 graph where ONNX Runtime has that device's provider; "
        "`null` without other devices")
    model_dir: str = _doc("the saved model folder, relative to the run folder")
    prune_kind: str | None = _doc("`structured` or `unstructured` for pruned rows")
    prune_steps: list[PruneStep] | None = _doc("per step: validation metric after pruning and after recovery, "
                                               "heads and FFN sizes per layer (structured) or sparsity")
    argmax_agreement: float | None = _doc("quantised rows: share of test predictions equal to the fp32 model's (none "
                                          "for regression: one score, no choice)")
    ort_metric: float | None = _doc("the headline metric of the ONNX export, scored with ONNX Runtime on the test "
                                    "split")
    ort_metrics: Metrics | None = _doc("every metric of the ONNX export")
    onnx_optimized_path: str | None = _doc("the optimised graph (ORT transformer fusions, or session-level "
                                           "optimisation for our own families)")
    fused_operators: dict[str, int] | None = _doc("fused op -> count in the optimised graph; `{}` for "
                                                  "session-level optimisation")
    ort_variants: list[ReportVariant] | None = _doc(
        "per ONNX graph: `variant`, `precision`, `onnx_path`, `size_mb`, `ort_metric`, `ort_metrics`, "
        "`metric_drop` vs the fp32 export, `parity_max_abs_diff` (fp32) or `argmax_agreement` (int8, vs PyTorch "
        "fp32), `eligible`, `ort_p50_ms`, `ort_p95_ms`, `speedup_vs_torch` (this model's PyTorch p50 / the "
        "graph's), `kept`; and `error` (the measurements `null`) only where ORT could not make or run it. Added "
        "since: `runtime` (onnxruntime, or openvino for OpenVINO IR graphs, whose .xml `onnx_path` names; their "
        "`ort_*` fields are OpenVINO's measurements), `validation_metric_drop` (int8 graphs checked on the "
        "validation split), `mending` (what mending did to a variant that missed the budget there), and on a "
        "mended graph `mended_from`, `fp32_blocks`, `fp32_operators` (what it leaves in fp32)")
    ort_kept: str | None = _doc("the variant to ship: the fastest eligible one, on either runtime")
    ort_kept_path: str | None = _doc("its graph file (.onnx, or OpenVINO's .xml)")
    ort_kept_p50_ms: float | None = _doc("its median latency")
    ort_kept_metric: float | None = _doc("its headline metric")
    ort_kept_speedup: float | None = _doc("teacher PyTorch p50 / kept graph p50")
    torch_efficiency: float | None = _doc("achieved FLOP/s in PyTorch over this machine's measured fp32 GEMM peak")
    ort_efficiency: float | None = _doc("the same for the plain ONNX export in ONNX Runtime")
    ort_kept_reason: str | None = _doc("why the kept variant was kept, in words")
    transfer_examples: int = _doc("examples of the transfer set (text without labels, labelled by the teacher) it "
                                  "trained on besides the labelled split: 0 for the teacher and baselines; pruned and "
                                  "int8 rows: their source's")
    kd_gain: float | None = _doc("a KD student's `metric` minus its baseline's: what the teacher's knowledge "
                                 "bought; `null` where there is no baseline (teacher, baselines, pruned, int8)")


def report_schema_markdown() -> str:
    """docs/report-schema.md: every ReportRow key with its type and meaning, in report.json's order."""
    hints = get_type_hints(ReportRow)
    lines = ["# report.json: the row schema", "",
             "Generated from `compress.core.results.ReportRow` by `make docs`;",
             "a test fails when this file and the code disagree. Keys are added over time, never renamed or removed.",
             "",
             "report.json is `{run, task, metric, rows, notes, bench, environment, best, anchors, pareto, timeline}`:",
             "`rows` has one object per model with the keys below; `best` names the fastest non-teacher model keeping",
             ">= 97% of the teacher's metric in PyTorch fp32 (int8 rows left out) and as its kept ONNX graph;",
             "`anchors` the published teacher/student pairs matched by shape; `pareto` the plotted points;",
             "`timeline` the seconds per stage when it last ran.", "",
             "| key | type | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(ReportRow):
        lines.append(f"| `{f.name}` | {json_type(hints[f.name])} | {f.metadata['doc']} |")
    return "\n".join(lines) + "\n"


def json_type(hint: object) -> str:
    """How a field's type reads in JSON: "number or null", "list of object", ..."""
    names = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
    if hint in names:
        return names[hint]
    if dataclasses.is_dataclass(hint):
        return "object"
    origin, args = get_origin(hint), get_args(hint)
    if origin is list:
        return f"list of {json_type(args[0])}"
    if origin is dict:
        return "object"
    return " or ".join(dict.fromkeys(json_type(a) for a in args))  # a union


if __name__ == "__main__":
    sys.stdout.write(report_schema_markdown())
