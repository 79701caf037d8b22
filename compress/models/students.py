"""Student builders, one per kind: a layer-dropped copy of the teacher (DistilBERT's recipe), a pretrained
checkpoint such as DistilBERT, the from-scratch transformer, and the BiLSTM with Word2Vec embeddings.

Every student reads the teacher's tokenizer, so its tokens, labels and the cached teacher outputs line up, unless
it has its own (a checkpoint's, or one named for the custom transformer or the BiLSTM): it then reads its own
encoding of the same texts, and meets the teacher's outputs per text (classification) or per word (NER).
"""

from __future__ import annotations

import zlib

import torch
from transformers import AutoModel, PreTrainedModel, PreTrainedTokenizerBase

from compress.core.config import (
    BiLSTMStudent,
    CheckpointStudent,
    CustomTransformerStudent,
    LayerDroppedStudent,
    StudentConfig,
    TeacherConfig,
)
from compress.core.errors import UserError
from compress.core.hub import hub_access
from compress.core.kd_methods import kd_method, names_where
from compress.models.anatomy import layer_list
from compress.models.bilstm import BiLSTMConfig
from compress.models.custom import CustomTransformerConfig
from compress.models.loading import AUTO_CLASSES, label_settings, load_task_model, load_tokenizer, resolve_model_path

# Families written here rather than in transformers (their model_type): optimum cannot export them, torch.onnx does.
OWN_FAMILIES = (CustomTransformerConfig.model_type, BiLSTMConfig.model_type)


def build_student(spec: StudentConfig, task: str, label_names: list[str] | None, teacher: TeacherConfig,
                  tokenizer: PreTrainedTokenizerBase, train_ids: list[list[int]], seed: int,
                  where: str) -> PreTrainedModel:
    """A fresh, untrained student of `spec.kind` with the task's head, over `tokenizer` (student_tokenizer's).

    `train_ids` are token ids of the training text (the BiLSTM learns its Word2Vec embeddings from them).
    Nothing here reads the fine-tuned teacher, so a KD student and its baseline start identical.
    """
    if isinstance(spec, LayerDroppedStudent):
        model = load_task_model(teacher.model, task, label_names, teacher.trust_remote_code, new_head=True, where=where)
        return drop_layers(model, spec.layers, where=where)
    if isinstance(spec, CheckpointStudent):
        return load_task_model(spec.model, task, label_names, spec.trust_remote_code, new_head=True,
                               where=f"{where}.model")
    if isinstance(spec, CustomTransformerStudent):
        return build_custom_transformer(spec, task, label_names, teacher, tokenizer)
    if isinstance(spec, BiLSTMStudent):
        return build_bilstm(spec, task, label_names, tokenizer, train_ids, seed)
    raise AssertionError(f"unhandled student kind {spec.kind}")


def student_skeleton(spec: StudentConfig, task: str, teacher: TeacherConfig) -> PreTrainedModel | None:
    """The student's modules as build_student makes them, without weights (on the meta device: no memory, nothing
    read but a config.json), so a setting that names its modules is checked before anything trains; None where the
    config.json it is built from is not on this machine (the run then says why). Vocabulary and label counts are
    placeholders: they change no module's name."""
    from transformers import AutoConfig

    labels = label_settings(task, None)
    trust = teacher.trust_remote_code if isinstance(spec, LayerDroppedStudent) else \
        getattr(spec, "trust_remote_code", False)
    if isinstance(spec, LayerDroppedStudent | CheckpointStudent):
        path = resolve_model_path(teacher.model if isinstance(spec, LayerDroppedStudent) else spec.model)
        try:
            with hub_access():
                config = AutoConfig.from_pretrained(path, trust_remote_code=trust, **labels)
        except (OSError, ValueError):
            return None
    elif isinstance(spec, CustomTransformerStudent):
        config = CustomTransformerConfig(vocab_size=8, hidden_size=spec.hidden_size, num_hidden_layers=spec.num_layers,
                                         num_attention_heads=spec.num_heads, intermediate_size=spec.ffn_size, **labels)
    else:
        config = BiLSTMConfig(vocab_size=8, embedding_size=spec.embedding_size, hidden_size=spec.hidden_size,
                              num_layers=spec.num_layers, **labels)
    with torch.device("meta"):
        model = AUTO_CLASSES[task].from_config(config, trust_remote_code=trust)
    if isinstance(spec, LayerDroppedStudent):
        holder, attr, _ = layer_list(model)
        if spec.layers and max(spec.layers) >= len(getattr(holder, attr)):
            return None  # a layer the teacher lacks: check_against_models says so
        drop_layers(model, spec.layers)
    return model


