"""From raw documents to token blocks: clean, deduplicate, split, tokenize, pack.

:func:`build_domain` runs the whole chain for one domain of an experiment. The train/holdout
split is made on whole documents *before* tokenization, and holdout blocks are packed from
holdout documents only, so no holdout text can reach training. The split depends only on the
document ids and a salt (never on a run seed), so every run, method and seed of a study
evaluates on the same holdout.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from continual.data.documents import Document
from continual.data.overlap import leakage_safe_holdout, overlap_fractions
from continual.data.sources import load_documents, to_plain
from continual.errors import ConfigError, DataError

logger = logging.getLogger(__name__)
# Most of a holdout document's word 13-grams that may occur in the domain's training documents.
DEFAULT_MAX_OVERLAP = 0.2


@dataclass
class DomainData:
    """The data of one domain, ready for training and evaluation.

    Attributes:
        name: Domain name.
        train_docs: Documents on the training side of the split (empty if ``holdout_only``).
        holdout_docs: Documents on the holdout side of the split.
        train_blocks: ``LongTensor[n_train_blocks, block_len]`` packed from ``train_docs``.
        holdout_blocks: ``LongTensor[holdout_blocks, block_len]`` packed from ``holdout_docs``.
        stats: Counts (see :func:`build_domain`).
    """

    name: str
    train_docs: list[Document]
    holdout_docs: list[Document]
    train_blocks: torch.Tensor
    holdout_blocks: torch.Tensor
    stats: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- cleaning

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff]")
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
_MANY_BLANK_LINES = re.compile(r"\n{4,}")


def clean_text(text: str) -> str:
    """Normalise a document while keeping code indentation intact.

    Converts ``\\r\\n``/``\\r`` (and Unicode line/paragraph separators) to ``\\n``, removes NUL
    and other control characters (tab and newline are kept) and byte-order marks, strips
    trailing spaces of every line, collapses runs of 3+ blank lines to 2, and drops leading
    and trailing blank lines.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\u2028", "\n").replace("\u2029", "\n")
    text = _CONTROL.sub("", text)
    text = _TRAILING_SPACE.sub("", text)
    text = _MANY_BLANK_LINES.sub("\n\n\n", text)
    return text.strip("\n")


# --------------------------------------------------------------------------- deduplication

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


# --------------------------------------------------------------------------- splitting


