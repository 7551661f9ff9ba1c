"""Exact and MinHash near-duplicate removal over word 5-grams (deterministic, no global RNG)."""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from continual.data.documents import Document
from continual.errors import ConfigError

_WORD = re.compile(r"\w+")
_SHINGLE = 5  # words per shingle
_NUM_PERM = 64  # MinHash permutations


def _exact_key(text: str) -> bytes:
    normalised = " ".join(text.casefold().split())
    return hashlib.blake2b(normalised.encode("utf-8"), digest_size=16).digest()


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads the bits of uint64 values (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _shingles(text: str, vocab: defaultdict[str, int]) -> np.ndarray:
    """Sorted unique uint64 hashes of the word 5-grams of ``text`` (lower-cased words).

    ``vocab`` numbers words in order of first appearance (deterministic, unlike ``hash``).
    """
    words = _WORD.findall(text.casefold())
    if not words:
        return np.empty(0, dtype=np.uint64)
    ids = np.fromiter(map(vocab.__getitem__, words), dtype=np.uint64, count=len(words))
    n = min(_SHINGLE, len(ids))
    h = np.zeros(len(ids) - n + 1, dtype=np.uint64)
    for k in range(n):
        h = h * np.uint64(1_000_003) + ids[k : k + len(h)]
    return np.unique(_mix64(h))


def _lsh_shape(threshold: float) -> tuple[int, int]:
    """(bands, rows) with bands * rows = 64 whose candidate rate at ``threshold`` is >= 99.5%."""
    for rows in (8, 4, 2, 1):
        bands = _NUM_PERM // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= 0.995:
            return bands, rows
    return _NUM_PERM, 1


def _minhash(shingles: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    signature = np.full(len(a), np.iinfo(np.uint64).max, dtype=np.uint64)
    for start in range(0, len(shingles), 8192):  # bounds memory for very long documents
        chunk = shingles[start : start + 8192]
        hashed = (a[:, None] * chunk[None, :] + b[:, None]) >> np.uint64(32)
        np.minimum(signature, hashed.min(axis=1), out=signature)
    return signature


def deduplicate(
    docs: Sequence[Document], near: bool, threshold: float = 0.8
) -> tuple[list[Document], int, int]:
    """Remove exact and (optionally) near-duplicate documents, keeping the first of each group.

    Exact duplicates have the same text after case folding and whitespace collapsing. Near
    duplicates have a Jaccard similarity >= ``threshold`` between their sets of word 5-grams:
    candidates come from MinHash LSH (64 permutations, banding chosen so that a pair at the
    threshold becomes a candidate with >= 99.5% probability) and every candidate pair is
    verified with the exact Jaccard similarity, so nothing below the threshold is removed.
    A document is compared with the documents kept so far, in input order. Deterministic: no
    global RNG is used.

    Returns:
        ``(kept_docs, n_exact_duplicates, n_near_duplicates)``.
    """
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(
            f"near-duplicate threshold must be in (0, 1], got {threshold}; use e.g. 0.8."
        )
    seen: set[bytes] = set()
    unique: list[Document] = []
    for doc in docs:
        key = _exact_key(doc.text)
        if key not in seen:
            seen.add(key)
            unique.append(doc)
    n_exact = len(docs) - len(unique)
    if not near:
        return unique, n_exact, 0

    bands, rows = _lsh_shape(threshold)
    rng = np.random.default_rng(20240607)  # a local generator: global RNG state is untouched
    a = rng.integers(1, 2**63, size=_NUM_PERM, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, size=_NUM_PERM, dtype=np.uint64)
    vocab: defaultdict[str, int] = defaultdict()
    vocab.default_factory = vocab.__len__  # a new word gets the next id
    buckets: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
    kept: list[Document] = []
    kept_shingles: list[np.ndarray] = []
    for doc in unique:
        sh = _shingles(doc.text, vocab)
        if len(sh) == 0:  # no words at all: exact dedup already handled it
            kept.append(doc)
            kept_shingles.append(sh)
            continue
        signature = _minhash(sh, a, b)
        keys = [signature[i * rows : (i + 1) * rows].tobytes() for i in range(bands)]
        candidates = sorted(
            {j for band, key in enumerate(keys) for j in buckets[band].get(key, ())}
        )
        if any(_jaccard_at_least(sh, kept_shingles[j], threshold) for j in candidates):
            continue
        index = len(kept)
        kept.append(doc)
        kept_shingles.append(sh)
        for band, key in enumerate(keys):
            buckets[band].setdefault(key, []).append(index)
    return kept, n_exact, len(unique) - len(kept)


def _jaccard_at_least(x: np.ndarray, y: np.ndarray, threshold: float) -> bool:
    small, large = sorted((len(x), len(y)))
    if large == 0 or small < threshold * large:  # |x & y| / |x | y| <= small / large
        return False
    inter = len(np.intersect1d(x, y, assume_unique=True))
    return inter / (len(x) + len(y) - inter) >= threshold
