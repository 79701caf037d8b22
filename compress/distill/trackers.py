"""The experiment trackers one training logs to through Accelerate (`tracking:` in the config; compress.distill.loop
logs each step's loss terms and learning rate and each epoch's validation metric to them).

TensorBoard writes event files under the run folder's tb/<model>/. MLflow logs to the server MLFLOW_TRACKING_URI
names or, by default, to a SQLite store in the run folder (mlflow.db: MLflow 3 refuses its old file store), one
experiment per run (its name) and one MLflow run per training, named after the model. compress.report.tracking adds each
model's final figures with the report."""

from __future__ import annotations

import os
from pathlib import Path


def mlflow_uri(run_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


def trackers_for(names: tuple[str, ...], run_dir: Path, experiment: str, model: str) -> list:
    """What Accelerate's `log_with` takes for one model's training: tensorboard by name (it writes under
    `project_dir`), MLflow as a tracker made here, so the experiment is the run and the MLflow run the model."""
    trackers: list = []
    for name in names:
        if name == "mlflow":
            import mlflow
            from accelerate.tracking import MLflowTracker

            mlflow.set_tracking_uri(mlflow_uri(run_dir))  # MLflowTracker logs through mlflow's global client
            trackers.append(MLflowTracker(experiment_name=experiment, run_name=model,
                                          logging_dir=str((run_dir / "mlflow-artifacts").resolve()),
                                          nested_run=mlflow.active_run() is not None))  # inside a notebook's run
        else:
            trackers.append(name)
    return trackers
