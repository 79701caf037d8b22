"""Which stages run and which are reused: `--from` / `--only` selection over manifest.json.

A stage (declared in compress.pipeline.declarations) has a manifest entry (e.g. "student:minilm-l3"), is hashed with
everything it depends on, and is run through `StageRunner`, which skips it when the manifest says it finished under
the same hash (and its outputs exist), forces it when the selection asks, and hands back its typed result either
way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from compress.core import distributed
from compress.core.config import RunConfig
from compress.core.errors import UserError
from compress.core.progress import console
from compress.core.results import from_json, to_json
from compress.core.stopping import check_stop
from compress.pipeline.declarations import GROUPS, Stage, declared, group_of
from compress.pipeline.manifest import Manifest


@dataclass(frozen=True)
class StageSelection:
    """Which stages to re-run. `start` (--from): that group and every later one run again, earlier ones resume as
    usual. `only` (--only): that group runs again; earlier ones must have finished under this config; later ones
    are forgotten (they were made from what the group just rewrote) and run on the next plain `compress run`,
    except the report, which is rewritten after --only bench."""

    start: str | None = None
    only: str | None = None

    def __post_init__(self) -> None:
        for flag, value in (("--from", self.start), ("--only", self.only)):
            if value is not None and value not in GROUPS:
                raise UserError(f"unknown stage '{value}'", flag, f"stages: {', '.join(GROUPS)}")
        if self.start and self.only:
            raise UserError("--from and --only were both given", "compress run", "give one of them")

    def forces(self, group: str) -> bool:
        """Whether stages of `group` run again even where they finished under this config."""
        if self.only:
            return group == self.only
        return self.start is not None and GROUPS.index(group) >= GROUPS.index(self.start)

    def after_only(self, group: str) -> bool:
        return self.only is not None and GROUPS.index(group) > GROUPS.index(self.only)

    def check(self, cfg: RunConfig) -> None:
        """--from/--only naming a stage this config does not have would silently re-run nothing."""
        chosen = self.start or self.only
        empty = {"prune": not cfg.prune, "quantize": not cfg.quantize, "export": not cfg.export.enabled}
        if empty.get(chosen):
            flag = "--from" if self.start else "--only"
            raise UserError(f"this config has no {chosen} stage", f"{flag} {chosen}",
                            "add it to the config, or name another stage")


class LaterStageNotRun(Exception):
    """--only reached a later stage that has not run under this config: the run stops before the report."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        super().__init__(stage)


class StageRunner:
    """Runs stages through the manifest, as the selection asks, and remembers which ran and which were skipped."""

    def __init__(self, run_dir: Path, selection: StageSelection) -> None:
        self.manifest = Manifest(run_dir)
        self.selection = selection
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def __call__(self, declaration: Stage, config_hash: str, work: Callable[[], tuple[list[str], Any]],
                 model: str | None = None) -> Any:
        """Run the declared stage (for `model`, where it runs once per model) unless it finished under
        `config_hash`. `work()` returns the outputs it wrote (paths relative to the run folder) and its result, of the
        declared type; a stage that is reused hands back the result it recorded."""
        stage, group, result_type = declaration.entry(model), declaration.group, declaration.result
        force = self.selection.forces(group)
        # A result recorded by an older version in a shape this one cannot read is not reused: the stage runs again.
        force = force or (self.manifest.is_done(stage, config_hash)
                          and not readable(result_type, self.manifest.result(stage)))
        if self.selection.only and group != self.selection.only and not self.manifest.is_done(stage, config_hash):
            if self.selection.after_only(group):
                raise LaterStageNotRun(stage)
            raise UserError(f"--only {self.selection.only} needs stage '{stage}', which has not finished under "
                            "this config", str(self.manifest.path),
                            f"run without --only first, or use --from {group}")

        def recorded_work() -> tuple[list[str], dict]:
            outputs, result = work()
            return outputs, to_json(result, result_type)

        if distributed.is_main():
            recorded, skipped = self.manifest.run_stage(stage, config_hash, recorded_work, force=force)
            if force and self.selection.only:
                self.manifest.forget_after(self.selection.only)
            distributed.wait_for_everyone()  # the others now read what was recorded
        else:
            recorded, skipped = self._follow_main(stage, config_hash, force, work)
        check_stop()  # a Ctrl-C whose KeyboardInterrupt a library swallowed stops the run here (compress.core.stopping)
        (self.skipped if skipped else self.ran).append(stage)
        console.print(f"[dim]skipped[/dim] {stage} (unchanged)" if skipped else f"[dim]done[/dim] {stage}")
        return from_json(result_type, recorded)

    def _follow_main(self, stage: str, config_hash: str, force: bool,
                     work: Callable[[], tuple[list[str], Any]]) -> tuple[dict, bool]:
        """Another process than the main one: a training or labelling stage the main process runs is run here too
        (its turn of the batches, its share of the rows; it writes nothing), any other is left to the main process;
        then, once the main process has recorded it, the result it recorded (and the manifest as the main process
        left it)."""
        skipped = not force and self.manifest.is_done(stage, config_hash)
        if not skipped and declared(stage).every_process:
            try:
                work()
            except distributed.LeftToMain:
                pass
        distributed.wait_for_everyone()
        self.manifest = Manifest(self.manifest.run_dir)
        return self.manifest.result(stage), skipped

    def timeline(self) -> list[dict]:
        """This run's stages in pipeline order, with the seconds each took when it last ran."""
        order = sorted(dict.fromkeys(self.ran + self.skipped), key=lambda s: GROUPS.index(group_of(s)))
        return [{"stage": s, "seconds": self.manifest.stages[s]["seconds"]} for s in order]


def readable(result_type: type, recorded: object) -> bool:
    try:
        from_json(result_type, recorded)
    except ValidationError:
        return False
    return True
