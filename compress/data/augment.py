"""TinyBERT-style data augmentation (Jiao et al. 2020, "TinyBERT", section 3.2): copies of each training text with
some of its words replaced by words of close meaning, for the teacher to label as more transfer data.

Words are whitespace-separated; only a word's letters are replaced (punctuation around it stays: "markets," ->
"shares,"), and only whole words, one for one, so a text keeps its word count (and an NER sentence its word
boundaries). Where replacements come from (the teacher's masked-LM head, or its input embeddings' nearest
neighbours) is the `Candidates` callable's business (compress.models.neighbours); the choice of words and of
replacements is seeded here.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

# (sentences as word lists, the positions chosen in each) -> candidate replacements for each chosen position,
# best first; an empty list keeps that word.
Candidates = Callable[[list[list[str]], list[list[int]]], list[list[list[str]]]]

_WORD = re.compile(r"^(\W*)([^\W\d_]+)(\W*)$")  # punctuation, letters, punctuation


def split_word(word: str) -> tuple[str, str, str] | None:
    """(leading punctuation, letters, trailing punctuation), or None for a word that is not letters (numbers,
    mixed tokens like "4G" or "don't")."""
    match = _WORD.match(word)
    return match.groups() if match else None  # type: ignore[return-value]


def augment_sentences(sentences: list[list[str]], copies: int, probability: float, candidates: Candidates,
                      seed: int) -> list[list[str]]:
    """`copies` augmented copies of each sentence (sentence by sentence, copy by copy): each word of letters is
    replaced with `probability` by one of its candidates, picked at random. Copies equal to their sentence are
    kept (the caller drops repeats)."""
    rng = random.Random(seed)
    plans = [(words, [i for i, word in enumerate(words) if split_word(word) and rng.random() < probability])
             for words in sentences for _ in range(copies)]
    options = candidates([words for words, _ in plans], [chosen for _, chosen in plans])
    augmented = []
    for (words, chosen), choices in zip(plans, options):
        copy = list(words)
        for position, replacements in zip(chosen, choices):
            if replacements:
                prefix, letters, suffix = split_word(words[position])  # type: ignore[misc]
                copy[position] = prefix + same_case(rng.choice(replacements), letters) + suffix
        augmented.append(copy)
    return augmented


def augment_texts(texts: list[str], copies: int, probability: float, candidates: Candidates, seed: int) -> list[str]:
    """augment_sentences over texts split at whitespace (and joined with single spaces)."""
    return [" ".join(words) for words in augment_sentences([t.split() for t in texts], copies, probability,
                                                           candidates, seed)]


def augment_pairs(pairs: list[tuple[str, str]], copies: int, probability: float, candidates: Candidates,
                  seed: int) -> list[tuple[str, str]]:
    """augment_texts over (question, context) pairs: each copy replaces words in both, proposed for the two as one
    text (the question gives the context's words their context, as the model reads them)."""
    cuts = [len(question.split()) for question, _ in pairs for _ in range(copies)]
    copied = augment_sentences([q.split() + c.split() for q, c in pairs], copies, probability, candidates, seed)
    return [(" ".join(words[:cut]), " ".join(words[cut:])) for words, cut in zip(copied, cuts)]


def same_case(word: str, like: str) -> str:
    """`word` in the case pattern of `like` (an uncased teacher proposes lower-case words)."""
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word
