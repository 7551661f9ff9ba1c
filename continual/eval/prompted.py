"""The prompted (in-context) baseline: the base model with in-domain examples in its prompt.

Does fine-tuning on a domain beat simply showing the untouched model a few passages of that
domain? :func:`prompted_holdout_nll` scores every holdout block with ``k`` example passages
from the domain's TRAINING documents prepended as context. Only the block's own tokens are
scored, with the same convention as :func:`continual.evaluate.holdout_nll` (tokens 2..n of each
block; the first block token is conditioned on the context but not scored), so the number is
directly comparable with the holdout loss, and ``k=0`` reproduces it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from continual.data.documents import Document
from continual.errors import ConfigError, DataError

_IGNORE = -100
_CHARS_PER_TOKEN_BOUND = 32  # a token rarely spans more characters: tokenize only a prefix


def _positive_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return value


def _passage(tokenizer: Any, text: str, n_tokens: int) -> list[int]:
    """The first ``n_tokens`` tokens of ``text`` (only a prefix of long texts is tokenized)."""
    head = text[: n_tokens * _CHARS_PER_TOKEN_BOUND]
    ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    if len(ids) < n_tokens and len(head) < len(text):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return list(ids[:n_tokens])


def prompt_contexts(
    tokenizer: Any,
    train_docs: Sequence[Document],
    n_blocks: int,
    k: int,
    context_tokens: int,
    seed: int = 0,
) -> list[list[int]]:
    """The context token ids for each of ``n_blocks`` holdout blocks.

    For block i, ``k`` distinct training documents are drawn with a local generator
    (``numpy.random.default_rng(seed)``, blocks in order; the global RNGs are untouched). Each
    contributes its first ``context_tokens // k - 1`` tokens followed by the EOS token (the
    separator our packed blocks use; without an EOS token, ``context_tokens // k`` tokens and
    no separator), so a context has at most ``context_tokens`` tokens. ``k=0`` gives empty
    contexts.

    Raises:
        ConfigError: ``k < 0``, or ``context_tokens`` too small for ``k`` passages.
        DataError: fewer than ``k`` training documents.
    """
    k = _positive_int("k", k, 0)
    if k == 0:
        return [[] for _ in range(n_blocks)]
    context_tokens = _positive_int("context_tokens", context_tokens, 1)
    eos = getattr(tokenizer, "eos_token_id", None)
    per = context_tokens // k - (eos is not None)
    if per < 1:
        raise ConfigError(
            f"context_tokens={context_tokens} leaves no room for k={k} passages (each needs at "
            f"least {1 + (eos is not None)} tokens); raise context_tokens or lower k."
        )
    if len(train_docs) < k:
        raise DataError(
            f"k={k} example passages need at least {k} training documents, but the domain has "
            f"{len(train_docs)}; lower k (a holdout-only domain has none)."
        )
    rng = np.random.default_rng(seed)
    cache: dict[int, list[int]] = {}
    contexts = []
    for _ in range(n_blocks):
        context: list[int] = []
        for j in rng.choice(len(train_docs), size=k, replace=False).tolist():
            if j not in cache:
                cache[j] = _passage(tokenizer, train_docs[j].text, per)
            context += cache[j] + ([eos] if eos is not None else [])
        contexts.append(context)
    return contexts


@torch.inference_mode()
def prompted_holdout_nll(
    model: torch.nn.Module,
    tokenizer: Any,
    holdout_blocks: torch.Tensor,
    train_docs: list[Document],
    k: int,
    context_tokens: int,
    batch_size: int,
    device: torch.device,
    seed: int = 0,
) -> float:
    """Mean NLL (nats/token) of the holdout blocks, each after ``k`` in-domain example passages.

    The context (see :func:`prompt_contexts`: passages from ``train_docs`` only, chosen by
    ``seed``, at most ``context_tokens`` tokens) is prepended to each block; the loss counts
    only the block's tokens 2..n, exactly the targets of
    :func:`continual.evaluate.holdout_nll`, so ``k=0`` reproduces it. Sequences are
    right-padded, which a causal model never attends to from earlier positions.

    Raises:
        ConfigError: bad ``k``/``context_tokens``/``batch_size``, or context + block longer
            than the model's maximum positions.
        DataError: fewer than ``k`` training documents.
    """
    batch_size = _positive_int("batch_size", batch_size, 1)
    if holdout_blocks.ndim != 2 or holdout_blocks.shape[0] == 0 or holdout_blocks.shape[1] < 2:
        raise DataError(
            f"holdout_blocks must be a non-empty [n_blocks, block_len >= 2] tensor, got shape "
            f"{tuple(holdout_blocks.shape)}."
        )
    n_blocks, block_len = holdout_blocks.shape
    contexts = prompt_contexts(tokenizer, train_docs, n_blocks, k, context_tokens, seed)
    longest = max(len(c) for c in contexts) + block_len
    max_positions = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    if max_positions and longest > max_positions:
        raise ConfigError(
            f"a prompted sequence needs up to {longest} positions (context_tokens="
            f"{context_tokens} + block_len={block_len}), but the model has "
            f"{max_positions}; lower context_tokens to at most {max_positions - block_len}."
        )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in tqdm(range(0, n_blocks, batch_size), desc="prompted eval", leave=False):
        rows = range(start, min(start + batch_size, n_blocks))
        width = max(len(contexts[i]) for i in rows) + block_len
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), _IGNORE, dtype=torch.long)
        for r, i in enumerate(rows):
            c = len(contexts[i])
            if c:
                ids[r, :c] = torch.tensor(contexts[i], dtype=torch.long)
            ids[r, c : c + block_len] = holdout_blocks[i]
            labels[r, c + 1 : c + block_len] = holdout_blocks[i, 1:]
        ids, labels = ids.to(device), labels.to(device)
        logits = model(input_ids=ids).logits[:, :-1].float()
        targets = labels[:, 1:]
        total += float(
            F.cross_entropy(
                logits.reshape(-1, logits.size(-1)),
                targets.reshape(-1),
                ignore_index=_IGNORE,
                reduction="sum",
            )
        )
        count += int((targets != _IGNORE).sum())
    model.train(was_training)
    return total / count


__all__ = ["prompt_contexts", "prompted_holdout_nll"]
