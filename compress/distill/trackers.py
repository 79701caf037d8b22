"""The experiment trackers one training logs to through Accelerate (`tracking:` in the config; compress.distill.loop
logs each step's loss terms and learning rate and each epoch's validation metric to them).

TensorBoard writes event files under the run folder's tb/<model>/. MLflow logs to the server MLFLOW_TRACKING_URI
names or, by default, to a SQLite store in the run folder (mlflow.db: MLflow 3 refuses its old file store), one
experiment per run (its name) and one MLflow run per training, named after the model. compress.report.tracking adds each
model's final figures with the report."""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from compress.core.errors import UserError


def mlflow_uri(run_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


TRACKING_URI = "MLFLOW_TRACKING_URI"
USE_INSTEAD = "set it to sqlite:///<folder>/mlflow.db or a tracking server's http:// address, or unset it for " \
              "mlflow.db in the run folder"
# The ports of the databases MLflow's SQLAlchemy store takes, where the URI names none.
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient"}  # where the module's name is not the pip's


def check_mlflow_target(timeout_s: float = 5.0) -> None:
    """The store MLFLOW_TRACKING_URI names, checked before a run writes anything (and by `compress validate`): a
    server that does not answer within `timeout_s` (MLflow itself retries for minutes, then fails with a traceback),
    MLflow 3's file store (refused unless MLFLOW_ALLOW_FILE_STORE is set), a SQLite file that cannot be made, a
    database that does not answer or whose driver is not installed. Unset, MLflow logs to mlflow.db in the run
    folder, which is written with the run."""
    uri = os.environ.get(TRACKING_URI, "").strip()
    if not uri:
        return
    scheme = urlparse(uri).scheme.lower()
    if scheme in ("", "file") or len(scheme) == 1:  # a bare path (a drive letter on Windows) is a file store too
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("true", "1"):
            raise UserError(f"'{uri}' is a file store, which MLflow 3 no longer writes to", TRACKING_URI, USE_INSTEAD)
        return
    if scheme in ("http", "https"):
        _check_server_answers(uri, timeout_s)
    elif scheme == "sqlite":
        _check_sqlite_file(uri)
    elif scheme.split("+")[0] in DATABASE_PORTS:
        _check_database_answers(uri, scheme, timeout_s)


def _check_server_answers(uri: str, timeout_s: float) -> None:
    """Any HTTP answer will do (an MLflow server behind a proxy may answer its root with 404 or 401); no answer, or
    no connection, is refused."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            return
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        why = f"no answer within {timeout_s:g} s" if isinstance(reason, TimeoutError | socket.timeout) else \
            str(getattr(reason, "strerror", None) or reason)
        raise UserError(f"the MLflow server at {uri} cannot be reached ({why})", TRACKING_URI,
                        f"start the server or fix the address, or {USE_INSTEAD}") from None


def _check_sqlite_file(uri: str) -> None:
    """sqlite:///relative.db or sqlite:////absolute.db: MLflow makes the file and the folders above it."""
    path = uri.split(":///", 1)[1] if ":///" in uri else ""
    if path in ("", ":memory:"):
        return
    db = Path(path).expanduser()
    if db.is_dir():
        raise UserError(f"{db} is a folder, not a SQLite file", TRACKING_URI, "name a .db file, e.g. "
                        f"sqlite:///{db / 'mlflow.db'}")
    folder = db.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UserError(f"the SQLite file {db} cannot be made: {folder} is "
                        f"{'a file' if folder.is_file() else 'not writable'}", TRACKING_URI, USE_INSTEAD)


def _check_database_answers(uri: str, scheme: str, timeout_s: float) -> None:
    parsed = urlparse(uri)
    try:
        from sqlalchemy.engine import make_url  # installed with mlflow

        make_url(uri).get_dialect().import_dbapi()
    except ImportError as err:
        package = DRIVER_PACKAGES.get(err.name or "", err.name or "the driver")
        raise UserError(f"the {scheme} driver is not installed ({err.name or err})", TRACKING_URI,
                        f"pip install {package}, or {USE_INSTEAD}") from None
    except Exception:  # a URI SQLAlchemy cannot parse: MLflow says why when it connects
        return
    host, port = parsed.hostname, parsed.port or DATABASE_PORTS[scheme.split("+")[0]]
    if not host:
        return
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as err:
        raise UserError(f"the {scheme.split('+')[0]} database at {host}:{port} cannot be reached "
                        f"({err.strerror or 'no answer'})", TRACKING_URI,
                        f"start the database or fix the address, or {USE_INSTEAD}") from None


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
