"""The console-script wrapper both CLIs share: user errors as one line and exit code 2, never a traceback."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Annotated

import typer

from compress.errors import UserError


def run_app(app: typer.Typer) -> None:
    from compress import progress

    saved = progress.console.quiet, progress.LIBRARY_MESSAGES
    terminate, Terminated.seen = _stop_on_sigterm(), False
    try:
        _run(app)
    finally:  # --quiet/--verbose hold for this command only (it may run in a process that goes on: tests, notebooks)
        progress.console.quiet, progress.LIBRARY_MESSAGES = saved
        if terminate is not NOT_INSTALLED:  # a handler set outside Python reads as None: the default is put back
            signal.signal(signal.SIGTERM, signal.SIG_DFL if terminate is None else terminate)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler preempting the job, `kill`, torchrun stopping the others when one process fails): the
    command stops as it does on Ctrl-C, so trackers are finished and the run resumes, and exits 143 (128 + 15)."""

    seen = False  # set by the handler: the libraries between here and the command may re-raise it as another type


NOT_INSTALLED = object()


def _stop_on_sigterm():
    """Raise Terminated on SIGTERM from here on; returns the handler it replaced (NOT_INSTALLED off the main thread,
    where Python cannot take signals)."""
    if threading.current_thread() is not threading.main_thread():
        return NOT_INSTALLED

    def stop(signum, frame):
        Terminated.seen = True
        raise Terminated()

    return signal.signal(signal.SIGTERM, stop)


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
    if code == INTERRUPTED and Terminated.seen:  # click and typer hand a KeyboardInterrupt on as Abort, or as 130
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
    from compress import progress

    progress.console.quiet = quiet
    progress.LIBRARY_MESSAGES = verbose
