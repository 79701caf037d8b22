"""`compress search`: an Optuna study over students of the run (metric up, latency down), then the chosen one
trained by the run like any other student.

    search(cfg)
      teacher, once  the run's teacher stages through the run folder's manifest (the first worker trains and labels,
                     the others wait for it and reuse both), and the teacher's validation metric
      study          Optuna's RDB storage: search/study.db in the run folder, or --storage URL for several workers;
                     one study per search block (changing the space starts another; more trials continue it)
      resume         a trial whose worker was killed on this machine is failed and enqueued again at once (on other
                     machines Optuna's heartbeat does it after GRACE_S); a finished trial is never run again
      trials         study.optimize with a define-by-run objective (compress.search.trial), a rich line per trial
      tables         search/trials.csv, trials.json, pareto.png
      the chosen     the fastest trial within the budget, appended to `students:` and trained, exported, quantised,
                     benched and reported by compress.pipeline.pipeline.run; search/chosen.yaml holds its snippet

Optuna refuses trial.report and trial.should_prune in multi-objective studies, so successive halving runs on the
study's records: each trial keeps its per-epoch validation metrics as a user attr, and the rule of Optuna's
SuccessiveHalvingPruner (compress.search.trial.promoted) compares a trial with the others at the same epoch; a
trial it stops raises optuna.TrialPruned, so Optuna records it as pruned. The budget and the latency ceiling are
Optuna constraints (trial.set_constraint), so its TPE sampler learns which shapes fail them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import psutil
import torch
from optuna.storages import RDBStorage, RetryFailedTrialCallback
from optuna.trial import TrialState
from pydantic import TypeAdapter

from bench.flops import gemm_peak_flops
from compress.core import distributed
from compress.core.artifacts import run_folder_lock, write_json_atomic, write_text_atomic
from compress.core.config import DEFAULT_TRIALS, RunConfig, StudentConfig
from compress.core.errors import UserError
from compress.core.hashing import stable_hash
from compress.core.progress import console, warnings_console
from compress.pipeline import stages
from compress.pipeline.pipeline import quiet_libraries, run, teacher_outputs, teacher_stage, transfer_outputs
from compress.pipeline.preflight import check_against_models, layer_count, model_config
from compress.pipeline.resume import StageRunner, StageSelection
from compress.pipeline.run_data import RunData
from compress.search.space import ShapeRefused, check_search, chosen_name, snippet, space_size, suggest_candidate
from compress.search.tables import choose, closest, kept_text, retried, trial_rows, write_search_files
from compress.search.trial import (
    SearchContext,
    halving_epochs,
    measure_shape,
    promoted,
    ship,
    train_candidate,
)

# Optuna's heartbeat, for workers on other machines: a RUNNING trial whose worker has not written for GRACE_S is
# failed and enqueued again (up to MAX_RETRY times). On this machine a dead worker is seen at once (its pid).
HEARTBEAT_S = 60
GRACE_S = 180
MAX_RETRY = 2
FAILURES_IN_A_ROW = 3  # a worker whose trials fail this often in a row stops: something is wrong beyond a shape


@dataclass(frozen=True)
class SearchResult:
    """What a search ended with. `budget_met` is None where this worker left the choice to another worker still
    running trials; `student` is the chosen student's name in the run, whose report is `report`."""

    run_dir: Path
    study: str
    rows: list[dict]
    chosen: dict | None
    student: str | None
    budget_met: bool | None
    report: dict | None


class TrialFailed(Exception):
    """A trial that could not be measured or trained (its reason is in its record): Optuna marks it failed and the
    search goes on."""


