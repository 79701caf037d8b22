"""The search's files: search/trials.csv and trials.json (one row per trial of the study: shape, size, latency,
metric, share of the teacher kept, state and why), and search/pareto.png (every trial a point, the Pareto front,
the budget line). Built from the study's trials alone, so every worker writes the same tables."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from compress.core.artifacts import write_bytes_atomic, write_json_atomic, write_text_atomic
from compress.search.space import describe_shape

COLUMNS = ("number", "state", "family", "shape", "num_layers", "hidden_size", "num_heads", "ffn_size",
           "embedding_size", "layers", "method", "learning_rate", "params", "flops", "latency_ms", "shipped_graph",
           "latency_ms_best_case", "metric", "retained", "within_budget", "on_front", "chosen", "epochs_run",
           "seconds", "why")
SHAPE_KEYS = ("num_layers", "hidden_size", "num_heads", "ffn_size", "embedding_size", "layers")


def trial_rows(trials: list, teacher_metric: float, required_metric: float, max_latency_ms: float | None) -> list[dict]:
    """One row per trial (Optuna FrozenTrials, any state), in trial order, with the columns of COLUMNS. A trial's
    record is its user attr "record" (compress.search.study); `within_budget`, `on_front` and `chosen` are judged
    here, from the budget and ceiling given."""
    again = retried(trials)
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        record = t.user_attrs.get("record") or {}
        shape = record.get("shape") or {}
        state = t.state.name.lower()
        metric = record.get("metric")
        why = record.get("why")
        if state == "fail" and why is None:
            why = "its worker stopped mid-trial" + (f"; retried as trial {again[t.number]}" if t.number in again
                                                    else "")
        complete = state == "complete"
        within = (complete and metric >= required_metric
                  and (max_latency_ms is None or record["latency_ms"] <= max_latency_ms))
        rows.append({
            "number": t.number, "state": state, "family": record.get("family"),
            "shape": describe_shape(record["family"], shape) if record.get("family") and shape else None,
            **{k: shape.get(k) for k in SHAPE_KEYS},
            "method": record.get("method"), "learning_rate": record.get("learning_rate"),
            "params": record.get("params"), "flops": record.get("flops"), "latency_ms": record.get("latency_ms"),
            "shipped_graph": record.get("shipped_graph"), "latency_ms_best_case": record.get("latency_ms_best_case"),
            "metric": metric, "retained": metric / teacher_metric if metric is not None and teacher_metric else None,
            "within_budget": within, "on_front": False, "chosen": False, "epochs_run": record.get("epochs_run"),
            "seconds": record.get("seconds"), "why": why,
            "latency_ms_by_graph": record.get("latency_ms_by_graph"), "epoch_metrics": t.user_attrs.get(
                "epoch_metrics"), "student": record.get("student")})
    for row in pareto_front([r for r in rows if r["state"] == "complete"]):
        row["on_front"] = True
    chosen = choose(rows)
    if chosen is not None:
        chosen["chosen"] = True
    return rows


def retried(trials: list) -> dict[int, int]:
    """Failed trial number -> the trial that runs it again (enqueued by compress.search.study for a worker killed on
    its machine, or by Optuna's heartbeat callback for one gone silent elsewhere)."""
    found = {t.user_attrs["retry_of"]: t.number for t in trials if "retry_of" in t.user_attrs}
    return found | {n: t.number for t in trials for n in t.system_attrs.get("retry_history", [])}


def pareto_front(rows: list[dict]) -> list[dict]:
    """The rows no other row beats on both counts (metric at least as high and latency at least as low, one of
    them strictly)."""
    def beaten(r: dict) -> bool:
        return any(o["metric"] >= r["metric"] and o["latency_ms"] <= r["latency_ms"]
                   and (o["metric"] > r["metric"] or o["latency_ms"] < r["latency_ms"]) for o in rows)

    return [r for r in rows if not beaten(r)]


def choose(rows: list[dict]) -> dict | None:
    """The fastest complete trial within the budget (and the ceiling); the better metric breaks a tie."""
    fits = [r for r in rows if r["within_budget"]]
    return min(fits, key=lambda r: (r["latency_ms"], -r["metric"], r["number"])) if fits else None


def closest(rows: list[dict]) -> dict | None:
    """Where the budget was not met: the complete trial that kept the most."""
    done = [r for r in rows if r["state"] == "complete"]
    return max(done, key=lambda r: (r["metric"], -r["latency_ms"])) if done else None


def kept_text(row: dict) -> str:
    """A trial's share of the teacher's metric, as the lines print it (n/a where the teacher scored 0)."""
    return "n/a" if row.get("retained") is None else f"{row['retained']:.1%}"


def write_search_files(folder: Path, rows: list[dict], about: dict, budget_label: str) -> None:
    """trials.csv, trials.json and pareto.png in `folder` (runs/<name>/search), each written atomically."""
    write_text_atomic(folder / "trials.csv", trials_csv(rows))
    write_json_atomic(folder / "trials.json", about | {"trials": rows})
    write_bytes_atomic(folder / "pareto.png", pareto_png(rows, about, budget_label))


def trials_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else (" ".join(map(str, row[k])) if isinstance(row[k], list)
                                                          else row[k]) for k in COLUMNS})
    return out.getvalue()