def student_tokenizer(spec: StudentConfig, task: str, teacher: TeacherConfig, where: str) -> PreTrainedTokenizerBase:
    """The tokenizer a student reads: a checkpoint's own, the one a custom transformer or BiLSTM names, else the
    teacher's. One of its own is refused in one line where the teacher's outputs must line up token by token (QA,
    layer transfer) or where it cannot pad a batch; NER meets the teacher at words (compress.data.ner)."""
    own = spec.model if isinstance(spec, CheckpointStudent) else getattr(spec, "tokenizer", None)
    if own is None:
        return teacher_tokenizer(teacher)
    key = f"{where}.model" if isinstance(spec, CheckpointStudent) else f"{where}.tokenizer"
    tokenizer = load_tokenizer(own, getattr(spec, "trust_remote_code", False), where=key)
    if same_vocabulary(tokenizer, teacher_tokenizer(teacher)):
        return tokenizer
    if task == "ner" and not getattr(tokenizer, "is_fast", False):
        raise UserError("NER needs a fast tokenizer (for word ids), and the student's is not one", key,
                        "use a tokenizer with a tokenizer.json")
    if task == "qa":
        raise UserError("the student's tokenizer is not the teacher's (different vocabulary), and for QA the "
                        "teacher's start and end outputs are per token, which are not mapped across tokenizers yet",
                        key, "use a model or tokenizer with the teacher's vocabulary (e.g. distilbert-base-uncased for "
                             "an uncased BERT teacher)")
    if kd_method(spec.distill.method).teacher_tokenizer:
        raise UserError(f"distill.method '{spec.distill.method}' compares hidden states token by token, so it "
                        "needs the teacher's tokenizer, and this student's differs", f"{where}.distill.method",
                        f"use {names_where(teacher_tokenizer=False)}")
    if tokenizer.pad_token is None:
        raise UserError("the student's tokenizer has no padding token, so it cannot batch texts", key,
                        "use a tokenizer with a pad token (BERT-style ones have [PAD])")
    return tokenizer


def teacher_tokenizer(teacher: TeacherConfig) -> PreTrainedTokenizerBase:
    return load_tokenizer(teacher.model, teacher.trust_remote_code)


