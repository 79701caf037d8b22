"""Replacement words for augmentation (compress.data.augment), from the teacher itself.

- `mlm`: the teacher's masked-LM head, as TinyBERT does: the chosen words of a copy are masked and the head's top
  predictions at each mask are the candidates, in context. TinyBERT masks one word per forward pass; here all the
  chosen words of a copy are masked in one pass (as in BERT's pretraining, where 15% are), so a copy costs one
  forward instead of one per word.
- `embeddings`: the nearest words to each chosen word in the teacher's input-embedding space (cosine), for teachers
  without an MLM head (all-MiniLM-L6-v2); context-free, like TinyBERT's GloVe fallback for words the MLM cannot
  take.

Either way a candidate is a whole word of the teacher's vocabulary (one token that reads back as letters), and a
word that the tokenizer splits into pieces has no candidates (it is kept).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AutoModelForMaskedLM, PreTrainedTokenizerBase

from compress.core.hub import hub_access
from compress.core.progress import track_steps
from compress.data.augment import Candidates, split_word

BATCH = 32


def whole_words(tokenizer: PreTrainedTokenizerBase) -> dict[int, str]:
    """Token id -> word for every vocabulary entry that is one whole word of letters: it reads back as letters and
    a word-initial occurrence of those letters tokenizes to exactly it (not "##ing", not a bare RoBERTa piece)."""
    special = set(tokenizer.all_special_ids)
    ids = [i for i in range(len(tokenizer)) if i not in special]
    words = [tokenizer.convert_tokens_to_string([t]).strip() for t in tokenizer.convert_ids_to_tokens(ids)]
    letters = [(i, w) for i, w in zip(ids, words) if len(w) > 1 and w.isalpha()]
    encoded = tokenizer([f" {w}" for _, w in letters], add_special_tokens=False)["input_ids"]
    return {i: w for (i, w), enc in zip(letters, encoded) if enc == [i]}


def word_id(tokenizer: PreTrainedTokenizerBase, letters: str) -> int | None:
    ids = tokenizer(f" {letters}", add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def embedding_candidates(embeddings: torch.Tensor, tokenizer: PreTrainedTokenizerBase, k: int) -> Candidates:
    """Candidates: the `k` whole words nearest (cosine) to each chosen word in `embeddings` (vocab, hidden)."""
    rows = embeddings.shape[0]  # a tokenizer may know more tokens than the embedding table has rows
    vocabulary = {i: w for i, w in whole_words(tokenizer).items() if i < rows}
    candidate_ids = torch.tensor(sorted(vocabulary))
    unit = F.normalize(embeddings.float(), dim=-1)
    candidate_unit = unit[candidate_ids]
    known: dict[str, list[str]] = {}

    def nearest(words: list[str]) -> None:
        ids = {w: word_id(tokenizer, w) for w in words}
        ids = {w: i for w, i in ids.items() if i is not None and i < rows}
        for w in set(words) - set(ids):
            known[w] = []
        items = sorted(ids.items())
        for start in range(0, len(items), 1024):
            chunk = items[start:start + 1024]
            scores = unit[[i for _, i in chunk]] @ candidate_unit.T
            top = scores.topk(min(k + 1, len(candidate_ids)), dim=-1).indices
            for (w, i), row in zip(chunk, top.tolist()):
                near = [int(candidate_ids[j]) for j in row]
                known[w] = [vocabulary[j] for j in near if j != i][:k]

    def candidates(sentences: list[list[str]], positions: list[list[int]]) -> list[list[list[str]]]:
        letters = [[split_word(words[p])[1] for p in chosen] for words, chosen in zip(sentences, positions)]
        nearest(sorted({w for ws in letters for w in ws} - set(known)))
        return [[known[w] for w in ws] for ws in letters]

    return candidates


def mlm_candidates(model_path: str, tokenizer: PreTrainedTokenizerBase, k: int, max_length: int,
                   trust_remote_code: bool = False) -> Candidates | None:
    """Candidates from the teacher's masked-LM head (None when the checkpoint has none: its MLM weights would be
    random, or the tokenizer is not a fast one, whose offsets locate each mask). Each copy is one forward pass with
    its chosen words masked; the top `k` whole words at each mask, the masked word itself left out."""
    if not getattr(tokenizer, "is_fast", False) or tokenizer.mask_token is None:
        return None
    try:
        with hub_access():
            model, info = AutoModelForMaskedLM.from_pretrained(model_path, trust_remote_code=trust_remote_code,
                                                               output_loading_info=True)
    except ValueError:  # an architecture transformers has no masked-LM class for
        return None
    head_missing = any(not name.startswith(model.base_model_prefix) for name in info["missing_keys"])
    if model.get_output_embeddings() is None or head_missing:
        return None
    model.eval()
    size = model.get_output_embeddings().weight.shape[0]  # the head's vocabulary, which may differ from the tokenizer's
    vocabulary = {i: w for i, w in whole_words(tokenizer).items() if i < size}
    allowed = torch.full((size,), float("-inf"))
    allowed[list(vocabulary)] = 0.0

    def candidates(sentences: list[list[str]], positions: list[list[int]]) -> list[list[list[str]]]:
        out: list[list[list[str]]] = []
        with track_steps("augment: the teacher's MLM proposes words", -(-len(sentences) // BATCH)) as advance, \
                torch.inference_mode():
            for start in range(0, len(sentences), BATCH):
                batch = list(zip(sentences[start:start + BATCH], positions[start:start + BATCH]))
                out += _predict_masked(model, tokenizer, batch, allowed, vocabulary, k, max_length)
                advance()
        return out

    return candidates


def _predict_masked(model, tokenizer, batch, allowed, vocabulary, k, max_length) -> list[list[list[str]]]:
    """Top whole words at each chosen word's mask. Each mask is found by its characters (offsets), not by counting
    masks, so a text that already holds the mask token's text, or truncation, cannot shift the words."""
    texts, spans = [], []
    for words, chosen in batch:
        masked, starts, position = list(words), [], 0
        for p in chosen:
            prefix, _, suffix = split_word(words[p])  # type: ignore[misc]
            masked[p] = prefix + tokenizer.mask_token + suffix
        for word in masked:
            starts.append(position)
            position += len(word) + 1
        texts.append(" ".join(masked))
        spans.append([(starts[p], starts[p] + len(masked[p])) for p in chosen])
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt",
                    return_offsets_mapping=True)
    offsets = enc.pop("offset_mapping").tolist()
    logits = model(**enc).logits + allowed
    results = []
    for row, ((words, chosen), word_spans) in enumerate(zip(batch, spans)):
        masks = [i for i, token in enumerate(enc["input_ids"][row].tolist()) if token == tokenizer.mask_token_id]
        proposals = []
        for p, (start, end) in zip(chosen, word_spans):
            at = [i for i in masks if start <= offsets[row][i][0] < end]  # none: cut by truncation
            original = split_word(words[p])[1].lower()  # type: ignore[index]
            best = logits[row, at[0]].topk(k + 1).indices.tolist() if at else []
            proposals.append([w for w in (vocabulary[i] for i in best if i in vocabulary) if w.lower() != original][:k])
        results.append(proposals)
    return results