def pareto_png(rows: list[dict], about: dict, budget_label: str) -> bytes:
    """Validation metric against latency (log scale), every trial a point: trained trials as circles (those within
    the budget filled), trials halved after an epoch as crosses at their last epoch's metric, shapes over the
    latency ceiling as marks along the bottom (never trained, so no metric); the Pareto front as a staircase, the
    budget (and the ceiling) as lines, the chosen trial starred."""
    import matplotlib  # heavy: imported only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    complete = [r for r in rows if r["state"] == "complete"]
    halved = [r for r in rows if r["state"] == "pruned" and r["epoch_metrics"]]
    untrained = [r for r in rows if r["state"] == "pruned" and not r["epoch_metrics"]
                 and r["latency_ms_best_case"] is not None]
    within = [r for r in complete if r["within_budget"]]
    below = [r for r in complete if not r["within_budget"]]
    # Each kind of point only where there is one, so the legend lists what the plot shows.
    if within:
        ax.scatter([r["latency_ms"] for r in within], [r["metric"] for r in within], s=50, alpha=0.8,
                   color="tab:blue", label="trained, within the budget")
    if below:
        ax.scatter([r["latency_ms"] for r in below], [r["metric"] for r in below], s=50, facecolors="none",
                   edgecolors="tab:blue", label="trained, below the budget")
    if halved:
        ax.scatter([r["latency_ms_best_case"] for r in halved], [r["epoch_metrics"][-1] for r in halved], marker="x",
                   color="tab:orange", label="stopped early (successive halving): its last epoch")
    if untrained:  # no metric: marks along the bottom at their latency
        ax.scatter([r["latency_ms_best_case"] for r in untrained], [0.02] * len(untrained), marker="v", color="gray",
                   transform=ax.get_xaxis_transform(), label="over the latency ceiling (not trained)")
    for r in complete + halved:
        y = r["metric"] if r["state"] == "complete" else r["epoch_metrics"][-1]
        x = r["latency_ms"] if r["state"] == "complete" else r["latency_ms_best_case"]
        ax.annotate(f"#{r['number']}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = sorted((r for r in complete if r["on_front"]), key=lambda r: r["latency_ms"])
    if len(front) > 1:
        ax.plot([r["latency_ms"] for r in front], [r["metric"] for r in front], "--", color="gray",
                drawstyle="steps-post", label="Pareto front")
    chosen = [r for r in rows if r["chosen"]]
    if chosen:
        ax.scatter([chosen[0]["latency_ms"]], [chosen[0]["metric"]], marker="*", s=300, color="gold",
                   edgecolors="black", zorder=5, label=f"chosen: trial {chosen[0]['number']}")
    ax.axhline(about["required_metric"], color="crimson", linestyle=":", label=f"budget: {budget_label}")
    ax.axhline(about["teacher_metric"], color="black", linestyle="-.", linewidth=0.8, label="teacher")
    if about.get("max_latency_ms"):
        ax.axvline(about["max_latency_ms"], color="crimson", linestyle="--", linewidth=0.8, label="latency ceiling")
    if complete or halved or untrained:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"p50 latency of the graph that would ship, ms (batch {about['bench']['batch_size']}, "
                  f"{about['bench']['seq_len']} tokens; log scale)")
    ax.set_ylabel(f"{about['metric']} (validation split)")
    ax.set_title(f"{about['run']}: search, {len(rows)} trials")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=7, markerscale=0.7)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()