def _split_rank(doc: Document, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{doc.doc_id}".encode()).hexdigest()


def split_documents(
    docs: Sequence[Document], holdout_documents: int, salt: str
) -> tuple[list[Document], list[Document]]:
    """Split documents into ``(train, holdout)`` by a salted hash of their ids.

    Documents are ranked by ``sha256(f"{salt}:{doc_id}")``; the first ``holdout_documents``
    form the holdout, the rest the training side. Both lists come back in that rank order (a
    stable pseudo-random order, so a prefix of either is a fair sample). The split depends on
    nothing but the ids and the salt: not on any seed or global RNG, nor on the input order.

    Raises:
        ConfigError: ``holdout_documents`` < 1.
        DataError: duplicate document ids, or fewer than ``holdout_documents + 1`` documents.
    """
    if isinstance(holdout_documents, bool) or not isinstance(holdout_documents, int):
        raise ConfigError(f"holdout_documents must be an integer, got {holdout_documents!r}.")
    if holdout_documents < 1:
        raise ConfigError(
            f"holdout_documents must be >= 1, got {holdout_documents}; set `holdout_documents` "
            "in the domain config."
        )
    _check_unique_ids(docs)
    if len(docs) < holdout_documents + 1:
        raise DataError(
            f"only {len(docs)} documents are left (after cleaning and deduplication), but "
            f"holdout_documents={holdout_documents} needs at least {holdout_documents + 1} (the "
            f"holdout plus training data); lower `holdout_documents` to at most {len(docs) - 1}, "
            "or raise `max_documents`/use a larger source."
        )
    ranked = sorted(docs, key=lambda d: _split_rank(d, salt))
    return ranked[holdout_documents:], ranked[:holdout_documents]


def _check_unique_ids(docs: Sequence[Document]) -> None:
    seen: set[str] = set()
    for doc in docs:
        if doc.doc_id in seen:
            raise DataError(
                f"document id {doc.doc_id!r} occurs more than once; ids must be unique so that "
                "a document lands on one side of the train/holdout split. For jsonl/hf sources "
                "set `params.id_field` to a unique column, or leave it out to use line/row "
                "numbers."
            )
        seen.add(doc.doc_id)


# --------------------------------------------------------------------------- packing


def pack_blocks(
    token_lists: Sequence[Sequence[int]],
    block_len: int,
    eos_id: int | None,
    max_blocks: int | None,
) -> torch.Tensor:
    """Concatenate token lists (each followed by ``eos_id`` when given) and cut full blocks.

    Blocks may span document boundaries; the incomplete remainder is dropped, and at most
    ``max_blocks`` blocks are kept (``None``: all).

    Returns:
        ``LongTensor[n_blocks, block_len]`` (``n_blocks`` may be 0).
    """
    if isinstance(block_len, bool) or not isinstance(block_len, int) or block_len < 1:
        raise ConfigError(f"block_len must be a positive integer, got {block_len!r}.")
    if max_blocks is not None and max_blocks < 0:
        raise ConfigError(f"max_blocks must be >= 0 or None, got {max_blocks!r}.")
    limit = None if max_blocks is None else max_blocks * block_len
    flat: list[int] = []
    for tokens in token_lists:
        if limit is not None and len(flat) >= limit:
            break
        flat.extend(tokens)
        if eos_id is not None:
            flat.append(eos_id)
    n_blocks = len(flat) // block_len
    if max_blocks is not None:
        n_blocks = min(n_blocks, max_blocks)
    return torch.tensor(flat[: n_blocks * block_len], dtype=torch.long).view(n_blocks, block_len)


def _tokenize(
    docs: Sequence[Document], tokenizer: Any, needed_tokens: int | None = None
) -> list[list[int]]:
    """Token ids of ``docs`` in order (batched); stop once ``needed_tokens`` (EOS included)."""
    eos = getattr(tokenizer, "eos_token_id", None) is not None
    token_lists: list[list[int]] = []
    total = 0
    batch_size = 32
    for start in range(0, len(docs), batch_size):
        if needed_tokens is not None and total >= needed_tokens:
            break
        texts = [d.text for d in docs[start : start + batch_size]]
        for tokens in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]:
            token_lists.append(list(tokens))
            total += len(tokens) + eos
    return token_lists


