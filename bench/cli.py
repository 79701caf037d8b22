"""`bench`: measure models on this machine -- run folders, .onnx and OpenVINO .xml files, HF model folders and zoo
shapes.

Each command imports what it measures with inside its function, so `bench --help` and a mistyped flag answer
at once instead of after loading torch, transformers and ONNX Runtime."""

from __future__ import annotations

import contextlib
import json as json_module  # the commands' --json option is named json
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from compress.core.errors import UserError
from compress.entry import Quiet, Verbose, Version, run_app, set_verbosity

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)  # its help: the callback's docstring

TARGETS_HELP = "run folders, .onnx or OpenVINO .xml files, HF model folders or zoo names (bench zoo --help lists them)"
Targets = Annotated[list[str], typer.Argument(help=TARGETS_HELP, show_default=False)]
Device = Annotated[str, typer.Option(help="cpu | cuda | mps")]
Backends = Annotated[list[str] | None, typer.Option(
    "--backend", help="torch | ort | openvino, repeatable; default: each target's own (.onnx: ort, .xml: openvino, "
                      "folders and zoo: torch, run folders: both). A PyTorch model on ort is exported first; on "
                      "openvino (CPU only), exported and converted.", show_default=False)]
BatchSizes = Annotated[str, typer.Option("--batch-sizes", "--batch-size", help="comma-separated, e.g. 1,8,32")]
SeqLens = Annotated[str, typer.Option("--seq-lens", "--seq-len", help="comma-separated, e.g. 32,128")]
Warmup = Annotated[int, typer.Option(min=0, help="untimed calls first")]
Iters = Annotated[int, typer.Option(min=3, help="timed calls (at least)")]
MinSeconds = Annotated[float, typer.Option(min=0.0, help="time each model for at least this long")]
Threads = Annotated[int | None, typer.Option(min=1, help="intra-op threads (PyTorch, ORT and OpenVINO); default: all")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="write the result as JSON (- : to stdout, instead of "
                                                               "the table)", show_default=False)]
CsvOut = Annotated[Path | None, typer.Option("--csv", help="write the rows as CSV", show_default=False)]
Task = Annotated[str, typer.Option(help="head for zoo shapes: classification | regression | ner | qa")]


@app.callback()
def _group(version: Version = False, quiet: Quiet = False, verbose: Verbose = False) -> None:
    """Latency, memory and profiles of models, measured on this machine.

    Example: bench latency runs/demo --device cpu   (bench --install-completion: tab completion in your shell)
    """
    set_verbosity(quiet, verbose)


@app.command()
def latency(targets: Targets, device: Device = "cpu", backend: Backends = None, batch_sizes: BatchSizes = "1",
            seq_lens: SeqLens = "128", warmup: Warmup = 5, iters: Iters = 30, min_seconds: MinSeconds = 0.0,
            threads: Threads = None, task: Task = "classification", json: JsonOut = None,
            csv: CsvOut = None) -> None:
    """p50/p90/p95/p99, mean, std and throughput of each target at each batch size and sequence length, timed
    side by side; FLOPs and efficiency (achieved FLOP/s over this machine's GEMM peak) beside them.

    Example: bench latency bert-base runs/demo/exports/custom-1x128/model.onnx --batch-sizes 1,8 --json lat.json
    """
    settings = _settings(locals())
    from bench.measure import latency_rows

    _setup(device, threads)
    with tempfile.TemporaryDirectory() as exports:
        runnables = _resolve(targets, backend, Path(exports), task)
        rows = latency_rows(runnables, device, _ints(batch_sizes, "--batch-sizes"), _ints(seq_lens, "--seq-lens"),
                            warmup, iters, min_seconds, threads)
    _finish("latency", settings, rows, json, csv, _latency_table(rows, f"latency on {device}", device))


