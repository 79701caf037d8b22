"""The one error type users can cause, printed by the CLIs as a single line with exit code 2."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem the user can fix: bad config, missing file, unreachable hub, wrong column.

    Args:
        what: what went wrong, e.g. "unknown key 'tempreature'".
        where: the file, key or id it concerns, e.g. "configs/demo.yaml: students.0".
        fix: what to do about it, e.g. "remove it or check the spelling".
    """

    def __init__(self, what: str, where: str = "", fix: str = "") -> None:
        self.what, self.where, self.fix = what, where, fix
        super().__init__(self.line())

    def line(self) -> str:
        parts = [f"{self.where}: {self.what}" if self.where else self.what]
        if self.fix:
            parts.append(self.fix)
        # One line, whatever the pieces hold.
        return " -- ".join(parts).replace("\n", " ")


def require_file(path: Path, what: str, where: str, fix: str) -> None:
    """One line where `path` is not a file: missing, or a folder where a file was meant."""
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError as err:  # a name too long for the file system, a loop of links
        raise UserError(f"{what} cannot be looked up ({err.strerror})", where, fix) from None
    if is_dir:
        raise UserError(f"{what} is a folder, not a file", where, f"name the file inside it; {fix}")
    if not is_file:
        raise UserError(f"{what} not found", where, fix)
