"""The report as files in the run folder: report.json, report.csv, report.md, report.html, pareto.png and, where
models trained in this run folder, curves.png (loss per step and validation metric per epoch, from logs/).

Every file is written from the same report dict (compress.report.tables.build_report), so they cannot disagree. The CSV
and the Markdown/HTML variants table have one row per deployable artifact: each model in PyTorch and each of its
ONNX Runtime graphs (fp32, optimised, int8 variants), so every variant a run made is in every file.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from pathlib import Path

from compress.core.artifacts import write_bytes_atomic, write_json_atomic, write_text_atomic
from exports.variants import fastest_by_runtime, metric_change

CSV_COLUMNS = ("model", "role", "family", "student_kind", "source", "runtime", "variant", "precision", "kept",
               "params", "nonzero_params", "sparsity", "size_mb", "size_mb_compressed", "flops", "metric",
               "retained", "latency_ms_p50", "latency_ms_p95", "speedup", "parity_max_abs_diff", "argmax_agreement",
               "eligible", "path", "error")


def write_report_files(run_dir: Path, report: dict) -> None:
    """Every file, each written atomically."""
    png = pareto_png(report)
    curves = training_curves(run_dir / "logs", [row["model"] for row in report["rows"]])
    curves_plot = curves_png(curves, report["metric"]) if curves else None
    searched = search_files(run_dir)
    write_json_atomic(run_dir / "report.json", report)
    write_text_atomic(run_dir / "report.csv", artifacts_csv(report))
    write_text_atomic(run_dir / "report.md", markdown(report, with_curves=curves_plot is not None, search=searched))
    write_text_atomic(run_dir / "report.html", html_page(report, png, curves_plot, searched))
    write_bytes_atomic(run_dir / "pareto.png", png)
    if curves_plot is not None:
        write_bytes_atomic(run_dir / "curves.png", curves_plot)


def search_files(run_dir: Path) -> tuple[bytes, str | None] | None:
    """What `compress search` left in the run folder for the report: search/pareto.png (every trial against the
    budget) and search/chosen.yaml (the chosen student's snippet); None where no search ran. Read as files, so the
    report needs nothing of compress.search."""
    plot = run_dir / "search" / "pareto.png"
    if not plot.is_file():
        return None
    chosen = run_dir / "search" / "chosen.yaml"
    return plot.read_bytes(), chosen.read_text(encoding="utf-8") if chosen.is_file() else None


# ---------------------------------------------------------------- one row per artifact


def artifact_rows(report: dict) -> list[dict]:
    """Each model in PyTorch, then each of its ONNX Runtime graphs, with the columns of CSV_COLUMNS."""
    teacher = next(r for r in report["rows"] if r["role"] == "teacher")
    teacher_metric, teacher_p50 = teacher["metric"], teacher["torch_p50_ms"]
    rows = []
    for r in report["rows"]:
        model = {k: r.get(k) for k in ("model", "role", "family", "student_kind", "source", "params",
                                       "nonzero_params", "sparsity")}
        rows.append(model | {
            "runtime": "pytorch", "variant": "int8-dynamic" if r["precision"] == "int8" else r["precision"],
            "precision": r["precision"], "kept": None,
            "size_mb": r["size_mb"], "size_mb_compressed": r.get("size_mb_compressed"), "flops": r.get("flops"),
            "metric": r["metric"], "retained": r["retained"], "latency_ms_p50": r["torch_p50_ms"],
            "latency_ms_p95": r.get("torch_p95_ms"), "speedup": r["speedup"], "parity_max_abs_diff": None,
            "argmax_agreement": r.get("argmax_agreement"), "eligible": None, "path": r["model_dir"], "error": None})
        for v in r.get("ort_variants") or []:
            failed = v.get("error") is not None
            rows.append(model | {
                "runtime": v.get("runtime", "onnxruntime"), "variant": v["variant"], "precision": v["precision"],
                "kept": v.get("kept"), "size_mb": v.get("size_mb"), "size_mb_compressed": None,
                "flops": r.get("flops") if v["precision"] == "fp32" else None,
                "metric": None if failed else v["ort_metric"],
                "retained": None if failed or not teacher_metric > 0 else v["ort_metric"] / teacher_metric,
                "latency_ms_p50": v.get("ort_p50_ms"), "latency_ms_p95": v.get("ort_p95_ms"),
                "speedup": teacher_p50 / v["ort_p50_ms"] if teacher_p50 and v.get("ort_p50_ms") else None,
                "parity_max_abs_diff": v.get("parity_max_abs_diff"), "argmax_agreement": v.get("argmax_agreement"),
                "eligible": v.get("eligible"), "path": v.get("onnx_path"), "error": v.get("error")})
    return rows


def artifacts_csv(report: dict) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in artifact_rows(report):
        writer.writerow({k: "" if row[k] is None else row[k] for k in CSV_COLUMNS})
    return out.getvalue()


def mending_lines(row: dict) -> list[str]:
    """What int8 mending did to a model's graphs, one line per variant it touched: a variant that missed the budget
    on the validation split, and the mended graph with its fp32 blocks and what they cost in size and speed against
    the all-int8 and the fp32 graphs."""
    variants = {v["variant"]: v for v in row.get("ort_variants") or []}
    plain = variants.get("fp32", {})
    lines = []
    for v in variants.values():
        if v.get("mending"):
            lines.append(f"{row['model']}: {v['variant']} {v['mending']}")
        if v.get("mended_from") and not v.get("error"):
            base = variants.get(v["mended_from"], {})
            operators = len(v.get("fp32_operators") or [])
            lines.append(
                f"{row['model']}: {v['variant']} keeps {', '.join(v['fp32_blocks'] or [])} in fp32 ({operators} "
                f"operators): {v['size_mb']:.1f} MB (int8 {fmt_number(base.get('size_mb'), '.1f')}, fp32 "
                f"{fmt_number(plain.get('size_mb'), '.1f')}); p50 {fmt_number(v.get('ort_p50_ms'), '.2f')} ms (int8 "
                f"{fmt_number(base.get('ort_p50_ms'), '.2f')}, fp32 {fmt_number(plain.get('ort_p50_ms'), '.2f')}); "
                f"test metric {metric_change(v['metric_drop'])} vs fp32")
    return lines


def runtime_lines(row: dict) -> list[str]:
    """Which runtime runs a model's graphs fastest on this machine, per precision: the fastest eligible graph (one
    that may ship: within the budget or parity) of each runtime side by side (they were timed interleaved in one
    bench stage). Nothing where only one runtime has such graphs."""
    lines = []
    for precision in ("fp32", "int8"):
        fastest = fastest_by_runtime(row.get("ort_variants") or [], precision)
        if len(fastest) < 2:
            continue
        ranked = sorted(fastest.values(), key=lambda v: v["ort_p50_ms"])
        win, other = ranked[0], ranked[1]
        lines.append(f"{row['model']} {precision}: {RUNTIME_NAMES[win.get('runtime', 'onnxruntime')]} is "
                     f"{other['ort_p50_ms'] / win['ort_p50_ms']:.2f}x faster ({win['variant']} "
                     f"{win['ort_p50_ms']:.2f} ms vs {other['variant']} {other['ort_p50_ms']:.2f} ms)")
    return lines


RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


# ---------------------------------------------------------------- tables as text


def fmt_number(value: float | None, spec: str, suffix: str = "") -> str:
    """A number as the tables print it, or n/a where it was not measured (never 0)."""
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def _percent(value: float | None) -> str:
    return fmt_number(None if value is None else value * 100, ".1f", "%")


def kd_gain_text(gain: float | None) -> str:
    """A KD student's metric minus its baseline's, in points of the metric (+1.2 pt); n/a without a baseline."""
    return fmt_number(None if gain is None else gain * 100, "+.1f", " pt")


def summary_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """The comparison table (one row per model), as header and cells."""
    header = ["model", "role", "params", "sparsity", "size MB", "GFLOPs", report["metric"], "% of teacher",
              "KD gain", "transfer examples", "PyTorch p50 ms", "PyTorch p95 ms", "speed-up (PyTorch)", "kept graph",
              "kept p50 ms", "speed-up (kept graph)"]
    cells = []
    for r in report["rows"]:
        cells.append([r["model"], r["role"], f"{r['params'] / 1e6:.2f}M", _percent(r.get("sparsity")),
                      f"{r['size_mb']:.1f}", fmt_number(None if r.get("flops") is None else r["flops"] / 1e9, ".2f"),
                      f"{r['metric']:.4f}", _percent(r["retained"]), kd_gain_text(r.get("kd_gain")),
                      f"{r.get('transfer_examples', 0):,}", fmt_number(r["torch_p50_ms"], ".2f"),
                      fmt_number(r.get("torch_p95_ms"), ".2f"), fmt_number(r["speedup"], ".2f", "x"),
                      r.get("ort_kept") or "n/a",
                      fmt_number(r.get("ort_kept_p50_ms"), ".2f"), fmt_number(r.get("ort_kept_speedup"), ".2f", "x")])
    return header, cells


def variants_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Every artifact: the model in PyTorch and each ONNX Runtime graph, kept ones starred."""
    header = ["model", "runtime", "variant", "size MB", report["metric"], "% of teacher", "p50 ms", "p95 ms",
              "speed-up vs teacher PyTorch", "parity / agreement", "kept"]
    cells = []
    for a in artifact_rows(report):
        check = (fmt_number(a["parity_max_abs_diff"], ".0e") if a["parity_max_abs_diff"] is not None
                 else _percent(a["argmax_agreement"]))
        kept = "*" if a["kept"] else (f"failed: {a['error'][:80]}" if a["error"] else "")
        cells.append([a["model"], a["runtime"], a["variant"], fmt_number(a["size_mb"], ".1f"),
                      fmt_number(a["metric"], ".4f"), _percent(a["retained"]), fmt_number(a["latency_ms_p50"], ".2f"),
                      fmt_number(a["latency_ms_p95"], ".2f"), fmt_number(a["speedup"], ".2f", "x"), check, kept])
    return header, cells