@app.command()
def memory(targets: Targets, device: Device = "cpu", backend: Backends = None, batch_size: int = 1,
           seq_len: int = 128, iters: Annotated[int, typer.Option(min=1, help="forwards run")] = 5,
           threads: Threads = None, task: Task = "classification",
           json: JsonOut = None, csv: CsvOut = None) -> None:
    """Peak process RSS (and how much the model added to it), CUDA max allocated, MPS current and driver
    allocated: each target loaded and run in a fresh process. "n/a" where a device has no such figure.

    Example: bench memory runs/demo --device cpu
    """
    settings = _settings(locals())
    from bench.memory import memory_rows

    _setup(device, threads)
    with tempfile.TemporaryDirectory() as exports:
        rows = memory_rows(_resolve(targets, backend, Path(exports), task), device, batch_size, seq_len, iters,
                           threads)
    table = _table(f"memory on {device}, batch {batch_size}, {seq_len} tokens", rows, {
        "name": "model", "backend": "backend", "peak_rss_mb": "peak RSS MB", "rss_increase_mb": "model RSS MB",
        "cuda_max_allocated_mb": "CUDA max MB", "mps_current_allocated_mb": "MPS MB",
        "mps_driver_allocated_mb": "MPS driver MB"})
    _finish("memory", settings, rows, json, csv, table)


@app.command()
def profile(target: Annotated[str, typer.Argument(help="one model: " + TARGETS_HELP)], device: Device = "cpu",
            backend: Backends = None, batch_size: int = 1, seq_len: int = 128, warmup: Warmup = 3,
            iters: Annotated[int, typer.Option(min=1)] = 10, top: int = 15, threads: Threads = None,
            task: Task = "classification",
            trace: Annotated[Path, typer.Option(help="Chrome trace file to write")] = Path("bench-trace.json"),
            json: JsonOut = None, csv: CsvOut = None) -> None:
    """Top operators by self time per forward (torch.profiler; ONNX Runtime's profile per operator type) and a
    Chrome trace of the profiled forwards.

    Example: bench profile bert-base --backend torch --trace trace.json   (open it in chrome://tracing)
    """
    settings = _settings(locals())
    from bench.profile import profile_runnable, refuse_openvino

    if backend and "openvino" in backend:
        refuse_openvino(target)  # before anything is exported or converted
    _setup(device, threads)
    with tempfile.TemporaryDirectory() as exports:
        runnables = _resolve([target], backend, Path(exports), task)
        if len(runnables) != 1:
            raise UserError(f"profile takes one model on one backend; this names {len(runnables)}", target,
                            "name one model folder or .onnx file, or pass one --backend")
        rows = profile_runnable(runnables[0], device, batch_size, seq_len, warmup, iters, top, trace)
    table = _table(f"{runnables[0].name} on {runnables[0].backend}/{device}: top operators per forward", rows, {
        "operator": "operator", "calls_per_forward": "calls", "self_ms_per_forward": "self ms",
        "total_ms_per_forward": "total ms", "share": "share"})
    _finish("profile", settings, rows, json, csv, table, trace=str(trace))


@app.command()
def compare(a: Annotated[Path, typer.Argument(help="baseline: a `bench --json` file or a run's bench.json")],
            b: Annotated[Path, typer.Argument(help="candidate, the same kinds of file")],
            metric: Annotated[str, typer.Option(help="field to compare")] = "latency_ms_p50",
            threshold: Annotated[float, typer.Option(min=0.0, help="0.1: flag B worse than A by more than 10%")] = 0.1,
            json: JsonOut = None, csv: CsvOut = None) -> None:
    """B next to A with the ratio B/A; exits 1 when a row regressed past the threshold.

    Example: bench compare before.json runs/demo/bench.json --threshold 0.1
    """
    settings = _settings(locals())
    from bench.compare import compare_rows, load_rows

    rows = compare_rows(load_rows(a, metric), load_rows(b, metric), metric, threshold)
    table = _table(f"{metric}: {b} over {a} (regression past {threshold:.0%})", rows, {
        "name": "model", "backend": "backend", "batch_size": "batch", "seq_len": "tokens", "a": "A", "b": "B",
        "ratio": "B/A", "regression": "regression"})
    _finish("compare", settings, rows, json, csv, table)
    regressions = [r for r in rows if r["regression"]]
    if regressions:
        typer.echo(f"{len(regressions)} regression(s) past {threshold:.0%} on {metric}", err=True)
        raise typer.Exit(1)


