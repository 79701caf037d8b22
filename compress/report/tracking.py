"""What a run's trackers (`tracking:` in the config) get with the report: every model's final metrics, size and
latency. Each training's loss terms, learning rate and validation metric reach them through Accelerate
(compress.distill.trackers)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from compress.core.config import RunConfig
from compress.distill.trackers import mlflow_uri

FINAL = ("metric", "retained", "params", "size_mb", "torch_p50_ms", "ort_p50_ms", "speedup")
# What each model's report row says it is, kept as MLflow tags.
DESCRIBED = ("role", "student_kind", "family", "source", "precision", "prune_kind", "ort_kept")


def write_final_scalars(cfg: RunConfig, report: dict) -> None:
    """Each model's final figures: into tb/<model>/final (which each report rewrites, so a re-run does not stack a
    second copy) and into the latest MLflow run named after the model: its training's, or a new run for a model that
    did not train under its own name (int8 and half-precision rows; a pruned model, whose recoveries are
    <name>.step<N>)."""
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
    """Through a client of its own, so that no run is left active in mlflow's global state (a notebook's own run, if
    it has one, is not touched)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    client = MlflowClient(mlflow_uri(cfg.run_dir))
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", cfg.name)
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    latest = client.search_runs([experiment_id], f"tags.mlflow.runName = '{row['model']}'",
                                order_by=["attributes.start_time DESC"], max_results=1)
    run_id = latest[0].info.run_id if latest else client.create_run(experiment_id, run_name=row["model"]).info.run_id
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(f"final/{key}", value, now, 0) for key, value in values.items()],
                     tags=[RunTag(key, str(row[key])) for key in DESCRIBED if row.get(key) is not None])
    if not latest:
        client.set_terminated(run_id)
