"""The comparison table people decide by: built once, printed with rich, written by compress.report.files.

report.json is a contract for users' scripts: its rows are compress.core.results.ReportRow, documented in
docs/report-schema.md (generated from that class). Later versions add keys; they never rename or remove one.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table

from compress.core.config import RunConfig
from compress.core.progress import console
from compress.core.results import BenchResult, ExportResult, ModelArtifact, ModelTimings, ReportRow, to_json
from compress.data.tasks import TASKS
from compress.report.anchors import compare_with_anchors
from compress.report.files import (
    anchors_table,
    device_tables,
    fmt_number,
    headline,
    kd_gain_text,
    mending_lines,
    runtime_lines,
)
from exports.variants import judge_variants, metric_change

# A student worth shipping keeps at least this share of the teacher's metric (DistilBERT's 97%); the headline
# names the fastest ones that do.
RETAINED_FLOOR = 0.97


def build_report(cfg: RunConfig, models: list[ModelArtifact], exports: dict[str, ExportResult], bench: BenchResult,
                 environment: dict, timeline: list[dict]) -> dict:
    """report.json's content: one ReportRow per model; `retained` and `speedup` are ratios to the teacher
    measured in the same run."""
    metric = TASKS[cfg.task].metric
    teacher = next(m for m in models if m.role == "teacher")
    reference = TeacherReference(metric, teacher.metrics[metric], bench.get(teacher.name))
    baselines = {m.name: m.metrics[metric] for m in models if m.role == "baseline"}
    rows = [row_json(report_row(cfg, m, exports.get(m.name), bench.get(m.name), reference,
                                baselines.get(f"{m.name}-baseline") if m.role == "student" else None))
            for m in models]
    notes = _notes(rows) + openvino_notes(cfg, rows)
    return {"run": cfg.name, "task": cfg.task, "metric": metric, "rows": rows, "notes": notes,
            "bench": {"batch_size": cfg.bench.batch_size, "seq_len": cfg.bench.seq_len, "iters": cfg.bench.iters},
            "environment": environment,
            # Keys added by issue 8: the headline, published anchors, the plotted points, stage seconds.
            "best": _best(rows), "anchors": compare_with_anchors(rows, cfg.run_dir), "pareto": _pareto(rows),
            "timeline": timeline}


def row_json(row: ReportRow) -> dict:
    """A row as report.json holds it: a variant carries `error` only when ORT could not make or run it, as the
    published contract has it (scripts test `"error" in variant`)."""
    data = to_json(row)
    for variant in data["ort_variants"] or []:
        if variant["error"] is None:
            del variant["error"]
    return data


@dataclass(frozen=True)
class TeacherReference:
    """What every row is measured against: the task's headline metric, the teacher's value of it, and the teacher's
    timings (speed-ups on the CPU, and on the devices beside it)."""

    metric: str
    teacher_metric: float
    teacher_timings: ModelTimings | None


def report_row(cfg: RunConfig, m: ModelArtifact, export: ExportResult | None, timings: ModelTimings | None,
               reference: TeacherReference, baseline_metric: float | None = None) -> ReportRow:
    """`baseline_metric`: the metric of a KD student's own baseline (its kd_gain), None where it has none."""
    metric, teacher_metric, teacher_timings = reference.metric, reference.teacher_metric, reference.teacher_timings
    teacher_torch = _p50(teacher_timings, "torch")
    torch_p50, ort_p50 = _p50(timings, "torch"), _p50(timings, "ort")
    variants, kept_name, reason = judge_variants(export.variants if export else [], timings, torch_p50,
                                                 cfg.export.parity_atol, cfg.export.quantize.max_metric_drop)
    kept = next((v for v in variants if v.kept), None)
    return ReportRow(
        model=m.name, role=m.role, family=m.family, params=m.params, size_mb=round(m.size_mb, 3),
        metric=m.metrics[metric], retained=m.metrics[metric] / teacher_metric if teacher_metric > 0 else None,
        torch_p50_ms=torch_p50, ort_p50_ms=ort_p50,
        speedup=teacher_torch / torch_p50 if teacher_torch and torch_p50 else None,
        ort_speedup=teacher_torch / ort_p50 if teacher_torch and ort_p50 else None,
        torch_p95_ms=_timing(timings, "torch", "latency_ms_p95"), ort_p95_ms=_timing(timings, "ort", "latency_ms_p95"),
        metrics=m.metrics, onnx_path=export.onnx_path if export else None,
        parity_max_abs_diff=export.parity_max_abs_diff if export else None,
        parity_ok=export.parity_max_abs_diff <= cfg.export.parity_atol if export else None,
        student_kind=m.student_kind, train_seconds=m.train_seconds, epochs_run=m.epochs_run, best_epoch=m.best_epoch,
        nonzero_params=m.nonzero_params, sparsity=m.sparsity, size_mb_compressed=round(m.size_mb_compressed, 3),
        flops=timings.flops if timings else None, source=m.source, precision=precision_of(m),
        devices=device_latency(timings, teacher_timings), model_dir=m.dir,
        prune_kind=m.prune.kind if m.prune else None, prune_steps=m.prune.steps if m.prune else None,
        argmax_agreement=m.argmax_agreement,
        ort_metric=export.ort_metrics.get(metric) if export else None,
        ort_metrics=export.ort_metrics if export else None,
        onnx_optimized_path=next((v.onnx_path for v in variants if v.variant == "fp32-optimized"), None),
        fused_operators=export.fused_operators if export else None, ort_variants=variants or None,
        ort_kept=kept_name, ort_kept_path=kept.onnx_path if kept else None,
        ort_kept_p50_ms=kept.ort_p50_ms if kept else None, ort_kept_metric=kept.ort_metric if kept else None,
        ort_kept_speedup=teacher_torch / kept.ort_p50_ms if teacher_torch and kept else None,
        torch_efficiency=_timing(timings, "torch", "efficiency"), ort_efficiency=_timing(timings, "ort", "efficiency"),
        ort_kept_reason=reason, transfer_examples=m.transfer_examples,
        kd_gain=m.metrics[metric] - baseline_metric if baseline_metric is not None else None)


