"""The console-script wrapper both CLIs share: user errors as one line and exit code 2, never a traceback."""

from __future__ import annotations

import sys

import typer

from compress.errors import UserError


def run_app(app: typer.Typer) -> None:
    try:
        app(standalone_mode=False)
    except UserError as err:
        typer.echo(f"error: {err.line()}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: run the same command again to resume", err=True)
        sys.exit(130)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.TyperException as err:  # usage errors: unknown option, missing argument (exit 2)
        err.show() if hasattr(err, "show") else typer.echo(f"error: {err.format_message()}", err=True)
        sys.exit(err.exit_code)
    except typer.Abort:
        sys.exit(130)