def device_tables(report: dict) -> list[tuple[str, tuple[list[str], list[list[str]]]]]:
    """A latency table per device of bench.devices beside the CPU (none without such devices)."""
    devices = list(dict.fromkeys(d for r in report["rows"] for d in r.get("devices") or {}))
    header = ["model", "precision", "PyTorch p50 ms", "PyTorch p95 ms", "speed-up (PyTorch)", "of GEMM peak",
              "ORT fp32 p50 ms", "speed-up (ORT)"]
    tables = []
    for device in devices:
        cells = []
        for r in report["rows"]:
            d = (r.get("devices") or {}).get(device) or {}
            cells.append([r["model"], r["precision"], fmt_number(d.get("torch_p50_ms"), ".2f"),
                          fmt_number(d.get("torch_p95_ms"), ".2f"), fmt_number(d.get("speedup"), ".2f", "x"),
                          _percent(d.get("torch_efficiency")), fmt_number(d.get("ort_p50_ms"), ".2f"),
                          fmt_number(d.get("ort_speedup"), ".2f", "x")])
        b = report["bench"]
        tables.append((f"Latency on {device} (batch {b['batch_size']}, {b['seq_len']} tokens)", (header, cells)))
    return tables


def anchors_table(report: dict) -> tuple[list[str], list[list[str]]]:
    header = ["model", "published pair", "published kept", "measured kept", "published speed-up",
              "measured speed-up (PyTorch)", "verdict"]
    cells = [[a["model"], a["pair"], _percent(a["published_retained"]), _percent(a["measured_retained"]),
              f"{a['published_speedup']:.1f}x", fmt_number(a["measured_speedup"], ".2f", "x"),
              f"{a['verdict']} ({a['why']})"] for a in report.get("anchors", [])]
    return header, cells