def device_latency(timings: ModelTimings | None, teacher: ModelTimings | None) -> dict[str, dict] | None:
    """Per device beside the CPU: this model's PyTorch and fp32-graph latency there, and speed-ups against the
    teacher's PyTorch latency on the same device."""
    if not timings or not timings.devices:
        return None
    out = {}
    for device, measured in timings.devices.items():
        torch_t, graph = measured.get("torch"), measured.get("fp32")
        teacher_t = (teacher.devices.get(device) or {}).get("torch") if teacher else None
        reference = teacher_t.latency_ms_p50 if teacher_t else None
        out[device] = {
            "torch_p50_ms": torch_t and torch_t.latency_ms_p50, "torch_p95_ms": torch_t and torch_t.latency_ms_p95,
            "torch_efficiency": torch_t and torch_t.efficiency,
            "speedup": reference / torch_t.latency_ms_p50 if reference and torch_t else None,
            "ort_p50_ms": graph and graph.latency_ms_p50,
            "ort_speedup": reference / graph.latency_ms_p50 if reference and graph else None}
    return out


def precision_of(m: ModelArtifact) -> str:
    """Runs made before bf16/fp16 rows recorded no precision: their quantised rows are int8."""
    return m.precision or ("int8" if m.role == "quantized" else "fp32")


def _best(rows: list[dict]) -> dict:
    """The fastest non-teacher model keeping >= RETAINED_FLOOR of the teacher, in PyTorch fp32 (PyTorch int8 rows
    are not fp32) and as its kept ONNX Runtime graph (by that graph's own metric), each against the teacher's
    PyTorch fp32 latency."""
    teacher_metric = next(r["metric"] for r in rows if r["role"] == "teacher")
    others = [r for r in rows if r["role"] != "teacher"]

    def kept_share(r: dict) -> float | None:
        return r["ort_kept_metric"] / teacher_metric if teacher_metric > 0 and r.get("ort_kept_speedup") else None

    in_torch = [r for r in others if r["role"] != "quantized" and r["speedup"] and r["retained"] is not None
                and r["retained"] >= RETAINED_FLOOR]
    exported = [r for r in others if (kept_share(r) or 0) >= RETAINED_FLOOR]
    fastest_torch = max(in_torch, key=lambda r: r["speedup"], default=None)
    fastest_export = max(exported, key=lambda r: r["ort_kept_speedup"], default=None)
    return {
        "retained_at_least": RETAINED_FLOOR,
        "fastest_pytorch": fastest_torch and {"model": fastest_torch["model"], "speedup": fastest_torch["speedup"],
                                              "retained": fastest_torch["retained"]},
        "fastest_export": fastest_export and {"model": fastest_export["model"], "variant": fastest_export["ort_kept"],
                                              "speedup": fastest_export["ort_kept_speedup"],
                                              "retained": kept_share(fastest_export)},
    }


