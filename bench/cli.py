"""`bench`: measure finished artifacts (ONNX files, HF model folders) on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from compress.entry import run_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Latency of exported and saved models, measured on this machine.")


@app.callback()
def _group() -> None:
    """Benchmark commands."""


@app.command()
def latency(
    targets: Annotated[list[Path], typer.Argument(help=".onnx files or HF model folders")],
    device: Annotated[str, typer.Option(help="cpu | cuda | mps")] = "cpu",
    batch_size: Annotated[int, typer.Option(min=1)] = 1,
    seq_len: Annotated[int, typer.Option(min=1)] = 128,
    warmup: Annotated[int, typer.Option(min=0)] = 5,
    iters: Annotated[int, typer.Option(min=3)] = 30,
    threads: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """p50/p90/p95/p99 latency per target at one batch size and sequence length."""
    from bench.measure import measure_target
    from rich.table import Table

    from compress.progress import console

    table = Table(title=f"latency on {device}, batch {batch_size}, {seq_len} tokens")
    for column in ("target", "backend", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "samples/s"):
        table.add_column(column, justify="left" if column in ("target", "backend") else "right")
    for target in targets:
        backend, lat = measure_target(target, device, batch_size, seq_len, warmup, iters, threads)
        table.add_row(str(target), backend, f"{lat.latency_ms_p50:.2f}", f"{lat.latency_ms_p90:.2f}",
                      f"{lat.latency_ms_p95:.2f}", f"{lat.latency_ms_p99:.2f}",
                      f"{batch_size * 1e3 / lat.latency_ms_mean:.1f}")
    console.print(table)


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
