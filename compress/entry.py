"""The console-script wrapper both CLIs share: user errors as one line and exit code 2, never a traceback."""

from __future__ import annotations

import signal
import sys
from typing import Annotated

import typer

from compress.core.errors import UserError
from compress.core.stopping import stop_asked, stopping_on_signals


def run_app(app: typer.Typer) -> None:
    from compress.core import progress

    saved = progress.console.quiet, progress.LIBRARY_MESSAGES
    try:
        with stopping_on_signals():
            _run(app)
    finally:  # --quiet/--verbose hold for this command only (it may run in a process that goes on: tests, notebooks)
        progress.console.quiet, progress.LIBRARY_MESSAGES = saved


def _run(app: typer.Typer) -> None:
    try:
        # Outside standalone mode typer returns a command's exit code (typer.Exit) rather than exiting, and turns
        # Ctrl-C into exit code 130 (its KeyboardInterrupt handler), so both are read here.
        code = app(standalone_mode=False)
    except UserError as err:
        typer.echo(f"error: {err.line()}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        code = INTERRUPTED
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.TyperException as err:  # usage errors: unknown option, missing argument, bad value (exit 2)
        ctx = getattr(err, "ctx", None)
        command = ctx.command_path if ctx is not None else "the command"
        if err.format_message():  # no command at all: typer has shown the help already
            typer.echo(f"error: {command}: {err.format_message()} -- run '{command} --help'", err=True)
        sys.exit(err.exit_code)
    except typer.Abort:
        code = INTERRUPTED
    if code == INTERRUPTED and stop_asked() == signal.SIGTERM:  # click and typer hand it on as Abort, or as 130
        code = TERMINATED
    if code in (INTERRUPTED, TERMINATED):
        stopped = "terminated" if code == TERMINATED else "interrupted"
        typer.echo(f"{stopped}: run the same command again to resume", err=True)
    if isinstance(code, int) and code:
        sys.exit(code)


INTERRUPTED = 130  # the shell's exit code for a process stopped by Ctrl-C (128 + SIGINT)
TERMINATED = 143  # ... and by SIGTERM (128 + 15)


def show_version(asked: bool) -> None:
    """--version: the installed bert-compress's version, then exit."""
    if asked:
        from importlib import metadata

        try:
            version = metadata.version("bert-compress")
        except metadata.PackageNotFoundError:  # a source tree that was never installed
            version = "(not installed: pip install -e .)"
        typer.echo(f"bert-compress {version}")
        raise typer.Exit()


Version = Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
                                       help="print the version and exit")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="print only errors and the result's path (files are "
                                                           "written as ever)")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="compress run: also show the libraries' own "
                                                               "warnings (transformers, hub, tracing)")]


def set_verbosity(quiet: bool, verbose: bool) -> None:
    """The console's verbosity for this command: --quiet silences progress and tables, --verbose lets the
    libraries' own messages through."""
    if quiet and verbose:
        raise UserError("--quiet and --verbose together", "options", "pick one")
    from compress.core import progress

    progress.console.quiet = quiet
    progress.LIBRARY_MESSAGES = verbose
