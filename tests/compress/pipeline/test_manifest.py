import pytest

from compress.core.errors import UserError
from compress.pipeline.manifest import Manifest


def make_work(run_dir, calls):
    def work():
        calls.append(1)
        (run_dir / "out.txt").write_text("x")
        return ["out.txt"], {"value": len(calls)}
    return work


def test_stage_is_skipped_with_same_hash_and_outputs(tmp_path):
    calls = []
    assert Manifest(tmp_path).run_stage("a", "h1", make_work(tmp_path, calls)) == ({"value": 1}, False)
    # A fresh Manifest reads what the last one wrote: this is what a resumed run sees.
    assert Manifest(tmp_path).run_stage("a", "h1", make_work(tmp_path, calls)) == ({"value": 1}, True)
    assert len(calls) == 1


def test_stage_reruns_when_hash_changes_or_output_is_gone(tmp_path):
    calls = []
    Manifest(tmp_path).run_stage("a", "h1", make_work(tmp_path, calls))
    Manifest(tmp_path).run_stage("a", "h2", make_work(tmp_path, calls))
    (tmp_path / "out.txt").unlink()
    Manifest(tmp_path).run_stage("a", "h2", make_work(tmp_path, calls))
    assert len(calls) == 3


def test_failed_stage_is_not_recorded(tmp_path):
    def boom():
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        Manifest(tmp_path).run_stage("a", "h", boom)
    assert "a" not in Manifest(tmp_path).stages


def test_corrupt_manifest_is_a_user_error(tmp_path):
    (tmp_path / "manifest.json").write_text("{half")
    with pytest.raises(UserError, match="manifest is unreadable"):
        Manifest(tmp_path)


def test_manifest_entry_missing_keys_is_a_user_error(tmp_path):
    (tmp_path / "manifest.json").write_text('{"stages": {"teacher": {"status": "done"}}}')
    with pytest.raises(UserError, match="manifest is unreadable"):
        Manifest(tmp_path)


def test_a_killed_runs_temporaries_are_removed_and_nothing_else(tmp_path):
    from compress.core.artifacts import remove_stale_temporaries

    stale = [".manifest.json.tmp4242", "students/half.tmp/model.safetensors", "students/half.old/config.json",
             "cache/teacher_train_logits.tmp.npy", "exports/half/model_dynamic_qint8.onnx.tmp",
             "checkpoints/half-0123.pt.tmp"]
    kept = ["manifest.json", "students/half/model.safetensors", "students/v1.tmp5/config.json",
            "exports/half/model.onnx", "checkpoints/half-0123.pt", "report.md"]
    for name in stale + kept:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    remove_stale_temporaries(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == sorted(kept)
    assert not (tmp_path / "students" / "half.tmp").exists() and not (tmp_path / "students" / "half.old").exists()


def test_a_ctrl_c_a_library_swallowed_stops_the_run_when_its_stage_is_recorded(tmp_path):
    """Ctrl-C raises where the run is; a library (or a finalizer) that swallows the KeyboardInterrupt does not make
    the run go on to the end: it stops once the stage in progress is recorded. After the command nothing is left
    set, so the next run in the same process (a notebook) runs."""
    import os
    import signal
    import time

    from compress.core.results import CachedOutputs
    from compress.core.stopping import stopping_on_signals
    from compress.pipeline.declarations import TEACHER_LOGITS, TEACHER_TRANSFER
    from compress.pipeline.resume import StageRunner, StageSelection

    def labelling_that_swallows_ctrl_c():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises here
        except KeyboardInterrupt:
            pass
        return [], CachedOutputs(features=3)

    runner = StageRunner(tmp_path, StageSelection())
    with stopping_on_signals():
        with pytest.raises(KeyboardInterrupt):
            runner(TEACHER_LOGITS, "h1", labelling_that_swallows_ctrl_c)
    assert Manifest(tmp_path).is_done("teacher_logits", "h1")  # recorded: the next run resumes after it
    assert StageRunner(tmp_path, StageSelection())(TEACHER_TRANSFER, "h2",
                                                   lambda: ([], CachedOutputs(features=1))).features == 1
