"""Holdout leakage control: word 13-gram overlap between holdout and training documents.

Near-duplicate removal (MinHash on word 5-grams, :mod:`continual.data.dedup`) drops pairs of
documents that are almost the same as a whole; it lets through documents that share long
passages with many others (licence variants with the same disclaimer, abstracts quoting a
template). The measure here is the one used for benchmark contamination checks: the fraction
of a holdout document's distinct word 13-grams (lower-cased ``\\w+`` words) that occur anywhere
in the domain's training documents.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from continual.data.documents import Document

NGRAM = 13
_WORD = re.compile(r"\w+")


def _ngram_hashes(text: str, n: int) -> np.ndarray:
    """Sorted distinct 64-bit hashes of the word n-grams of ``text`` (fewer words: one gram)."""
    ids = np.array([_stable_word_hash(w) for w in _WORD.findall(text.casefold())], np.uint64)
    width = min(n, len(ids))
    h = np.zeros(len(ids) - width + 1 if width else 0, dtype=np.uint64)
    for k in range(width):  # polynomial rolling hash, wrapping uint64 arithmetic
        h = h * np.uint64(0x100000001B3) + ids[k : k + len(h)]
    return np.unique(h)


_WORD_CACHE: dict[str, int] = {}


def _stable_word_hash(word: str) -> int:
    """FNV-1a 64-bit hash of a word (stable across processes, unlike ``hash``)."""
    cached = _WORD_CACHE.get(word)
    if cached is None:
        h = 0xCBF29CE484222325
        for byte in word.encode("utf-8"):
            h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
        if len(_WORD_CACHE) < 2_000_000:
            _WORD_CACHE[word] = h
        cached = h
    return cached


def overlap_fractions(
    holdout: Sequence[Document], train: Sequence[Document], n: int = NGRAM
) -> np.ndarray:
    """For every holdout document, the fraction of its distinct word n-grams found in ``train``.

    Returns:
        ``float64[len(holdout)]`` in [0, 1] (0 for a document without words).
    """
    train_grams = [_ngram_hashes(d.text, n) for d in train]
    pool = np.unique(np.concatenate(train_grams)) if train_grams else np.empty(0, np.uint64)
    out = np.zeros(len(holdout))
    for i, doc in enumerate(holdout):
        grams = _ngram_hashes(doc.text, n)
        if len(grams):
            out[i] = np.isin(grams, pool, assume_unique=True).mean()
    return out


def leakage_safe_holdout(
    ranked: Sequence[Document], holdout_documents: int, max_overlap: float, n: int = NGRAM
) -> tuple[list[Document], list[Document], int]:
    """Pick the holdout in ``ranked`` order, skipping documents that would leak.

    Walks the documents in their (seed-independent) rank order and accepts a document into the
    holdout only if at most ``max_overlap`` of its distinct word n-grams occur in the documents
    that would remain for training (every document not yet accepted, except itself). Accepting
    a document removes its n-grams from the training side, which can only lower the overlap of
    the documents accepted before it, so the bound holds for the final split. A document that
    fails stays on the training side, together with the near-duplicates it overlaps.

    Returns:
        ``(train, holdout, n_skipped)``: both lists in rank order; ``n_skipped`` counts the
        documents that were passed over because they overlapped training text.
    """
    grams = [_ngram_hashes(d.text, n) for d in ranked]
    if grams:
        vocab, inverse = np.unique(np.concatenate(grams), return_inverse=True)
    else:
        vocab, inverse = np.empty(0, np.uint64), np.empty(0, np.int64)
    freq = np.bincount(inverse, minlength=len(vocab))  # documents holding each n-gram
    bounds = np.cumsum([0] + [len(g) for g in grams])
    holdout_idx: list[int] = []
    skipped = 0
    for i in range(len(ranked)):
        if len(holdout_idx) == holdout_documents:
            break
        idx = inverse[bounds[i] : bounds[i + 1]]
        if len(idx) and (freq[idx] > 1).mean() > max_overlap:
            skipped += 1
            continue
        holdout_idx.append(i)
        freq[idx] -= 1  # its n-grams leave the training side
    chosen = set(holdout_idx)
    train = [d for i, d in enumerate(ranked) if i not in chosen]
    return train, [ranked[i] for i in holdout_idx], skipped