@app.command()
def zoo(names: Annotated[list[str] | None, typer.Argument(help="zoo shapes; default: all", show_default=False)] = None,
        device: Device = "cpu", batch_size: int = 1, seq_len: int = 128, warmup: Warmup = 3, iters: Iters = 20,
        threads: Threads = None, task: Task = "classification", json: JsonOut = None, csv: CsvOut = None) -> None:
    """The architecture-only table: BERT-base, DistilBERT-base, TinyBERT-4, MobileBERT, our custom transformer and
    BiLSTM, with random weights -- exact params, FLOPs, PyTorch, ONNX Runtime and (on the CPU, where it is installed)
    OpenVINO latency timed side by side, and speed-up over BERT-base on each backend.

    Example: bench zoo bert-base tinybert-4 --device cuda
    """
    settings = _settings(locals())
    from bench.measure import add_speedups, latency_rows
    from compress.models.zoo import ZOO
    from compress.report.anchors import add_zoo_anchors
    from exports.openvino import openvino_installed

    _setup(device, threads)
    unknown = [n for n in names or [] if n not in ZOO]
    if unknown:
        raise UserError(f"not a zoo shape: {', '.join(unknown)}", "bench zoo", f"zoo names: {', '.join(ZOO)}")
    backends = ["torch", "ort"] if device != "mps" else ["torch"]  # ONNX Runtime has no MPS provider
    if device == "cpu" and openvino_installed():  # an optional extra, run here on the CPU only
        backends.append("openvino")
    with tempfile.TemporaryDirectory() as exports:
        runnables = _resolve(names or list(ZOO), backends, Path(exports), task)
        rows = latency_rows(runnables, device, [batch_size], [seq_len], warmup, iters, 0.0, threads)
    add_speedups(rows, reference="bert-base")
    add_zoo_anchors(rows)
    _finish("zoo", settings, rows, json, csv,
            _zoo_table(rows, f"zoo on {device}, batch {batch_size}, {seq_len} tokens", device))


# ---------------------------------------------------------------- helpers


def _settings(arguments: dict) -> dict:
    """The command's arguments as the JSON records them; the files it will write are checked first, so a
    measurement is never lost to a folder that cannot be written."""
    if str(arguments.get("csv")) == "-" or str(arguments.get("trace")) == "-":
        raise UserError("only --json writes to stdout (-)", "--csv / --trace", "name a file")
    outputs = {option: arguments[option] for option in ("json", "csv", "trace")
               if arguments.get(option) is not None and str(arguments[option]) != "-"}
    for option, path in outputs.items():
        _check_writable(path, f"--{option}")
    same = [f"--{option}" for option, path in outputs.items()
            if [p.absolute() for p in outputs.values()].count(path.absolute()) > 1]
    if same:
        raise UserError(f"{' and '.join(same)} name the same file, so one would overwrite the other",
                        f"{same[0]} {outputs[same[0][2:]]}", "give each its own file")
    return {k: str(v) if isinstance(v, Path) else v for k, v in arguments.items()}


def _check_writable(path: Path, option: str) -> None:
    """The file can be written, tried before anything is measured: not a folder, and a file can be made where it
    goes (its missing folders are made for the try and removed again, so nothing is left if the command fails)."""
    made, failed = [], f"cannot write {path}"
    try:  # (a name too long for the file system fails even the look: OSError from is_dir())
        if path.is_dir():
            raise UserError("is a folder, not a file", f"{option} {path}", "name a file to write")
        folder = path.absolute().parent
        missing = []
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        failed = f"cannot write into {folder}"
        if not folder.is_dir():
            raise NotADirectoryError(f"{folder} is a file")
        for new in reversed(missing):
            failed = f"cannot make the folder {new}"
            new.mkdir()
            made.append(new)
        failed = f"cannot write into {path.absolute().parent}"
        with tempfile.TemporaryFile(dir=path.absolute().parent):
            pass
    except OSError as err:  # a read-only disk, a folder without write permission, a file where a folder must be
        reason = "a file is there" if isinstance(err, NotADirectoryError | FileExistsError) else err.strerror
        raise UserError(f"{failed} ({reason})", f"{option} {path}", "pick a writable path") from None
    finally:
        for new in reversed(made):
            with contextlib.suppress(OSError):  # another process may have written into it meanwhile
                new.rmdir()


