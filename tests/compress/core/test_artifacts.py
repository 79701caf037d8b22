"""The run folder's lock: a second holder is refused, or, when told to wait, says so once and waits its turn."""

import sys
import threading

import pytest

from compress.core.artifacts import run_folder_lock
from compress.core.errors import UserError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX only")


def test_a_held_run_folder_is_refused_or_waited_for(tmp_path, capsys):
    with run_folder_lock(tmp_path):
        with pytest.raises(UserError, match="another compress run is using this run folder"):
            with run_folder_lock(tmp_path):
                pass
        entered, order = threading.Event(), []

        def second() -> None:
            with run_folder_lock(tmp_path, wait="waiting for the folder"):
                order.append("second")
                entered.set()

        thread = threading.Thread(target=second)
        thread.start()
        assert not entered.wait(0.5)  # it waits while the lock is held
        order.append("first done")
    thread.join(10)
    assert order == ["first done", "second"]
    assert capsys.readouterr().out.count("waiting for the folder") == 1
    with run_folder_lock(tmp_path, wait="not printed"):  # free: taken at once, nothing said
        pass
    assert "not printed" not in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]
