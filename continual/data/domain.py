"""One domain of an experiment: read, clean, deduplicate, split, tokenize and pack.

The train/holdout split is made on whole documents *before* tokenization, and holdout blocks
are packed from holdout documents only, so no holdout text can reach training. The split
depends only on the document ids and a salt (never on a run seed), so every run, method and
seed of a study evaluates on the same holdout. With ``split="validation"`` (``eval.split``)
the evaluation set is instead the validation documents, ranked next after the holdout and
taken out of training; the holdout is then neither trained on nor evaluated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from continual.data.clean import clean_text
from continual.data.dedup import deduplicate
from continual.data.documents import Document
from continual.data.holdout import DEFAULT_MAX_OVERLAP, choose_holdout
from continual.data.pack import pack_holdout_blocks, pack_train_blocks
from continual.data.sources import BUILTIN_READERS, load_documents, to_plain
from continual.data.split import check_split
from continual.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


@dataclass
class DomainData:
    """The data of one domain, ready for training and evaluation.

    Attributes:
        name: Domain name.
        train_docs: Documents on the training side of the split (empty if ``holdout_only``).
        holdout_docs: The evaluated documents: the holdout side of the split (with
            ``split="validation"``: the validation documents).
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
    kind: str = "text"

    def training_set(self) -> TextBlocks:
        """What a training stage draws batches from."""
        return TextBlocks(self.train_blocks)


@dataclass
class TextBlocks:
    """Packed training blocks; every token of a block is a target (no padding, no mask)."""

    blocks: torch.Tensor

    def __len__(self) -> int:
        return len(self.blocks)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """The blocks at ``indices`` as ``input_ids``."""
        return {"input_ids": self.blocks[indices]}


def build_domain(
    name: str,
    domain_cfg: Mapping[str, Any],
    tokenizer: Any,
    block_len: int,
    holdout_blocks: int,
    max_train_blocks: int | None = None,
    split: str = "holdout",
) -> DomainData:
    """Load, clean, deduplicate, split, tokenize and pack the data of one domain.

    Args:
        name: Domain name (also the default split salt).
        domain_cfg: Mapping (dict or ``DictConfig``) with ``source`` (a ``_target_`` node
            naming the reader, its params beside it; see :mod:`continual.data.sources`),
            ``max_documents`` (int or null), ``holdout_documents`` (int), ``near_dedup``
            (bool), ``min_chars`` (drop shorter documents after cleaning), ``holdout_only``
            (bool: evaluation-only domain: nothing is trained on, the first
            ``holdout_documents`` documents of the hash ranking, or all kept documents when it
            is null, form the holdout), and optionally ``split_salt`` (default: ``name``) and
            ``near_dedup_threshold`` (default 0.8), and ``max_holdout_overlap`` (default 0.2:
            a holdout document may share at most this fraction of its distinct word 13-grams
            with the training documents; documents over it stay on the training side, see
            :func:`continual.data.overlap.leakage_safe_holdout`; null disables the control),
            and ``validation_documents`` (default 100, read with ``split="validation"``).
        tokenizer: A Hugging Face tokenizer; ``eos_token_id`` separates documents.
        block_len: Tokens per block.
        holdout_blocks: Exactly this many holdout blocks are returned, evenly spaced over
            the packed stream of all holdout documents (so they cover many documents).
        max_train_blocks: Keep at most this many training blocks (``None``: all); only the
            documents needed are tokenized.
        split: ``holdout`` (evaluate on the holdout) or ``validation`` (evaluate on the
            validation documents, :func:`~continual.data.holdout.choose_validation`; the
            ``holdout_*`` fields and counts then describe them).

    Returns:
        A :class:`DomainData`; ``stats`` holds documents_raw, documents_short (dropped by
        ``min_chars``), exact_duplicates, near_duplicates, documents_after_dedup, train_docs,
        holdout_docs, train_docs_used and holdout_docs_used (documents with tokens in a
        block), train_tokens and holdout_tokens (tokens in the returned blocks), train_blocks,
        holdout_blocks, holdout_blocks_available (full blocks the holdout documents give) and
        block_len, plus the leakage-control counts of
        :func:`~continual.data.holdout.choose_holdout` (with ``split="validation"`` also the
        validation counts of :func:`~continual.data.holdout.choose_validation`).

    Raises:
        ConfigError: a missing or impossible config value.
        DataError: too few documents or tokens for the requested holdout/training data.
    """
    cfg = _checked_config(name, domain_cfg, holdout_blocks, max_train_blocks)
    check_split(split)  # before reading any data
    started = time.perf_counter()
    docs, read_stats = _read_documents(name, cfg)
    train_docs, holdout_docs, overlap_stats = choose_holdout(name, cfg, docs, split)
    evaluated = "validation" if split == "validation" else "holdout"

    held, available, n_held_docs = pack_holdout_blocks(
        holdout_docs, tokenizer, block_len, holdout_blocks
    )
    if available < holdout_blocks:
        raise DataError(
            f"domain {name!r}: the {len(holdout_docs)} {evaluated} documents give only "
            f"{available} full blocks of {block_len} tokens, but {holdout_blocks} are needed; "
            f"raise `{evaluated}_documents` (and `max_documents` if it limits them) in the "
            "domain config, or lower `eval.holdout_blocks` (or `train.block_len`)."
        )

    if cfg.get("holdout_only", False):
        train = torch.empty(0, block_len, dtype=torch.long)
        n_train_docs = 0
    else:
        train, n_train_docs = pack_train_blocks(train_docs, tokenizer, block_len, max_train_blocks)
        if train.shape[0] == 0:
            raise DataError(
                f"domain {name!r}: the {len(train_docs)} training documents give no full block "
                f"of {block_len} tokens; raise `max_documents`, lower `holdout_documents` or "
                "use a shorter `train.block_len`."
            )

    stats = {
        **read_stats,
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


def _checked_config(
    name: str, domain_cfg: Mapping[str, Any], holdout_blocks: int, max_train_blocks: int | None
) -> Mapping[str, Any]:
    """The domain config as plain containers, after the checks that need no data."""
    cfg = to_plain(domain_cfg)
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"domain {name!r}: config must be a mapping, got {type(cfg).__name__}.")
    if "source" not in cfg:
        raise ConfigError(
            f"domain {name!r} has no `source`; add e.g. `source: {{_target_: "
            f"{BUILTIN_READERS['jsonl']}, path: my.jsonl}}`."
        )
    if "params" in cfg:
        raise ConfigError(
            f"domain {name!r}: `params` is no longer read; move its keys under `source`, beside "
            "`_target_`."
        )
    max_overlap = cfg.get("max_holdout_overlap", DEFAULT_MAX_OVERLAP)
    if max_overlap is not None and not 0.0 <= float(max_overlap) < 1.0:
        raise ConfigError(
            f"domain {name!r}: max_holdout_overlap={max_overlap!r} must lie in [0, 1) (a fraction "
            "of a holdout document's word 13-grams), or be null to disable the check."
        )
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
    return cfg


def _read_documents(name: str, cfg: Mapping[str, Any]) -> tuple[list[Document], dict[str, int]]:
    """Read, clean, drop short documents and deduplicate; return the documents and counts."""
    min_chars = int(cfg.get("min_chars") or 0)
    raw = load_documents(cfg["source"], cfg.get("max_documents"))
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
    return docs, {
        "documents_raw": len(raw),
        "documents_short": len(cleaned) - len(long_enough),
        "exact_duplicates": n_exact,
        "near_duplicates": n_near,
        "documents_after_dedup": len(docs),
    }