def same_vocabulary(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """Whether the two tokenizers share a vocabulary (DistilBERT's and BERT's uncased ones do), so ids, and the
    teacher's per-token outputs, line up."""
    return a.get_vocab() == b.get_vocab()


def build_custom_transformer(spec: CustomTransformerStudent, task: str, label_names: list[str] | None,
                             teacher: TeacherConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    config = CustomTransformerConfig(vocab_size=len(tokenizer), hidden_size=spec.hidden_size,
                                     num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
                                     intermediate_size=spec.ffn_size, hidden_dropout_prob=spec.dropout,
                                     pad_token_id=tokenizer.pad_token_id, **label_settings(task, label_names))
    model = AUTO_CLASSES[task].from_config(config)
    if spec.init_embeddings_from_teacher:
        with torch.no_grad():
            target = model.get_input_embeddings().weight
            source = project_embeddings(teacher_embeddings(teacher), target.shape[1])
            rows, teacher_rows = shared_token_rows(tokenizer, teacher_tokenizer(teacher), source.shape[0])
            target[rows] = rescale(source[teacher_rows], target.std())
    return model


def shared_token_rows(tokenizer: PreTrainedTokenizerBase, teacher: PreTrainedTokenizerBase,
                      teacher_rows: int) -> tuple[list[int], list[int]]:
    """(student ids, teacher ids) of the tokens both vocabularies hold, by the token's text: every id when the
    student reads the teacher's tokenizer; with its own, the tokens they share (the rest keep their random start)."""
    teacher_vocab = teacher.get_vocab()
    pairs = sorted((i, teacher_vocab[token]) for token, i in tokenizer.get_vocab().items()
                   if token in teacher_vocab and teacher_vocab[token] < teacher_rows)
    return [s for s, _ in pairs], [t for _, t in pairs]


def teacher_embeddings(teacher: TeacherConfig) -> torch.Tensor:
    """The pretrained teacher checkpoint's token embedding matrix (vocab, hidden)."""
    path = resolve_model_path(teacher.model)
    with hub_access():
        base = AutoModel.from_pretrained(path, trust_remote_code=teacher.trust_remote_code)
    return base.get_input_embeddings().weight.detach().clone()


def project_embeddings(embeddings: torch.Tensor, width: int) -> torch.Tensor:
    """Embeddings (V, H) brought to (V, width): the top `width` principal components when narrower (the
    directions that keep most of the variance), zero-padded columns when wider."""
    vocab, hidden = embeddings.shape
    if width >= hidden:
        return torch.cat([embeddings, embeddings.new_zeros(vocab, width - hidden)], dim=1)
    centred = embeddings - embeddings.mean(dim=0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[:width].T


def rescale(matrix: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Same spread as the model's own initialisation, so training starts on the scale it was designed for."""
    return matrix * (std / matrix.std().clamp(min=1e-12))


def build_bilstm(spec: BiLSTMStudent, task: str, label_names: list[str] | None, tokenizer: PreTrainedTokenizerBase,
                 train_ids: list[list[int]], seed: int) -> PreTrainedModel:
    config = BiLSTMConfig(vocab_size=len(tokenizer), embedding_size=spec.embedding_size, hidden_size=spec.hidden_size,
                          num_layers=spec.num_layers, dropout=spec.dropout, pad_token_id=tokenizer.pad_token_id,
                          **label_settings(task, label_names))
    model = AUTO_CLASSES[task].from_config(config)
    if spec.word2vec.enabled:
        vectors = word2vec_vectors(train_ids, spec.embedding_size, spec.word2vec.epochs, spec.word2vec.window,
                                   spec.word2vec.min_count, seed)
        ids = torch.tensor(list(vectors))
        with torch.no_grad():
            weight = model.get_input_embeddings().weight
            weight[ids] = rescale(torch.stack(list(vectors.values())), weight.std())
    return model


def word2vec_vectors(sequences: list[list[int]], size: int, epochs: int, window: int, min_count: int,
                     seed: int) -> dict[int, torch.Tensor]:
    """Skip-gram Word2Vec (gensim) over token-id sequences; {token id: vector} for every id it learned.

    One worker and a fixed hash make it reproducible, so a resumed run builds the same student.
    """
    from gensim.models import Word2Vec  # gensim is slow to import; only BiLSTM students need it

    sentences = [[str(i) for i in ids] for ids in sequences]
    w2v = Word2Vec(sentences, vector_size=size, window=window, min_count=min_count, sg=1, workers=1, seed=seed,
                   epochs=epochs, hashfxn=_stable_hash)
    return {int(token): torch.from_numpy(w2v.wv[token].copy()) for token in w2v.wv.index_to_key}


def _stable_hash(text: str) -> int:
    # gensim seeds each word's initial vector with hashfxn; Python's hash() changes between processes.
    return zlib.crc32(text.encode())


def default_layers(num_layers: int) -> list[int]:
    """Every other layer starting at the first, as DistilBERT kept from BERT."""
    return list(range(0, num_layers, 2))


def drop_layers(model: PreTrainedModel, keep: list[int] | None, where: str = "students") -> PreTrainedModel:
    """Keep only the listed transformer layers (in the given order) of `model`, in place; returns it.

    Embeddings, the kept layers and the head are the model's own weights, so the student starts where
    the teacher did, at half (or any) depth.
    """
    holder, attr, count_key = layer_list(model)
    layers = getattr(holder, attr)
    keep = default_layers(len(layers)) if keep is None else keep
    bad = [i for i in keep if i >= len(layers)]
    if bad:
        raise UserError(f"layer(s) {bad} do not exist: the teacher has {len(layers)} (0..{len(layers) - 1})",
                        f"{where}.layers", "pick indices below the teacher's depth")
    setattr(holder, attr, torch.nn.ModuleList([layers[i] for i in keep]))
    setattr(model.config, count_key, len(keep))
    return model
