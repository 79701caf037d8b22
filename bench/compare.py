"""`bench compare A.json B.json`: the same measurements side by side, B over A, with regressions flagged.

Takes what `bench latency|memory|zoo --json` writes and a run folder's bench.json (from `compress run`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from compress.core.errors import UserError

KEY_FIELDS = ("name", "backend", "device", "batch_size", "seq_len")
KEY_KINDS = {"name": str, "backend": str, "device": str, "batch_size": int, "seq_len": int}  # null where not known
# Where a bigger number is the better one; every other compared field (latency, memory) is better smaller.
HIGHER_IS_BETTER = ("throughput_samples_s", "throughput_tokens_s", "efficiency", "achieved_flops_s")


def load_rows(path: Path, metric: str | None = None) -> list[dict]:
    """The rows of a `bench ... --json` file or a run's bench.json, checked against the shape that wrote them: the
    fields rows are matched by, `metric` (a number or null in every row), and a run's results as BenchResult."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError("file not found", str(path), "pass two files written by `bench ... --json`") from None
    except IsADirectoryError:
        raise UserError("is a folder, not a file", str(path),
                        "pass two files written by `bench ... --json` (a run's is <run folder>/bench.json)") from None
    except (ValueError, RecursionError) as err:  # RecursionError: nested deeper than the parser goes
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise UserError(f"not JSON ({reason})", str(path), "pass two files written by `bench ... --json`") from None
    results = document.get("results") if isinstance(document, dict) else None
    if isinstance(results, list) and all(isinstance(row, dict) for row in results):
        rows = results
    elif isinstance(results, dict) and "settings" in document:
        rows = _run_bench_rows(_checked_run_bench(document, path))
    else:
        raise UserError("no results in it", str(path),
                        "pass a file written by `bench ... --json` or a run's bench.json")
    kinds = KEY_KINDS | ({metric: int | float} if metric is not None and metric not in KEY_KINDS else {})
    for i, row in enumerate(rows):
        for field, kind in kinds.items():
            value = row.get(field)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                expected = {str: "text", int: "a whole number"}.get(kind, "a number")
                raise UserError(f"results.{i}.{field} is {_shown(value)}, not {expected}", str(path),
                                "pass a file written by `bench ... --json` or a run's bench.json, unedited")
    return rows


def _checked_run_bench(document: dict, path: Path) -> dict:
    """A run's bench.json with its results read as the BenchResult the bench stage wrote (and its shape's settings
    as whole numbers); the first field that does not fit is one line."""
    from pydantic import ValidationError

    from compress.core.results import BenchResult, from_json, to_json

    fix = "pass a run's bench.json as `compress run` wrote it, or write it again (compress run with --from bench)"
    settings = document["settings"]
    for key in ("batch_size", "seq_len"):
        value = settings.get(key) if isinstance(settings, dict) else None
        if not isinstance(value, int) or isinstance(value, bool):
            raise UserError(f"settings.{key} is {_shown(value)}, not a whole number", str(path), fix)
    try:
        results = from_json(BenchResult, document["results"])
    except ValidationError as err:
        problem = err.errors()[0]
        key = ".".join(str(part) for part in ("results", *problem["loc"]))
        got = "" if problem["type"] == "missing" else f" (got {_shown(problem.get('input'))})"
        message = re.sub(r" or an instance of \w+", "", problem["msg"])  # our class names say nothing to a user
        raise UserError(f"{key}: {message}{got}", str(path), fix) from None
    return {**document, "results": to_json(results, BenchResult)}


def _shown(value: object) -> str:
    """A value as the file holds it, shortened: "fast", 3, null; an object or a list by its kind."""
    if isinstance(value, dict | list):
        return "an object" if isinstance(value, dict) else "a list"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def compare_rows(a: list[dict], b: list[dict], metric: str, threshold: float) -> list[dict]:
    """Rows matched by model, backend, device and shape; `ratio` is B / A and `regression` says B is worse than A
    by more than `threshold` (0.1 = 10%) on `metric`. Rows in only one file come back with the other side None."""
    if not any(metric in row for row in a + b):
        raise UserError(f"neither file has '{metric}'", "--metric", "use a field of the results, e.g. latency_ms_p50")
    index_a, index_b = _index(a), _index(b)
    rows = []
    for key in list(index_a) + [k for k in index_b if k not in index_a]:
        value_a, value_b = index_a.get(key, {}).get(metric), index_b.get(key, {}).get(metric)
        ratio = value_b / value_a if value_a and value_b is not None else None
        rows.append({**dict(zip(KEY_FIELDS, key)), "metric": metric, "a": value_a, "b": value_b, "ratio": ratio,
                     "regression": ratio is not None and _worse(ratio, metric, threshold)})
    return rows


def _worse(ratio: float, metric: str, threshold: float) -> bool:
    return ratio < 1 - threshold if metric in HIGHER_IS_BETTER else ratio > 1 + threshold


def _index(rows: list[dict]) -> dict[tuple, dict]:
    return {tuple(row.get(f) for f in KEY_FIELDS): row for row in rows}


def _run_bench_rows(document: dict) -> list[dict]:
    """A run's bench.json: per model, PyTorch, ORT fp32 and each ORT variant, at the run's one shape."""
    settings = document["settings"]
    shape = {"device": "cpu", "batch_size": settings.get("batch_size"), "seq_len": settings.get("seq_len")}
    rows = []
    for model, entry in document["results"].items():
        timings = {"torch": entry.get("torch"), "ort": entry.get("ort"),
                   **{f"ort {variant}": t for variant, t in (entry.get("ort_variants") or {}).items()}}
        rows += [{"name": model, "backend": backend, **shape, "flops": entry.get("flops"), **timing}
                 for backend, timing in timings.items() if timing]
    return rows