def timeline_table(report: dict) -> tuple[list[str], list[list[str]]]:
    header = ["stage", "seconds"]
    return header, [[t["stage"], f"{t['seconds']:.1f}"] for t in report.get("timeline", [])]


def headline(report: dict) -> list[str]:
    """The sentences a reader wants first: the fastest students that keep enough of the teacher."""
    best, lines = report.get("best") or {}, []
    floor = _percent(best.get("retained_at_least"))
    torch_best, export_best = best.get("fastest_pytorch"), best.get("fastest_export")
    if torch_best:
        lines.append(f"Fastest model keeping >= {floor} of the teacher in PyTorch fp32: {torch_best['model']}, "
                     f"{torch_best['speedup']:.1f}x the teacher's speed, {_percent(torch_best['retained'])} kept.")
    if export_best:
        lines.append(f"Fastest exported graph keeping >= {floor}: {export_best['model']} ({export_best['variant']}), "
                     f"{export_best['speedup']:.1f}x the teacher's PyTorch speed, {_percent(export_best['retained'])} "
                     "kept.")
    if not lines:
        lines.append(f"No student kept >= {floor} of the teacher's {report['metric']}.")
    return lines


def _md_table(header: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines)


def _sections(report: dict) -> list[tuple[str, tuple[list[str], list[list[str]]]]]:
    sections = [("Comparison", summary_table(report)), *device_tables(report),
                ("Every model and graph (ONNX Runtime, OpenVINO)", variants_table(report))]
    if report.get("anchors"):
        sections.append(("Published anchors", anchors_table(report)))
    sections.append(("Stage timeline", timeline_table(report)))
    return sections


