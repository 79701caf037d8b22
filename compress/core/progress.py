"""The console everything prints to, and progress bars a person can follow."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# Piped output (CI logs, `| tee`) gets a wide fixed width so the comparison table is not squeezed to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
# Warnings go to stderr and --quiet does not silence them: what a person must see even when only the result is asked.
warnings_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
# --verbose: the libraries' own warnings and info come through (by default the run silences them).
LIBRARY_MESSAGES = False


def warn(message: str) -> None:
    """A warning line (rich markup) on stderr, whatever --quiet says."""
    warnings_console.print(message)


@contextmanager
def track_steps(description: str, total: int) -> Iterator[Callable[..., None]]:
    """A progress bar with ETA; yields `advance(**fields)` to call once per step (fields show beside it)."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, info="")

        def advance(**fields: float) -> None:
            info = " ".join(f"{k} {v:.4f}" for k, v in fields.items())
            progress.update(task, advance=1, info=info)

        yield advance