def _setup(device: str, threads: int | None) -> None:
    import torch

    from bench.devices import check_device

    check_device(device)
    if threads:
        torch.set_num_threads(threads)


def _resolve(targets: list[str], backends: list[str] | None, export_dir: Path, task: str) -> list:
    from bench.targets import BACKENDS, resolve
    from compress.data.tasks import TASKS

    bad = [b for b in backends or [] if b not in BACKENDS]
    if bad:
        raise UserError(f"unknown backend '{bad[0]}'", "--backend", "use torch, ort or openvino")
    if task not in TASKS:
        raise UserError(f"unknown task '{task}'", "--task", "use classification, regression, ner or qa")
    return [r for target in targets for r in resolve(target, backends, export_dir, task)]


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise UserError(f"'{text}' is not a list of positive whole numbers", option, "e.g. 1,8,32")
    return values


def _finish(command: str, settings: dict, rows: list[dict], json_path: Path | None, csv_path: Path | None,
            table, **extra: object) -> None:
    from bench.results import result_document, write_outputs
    from compress.core.progress import console

    to_stdout = str(json_path) == "-"  # the JSON alone on stdout, for a pipe
    if not to_stdout:
        quiet, console.quiet = console.quiet, console.quiet and bool(json_path or csv_path)
        console.print(table)  # without a file to write, the table is the result: --quiet leaves it
        console.quiet = quiet
    if json_path or csv_path:
        if command in ("latency", "zoo"):
            extra["gemm_peak_flops_s"] = _gemm_peak(settings["device"])
        document = result_document(command, settings, rows, **extra)
        if to_stdout:
            typer.echo(json_module.dumps(document, indent=2))
            json_path = None
        write_outputs(document, json_path, csv_path)
        written = ", ".join(str(p) for p in (json_path, csv_path) if p)
        if written:
            typer.echo(f"written: {written}", err=to_stdout)  # beside JSON on stdout: on stderr


def _table(title: str, rows: list[dict], columns: dict[str, str]):
    from rich.table import Table

    table = Table(title=title)
    for key, header in columns.items():
        table.add_column(header, justify="left" if key in ("name", "backend", "operator") else "right")
    for row in rows:
        table.add_row(*(_cell(key, row.get(key)) for key in columns))
    return table


def _latency_table(rows: list[dict], title: str, device: str):
    return _with_peak(device, _table(title, rows, {
        "name": "model", "backend": "backend", "batch_size": "batch", "seq_len": "tokens", "params": "params",
        "flops": "GFLOPs", "latency_ms_p50": "p50 ms", "latency_ms_p90": "p90 ms", "latency_ms_p95": "p95 ms",
        "latency_ms_p99": "p99 ms", "latency_ms_std": "std ms", "throughput_samples_s": "samples/s",
        "throughput_tokens_s": "tokens/s", "efficiency": "of GEMM peak"}))


def _zoo_table(rows: list[dict], title: str, device: str):
    return _with_peak(device, _table(title, rows, {
        "name": "model", "backend": "backend", "params": "params", "flops": "GFLOPs", "latency_ms_p50": "p50 ms",
        "latency_ms_p95": "p95 ms", "speedup_vs_bert_base": "vs BERT-base", "published_speedup": "published",
        "vs_published": "", "efficiency": "of GEMM peak"}))


def _with_peak(device: str, table):
    table.caption = f"GEMM peak of this {device}, measured now: {_gemm_peak(device) / 1e9:.1f} GFLOP/s"
    return table


def _gemm_peak(device: str) -> float:
    import torch

    from bench.devices import check_device
    from bench.flops import gemm_peak_flops

    return gemm_peak_flops(check_device(device), torch.get_num_threads())


def _cell(key: str, value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "REGRESSION" if value else ""
    if key == "flops":
        return f"{value / 1e9:.3f}"
    if key in ("share", "efficiency"):
        return f"{value:.0%}"
    if key in ("params", "batch_size", "seq_len"):
        return f"{value:,}"
    if key in ("ratio", "speedup_vs_bert_base", "published_speedup"):
        return f"{value:.2f}x"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 1000 else f"{value:,.0f}"
    return str(value)


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