def _title(report: dict) -> str:
    b = report["bench"]
    return (f"{report['run']}: {report['task']}, {report['metric']} on the test split; latency at batch "
            f"{b['batch_size']}, {b['seq_len']} tokens")


def _environment_line(report: dict) -> str:
    env = report.get("environment", {})
    versions = env.get("versions", {})
    ort = versions.get("onnxruntime") or versions.get("onnxruntime-gpu", "?")  # the CPU or the GPU build
    return (f"Measured on {env.get('cpu', 'unknown CPU')}, {env.get('torch_threads', '?')} threads; torch "
            f"{versions.get('torch', '?')}, onnxruntime {ort}.")


def markdown(report: dict, with_curves: bool = False, search: tuple[bytes, str | None] | None = None) -> str:
    parts = [f"# {_title(report)}", ""] + [part for line in headline(report) for part in (line, "")]
    parts += [_environment_line(report), "",
             "![metric vs latency](pareto.png)", ""]
    if with_curves:
        parts += ["![training curves](curves.png)", ""]
    if search is not None:
        parts += ["## Search", "", "![search trials](search/pareto.png)", ""]
        parts += ["The chosen student:", "", "```yaml", search[1].rstrip(), "```", ""] if search[1] else []
    for name, (header, cells) in _sections(report):
        parts += [f"## {name}", "", _md_table(header, cells), ""]
    if report.get("notes"):
        parts += ["## Notes", ""] + [f"- {note}" for note in report["notes"]] + [""]
    return "\n".join(parts)


def _numeric_class(cell: str) -> str:
    """Numbers (and n/a in their columns) align right, so digits line up; words align left."""
    return ' class="n"' if re.fullmatch(r"[+-]?[\d.,]+(e[+-]?\d+)?[%xM]?|n/a", cell) else ""


def html_page(report: dict, png: bytes, curves: bytes | None = None,
              search: tuple[bytes, str | None] | None = None) -> str:
    """One file with everything in it: the plots are embedded as base64, the style inline. `search`: the search's
    plot and the chosen student's snippet (search_files)."""
    e = html.escape
    body = [f"<h1>{e(_title(report))}</h1>"] + [f"<p><b>{e(line)}</b></p>" for line in headline(report)]
    body += [f"<p>{e(_environment_line(report))}</p>",
             f'<img alt="metric vs latency" src="data:image/png;base64,{base64.b64encode(png).decode()}">']
    if curves is not None:
        body += ["<h2>Training</h2>",
                 f'<img alt="training curves" src="data:image/png;base64,{base64.b64encode(curves).decode()}">']
    if search is not None:
        plot, snippet = search
        body += ["<h2>Search</h2><p>Every trial of <code>compress search</code> (search/trials.csv): validation metric "
                 "against the latency of the graph that would ship, the budget as a line.</p>",
                 f'<img alt="search trials" src="data:image/png;base64,{base64.b64encode(plot).decode()}">']
        if snippet is not None:
            body.append(f"<p>The chosen student, as a run YAML's <code>students:</code> takes it:</p>"
                        f"<pre>{e(snippet)}</pre>")
    for name, (header, cells) in _sections(report):
        rows = "".join("<tr>" + "".join(f"<td{_numeric_class(c)}>{e(c)}</td>" for c in row) + "</tr>" for row in cells)
        body.append(f"<h2>{e(name)}</h2><table><tr>{''.join(f'<th>{e(h)}</th>' for h in header)}</tr>{rows}</table>")
    if report.get("notes"):
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in report["notes"]) + "</ul>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}td.n{text-align:right;"
             "white-space:nowrap}td:first-child{white-space:nowrap}img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{e(report['run'])} report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# ---------------------------------------------------------------- the plot


