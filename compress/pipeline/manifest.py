"""manifest.json: which stages finished, under which config hash, with which outputs and results.

A stage whose entry is done, has the same config hash and whose outputs all exist is skipped, so a run that was
interrupted (or re-run with a change further down the pipeline) picks up where it can.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from compress.core.artifacts import write_json_atomic
from compress.core.errors import UserError
from compress.pipeline.declarations import GROUPS, group_of

ENTRY_KEYS = {"status", "config_hash", "outputs", "result"}


class Manifest:
    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "manifest.json"
        self.run_dir = run_dir
        self.stages: dict[str, dict] = {}
        if self.path.is_file():
            try:
                self.stages = json.loads(self.path.read_text(encoding="utf-8"))["stages"]
                if not all(isinstance(e, dict) and ENTRY_KEYS <= set(e) for e in self.stages.values()):
                    raise KeyError("stage entry")
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
                raise UserError("manifest is unreadable", str(self.path),
                                "delete it (or the run folder) to start the run afresh") from None

    def is_done(self, stage: str, config_hash: str) -> bool:
        entry = self.stages.get(stage)
        return (entry is not None and entry["status"] == "done" and entry["config_hash"] == config_hash
                and all((self.run_dir / out).exists() for out in entry["outputs"]))

    def result(self, stage: str) -> dict:
        return self.stages[stage]["result"]

    def forget_after(self, group: str) -> None:
        """Drop every entry of a group after `group`: their hashes come from the config, not from the files the
        re-run group just rewrote, so they would otherwise pass as done on results they were not made from."""
        later = [s for s in self.stages if GROUPS.index(group_of(s)) > GROUPS.index(group)]
        if later:
            for stage in later:
                del self.stages[stage]
            write_json_atomic(self.path, {"stages": self.stages})

    def record(self, stage: str, config_hash: str, outputs: list[str], seconds: float, result: dict) -> None:
        self.stages[stage] = {"status": "done", "config_hash": config_hash, "outputs": outputs,
                              "seconds": round(seconds, 3), "result": result}
        write_json_atomic(self.path, {"stages": self.stages})

    def run_stage(self, stage: str, config_hash: str, work: Callable[[], tuple[list[str], dict]],
                  force: bool = False) -> tuple[dict, bool]:
        """Run `work` unless the stage is already done with this hash (or `force`); returns (result, was_skipped).

        `work` returns the outputs it wrote (paths relative to the run folder) and a JSON-able result.
        """
        if not force and self.is_done(stage, config_hash):
            return self.result(stage), True
        start = time.perf_counter()
        outputs, result = work()
        self.record(stage, config_hash, outputs, time.perf_counter() - start, result)
        return result, False