def _docs_in_blocks(
    token_lists: Sequence[Sequence[int]], eos: bool, block_len: int, block_indices: torch.Tensor
) -> int:
    """How many documents have at least one token in the given blocks of the packed stream."""
    lengths = np.array([len(t) + eos for t in token_lists], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    used: set[int] = set()
    for i in block_indices.tolist():
        first = int(np.searchsorted(starts, i * block_len, side="right")) - 1
        last = int(np.searchsorted(starts, (i + 1) * block_len - 1, side="right")) - 1
        used.update(range(first, last + 1))
    return len(used)


def _train_blocks(
    docs: Sequence[Document], tokenizer: Any, block_len: int, max_blocks: int | None
) -> tuple[torch.Tensor, int]:
    """Pack training documents in order; only as many are tokenized as ``max_blocks`` needs.

    Returns ``(blocks, n_documents_used)``.
    """
    eos_id = getattr(tokenizer, "eos_token_id", None)
    needed = None if max_blocks is None else max_blocks * block_len
    token_lists = _tokenize(docs, tokenizer, needed)
    blocks = pack_blocks(token_lists, block_len, eos_id, max_blocks)
    used = _docs_in_blocks(token_lists, eos_id is not None, block_len, torch.arange(len(blocks)))
    return blocks, used


def _holdout_blocks(
    docs: Sequence[Document], tokenizer: Any, block_len: int, n_blocks: int
) -> tuple[torch.Tensor, int, int]:
    """``n_blocks`` blocks spread evenly over the packed stream of all holdout documents.

    Taking evenly spaced blocks (rather than the first ones) spreads the evaluation over
    many documents: with long documents (source files, licences) the first blocks would come
    from one or two documents only. Returns ``(blocks, n_available, n_documents_used)``.
    """
    eos_id = getattr(tokenizer, "eos_token_id", None)
    token_lists = _tokenize(docs, tokenizer)
    every = pack_blocks(token_lists, block_len, eos_id, None)
    available = len(every)
    if available < n_blocks:
        return every, available, len(docs)
    chosen = torch.arange(n_blocks) * available // n_blocks
    used = _docs_in_blocks(token_lists, eos_id is not None, block_len, chosen)
    return every[chosen].clone(), available, used


# --------------------------------------------------------------------------- domains


def build_domain(
    name: str,
    domain_cfg: Mapping[str, Any],
    tokenizer: Any,
    block_len: int,
    holdout_blocks: int,
    max_train_blocks: int | None = None,
) -> DomainData:
    """Load, clean, deduplicate, split, tokenize and pack the data of one domain.

    Args:
        name: Domain name (also the default split salt).
        domain_cfg: Mapping (dict or ``DictConfig``) with ``source``, ``params``,
            ``max_documents`` (int or null), ``holdout_documents`` (int), ``near_dedup``
            (bool), ``min_chars`` (drop shorter documents after cleaning), ``holdout_only``
            (bool: evaluation-only domain: nothing is trained on, the first
            ``holdout_documents`` documents of the hash ranking, or all kept documents when it
            is null, form the holdout), and optionally ``split_salt`` (default: ``name``) and
            ``near_dedup_threshold`` (default 0.8), and ``max_holdout_overlap`` (default 0.2:
            a holdout document may share at most this fraction of its distinct word 13-grams
            with the training documents; documents over it stay on the training side, see
            :func:`continual.data.overlap.leakage_safe_holdout`; null disables the control).
        tokenizer: A Hugging Face tokenizer; ``eos_token_id`` separates documents.
        block_len: Tokens per block.
        holdout_blocks: Exactly this many holdout blocks are returned, evenly spaced over
            the packed stream of all holdout documents (so they cover many documents).
        max_train_blocks: Keep at most this many training blocks (``None``: all); only the
            documents needed are tokenized.

    Returns:
        A :class:`DomainData`; ``stats`` holds documents_raw, documents_short (dropped by
        ``min_chars``), exact_duplicates, near_duplicates, documents_after_dedup, train_docs,
        holdout_docs, train_docs_used and holdout_docs_used (documents with tokens in a
        block), train_tokens and holdout_tokens (tokens in the returned blocks), train_blocks,
        holdout_blocks, holdout_blocks_available (full blocks the holdout documents give) and
        block_len.

    Raises:
        ConfigError: a missing or impossible config value.
        DataError: too few documents or tokens for the requested holdout/training data.
    """
    cfg = to_plain(domain_cfg)
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"domain {name!r}: config must be a mapping, got {type(cfg).__name__}.")
    if "source" not in cfg:
        raise ConfigError(f"domain {name!r} has no `source`; add e.g. `source: jsonl`.")
    holdout_only = bool(cfg.get("holdout_only", False))
    min_chars = int(cfg.get("min_chars") or 0)
    salt = str(cfg.get("split_salt") or name)
    max_overlap = cfg.get("max_holdout_overlap", DEFAULT_MAX_OVERLAP)
    if max_overlap is not None and not 0.0 <= float(max_overlap) < 1.0:
        raise ConfigError(
            f"domain {name!r}: max_holdout_overlap={max_overlap!r} must lie in [0, 1) (a fraction "
            "of a holdout document's word 13-grams), or be null to disable the check."
        )
    overlap_stats: dict[str, Any] = {}
    if (
        isinstance(holdout_blocks, bool)
        or not isinstance(holdout_blocks, int)
        or holdout_blocks < 1
    ):
        raise ConfigError(
            f"holdout_blocks must be a positive integer, got {holdout_blocks!r}; fix "
            "`eval.holdout_blocks`."
        )
    if max_train_blocks is not None and max_train_blocks < 1:
        raise ConfigError(f"max_train_blocks must be >= 1 or null, got {max_train_blocks!r}.")

    started = time.perf_counter()
    raw = load_documents(cfg["source"], cfg.get("params") or {}, cfg.get("max_documents"))
    cleaned = [Document(d.doc_id, clean_text(d.text)) for d in raw]
    long_enough = [d for d in cleaned if len(d.text) >= max(min_chars, 1)]
    docs, n_exact, n_near = deduplicate(
        long_enough, bool(cfg.get("near_dedup", False)), float(cfg.get("near_dedup_threshold", 0.8))
    )
    logger.info(
        "domain %s: %d documents read, %d too short, %d exact + %d near duplicates removed",
        name,
        len(raw),
        len(cleaned) - len(long_enough),
        n_exact,
        n_near,
    )

    holdout_documents = cfg.get("holdout_documents")
    if holdout_only:
        if not docs:
            raise DataError(
                f"domain {name!r}: no documents left after cleaning (min_chars={min_chars}); "
                "lower `min_chars` or check the source."
            )
        _check_unique_ids(docs)
        train_docs: list[Document] = []
        holdout_docs = sorted(docs, key=lambda d: _split_rank(d, salt))
        if holdout_documents is not None:
            holdout_docs = holdout_docs[: max(int(holdout_documents), 1)]
    else:
        train_docs, holdout_docs = split_documents(docs, holdout_documents, salt)
        if max_overlap is not None:
            leaked = int((overlap_fractions(holdout_docs, train_docs) > max_overlap).sum())
            ranked = sorted(docs, key=lambda d: _split_rank(d, salt))
            train_docs, holdout_docs, skipped = leakage_safe_holdout(
                ranked, holdout_documents, max_overlap
            )
            if len(holdout_docs) < holdout_documents:
                raise DataError(
                    f"domain {name!r}: only {len(holdout_docs)} of {len(docs)} documents share "
                    f"at most {max_overlap:.0%} of their word 13-grams with the rest, but "
                    f"holdout_documents={holdout_documents}; lower `holdout_documents`, raise "
                    "`max_documents`, or relax `max_holdout_overlap` (null disables the check)."
                )
            overlap_stats = {
                "holdout_leaking_before_control": leaked,
                "holdout_skipped_for_overlap": skipped,
                "holdout_max_overlap": round(
                    float(overlap_fractions(holdout_docs, train_docs).max()), 4
                ),
            }

    held, available, n_held_docs = _holdout_blocks(
        holdout_docs, tokenizer, block_len, holdout_blocks
    )
    if available < holdout_blocks:
        raise DataError(
            f"domain {name!r}: the {len(holdout_docs)} holdout documents give only {available} "
            f"full blocks of {block_len} tokens, but {holdout_blocks} are needed; raise "
            "`holdout_documents` (and `max_documents` if it limits them) in the domain config, "
            "or lower `eval.holdout_blocks` (or `train.block_len`)."
        )

    if holdout_only:
        train = torch.empty(0, block_len, dtype=torch.long)
        n_train_docs = 0
    else:
        train, n_train_docs = _train_blocks(train_docs, tokenizer, block_len, max_train_blocks)
        if train.shape[0] == 0:
            raise DataError(
                f"domain {name!r}: the {len(train_docs)} training documents give no full block "
                f"of {block_len} tokens; raise `max_documents`, lower `holdout_documents` or "
                "use a shorter `train.block_len`."
            )

    stats = {
        "documents_raw": len(raw),
        "documents_short": len(cleaned) - len(long_enough),
        "exact_duplicates": n_exact,
        "near_duplicates": n_near,
        "documents_after_dedup": len(docs),
        "train_docs": len(train_docs),
        "holdout_docs": len(holdout_docs),
        "train_docs_used": n_train_docs,
        "holdout_docs_used": n_held_docs,
        "train_blocks": int(train.shape[0]),
        "holdout_blocks": int(held.shape[0]),
        "holdout_blocks_available": available,
        "train_tokens": int(train.numel()),
        "holdout_tokens": int(held.numel()),
        "block_len": block_len,
        **overlap_stats,
    }
    logger.info(
        "domain %s: %d train blocks, %d holdout blocks of %d tokens (%.1f s)",
        name,
        stats["train_blocks"],
        stats["holdout_blocks"],
        block_len,
        time.perf_counter() - started,
    )
    return DomainData(name, train_docs, holdout_docs, train, held, stats)


__all__ = [
    "DomainData",
    "build_domain",
    "clean_text",
    "deduplicate",
    "pack_blocks",
    "split_documents",
]
