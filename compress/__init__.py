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

from pathlib import Path

from compress.core.config import DEFAULT_CONFIG, RunConfig, load_config
from compress.core.errors import UserError

__all__ = ["DEFAULT_CONFIG", "RunConfig", "UserError", "evaluate_folder", "export", "load_config", "prune_folder",
           "quantize_folder", "run"]


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


def export(model_dir: str | Path, out_dir: str | Path, task: str | None = None, optimize: bool = True,
           quantize: list[str] | None = None, opset: int = 18) -> list[dict]:
    """`compress export` as a function: one saved model folder to ONNX in `out_dir` (see compress.verbs.folders)."""
    from compress.verbs.folders import export_folder

    return export_folder(Path(model_dir), Path(out_dir), task, optimize, quantize, opset)


def quantize_folder(model_dir: str | Path, out_dir: str | Path, method: str = "dynamic_int8",
                    task: str | None = None) -> dict:
    """`compress quantize` as a function: a PyTorch int8, bf16 or fp16 copy of one saved folder
    (compress.verbs.folders).
    (Not `quantize`: that name is the compress.compression.quantize module's.)"""
    from compress.verbs.folders import quantize_folder as quantize_one

    return quantize_one(Path(model_dir), Path(out_dir), method, task)


def prune_folder(model_dir: str | Path, out_dir: str | Path, structured: bool = True, head_ratio: float = 0.5,
                 ffn_ratio: float = 0.5, amount: float = 0.5, scope: str | None = None, task: str | None = None,
                 data_file: str | Path | None = None, steps: int = 1, epochs: int = 1, learning_rate: float = 5e-5,
                 importance: str = "magnitude", seed: int = 0, text_column: str = "text",
                 text_pair_column: str | None = None, label_column: str = "label", max_length: int = 128) -> dict:
    """`compress prune` as a function: a pruned copy of one saved folder, recovered on `data_file` when given (the
    unpruned model as teacher; compress.verbs.folders)."""
    from compress.verbs.folders import LabelledFile
    from compress.verbs.folders import prune_folder as prune_one

    data = LabelledFile(Path(data_file), text_column, text_pair_column, label_column,
                        max_length) if data_file is not None else None
    return prune_one(Path(model_dir), Path(out_dir), structured, head_ratio, ffn_ratio, amount, scope, task, data,
                     steps, epochs, learning_rate, importance, seed)


def evaluate_folder(model_dir: str | Path, data_file: str | Path, task: str | None = None, text_column: str = "text",
                    text_pair_column: str | None = None, label_column: str = "label", max_length: int = 128) -> dict:
    """`compress evaluate` as a function: a saved folder's metrics on a labelled file (compress.verbs.folders)."""
    from compress.verbs.folders import LabelledFile
    from compress.verbs.folders import evaluate_folder as evaluate_one

    return evaluate_one(Path(model_dir), LabelledFile(Path(data_file), text_column, text_pair_column, label_column,
                                                      max_length), task)
