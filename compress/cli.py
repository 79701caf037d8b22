"""`compress`: run the pipeline from one YAML, or check a YAML without running it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from compress.core.config import load_config
from compress.core.errors import UserError
from compress.entry import Quiet, Verbose, Version, run_app, set_verbosity
from compress.pipeline.declarations import GROUPS

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)  # its help: the callback's docstring

# The verbs on one model folder (export, quantize, prune, evaluate).
TaskOption = Annotated[Optional[str], typer.Option(help="classification | regression | ner | qa; default: from the "
                                                        "folder's config.json", show_default=False)]
VerbOutput = Annotated[Path, typer.Argument(help="the folder to write (new, empty or an earlier output of this "
                                                 "command: it is replaced)")]
# How compress evaluate and compress prune --data read a labelled CSV/TSV/JSONL/JSON/Parquet file.
TextColumn = Annotated[str, typer.Option(help="the text column (classification, regression)")]
TextPairColumn = Annotated[Optional[str], typer.Option(help="the second text of a pair", show_default=False)]
LabelColumn = Annotated[str, typer.Option(help="the label column (classification, regression)")]
MaxLength = Annotated[int, typer.Option(min=8, help="tokens per text (or pair), as the model was trained with")]


@app.callback()
def _group(version: Version = False, quiet: Quiet = False, verbose: Verbose = False) -> None:
    """Distil, prune, quantise, export and benchmark BERT-family models.

    Example: compress run configs/wnut16.yaml   (compress --install-completion: tab completion in your shell)
    """
    set_verbosity(quiet, verbose)


STAGE_NAMES = ", ".join(GROUPS)


@app.command()
def run(
    config: Annotated[Optional[Path], typer.Argument(help="run YAML; omit for the offline demo")] = None,
    start: Annotated[Optional[str], typer.Option(
        "--from", help=f"re-run this stage and every later one ({STAGE_NAMES})", show_default=False,
        autocompletion=lambda: list(GROUPS))] = None,
    only: Annotated[Optional[str], typer.Option(
        "--only", help=f"re-run this stage alone; earlier stages must have finished ({STAGE_NAMES})",
        show_default=False, autocompletion=lambda: list(GROUPS))] = None,
) -> None:
    """Run data -> teacher -> students -> prune -> quantize -> export -> bench -> report; resumes from the run
    folder (a stage that finished under the same settings is skipped).

    Example: compress run configs/wnut16.yaml --from bench   (re-measure a finished run on a quieter machine)
    """
    from compress import run as run_pipeline

    result = run_pipeline(config, start=start, only=only)
    if result.report is not None:
        files = [f"report.{ext}" for ext in ("json", "csv", "md", "html")] + ["pareto.png"]
        files += ["curves.png"] if (result.run_dir / "curves.png").is_file() else []
        files += [name for name in ("tb/", "mlflow.db") if (result.run_dir / name.rstrip("/")).exists()]
        typer.echo(f"report: {result.run_dir}/ ({', '.join(files)})")


@app.command()
def validate(config: Annotated[Path, typer.Argument(help="run YAML to check")]) -> None:
    """Check a run YAML (keys, types, values, what the models' config files refute, and the devices, models, data
    files, tracking store and run folder it names on this machine) without running anything.

    Example: compress validate configs/squad.yaml
    """
    from compress.pipeline.preflight import check_against_models, check_data_files_present, check_run_folder

    cfg = load_config(config)
    check_against_models(cfg)
    check_data_files_present(cfg)
    check_run_folder(cfg)
    trainings = [cfg.teacher.train] + [student.train for student in cfg.students]
    if cfg.device not in ("auto", "cpu") or cfg.bench.devices or \
            any(train.mixed_precision == "fp16" for train in trainings):  # torch is imported only for these
        from compress.pipeline.stages import run_device

        run_device(cfg)  # a device this machine lacks, fp16 training without a CUDA GPU: as the run refuses them
    if cfg.search is not None:  # what the teacher refutes of the search block (compress search checks it too)
        from compress.pipeline.preflight import layer_count, model_config
        from compress.search.space import check_search

        check_search(cfg, layer_count(model_config(cfg.teacher.model)))
    searched = f", a search of {', '.join(cfg.search.space.families)}" if cfg.search is not None else ""
    typer.echo(f"{config}: ok (run '{cfg.name}', {len(cfg.students)} student(s){searched}, output {cfg.run_dir})")


BUDGET_NOT_MET = 3  # compress search: the search ran and no trial kept the budget (no student chosen)


@app.command()
def search(
    config: Annotated[Path, typer.Argument(help="run YAML with a search: block")],
    storage: Annotated[Optional[str], typer.Option(
        help="Optuna storage URL shared by several workers (postgresql://..., mysql+pymysql://...); default "
             "sqlite in the run folder (search/study.db)", show_default=False)] = None,
    trials: Annotated[Optional[int], typer.Option(
        min=0, help="finished trials the study should hold (overrides search.trials; 0: no new trial, only the "
                    "tables and the chosen student)", show_default=False)] = None,
    timeout_minutes: Annotated[Optional[float], typer.Option(
        "--timeout-minutes", min=0.0, help="this process's wall-clock limit for trials (overrides search.minutes; "
                                           "a trial that has started finishes)", show_default=False)] = None,
) -> None:
    """Find the fastest student that keeps the search: block's budget (Optuna: metric up, latency down), then train
    it as a student of the run and add it to the report. Resumes from the run folder; several workers may run the
    same command on one --storage. Exit code 3: the search ran, and no trial kept the budget.

    Example: compress search configs/search.yaml --trials 30
    """
    from compress import search as search_students

    result = search_students(config, storage=storage, trials=trials, timeout_minutes=timeout_minutes)
    folder = result.run_dir / "search"
    typer.echo(f"trials: {folder}/ (trials.csv, trials.json, pareto.png)")
    if result.student is not None:
        typer.echo(f"chosen: {result.student} (snippet for students: {folder / 'chosen.yaml'}); "
                   f"report: {result.run_dir}/report.html")
    if result.budget_met is False:
        raise typer.Exit(BUDGET_NOT_MET)


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="a saved model folder (a run's teacher, student, pruned or bf16 row)")],
    output: Annotated[Path, typer.Argument(help="the folder to write (new, empty or an earlier export: it is "
                                                "replaced): model.onnx, config and tokenizer, variants")],
    task: TaskOption = None,
    optimize: Annotated[bool, typer.Option(help="also model_optimized.onnx (ORT's fusions)")] = True,
    quantize: Annotated[Optional[list[str]], typer.Option(
        help="dynamic int8 variants to add, repeatable: dynamic-qint8, dynamic-qint8-per-channel, dynamic-quint8, "
             "dynamic-quint8-per-channel", show_default=False)] = None,
    opset: Annotated[int, typer.Option(min=14)] = 18,
    runtime: Annotated[str, typer.Option(
        help="onnxruntime | openvino (also OpenVINO's graph in OUTPUT/openvino, which optimum-intel's OVModelFor* "
             "loads; needs the openvino extra)")] = "onnxruntime",
) -> None:
    """Export one saved model folder to ONNX, as the run's export stage does (optimum's layout for HF families, so
    ORTModelFor* loads it; torch.onnx for the custom transformer and the BiLSTM), each graph checked against PyTorch.

    Example: compress export runs/demo/students/custom-1x128 onnx/custom-1x128 --quantize dynamic-qint8
    """
    from compress import export as export_folder

    for f in export_folder(model, output, task, optimize, quantize, opset, runtime):
        parity = "" if f["parity_max_abs_diff"] is None else f", max |ONNX - PyTorch| {f['parity_max_abs_diff']:.1e}"
        typer.echo(f"{output / f['file']}: {f['size_mb']:.1f} MB{parity}")


@app.command()
def quantize(
    model: Annotated[Path, typer.Argument(help="a saved fp32 model folder (a run's teacher, student or pruned model)")],
    output: VerbOutput,
    method: Annotated[str, typer.Option(help="dynamic_int8 (Linear and LSTM weights, CPU kernels) | bf16 | fp16")]
    = "dynamic_int8",
    task: TaskOption = None,
) -> None:
    """Quantise one saved model folder in PyTorch, as a run's quantize stage does (ONNX Runtime int8: compress export
    --quantize). Prints the size and the largest output difference from the source on random inputs.

    Example: compress quantize runs/demo/students/minilm-l3 int8/minilm-l3
    """
    from compress import quantize_folder

    out = quantize_folder(model, output, method, task)
    typer.echo(f"{output}: {out['method']}, {out['size_mb']:.1f} MB (from {out['source_size_mb']:.1f} MB), "
               f"max |{out['method']} - fp32| {out['max_abs_diff']:.1e} on random inputs")


@app.command()
def prune(
    model: Annotated[Path, typer.Argument(help="a saved fp32 model folder")],
    output: VerbOutput,
    structured: Annotated[bool, typer.Option("--structured/--unstructured", help="remove whole heads and FFN "
                                             "neurons (the matrices shrink), or zero single weights (L1)")] = True,
    head_ratio: Annotated[float, typer.Option(help="structured: share of attention heads to remove")] = 0.5,
    ffn_ratio: Annotated[float, typer.Option(help="structured: share of FFN neurons to remove")] = 0.5,
    amount: Annotated[float, typer.Option(help="unstructured: share of the encoder's weights to zero")] = 0.5,
    scope: Annotated[Optional[str], typer.Option(help="structured: local | global; unstructured: global | "
                                                      "per_layer", show_default=False)] = None,
    task: TaskOption = None,
    data: Annotated[Optional[Path], typer.Option(help="a labelled file of the model's task to recover on after each "
                                                      "step (KD from the unpruned model), read as compress evaluate "
                                                      "reads it; each step is scored on it (not held out)",
                                                      show_default=False)] = None,
    steps: Annotated[int, typer.Option(min=1, help="reach the target in this many prune + recover steps (needs "
                                                   "--data)")] = 1,
    epochs: Annotated[int, typer.Option(min=0, help="recovery epochs per step (with --data)")] = 1,
    learning_rate: Annotated[float, typer.Option(help="recovery learning rate")] = 5e-5,
    importance: Annotated[str, typer.Option(help="structured: magnitude (the weights' L1) or taylor (|weight x "
                                                 "gradient| over batches of --data)")] = "magnitude",
    seed: Annotated[int, typer.Option(min=0)] = 0,
    text_column: TextColumn = "text",
    text_pair_column: TextPairColumn = None,
    label_column: LabelColumn = "label",
    max_length: MaxLength = 128,
) -> None:
    """Prune one saved model folder: by its weights' L1 in one step; with --data, in --steps prune + recover steps,
    each recovered by KD from the unpruned model on the file (a run's prune: entry recovers from the teacher).

    Example: compress prune runs/demo/students/minilm-l3 pruned/minilm-l3-heads50 --head-ratio 0.5 --ffn-ratio 0.3
    --data train.csv --steps 2
    """
    from pydantic import ValidationError

    from compress import LabelledFile, prune_folder
    from compress.core.config import RecoveryConfig, StructuredPrune, UnstructuredPrune

    if not structured and importance != "magnitude":
        raise UserError("unstructured pruning ranks weights by their L1 alone", "--importance",
                        "leave --importance out, or prune --structured")
    try:  # the options as a run's prune: entry (its name and model are not read)
        entry = {"name": "prune", "model": "model", "steps": steps,
                 "recovery": RecoveryConfig(epochs=epochs, learning_rate=learning_rate)}
        spec = (StructuredPrune(head_ratio=head_ratio, ffn_ratio=ffn_ratio, scope=scope or "local",
                                importance=importance, **entry) if structured
                else UnstructuredPrune(amount=amount, scope=scope or "global", **entry))
    except ValidationError as err:
        problem = err.errors()[0]
        raise UserError(problem["msg"], f"--{'-'.join(map(str, problem['loc'])).replace('_', '-') or 'options'}",
                        "see compress prune --help") from None
    labelled = LabelledFile(data, text_column, text_pair_column, label_column, max_length) if data is not None else None
    out = prune_folder(model, output, spec, labelled, task, seed)
    recovered = (f"; {', '.join(f'{m:.4f}' for m in out['metric_after_steps'])} on {data.name} after each step"
                 if out["metric_after_steps"] else "")
    typer.echo(f"{output}: {out['params']:,} parameters (from {out['params_before']:,}), sparsity "
               f"{out['sparsity']:.1%}{recovered}")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="a saved model folder (any row of a run, or a compress quantize/prune "
                                               "output), or an ONNX export folder (every graph in it is scored)")],
    data: Annotated[Path, typer.Option(help="a labelled file: CSV/TSV/JSONL/JSON/Parquet (classification, "
                                            "regression), CoNLL columns (ner), SQuAD JSON (qa)")],
    task: TaskOption = None,
    text_column: TextColumn = "text",
    text_pair_column: TextPairColumn = None,
    label_column: LabelColumn = "label",
    max_length: MaxLength = 128,
) -> None:
    """Score one saved model folder on a labelled file, read and encoded as a run reads its test split; class and
    tag names are matched to the model's labels.

    Example: compress evaluate runs/demo/students/custom-1x128 --data my_test.csv --text-column body
    """
    from compress import evaluate_folder

    out = evaluate_folder(model, data, task, text_column, text_pair_column, label_column, max_length)
    graphs = [(model / g["graph"], g["metrics"]) for g in out.get("graphs", [])]  # an ONNX export folder's
    for name, metrics in graphs or [(model, out["metrics"])]:
        others = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != out["metric"] and isinstance(v, float))
        typer.echo(f"{name}: {out['metric']} {metrics[out['metric']]:.4f} on {out['examples']} examples"
                   + (f" ({others})" if others else ""))


@app.command()
def answer(
    model: Annotated[Path, typer.Option(help="a saved QA model folder (teacher or student of a qa run)")],
    question: Annotated[str, typer.Option(help="the question")],
    context: Annotated[str, typer.Option(help="the text that holds the answer")],
    max_length: Annotated[int, typer.Option(min=16)] = 384,
    max_answer_length: Annotated[int, typer.Option(min=1)] = 30,
) -> None:
    """Answer a question from a context with a trained QA model.

    Example: compress answer --model runs/squad/teacher --question "Who wrote it?" --context "It was written by Ada."
    """
    from compress.verbs.inference import answer_question  # model libraries load only for commands that run models

    typer.echo(answer_question(model, question, context, max_length=max_length, max_answer_length=max_answer_length))


@app.command()
def tag(
    model: Annotated[Path, typer.Option(help="a saved NER model folder (teacher or student of an ner run)")],
    text: Annotated[str, typer.Option(help="the text to tag (words split on whitespace)")],
) -> None:
    """Print the entities a trained NER model finds: type, text, character span.

    Example: compress tag --model runs/wnut16/teacher --text "Taylor Swift played Madison Square Garden"
    """
    from compress.verbs.inference import tag_text  # model libraries load only for commands that run models

    for entity in tag_text(model, text):
        typer.echo(f"{entity.type}\t{entity.text}\t{entity.start_char}-{entity.end_char}")


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
