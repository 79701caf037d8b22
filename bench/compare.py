"""`bench compare A.json B.json`: the same measurements side by side, B over A, with regressions flagged.

Takes what `bench latency|memory|zoo --json` writes and a run folder's bench.json (from `compress run`).
"""

from __future__ import annotations

import json
from pathlib import Path

from compress.core.errors import UserError

KEY_FIELDS = ("name", "backend", "device", "batch_size", "seq_len")
# Where a bigger number is the better one; every other compared field (latency, memory) is better smaller.
HIGHER_IS_BETTER = ("throughput_samples_s", "throughput_tokens_s", "efficiency", "achieved_flops_s")


def load_rows(path: Path) -> list[dict]:
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError("file not found", str(path), "pass two files written by `bench ... --json`") from None
    except IsADirectoryError:
        raise UserError("is a folder, not a file", str(path),
                        "pass two files written by `bench ... --json` (a run's is <run folder>/bench.json)") from None
    except ValueError as err:
        raise UserError(f"not JSON ({err})", str(path), "pass two files written by `bench ... --json`") from None
    results = document.get("results") if isinstance(document, dict) else None
    if isinstance(results, list) and all(isinstance(row, dict) for row in results):
        return results
    if isinstance(results, dict) and "settings" in document:
        return _run_bench_rows(document)
    raise UserError("no results in it", str(path), "pass a file written by `bench ... --json` or a run's bench.json")


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