def pareto_png(report: dict) -> bytes:
    """Metric vs latency (log scale) for every point of report['pareto']: marker area by parameters, the teacher
    as a star, PyTorch models as circles and their kept ONNX Runtime graphs as triangles, the front as a line."""
    import matplotlib  # heavy: imported only when a plot is drawn

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    points = report["pareto"]
    largest = max((p["params"] for p in points), default=0) or 1
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    for p in points:
        teacher = p["role"] == "teacher" and p["runtime"] == "pytorch"
        marker = "*" if teacher else ("o" if p["runtime"] == "pytorch" else "^")
        size = (600 if teacher else 40 + 500 * p["params"] / largest)
        ax.scatter(p["latency_ms"], p["metric"], s=size, marker=marker, alpha=0.6,
                   color="crimson" if teacher else ("tab:blue" if p["runtime"] == "pytorch" else "tab:green"),
                   edgecolors="black", linewidths=0.5)
        # Every PyTorch point is named; an ONNX graph only where it is on the front, so names stay legible.
        # ONNX graphs below their point, PyTorch models above, so a model and its graph do not overwrite each other.
        if p["runtime"] == "pytorch":
            ax.annotate(p["label"], (p["latency_ms"], p["metric"]), fontsize=7, xytext=(4, 4),
                        textcoords="offset points")
        elif p["on_front"]:
            short = (f"{p['model']} {'OV' if p['runtime'] == 'openvino' else 'ORT'} "
                     f"{'int8' if 'int8' in p['variant'] else 'fp32'}")
            ax.annotate(short, (p["latency_ms"], p["metric"]), fontsize=7, xytext=(4, -10),
                        textcoords="offset points")
    front = sorted((p for p in points if p["on_front"]), key=lambda p: p["latency_ms"])
    # A staircase: between two points of the front, the best reachable metric is the faster point's.
    ax.plot([p["latency_ms"] for p in front], [p["metric"] for p in front], "--", color="gray", label="Pareto front",
            drawstyle="steps-post")
    for marker, color, label in (("*", "crimson", "teacher (PyTorch)"), ("o", "tab:blue", "PyTorch"),
                                 ("^", "tab:green", "kept graph (ONNX Runtime or OpenVINO)")):
        ax.scatter([], [], marker=marker, color=color, label=label)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    b = report["bench"]
    ax.set_xlabel(f"p50 latency, ms (batch {b['batch_size']}, {b['seq_len']} tokens; log scale)")
    ax.set_ylabel(f"{report['metric']} (test split)")
    ax.set_title(f"{report['run']}: {report['metric']} vs latency (marker area ~ parameters)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


def training_curves(logs: Path, models: list[str]) -> dict[str, dict[str, list]]:
    """Each model's training as its log holds it (logs/<model>.jsonl: loss per step, validation metric per epoch);
    models without a log (quantised copies, a teacher used as it came) are left out."""
    curves = {}
    for model in models:
        path = logs / f"{model}.jsonl"
        if not path.is_file():
            continue
        curve = {"step": [], "loss": [], "epoch": [], "validation": []}
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if "loss" in record and "step" in record:
                curve["step"].append(record["step"])
                curve["loss"].append(record["loss"])
            elif "validation" in record and "epoch" in record:  # a pruning log's records have neither shape
                curve["epoch"].append(record["epoch"] + 1)
                curve["validation"].append(record["validation"])
        if curve["step"]:
            curves[model] = curve
    return curves


def curves_png(curves: dict[str, dict[str, list]], metric: str) -> bytes:
    """Two panels: each model's training loss per step (a running mean over a fiftieth of its steps, log scale:
    the teacher's cross-entropy and a student's KD terms differ in scale) and its validation metric per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
    for model, curve in curves.items():
        running = running_mean(curve["loss"], max(1, len(curve["loss"]) // 50))
        line, = loss_ax.plot(curve["step"], running, label=model, linewidth=1)
        if curve["validation"]:
            metric_ax.plot(curve["epoch"], curve["validation"], "o-", color=line.get_color(), label=model)
    loss_ax.set(xlabel="step", ylabel="training loss (running mean)", yscale="log", title="Loss")
    metric_ax.set(xlabel="epoch", ylabel=f"{metric} (validation split)", title="Validation")
    metric_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (loss_ax, metric_ax):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


def running_mean(values: list[float], window: int) -> list[float]:
    """The mean of each value and the window - 1 before it (fewer at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out
