"""What a run's trackers (`tracking:` in the config) get with the report: every model's final metrics, size and
latency. Each training's loss terms, learning rate and validation metric reach them through Accelerate
(compress.distill.trackers)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from compress.config import RunConfig
from compress.distill.trackers import mlflow_uri

FINAL = ("metric", "retained", "params", "size_mb", "torch_p50_ms", "ort_p50_ms", "speedup")
# What each model's report row says it is, kept as MLflow tags.
DESCRIBED = ("role", "student_kind", "family", "source", "precision", "prune_kind", "ort_kept")


def write_final_scalars(cfg: RunConfig, report: dict) -> None:
    """Each model's final figures: into tb/<model>/final (which each report rewrites, so a re-run does not stack a
    second copy) and into the model's latest MLflow run (a new one for a model that did not train, e.g. int8)."""
    for row in report["rows"]:
        values = {key: row.get(key) for key in FINAL} | {f"metrics/{k}": v for k, v in row["metrics"].items()}
        values = {key: value for key, value in values.items()
                  if isinstance(value, (int, float)) and not isinstance(value, bool)}
        if "tensorboard" in cfg.tracking:
            write_tensorboard_final(cfg.run_dir / "tb" / row["model"] / "final", values)
        if "mlflow" in cfg.tracking:
            write_mlflow_final(cfg, row, values)


def write_tensorboard_final(folder: Path, values: dict[str, float]) -> None:
    from tensorboardX import SummaryWriter

    shutil.rmtree(folder, ignore_errors=True)
    with SummaryWriter(str(folder)) as writer:
        for key, value in values.items():
            writer.add_scalar(f"final/{key}", value, 0)


def write_mlflow_final(cfg: RunConfig, row: dict, values: dict[str, float]) -> None:
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri(cfg.run_dir))
    experiment = mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", cfg.name))
    latest = mlflow.search_runs([experiment.experiment_id], f"tags.mlflow.runName = '{row['model']}'",
                                order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    with mlflow.start_run(run_id=latest[0].info.run_id if latest else None, run_name=row["model"],
                          experiment_id=experiment.experiment_id):
        mlflow.log_metrics({f"final/{key}": value for key, value in values.items()}, step=0)
        mlflow.set_tags({key: str(row[key]) for key in DESCRIBED if row.get(key) is not None})