def _pareto(rows: list[dict]) -> list[dict]:
    """Metric vs latency points: each model in PyTorch and its kept ONNX Runtime graph; a point is on the front
    when no other point is at least as fast and as accurate and strictly better at one of them."""
    points = []
    for r in rows:
        base = {"model": r["model"], "role": r["role"], "params": r["params"]}
        if r["torch_p50_ms"]:
            points.append(base | {"label": r["model"], "runtime": "pytorch", "variant": None,
                                  "latency_ms": r["torch_p50_ms"], "metric": r["metric"]})
        if r.get("ort_kept_p50_ms"):
            kept = next((v for v in r["ort_variants"] or [] if v["variant"] == r["ort_kept"]), {})
            runtime = kept.get("runtime", "onnxruntime")
            short = "OV" if runtime == "openvino" else "ORT"
            points.append(base | {"label": f"{r['model']} {short} {r['ort_kept']}", "runtime": runtime,
                                  "variant": r["ort_kept"], "latency_ms": r["ort_kept_p50_ms"],
                                  "metric": r["ort_kept_metric"]})
    for p in points:
        p["on_front"] = not any(q["latency_ms"] <= p["latency_ms"] and q["metric"] >= p["metric"]
                                and (q["latency_ms"], q["metric"]) != (p["latency_ms"], p["metric"]) for q in points)
    return points


def _notes(rows: list[dict]) -> list[str]:
    """What a reader could misread from the columns alone."""
    notes = []
    sparse = [r["model"] for r in rows if r["prune_kind"] == "unstructured"]
    if sparse:
        notes.append(f"{', '.join(sparse)}: unstructured sparsity zeroes weights inside dense matrices; the file "
                     "shrinks only compressed, and dense kernels do not skip zeros, so latency is as measured "
                     "(any change there is noise, not a speed-up from sparsity)")
    if any(r["precision"] == "int8" for r in rows):
        notes.append("PyTorch int8 rows: dynamic quantisation of Linear/LSTM weights, CPU kernels; no ONNX export "
                     "(ONNX Runtime quantises the fp32 export); params are the fp32 model's")
    for device in dict.fromkeys(d for r in rows for d in r["devices"] or {}):
        if any(r["onnx_path"] for r in rows) and not any(r["devices"][device]["ort_p50_ms"] for r in rows
                                                         if r["devices"] and device in r["devices"]):
            notes.append(f"ONNX Runtime here has no execution provider for {device} (the CPU build, or none for "
                         f"that device): its graphs were timed on the CPU only")
    half = sorted({r["precision"] for r in rows if r["precision"] in ("bf16", "fp16")})
    if half:
        notes.append(f"PyTorch {'/'.join(half)} rows: every weight and activation in that precision, scored on the "
                     "run's device; fast only where the hardware has the instructions (GPUs; CPUs with AMX or "
                     "AVX512-BF16), slower than fp32 elsewhere; no ONNX export")
    notes += [f"int8 mending: {line}" for r in rows for line in mending_lines(r)]
    return notes


def openvino_notes(cfg: RunConfig, rows: list[dict]) -> list[str]:
    """Which runtime wins for each model on this machine; or why there is no OpenVINO to compare with."""
    exported = [r for r in rows if r.get("ort_variants")]
    if not exported or not cfg.export.openvino:
        return []
    if not any(v.get("runtime") == "openvino" for r in exported for v in r["ort_variants"]):
        return ['OpenVINO was not installed when the graphs were made: ONNX Runtime only (pip install '
                '"bert-compress[openvino]" and run again to compare them)']
    return [f"runtimes: {line}" for r in exported for line in runtime_lines(r)]


def _timing(timings: ModelTimings | None, backend: str, key: str) -> float | None:
    timing = getattr(timings, backend) if timings else None
    return getattr(timing, key) if timing else None


def _p50(timings: ModelTimings | None, backend: str) -> float | None:
    return _timing(timings, backend, "latency_ms_p50")


def _parity(row: dict) -> str:
    if row["parity_max_abs_diff"] is None:
        return "n/a"
    return f"{'ok' if row['parity_ok'] else '[bold red]FAIL[/]'} {row['parity_max_abs_diff']:.0e}"


def _kept(row: dict) -> str:
    return "n/a" if row.get("ort_kept") is None else f"{row['ort_kept']} ({row['ort_kept_p50_ms']:.1f})"


