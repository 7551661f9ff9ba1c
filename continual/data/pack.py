"""Tokenize documents and pack them into fixed-length blocks of token ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from continual.data.documents import Document
from continual.errors import ConfigError


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


def tokenize_documents(
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


def pack_train_blocks(
    docs: Sequence[Document], tokenizer: Any, block_len: int, max_blocks: int | None
) -> tuple[torch.Tensor, int]:
    """Pack training documents in order; only as many are tokenized as ``max_blocks`` needs.

    Returns ``(blocks, n_documents_used)``.
    """
    eos_id = getattr(tokenizer, "eos_token_id", None)
    needed = None if max_blocks is None else max_blocks * block_len
    token_lists = tokenize_documents(docs, tokenizer, needed)
    blocks = pack_blocks(token_lists, block_len, eos_id, max_blocks)
    used = _docs_in_blocks(token_lists, eos_id is not None, block_len, torch.arange(len(blocks)))
    return blocks, used


def pack_holdout_blocks(
    docs: Sequence[Document], tokenizer: Any, block_len: int, n_blocks: int
) -> tuple[torch.Tensor, int, int]:
    """``n_blocks`` blocks spread evenly over the packed stream of all holdout documents.

    Taking evenly spaced blocks (rather than the first ones) spreads the evaluation over
    many documents: with long documents (source files, licences) the first blocks would come
    from one or two documents only. Returns ``(blocks, n_available, n_documents_used)``.
    """
    eos_id = getattr(tokenizer, "eos_token_id", None)
    token_lists = tokenize_documents(docs, tokenizer)
    every = pack_blocks(token_lists, block_len, eos_id, None)
    available = len(every)
    if available < n_blocks:
        return every, available, len(docs)
    chosen = torch.arange(n_blocks) * available // n_blocks
    used = _docs_in_blocks(token_lists, eos_id is not None, block_len, chosen)
    return every[chosen].clone(), available, used
