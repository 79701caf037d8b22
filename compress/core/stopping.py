"""Ctrl-C and SIGTERM in the console commands. Each raises in the main thread, as Python's own Ctrl-C does, and is
remembered: a KeyboardInterrupt can be lost on its way up (raised inside a finalizer, or caught by a library), and
a run that lost it would go on to the end. The run asks `check_stop` between stages, so it stops at the latest when
the stage in progress has finished and been recorded (compress.pipeline.resume)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler preempting the job, `kill`, torchrun stopping the others when one process fails): the
    command stops as it does on Ctrl-C, so trackers are finished and the run resumes, and exits 143 (128 + 15)."""


_asked: list[int] = []  # the signal that asked this command to stop, once one has


def stop_asked() -> int | None:
    return _asked[0] if _asked else None


def check_stop() -> None:
    """Raise the stop a signal asked for, if one did (again, where the first raise was lost)."""
    if _asked:
        raise Terminated() if _asked[0] == signal.SIGTERM else KeyboardInterrupt()


@contextmanager
def stopping_on_signals() -> Iterator[None]:
    """For one command: Ctrl-C and SIGTERM raise and are remembered; the handlers before are put back after. Off the
    main thread (where Python takes no signals) nothing changes, nor for a Ctrl-C the shell had ignored (a
    background job)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        _asked[:] = _asked or [signum]
        check_stop()

    wanted = [signal.SIGTERM] + ([signal.SIGINT] if signal.getsignal(signal.SIGINT) is signal.default_int_handler
                                 else [])
    before = {signum: signal.signal(signum, stop) for signum in wanted}
    _asked.clear()
    try:
        yield
    finally:
        _asked.clear()  # a notebook's next compress.run is not stopped by this command's Ctrl-C
        for signum, handler in before.items():  # a handler set outside Python reads as None: the default is back
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