def print_ort_variants(report: dict) -> None:
    """Every graph (ONNX Runtime's and OpenVINO's) of the models that have int8 ones, and why the kept one (*) was
    kept."""
    rows = [r for r in report["rows"] if any(v["precision"] == "int8" for v in r.get("ort_variants") or [])]
    if not rows:
        return
    table = Table(title=f"Deployable graphs, ONNX Runtime and OpenVINO (* kept: the fastest whose "
                        f"{report['metric']} stays within max_metric_drop of fp32)")
    for column in ("model", "variant", "size MB", report["metric"], "vs fp32", "parity / agreement", "p50 ms",
                   "vs PyTorch", "kept"):
        table.add_column(column, justify="left" if column in ("model", "variant") else "right")
    for r in rows:
        for v in r["ort_variants"]:
            if v.get("error"):
                table.add_row(r["model"], v["variant"], "", "", "", "", "", "", f"failed: {v['error'][:60]}")
                continue
            agreement = v["argmax_agreement"]
            check = (f"{v['parity_max_abs_diff']:.0e}" if v["precision"] == "fp32"
                     else fmt_number(None if agreement is None else agreement * 100, ".1f", "%"))
            table.add_row(r["model"], v["variant"], f"{v['size_mb']:.1f}", f"{v['ort_metric']:.4f}",
                          metric_change(v["metric_drop"]), check, fmt_number(v["ort_p50_ms"], ".2f"),
                          fmt_number(v["speedup_vs_torch"], ".2f", "x"), "*" if v["kept"] else "")
        table.add_section()
    console.print(table)
    for r in rows:
        console.print(f"[dim]kept:[/dim] {r['model']}: {r['ort_kept']}: {r['ort_kept_reason']}")


def print_report(report: dict) -> None:
    b = report["bench"]
    table = Table(title=f"{report['run']}: {report['task']}, {report['metric']} on the test split; "
                        f"latency at batch {b['batch_size']}, {b['seq_len']} tokens")
    for column in ("model", "role", "params", "nonzero", "sparsity", "size MB", "zlib MB", "GFLOPs",
                   report["metric"], "% of teacher", "KD gain", "transfer", "PyTorch p50 ms", "ORT p50 ms",
                   "speed-up (PyTorch)", "ONNX parity", "kept graph (p50 ms)"):
        table.add_column(column, justify="left" if column in ("model", "role") else "right",
                         no_wrap=column == "model")  # the name is what a reader looks up; others may wrap
    for r in report["rows"]:  # the family (what loads the model) is in report.json
        table.add_row(r["model"], r["role"], f"{r['params'] / 1e6:.2f}M",
                      fmt_number(None if r.get("nonzero_params") is None else r["nonzero_params"] / 1e6, ".2f", "M"),
                      fmt_number(None if r.get("sparsity") is None else r["sparsity"] * 100, ".1f", "%"),
                      f"{r['size_mb']:.1f}", fmt_number(r.get("size_mb_compressed"), ".1f"),
                      fmt_number(None if r.get("flops") is None else r["flops"] / 1e9, ".2f"),
                      f"{r['metric']:.4f}", fmt_number(r["retained"] and r["retained"] * 100, ".1f", "%"),
                      kd_gain_text(r.get("kd_gain")), f"{r.get('transfer_examples', 0):,}",
                      fmt_number(r["torch_p50_ms"], ".1f"), fmt_number(r["ort_p50_ms"], ".1f"),
                      fmt_number(r["speedup"], ".2f", "x"),
                      _parity(r), _kept(r))
    console.print(table)
    for title, (header, cells) in device_tables(report):
        device_table = Table(title=title)
        for column in header:
            device_table.add_column(column, justify="left" if column == "model" else "right")
        for row in cells:
            device_table.add_row(*row)
        console.print(device_table)
    print_ort_variants(report)
    print_anchors(report)
    for note in report.get("notes", []):
        console.print(f"[dim]note:[/dim] {note}")
    for line in headline(report):
        console.print(f"[bold]{line}[/bold]")


def print_anchors(report: dict) -> None:
    """Published teacher/student pairs beside the measured ones, PASS/WARN."""
    if not report.get("anchors"):
        return
    header, cells = anchors_table(report)
    table = Table(title="Published anchors (our student of the same relative shape, measured in this run)")
    for column in header:
        table.add_column(column, justify="left" if column in ("model", "published pair") else "right")
    for row, anchor in zip(cells, report["anchors"]):
        colour = "green" if anchor["verdict"] == "PASS" else "yellow"
        table.add_row(*row[:-1], f"[{colour}]{row[-1]}[/]")
    console.print(table)


def print_timeline(timeline: list[dict], ran: list[str]) -> None:
    """Where the run's time went: each stage's seconds (from when it last ran) with a bar, and whether it ran now."""
    table = Table(title="Stage timeline")
    for column in ("stage", "this run", "seconds", ""):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    longest = max((t["seconds"] for t in timeline), default=0) or 1
    this_run = 0.0
    for t in timeline:
        reused = t["stage"] not in ran and t["stage"] != "report"
        this_run += 0.0 if reused else t["seconds"]
        table.add_row(t["stage"], "reused" if reused else "ran", f"{t['seconds']:.1f}",
                      "█" * max(1, round(30 * t["seconds"] / longest)))
    table.add_row("this run", "", f"{this_run:.1f}", "")
    console.print(table)