def search(cfg: RunConfig, storage: str | None = None, trials: int | None = None,
           minutes: float | None = None) -> SearchResult:
    """Run (or resume, or join) the search `cfg.search` describes; `trials` and `minutes` override its effort
    (trials: how many finished trials the study should hold; minutes: this process's limit)."""
    if cfg.search is None:
        raise UserError("the config has no search: block", "compress search",
                        "add one, e.g. `search: {min_retained: 0.97}` (docs/search.md)")
    if distributed.world_size() > 1:
        raise UserError("compress search runs as one process per worker, not under a launcher", "compress search",
                        "start the same command several times instead, on one --storage (docs/search.md)")
    if minutes is not None and minutes <= 0:
        raise UserError(f"a time limit of {minutes:g} minutes leaves no time for a trial", "--timeout-minutes",
                        "give a positive number, or --trials 0 to write the tables and train the chosen student")
    limit = trials if trials is not None else cfg.search.trials
    minutes = minutes if minutes is not None else cfg.search.minutes
    if limit is None and minutes is None:
        limit = DEFAULT_TRIALS
    with quiet_libraries(), quiet_optuna():
        return _search(cfg, storage, limit, minutes)


def _search(cfg: RunConfig, storage: str | None, limit: int | None, minutes: float | None) -> SearchResult:
    teacher_layers = layer_count(model_config(cfg.teacher.model))
    check_search(cfg, teacher_layers)
    device = stages.run_device(cfg)
    check_against_models(cfg)
    rdb = open_storage(storage) if storage else None  # a bad URL or an unreachable database: said before anything
    folder = cfg.run_dir / "search"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot write the run folder ({err.strerror})", str(cfg.run_dir),
                        "set output_dir to a writable folder") from None
    if cfg.bench.threads:
        torch.set_num_threads(cfg.bench.threads)
    url = storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    rdb = rdb or open_storage(url)
    with stages.training_on(device):
        ctx = prepare(cfg, teacher_layers, folder)
        name = study_name(ctx)
        study = open_study(rdb, name, ctx, limit)
        recover_stopped_trials(study)
        run_trials(study, ctx, limit, minutes)
        rows = write_tables(study, ctx, url)
        optuna.storages.fail_stale_trials(study)  # workers elsewhere silent for GRACE_S: failed and enqueued again
        busy = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if not stopped_here(t)]
        if busy:
            console.print(f"search: {len(busy)} trial(s) still running in other workers; the last worker to finish "
                          "trains the chosen student (or run this command with --trials 0 once they are done)")
            return SearchResult(cfg.run_dir, name, rows, None, None, None, None)
    # The search folder's lock, not the run folder's: the run that trains the chosen student takes that one itself.
    with run_folder_lock(folder, wait="search: another worker is training the chosen student; waiting"):
        rows = write_tables(study, ctx, url)  # with what workers that finished meanwhile added
        return finish(cfg, ctx, name, rows)


# ---------------------------------------------------------------- the teacher, once


def prepare(cfg: RunConfig, teacher_layers: int | None, folder: Path) -> SearchContext:
    """The teacher and its outputs on the training split and the transfer set, through the run folder's manifest
    (the same stages, hashes and files as `compress run`), under the run folder's lock: a second worker waits here
    while the first trains, then reuses what it made; a `compress run` in the folder meanwhile is refused."""
    with run_folder_lock(cfg.run_dir, wait="search: waiting for the run folder (another worker is preparing the "
                                            "teacher, or a compress run is using it)"):
        runner = StageRunner(cfg.run_dir, StageSelection())
        data = RunData(cfg)
        teacher = teacher_stage(cfg, data, runner)
        logits = teacher_outputs(cfg, teacher, data, runner)
        transfer = transfer_outputs(cfg, teacher, data, runner)
        loaded = data.load()
        metric = teacher_validation_metric(cfg, teacher, loaded, folder)
    return SearchContext(cfg, loaded, teacher, logits, transfer, metric, teacher_layers,
                         gemm_peak_flops(torch.device("cpu"), torch.get_num_threads()), folder)


def teacher_validation_metric(cfg: RunConfig, teacher, data, folder: Path) -> float:
    """The teacher's metric on the validation split, which trials are judged against (search/teacher.json keeps it
    per teacher)."""
    path = folder / "teacher.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        kept = json.loads(path.read_text(encoding="utf-8"))
        if kept["teacher_hash"] == teacher.hash:
            return float(kept["metric"])
    model, tokenizer = stages.load_saved(cfg, teacher)
    metric = stages.validation_scorer(cfg, data, tokenizer)(model)
    write_json_atomic(path, {"teacher_hash": teacher.hash, "metric_name": data.task.metric, "metric": metric})
    return metric


