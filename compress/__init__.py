"""bert-compress as a library: the same run as `compress run`, from Python.

    from compress import load_config, run
    cfg = load_config("configs/demo.yaml").model_copy(update={"name": "notebook"})
    result = run(cfg)                     # resumes: a stage that finished under the same settings is skipped
    for row in result.report["rows"]:
        print(row["model"], row["metric"], row["speedup"])

`run` also takes a YAML path, or nothing (the offline default); `RunConfig.model_validate({...})` builds a config
in code. A mistake in the config or the data raises `UserError` (its `.line()` is what the CLI prints). Model
libraries load on the first `run`, so `import compress` stays light.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from compress.core.config import DEFAULT_CONFIG, PruneConfig, RunConfig, load_config
from compress.core.errors import UserError
from compress.verbs.labelled_file import LabelledFile

# The search layer's package, imported before the `search` function below takes its name: importing a submodule
# binds the package to its parent's attribute only on the package's first import, so the function keeps the name
# once `from compress.search.study import ...` runs (the package's __init__ imports nothing).
from compress import search as _search_package  # noqa: F401, E402  isort: skip

__all__ = ["DEFAULT_CONFIG", "LabelledFile", "RunConfig", "UserError", "evaluate_folder", "export", "load_config",
           "prune_folder", "quantize_folder", "run", "search"]


def run(config: RunConfig | str | Path | None = None, *, start: str | None = None, only: str | None = None):
    """Run (or resume) the pipeline; `start`/`only` re-run from a stage or one stage alone, as --from/--only do.
    Returns a RunResult: `run_dir`, `report` (report.json's content), and the stages `ran` and `skipped`."""
    if config is None:
        config = DEFAULT_CONFIG
    elif not isinstance(config, RunConfig):
        config = load_config(Path(config))  # before the heavy imports, so a config mistake is reported at once
    from compress.pipeline.pipeline import run as run_pipeline  # torch and transformers load here, not on import
    from compress.pipeline.resume import StageSelection

    return run_pipeline(config, StageSelection(start=start, only=only))


def search(config: RunConfig | str | Path, *, storage: str | None = None, trials: int | None = None,
           timeout_minutes: float | None = None):
    """`compress search` as a function: find the fastest student within the config's `search:` budget, train it as
    a student of the run and report it (compress.search.study; docs/search.md). `storage` is an Optuna storage URL
    (default: search/study.db in the run folder); `trials` (finished trials the study should hold) and
    `timeout_minutes` (this call's limit) override the block's effort. Returns a SearchResult: `rows` (every
    trial), `chosen` (its row, or None), `student` (its name in the run), `budget_met`, `report`."""
    if not isinstance(config, RunConfig):
        config = load_config(Path(config))
    from compress.search.study import search as run_search  # optuna, torch and transformers load here

    return run_search(config, storage=storage, trials=trials, minutes=timeout_minutes)


def export(model_dir: str | Path, out_dir: str | Path, task: str | None = None, optimize: bool = True,
           quantize: list[str] | None = None, opset: int = 18, runtime: str = "onnxruntime") -> list[dict]:
    """`compress export` as a function: one saved model folder to ONNX in `out_dir`, and with runtime "openvino"
    to OpenVINO beside it (see compress.verbs.folders)."""
    from compress.verbs.folders import export_folder

    return export_folder(Path(model_dir), Path(out_dir), task, optimize, quantize, opset, runtime)


def quantize_folder(model_dir: str | Path, out_dir: str | Path, method: str = "dynamic_int8",
                    task: str | None = None) -> dict:
    """`compress quantize` as a function: a PyTorch int8, bf16 or fp16 copy of one saved folder
    (compress.verbs.folders).
    (Not `quantize`: that name is the compress.compression.quantize module's.)"""
    from compress.verbs.folders import quantize_folder as quantize_one

    return quantize_one(Path(model_dir), Path(out_dir), method, task)


def prune_folder(model_dir: str | Path, out_dir: str | Path, spec: PruneConfig,
                 data: str | Path | LabelledFile | None = None, task: str | None = None, seed: int = 0) -> dict:
    """`compress prune` as a function: a pruned copy of one saved folder by `spec`, a prune entry as a run's YAML
    writes it (its name and model are not read), recovered on `data` when given (a labelled file: a path, read
    with the default columns, or a LabelledFile), the unpruned model as teacher (compress.verbs.folders).

        from compress import LabelledFile, prune_folder
        from compress.core.config import StructuredPrune
        spec = StructuredPrune(name="heads50", model="minilm-l3", head_ratio=0.5, ffn_ratio=0.3, steps=2)
        prune_folder("runs/demo/students/minilm-l3", "pruned/heads50", spec, LabelledFile("train.csv"))
    """
    from compress.verbs.folders import prune_folder as prune_one

    if data is not None:
        data = replace(data, path=Path(data.path)) if isinstance(data, LabelledFile) else LabelledFile(Path(data))
    return prune_one(Path(model_dir), Path(out_dir), spec, data, task, seed)


def evaluate_folder(model_dir: str | Path, data_file: str | Path, task: str | None = None, text_column: str = "text",
                    text_pair_column: str | None = None, label_column: str = "label", max_length: int = 128) -> dict:
    """`compress evaluate` as a function: a saved folder's metrics on a labelled file (compress.verbs.folders)."""
    from compress.verbs.folders import evaluate_folder as evaluate_one

    return evaluate_one(Path(model_dir), LabelledFile(Path(data_file), text_column, text_pair_column, label_column,
                                                      max_length), task)
