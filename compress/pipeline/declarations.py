"""Every stage of `compress run`, declared once, in pipeline order.

A declaration says what the stage is called in manifest.json (one entry, or one per model as `<name>:<model>`),
which group `--from`/`--only` name it by, whether every process runs it when several do (training and labelling:
each takes its turn of the batches or its share of the rows) or the main one alone, what its config hash reads, the
type of its result and the function in compress.pipeline.stages that does it. compress.pipeline.pipeline calls them
in this order; resume, the manifest, the CLI's stage names and the timeline read this table, not lists of their own.

Light on purpose (no torch): `compress --help` and `compress validate` read the group names.
"""

from __future__ import annotations

from dataclasses import dataclass

from compress.core.hashing import stable_hash
from compress.core.results import BenchResult, CachedOutputs, ExportResult, ModelArtifact


@dataclass(frozen=True)
class Stage:
    name: str  # its manifest entry, or the entries' prefix for a stage run once per model ("student:minilm-l3")
    group: str  # what --from / --only call it
    every_process: bool  # with several processes, every one runs it (its share); else the main one alone
    hashes: str  # what its config hash reads, besides its name
    result: type  # the typed result the manifest records and later stages read
    does: str  # the function of compress.pipeline.stages that does it
    per_model: bool = False

    def entry(self, model: str | None = None) -> str:
        """The stage's manifest entry: its name, or `<name>:<model>` for one run per model."""
        return f"{self.name}:{model}" if self.per_model else self.name

    def config_hash(self, *parts) -> str:
        """The hash a finished entry is reused under: the stage's name and everything it reads."""
        return stable_hash(self.name, *parts)


TEACHER = Stage("teacher", "teacher", True, "the task, the data's fingerprint and settings, the teacher's settings, "
                "the seed", ModelArtifact, "finetune_teacher")
TEACHER_LOGITS = Stage("teacher_logits", "teacher", True, "the teacher's hash", CachedOutputs, "cache_teacher_outputs")
TEACHER_TRANSFER = Stage("teacher_transfer", "teacher", True, "the teacher's hash and the transfer set's fingerprint",
                         CachedOutputs, "cache_transfer_outputs")
STUDENT = Stage("student", "students", True, "the teacher's hash, the student's shape and distill settings, the "
                "transfer set's fingerprint (and a BiLSTM's Word2Vec corpus) where there is one", ModelArtifact,
                "train_student", per_model=True)
BASELINE = Stage("baseline", "students", True, "the task, the data's fingerprint and settings, the seed, the teacher's "
                 "name (its tokenizer), the student's shape (and Word2Vec corpus)", ModelArtifact, "train_student",
                 per_model=True)
PRUNE = Stage("prune", "prune", True, "the source model's and the teacher's hashes, the prune entry", ModelArtifact,
              "prune_model", per_model=True)
QUANTIZE = Stage("quantize", "quantize", False, "the source model's hash, the quantize entry", ModelArtifact,
                 "quantize_model", per_model=True)
EXPORT = Stage("export", "export", False, "the model's hash, the opset, optimisation, int8 variants (and calibration "
               "batches and the transfer set's fingerprint where int8 is calibrated; the budget where it is mended; "
               "whether OpenVINO's graphs are made)", ExportResult, "export_model",
               per_model=True)
BENCH = Stage("bench", "bench", False, "every model's and export's hash, the bench settings", BenchResult,
              "bench_models")

STAGES = (TEACHER, TEACHER_LOGITS, TEACHER_TRANSFER, STUDENT, BASELINE, PRUNE, QUANTIZE, EXPORT, BENCH)

# The groups --from / --only name, in pipeline order. The report is the last: written after every run from the
# stages' results, never reused, so it has no manifest entry.
GROUPS = tuple(dict.fromkeys(stage.group for stage in STAGES)) + ("report",)

_BY_NAME = {stage.name: stage for stage in STAGES}


def declared(entry: str) -> Stage:
    """The declaration of a manifest entry ('teacher_logits', 'student:minilm-l3')."""
    return _BY_NAME[entry.split(":")[0]]


def group_of(entry: str) -> str:
    return declared(entry).group