# ---------------------------------------------------------------- the study


def study_name(ctx: SearchContext) -> str:
    """`<run>-<hash>` of what the trials' results depend on: the teacher (and through it the data), the transfer
    set, the space, epochs, halving and ceiling, the export and bench settings, the seed. The budget and the effort
    are left out: a looser budget re-chooses from the same trials, more trials continue the same study."""
    cfg = ctx.cfg
    searched = ctx.search.model_dump(mode="json", exclude={"min_retained", "max_metric_drop", "trials", "minutes",
                                                           "baseline"})
    export = {"enabled": cfg.export.enabled, "opset": cfg.export.opset, "optimize": cfg.export.optimize,
              "parity_atol": cfg.export.parity_atol, "max_metric_drop": cfg.export.quantize.max_metric_drop,
              "int8": ctx.int8_variants}
    key = stable_hash("search", ctx.teacher.hash, ctx.data.transfer_fingerprint, searched, export, cfg.bench,
                      str(cfg.seed))
    return f"{cfg.name}-{key[:10]}"


def open_storage(url: str) -> RDBStorage:
    """Optuna's RDB storage at `url`, with the heartbeat that fails (and enqueues again) the trials of workers that
    stopped writing."""
    sqlite = url.startswith("sqlite")
    try:
        engine = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
        storage = RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                             failed_trial_callback=RetryFailedTrialCallback(max_retry=MAX_RETRY))
    except Exception as err:  # SQLAlchemy's and the drivers' errors, an unknown scheme, a missing driver
        raise UserError(f"cannot open the study storage ({type(err).__name__}: {str(err).splitlines()[0][:160]})",
                        _shown(url), "check the URL and that the database is reachable; PostgreSQL needs "
                                     "`pip install psycopg2-binary`, MySQL `pip install pymysql` (docs/search.md)"
                        ) from None
    return storage


def open_study(storage: RDBStorage, name: str, ctx: SearchContext, limit: int | None) -> optuna.Study:
    """The study in its storage, created by the first worker and loaded by the rest."""
    # Independent seeds per worker: workers sharing one would sample the same shapes. Latencies are measured, so a
    # search is not bit-reproducible anyway.
    sampler = optuna.samplers.TPESampler(seed=(ctx.cfg.seed * 1_000_003 + os.getpid()) % 2**32, multivariate=True,
                                         group=True, constant_liar=True,
                                         n_startup_trials=min(10, max(2, (limit or 30) // 3)))
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"],
                                sampler=sampler, load_if_exists=True)
    study.set_metric_names([ctx.data.task.metric, "latency_ms"])
    study.set_user_attr("teacher_metric", ctx.teacher_metric)
    return study


def this_worker() -> dict:
    """Who runs a trial: host, pid and the process's start time (a pid alone can be reused)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time()}


def stopped_here(trial) -> bool:
    """Whether a RUNNING trial's worker was a process on this machine that is gone (killed, crashed)."""
    worker = trial.user_attrs.get("worker")
    if trial.state != TrialState.RUNNING or not worker or worker.get("host") != socket.gethostname():
        return False
    if worker.get("pid") == os.getpid():
        return False
    try:
        process = psutil.Process(worker["pid"])
        return process.create_time() != worker["started"] or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def recover_stopped_trials(study: optuna.Study) -> None:
    """A trial whose worker on this machine was killed (kill -9, a crash, the OOM killer) is
    marked failed, and it and any trial stopped by Ctrl-C are enqueued again with the same parameters: the next
    trials run them first. Finished trials stay as they are."""
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    for t in trials:
        if stopped_here(t):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            console.print(f"search: trial {t.number} stopped with its worker (pid {t.user_attrs['worker']['pid']}); "
                          "it runs again")
        elif not (t.state == TrialState.FAIL and (t.user_attrs.get("record") or {}).get("interrupted")):
            continue
        if t.number not in again:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


def finished_count(trials: list) -> int:
    """Trials that count towards `trials`: those that measured a student (complete, pruned by the ceiling or by
    halving) or failed for a reason of their own. Not a repeat of a student already tried, nor a shape refused
    before anything ran (both cost nothing), nor a killed worker's trial (it runs again)."""
    def counted(t) -> bool:
        record = t.user_attrs.get("record") or {}
        return (t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "params" in record) or \
            (t.state == TrialState.FAIL and bool(record.get("error")))

    return sum(counted(t) for t in trials)


def students_tried(trials: list) -> int:
    """Distinct students the study has finished with (repeats and refused shapes included once)."""
    return len({tuple(sorted(t.params.items())) for t in trials if t.state.is_finished()
                and (t.state != TrialState.FAIL or (t.user_attrs.get("record") or {}).get("error"))})


# ---------------------------------------------------------------- the trials


def run_trials(study: optuna.Study, ctx: SearchContext, limit: int | None, minutes: float | None) -> None:
    done = finished_count(study.get_trials(deepcopy=False))
    if limit is not None and done >= limit:
        console.print(f"search: the study holds {done} finished trial(s), the {limit} asked for; no new trial")
        return
    line = ProgressLine(ctx, limit, minutes)
    study.optimize(lambda trial: objective(trial, ctx, line), timeout=minutes * 60 if minutes is not None else None,
                   callbacks=[line], catch=(TrialFailed,), gc_after_trial=True)


def objective(trial: optuna.Trial, ctx: SearchContext, line: "ProgressLine") -> tuple[float, float]:
    """One trial, define-by-run: sample a student, time it untrained (over the ceiling: pruned, never trained),
    distil it with successive halving, judge the graph that would ship. Returns (metric, latency in ms)."""
    record: dict = {}

    def note(**fields) -> None:
        record.update(fields)
        trial.set_user_attr("record", record)

    started = time.perf_counter()
    trial.set_user_attr("worker", this_worker())
    trial.set_user_attr("epoch_metrics", [])
    note(why=None)  # a retried trial starts from a clean record
    try:
        candidate = suggest_candidate(trial, ctx.search, ctx.teacher_layers)
    except ShapeRefused as refused:
        note(why=f"shape refused: {refused}", seconds=0.0)
        raise optuna.TrialPruned(str(refused)) from None
    note(family=candidate.family, shape=candidate.shape, method=candidate.method,
         learning_rate=candidate.learning_rate, student=candidate.student.model_dump(mode="json"))
    earlier = same_as_earlier(trial)
    if earlier is not None:
        repeat(trial, earlier, note)
    ceiling = ctx.search.max_latency_ms
    try:
        with tempfile.TemporaryDirectory(prefix=f"compress-search-{trial.number}-") as scratch:
            measured = measure_shape(ctx, candidate, Path(scratch) / "untrained")
            fastest = min(measured.latency_ms(), key=measured.latency_ms().get)
            note(params=measured.params, flops=measured.flops, latency_ms_by_graph=measured.latency_ms(),
                 latency_ms_best_case=measured.best_case_ms(), graphs_failed=measured.failed_graphs)
            if ceiling is not None and measured.best_case_ms() > ceiling:
                note(why=f"over the latency ceiling untrained: {measured.best_case_ms():.3f} ms at its fastest "
                         f"({fastest}) > {ceiling:g} ms; not trained", seconds=time.perf_counter() - started)
                trial.set_constraint("latency", measured.best_case_ms() - ceiling)
                raise optuna.TrialPruned("over the latency ceiling")
            leader = fastest_within_budget(trial, ctx)
            if leader is not None and measured.best_case_ms() >= leader[1]:
                # The search picks the fastest student within the budget: one no faster than a trial that already
                # keeps it cannot be chosen, whatever it would score, so its training would buy nothing.
                note(why=f"cannot be chosen: {measured.best_case_ms():.3f} ms at its fastest ({fastest}), no faster "
                         f"than trial {leader[0]} ({leader[1]:.3f} ms) that keeps the budget; not trained",
                     seconds=time.perf_counter() - started)
                raise optuna.TrialPruned("slower than a trial within the budget")
            log = ctx.folder / "trials" / str(trial.number) / "train.jsonl"
            log.parent.mkdir(parents=True, exist_ok=True)
            model, tokenizer, data, trained = train_candidate(
                ctx, candidate, log, f"trial {trial.number}: distil {candidate.describe()}",
                halving(trial, ctx, note, started))
            shipped = ship(ctx, f"trial-{trial.number}", model, tokenizer, data, trained, measured,
                           Path(scratch) / "trained")
    except (optuna.TrialPruned, KeyboardInterrupt):
        if not record.get("why"):  # Ctrl-C (or SIGTERM): the trial runs again on resume
            note(interrupted=True)
        raise
    except Exception as err:  # a shape ONNX Runtime cannot take, a loss that went NaN: this trial fails, not the search
        message = err.line() if isinstance(err, UserError) else f"{type(err).__name__}: {str(err)[:200]}"
        note(why=f"failed: {message}", error=True, seconds=time.perf_counter() - started)
        line.failed(message)
        raise TrialFailed(message) from None
    note(metric=shipped.metric, latency_ms=shipped.latency_ms, shipped_graph=shipped.graph, shipped_why=shipped.why,
         metric_pytorch=trained.best_validation, epochs_run=trained.epochs_run,
         seconds=time.perf_counter() - started)
    trial.set_constraint("budget", ctx.required_metric - shipped.metric)
    if ceiling is not None:
        trial.set_constraint("latency", shipped.latency_ms - ceiling)
    return shipped.metric, shipped.latency_ms


def same_as_earlier(trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
    """The first finished trial with this trial's parameters (a student is trained deterministically from the
    seed, and its latency was measured), if any."""
    return next((t for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
                 if t.params == trial.params and t.number != trial.number), None)


def repeat(trial: optuna.Trial, earlier: optuna.trial.FrozenTrial, note: Callable[..., None]) -> None:
    """The sampler came back to a student already tried: pruned at once, not trained again, and not counted
    towards `trials` (its constraints are the earlier trial's, so the sampler learns as much from it)."""
    note(why=f"the same student as trial {earlier.number}: not trained again", same_as=earlier.number, seconds=0.0)
    for key, value in earlier.constraints.items():
        trial.set_constraint(key, value)
    raise optuna.TrialPruned("a repeat")


def halving(trial: optuna.Trial, ctx: SearchContext, note: Callable[..., None],
            started: float) -> Callable[[int, float], None]:
    """after_epoch for train_candidate: keep the epoch's metric in the trial's record and, at each halving epoch,
    stop a trial below the budget that Optuna's successive-halving rule would not promote."""
    rule = ctx.search.halving
    checks = set(halving_epochs(rule.min_epochs, rule.reduction_factor, ctx.search.epochs)) if rule else set()
    history: list[float] = []

    def after_epoch(epoch: int, metric: float) -> None:
        history.append(metric)
        trial.set_user_attr("epoch_metrics", history)
        if epoch not in checks or metric >= ctx.required_metric:
            return
        others = [t.user_attrs["epoch_metrics"][epoch - 1] for t in rivals(trial, ctx)
                  if len(t.user_attrs.get("epoch_metrics") or []) >= epoch]
        if not promoted(metric, others, rule.reduction_factor):
            note(why=f"stopped after epoch {epoch}: {ctx.data.task.metric} {metric:.4f}, below the budget "
                     f"({ctx.required_metric:.4f}) and outside the best 1/{rule.reduction_factor} of the "
                     f"{len(others) + 1} trials there", epochs_run=epoch, seconds=time.perf_counter() - started)
            trial.set_constraint("budget", ctx.required_metric - metric)
            raise optuna.TrialPruned(f"halved after epoch {epoch}")

    return after_epoch


def fastest_within_budget(trial: optuna.Trial, ctx: SearchContext) -> tuple[int, float] | None:
    """The study's fastest finished trial that keeps the budget (and the ceiling), as (number, latency in ms) of
    the graph it would ship; None while no trial does."""
    ceiling = ctx.search.max_latency_ms
    complete = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    fits = [(t.number, record["latency_ms"]) for t in complete
            if (record := t.user_attrs.get("record") or {}).get("metric") is not None
            and record["metric"] >= ctx.required_metric
            and (ceiling is None or record["latency_ms"] <= ceiling)]
    return min(fits, key=lambda fit: fit[1], default=None)


def rivals(trial: optuna.Trial, ctx: SearchContext) -> list[optuna.trial.FrozenTrial]:
    """The trials a trial is halved against: the others that could still be chosen, i.e. faster untrained than the
    fastest trial within the budget (every other trial while none is). A small student learns more slowly per epoch
    than a large one; measured against trials it need not beat, successive halving would stop exactly the fast
    students the search is for."""
    leader = fastest_within_budget(trial, ctx)
    return [t for t in trial.study.get_trials(deepcopy=False) if t.number != trial.number
            and (leader is None or untrained_ms(t) < leader[1])]


def untrained_ms(trial: optuna.trial.FrozenTrial) -> float:
    """The trial's fastest graph, timed untrained; infinite where it was not timed (a repeat, a refused shape)."""
    return (trial.user_attrs.get("record") or {}).get("latency_ms_best_case") or math.inf


class ProgressLine:
    """After each trial, one line: trials done, this trial's outcome, the best so far within the budget, time
    left. Also stops the study once it holds the trials asked for."""

    def __init__(self, ctx: SearchContext, limit: int | None, minutes: float | None) -> None:
        self.ctx, self.limit, self.minutes = ctx, limit, minutes
        self.started = time.monotonic()
        self.mine = 0
        self.failures_in_a_row = 0
        self.size = space_size(ctx.search, ctx.teacher_layers)

    def failed(self, message: str) -> None:
        self.failures_in_a_row += 1
        if self.failures_in_a_row >= FAILURES_IN_A_ROW:
            raise UserError(f"{FAILURES_IN_A_ROW} trials in a row failed (the last: {message})", "compress search",
                            f"see the why column of {self.ctx.folder / 'trials.csv'} once written, and the space")

    def __call__(self, study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        self.mine += 1
        recover_stopped_trials(study)  # a worker beside this one was killed: its trial runs again next
        if frozen.state != TrialState.FAIL:
            self.failures_in_a_row = 0
        trials = study.get_trials(deepcopy=False)
        done = finished_count(trials)
        ctx = self.ctx
        rows = trial_rows(trials, ctx.teacher_metric, ctx.required_metric, ctx.search.max_latency_ms)
        row = next(r for r in rows if r["number"] == frozen.number)
        best = choose(rows)
        outcome = (f"{kept_text(row)} kept at {row['latency_ms']:.2f} ms ({row['shipped_graph']})"
                   if row["state"] == "complete" else f"{row['state']}: {row['why']}")
        shape = f"{row['shape']}, {row['method']}" if row["shape"] else "?"
        best_text = (f"best within budget: #{best['number']} {kept_text(best)} kept at {best['latency_ms']:.2f} ms"
                     if best else "none within the budget yet")
        console.print(f"[bold]search[/] {done}/{self.limit or '-'} trials | #{frozen.number} {shape}: {outcome} | "
                      f"{best_text} | {self.time_left(done)}")
        if self.limit is not None and done >= self.limit:
            study.stop()
        elif self.size is not None and students_tried(trials) >= self.size:
            console.print(f"search: every student of the space has been tried ({self.size}); stopping")
            study.stop()

    def time_left(self, done: int) -> str:
        elapsed = time.monotonic() - self.started
        if self.minutes is not None:
            left = max(0.0, self.minutes * 60 - elapsed)
            if self.limit is not None:
                left = min(left, elapsed / self.mine * max(0, self.limit - done))
        elif self.limit is not None:
            left = elapsed / self.mine * max(0, self.limit - done)
        else:
            return "no limit"
        return f"about {left / 60:.0f} min left" if left >= 90 else f"about {left:.0f} s left"


# ---------------------------------------------------------------- tables and the chosen student


def write_tables(study: optuna.Study, ctx: SearchContext, url: str) -> list[dict]:
    cfg = ctx.cfg
    rows = trial_rows(study.get_trials(deepcopy=False), ctx.teacher_metric, ctx.required_metric,
                      ctx.search.max_latency_ms)
    about = {"run": cfg.name, "study": study.study_name, "storage": _shown(url), "metric": ctx.data.task.metric,
             "split": "validation", "teacher_metric": ctx.teacher_metric, "required_metric": ctx.required_metric,
             "budget": ctx.search.budget_text(), "max_latency_ms": ctx.search.max_latency_ms,
             "bench": {"batch_size": cfg.bench.batch_size, "seq_len": cfg.bench.seq_len},
             "chosen": next((r["number"] for r in rows if r["chosen"]), None)}
    write_search_files(ctx.folder, rows, about, ctx.search.budget_text())
    return rows


def finish(cfg: RunConfig, ctx: SearchContext, name: str, rows: list[dict]) -> SearchResult:
    """The chosen trial's student, trained by the run as a student of its own (exported, quantised, benched and
    reported); or, where no trial kept the budget, one line naming the closest."""
    chosen = choose(rows)
    if chosen is None:
        near = closest(rows)
        counts = {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail")}
        nearest = (f"the closest, trial {near['number']} ({near['shape']}, {near['method']}), kept "
                   f"{kept_text(near)} at {near['latency_ms']:.2f} ms" if near else
                   f"no trial finished training ({counts['pruned']} pruned, {counts['fail']} failed)")
        message = (f"[yellow]budget not met[/]: no trial kept {ctx.search.budget_text()}'s {ctx.data.task.metric} "
                   f"({ctx.required_metric:.4f} on the validation split); {nearest} -- widen search.space, add trials "
                   f"or loosen the budget; every trial is in {ctx.folder / 'trials.csv'}")
        warnings_console.print(message, soft_wrap=True)  # one line on stderr, however long, as errors are
        return SearchResult(cfg.run_dir, name, rows, None, None, False, None)
    taken = ["teacher", *cfg.student_names(), *(p.name for p in cfg.prune), *(q.name for q in cfg.quantize)]
    dumped = dict(chosen["student"])
    student = TypeAdapter(StudentConfig).validate_python(
        dumped | {"name": chosen_name(chosen["family"], _shape_of(chosen), taken)})
    same = next((s for s in cfg.students if s.model_dump(exclude={"name"}) == student.model_dump(exclude={"name"})),
                None)
    if same is not None:  # already a student of the run (its snippet pasted in): it is the chosen one
        student = same
    header = (f"# compress search, study {name}: trial {chosen['number']}, {chosen['shape']}, {chosen['method']}: "
              f"{kept_text(chosen)} of the teacher's {ctx.data.task.metric} (validation split) at "
              f"{chosen['latency_ms']:.2f} ms ({chosen['shipped_graph']}).\n# Paste under `students:` in a run "
              "YAML.\n")
    write_text_atomic(ctx.folder / "chosen.yaml", header + snippet(student))
    console.print(f"[bold]search[/]: chosen trial {chosen['number']} ({chosen['shape']}, {chosen['method']}), "
                  f"{kept_text(chosen)} kept at {chosen['latency_ms']:.2f} ms; the run trains it as "
                  f"'{student.name}'")
    result = run(with_student(cfg, student, ctx))
    return SearchResult(cfg.run_dir, name, rows, chosen, student.name, True, result.report)


def with_student(cfg: RunConfig, student: StudentConfig, ctx: SearchContext) -> RunConfig:
    """`cfg` with the chosen student appended to `students:` (and to export.quantize.models where that lists
    models by name), validated like a config from a file."""
    if student in cfg.students:
        return cfg
    data = cfg.model_dump(mode="json")
    data["students"] = data["students"] + [student.model_dump(mode="json")]
    models = cfg.export.quantize.models
    if models is not None and ctx.int8_variants:
        data["export"]["quantize"]["models"] = models + [student.name]
    return RunConfig.model_validate(data)


def _shape_of(row: dict) -> dict:
    return {k: row[k] for k in ("num_layers", "hidden_size", "num_heads", "ffn_size", "embedding_size", "layers")
            if row.get(k) is not None}


# ---------------------------------------------------------------- helpers


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Our line per trial instead of Optuna's log lines; its experimental-feature warnings (TPE's multivariate and
    group modes, the heartbeat) say nothing a user can act on."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            yield
        finally:
            optuna.logging.set_verbosity(before)


def _shown(url: str) -> str:
    """The storage URL without its password."""
    with contextlib.suppress(Exception):
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    return url.split("@")[-1]
