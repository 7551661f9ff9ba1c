"""A ``pairs`` domain: input-output examples, split, rendered, tokenized and batched.

Examples are deduplicated on their prompts (exact, and near-duplicates when asked; a prefix
that every prompt shares, such as a fixed instruction, is left out of the comparison), then
split by a salted hash of their ids, the same seed-independent way as text documents
(:mod:`continual.data.split`), with the same word 13-gram leakage control on the holdout
(:mod:`continual.data.overlap`). Batches are padded per batch (no packing across examples)
and carry labels only on response tokens: prompt and padding positions are ``-100``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from continual.data.documents import Document, Example
from continual.data.render import DEFAULT_PLAIN_FORMAT, Renderer
from continual.data.split import check_split
from continual.errors import ConfigError, DataError

logger = logging.getLogger(__name__)
IGNORE = -100  # label of positions that carry no loss
ANSWER_KINDS = ("choice", "generate")


@dataclass
class EncodedPairs:
    """Token ids of examples: ``prompts[i] + responses[i]`` is example ``i``'s sequence."""

    prompts: list[list[int]]
    responses: list[list[int]]
    pad_id: int

    def __len__(self) -> int:
        return len(self.prompts)

    def batch(self, indices: torch.Tensor | Sequence[int]) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids``, ``attention_mask`` and response-only ``labels``."""
        rows = [int(i) for i in indices]
        width = max(len(self.prompts[i]) + len(self.responses[i]) for i in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            p, a = self.prompts[i], self.responses[i]
            ids[r, : len(p) + len(a)] = torch.tensor(p + a)
            labels[r, len(p) : len(p) + len(a)] = torch.tensor(a)
            mask[r, : len(p) + len(a)] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@dataclass
class PairsDomain:
    """The data of one pairs domain, ready for training and evaluation.

    Attributes:
        name: Domain name.
        train: Training examples (split rank order).
        holdout: Holdout examples (split rank order).
        train_encoded / holdout_encoded: Their token ids.
        renderer: How prompts and responses are rendered (chat or plain template).
        answer: ``choice`` (multiple choice by log-likelihood) or ``generate`` (greedy
            generation, exact match after normalisation).
        max_new_tokens: Generation limit for ``generate``.
        rouge: Whether ROUGE-L is reported (``generate`` only).
        stats: Counts, as for text domains.
    """

    name: str
    train: list[Example]
    holdout: list[Example]
    train_encoded: EncodedPairs
    holdout_encoded: EncodedPairs
    renderer: Renderer
    answer: str = "generate"
    max_new_tokens: int = 16
    rouge: bool = False
    stats: dict[str, Any] = field(default_factory=dict)
    kind: str = "pairs"

    def training_set(self) -> EncodedPairs:
        """What a training stage draws batches from."""
        return self.train_encoded


def build_pairs_domain(
    name: str, domain_cfg: Mapping[str, Any], tokenizer: Any, split: str = "holdout"
) -> PairsDomain:
    """Load, check, deduplicate, split and tokenize the examples of one pairs domain.

    ``split``: ``holdout`` evaluates on the holdout; ``validation`` on the
    ``validation_examples`` examples ranked next after it (default: as many as
    ``holdout_examples``), taken out of training, as for text domains
    (:func:`continual.data.holdout.choose_validation`); ``holdout`` then holds them.

    ``domain_cfg`` keys: ``source`` (a reader yielding :class:`Example`), ``max_examples``
    (read at most N, in the reader's order), ``holdout_examples`` (int), ``validation_examples``
    (int, read with ``split="validation"``), ``train_examples``
    (cap on training examples, null: all), ``near_dedup`` / ``near_dedup_threshold``,
    ``max_holdout_overlap`` (as for text), ``split_salt``, ``template`` (auto | chat | plain),
    ``system_prompt``, ``plain_format``, ``max_tokens`` (prompt + response tokens per example;
    longer examples are an error), ``answer`` (choice | generate), ``max_new_tokens``,
    ``rouge``.
    """
    from continual.data.sources import load_documents, to_plain

    started = time.perf_counter()
    cfg = to_plain(domain_cfg)
    check_split(split)
    answer, max_tokens = _checked(name, cfg)
    renderer = _renderer(name, cfg, tokenizer)
    raw = load_documents(cfg["source"], cfg.get("max_examples"), record_type=Example)
    _check_examples(name, raw, answer)
    train, holdout, stats = _split(name, cfg, raw, split)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [
        EncodedPairs(*_encode(name, examples, renderer, max_tokens), pad_id=pad_id)
        for examples in (train, holdout)
    ]
    stats.update(
        train_examples=len(train),
        holdout_examples=len(holdout),
        train_tokens=sum(len(p) + len(a) for p, a in zip(*_pairs(encoded[0]), strict=True)),
        train_response_tokens=sum(len(a) for a in encoded[0].responses),
        holdout_response_tokens=sum(len(a) for a in encoded[1].responses),
        template=renderer.name,
    )
    domain = assemble_pairs_domain(name, cfg, tokenizer, (train, holdout), encoded, stats)
    logger.info(
        "domain %s: %d train / %d %s examples (%s template, %s answers, %.1f s)", name,
        len(train), len(holdout), split, renderer.name, domain.answer,
        time.perf_counter() - started,
    )  # fmt: skip
    return domain


def assemble_pairs_domain(
    name: str, domain_cfg: Mapping[str, Any], tokenizer: Any,
    examples: tuple[list[Example], list[Example]], encoded: Sequence[EncodedPairs],
    stats: dict[str, Any],
) -> PairsDomain:  # fmt: skip
    """A :class:`PairsDomain` from its split examples ``(train, holdout)``, their encodings
    and stats, with the renderer and answer settings of ``domain_cfg`` (also what the data
    cache restores an entry with)."""
    from continual.data.sources import to_plain

    cfg = to_plain(domain_cfg)
    answer, _ = _checked(name, cfg)
    return PairsDomain(
        name, examples[0], examples[1], encoded[0], encoded[1], _renderer(name, cfg, tokenizer),
        answer, int(cfg.get("max_new_tokens") or 16), bool(cfg.get("rouge", False)), stats,
    )  # fmt: skip


def _renderer(name: str, cfg: Mapping[str, Any], tokenizer: Any) -> Renderer:
    return Renderer(
        tokenizer,
        template=str(cfg.get("template") or "auto"),
        system_prompt=cfg.get("system_prompt"),
        plain_format=str(cfg.get("plain_format") or DEFAULT_PLAIN_FORMAT),
        domain=name,
    )


def _pairs(encoded: EncodedPairs) -> tuple[list[list[int]], list[list[int]]]:
    return encoded.prompts, encoded.responses


def _checked(name: str, cfg: Mapping[str, Any]) -> tuple[str, int]:
    if "source" not in cfg:
        raise ConfigError(f"domain {name!r} has no `source`; add a reader that yields examples.")
    answer = cfg.get("answer", "generate")
    if answer not in ANSWER_KINDS:
        raise ConfigError(
            f"domain {name!r}: answer={answer!r} is not one of {', '.join(ANSWER_KINDS)}; fix "
            f"`domains.{name}.answer`."
        )
    for key in ("holdout_examples", "max_tokens"):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"domain {name!r}: {key}={value!r} must be a positive integer; fix "
                f"`domains.{name}.{key}`."
            )
    cap = cfg.get("train_examples")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise ConfigError(f"domain {name!r}: train_examples={cap!r} must be >= 1 or null.")
    return str(answer), int(cfg["max_tokens"])


def _check_examples(name: str, examples: Sequence[Example], answer: str) -> None:
    for ex in examples:
        where = f"domain {name!r}, example {ex.example_id!r}"
        if not ex.prompt.strip():
            raise DataError(f"{where}: empty prompt; fix or remove the record.")
        if not ex.response.strip():
            raise DataError(f"{where}: empty response; fix or remove the record.")
        if answer == "choice":
            if not ex.choices:
                raise DataError(
                    f"{where}: answer=choice needs the record's choices; give them in the "
                    f"source, or set `domains.{name}.answer=generate`."
                )
            if ex.response not in ex.choices:
                raise DataError(f"{where}: the response {ex.response!r} is not one of its choices.")


def _split(
    name: str, cfg: Mapping[str, Any], examples: Sequence[Example], split: str = "holdout"
) -> tuple[list[Example], list[Example], dict[str, Any]]:
    """Deduplicate on prompts, then split by id exactly as text documents are split (both
    compare prompts without the prefix that every prompt shares, e.g. a fixed instruction)."""
    from continual.data.dedup import deduplicate
    from continual.data.holdout import DEFAULT_MAX_OVERLAP, choose_holdout

    by_id = {ex.example_id: ex for ex in examples}
    if len(by_id) < len(examples):
        raise DataError(
            f"domain {name!r}: two examples share an id; ids must be unique so that an example "
            "lands on one side of the split (set `source.id_field` to a unique field, or leave "
            "it out to use line numbers)."
        )
    # Instructions that every prompt repeats would make every pair look like a duplicate: the
    # comparison sees the prompt without the prefix all prompts share.
    shared = len(os.path.commonprefix([ex.prompt for ex in examples])) if len(examples) > 1 else 0
    docs = [Document(ex.example_id, ex.prompt[shared:]) for ex in examples]
    kept, n_exact, n_near = deduplicate(
        docs, bool(cfg.get("near_dedup", False)), float(cfg.get("near_dedup_threshold", 0.8))
    )
    split_cfg = {
        "split_salt": cfg.get("split_salt") or name,
        "holdout_documents": cfg["holdout_examples"],
        "validation_examples": cfg.get("validation_examples", cfg["holdout_examples"]),
        "max_holdout_overlap": cfg.get("max_holdout_overlap", DEFAULT_MAX_OVERLAP),
    }
    train_docs, holdout_docs, overlap = choose_holdout(name, split_cfg, kept, split)
    cap = cfg.get("train_examples")
    if cap is not None:
        train_docs = train_docs[: int(cap)]
    stats = {
        "examples_raw": len(examples),
        "exact_duplicates": n_exact,
        "near_duplicates": n_near,
        "examples_after_dedup": len(kept),
        **overlap,
    }
    return [by_id[d.doc_id] for d in train_docs], [by_id[d.doc_id] for d in holdout_docs], stats


def _encode(
    name: str, examples: Sequence[Example], renderer: Renderer, max_tokens: int
) -> tuple[list[list[int]], list[list[int]]]:
    prompts, responses = [], []
    for ex in examples:
        prompt, response = renderer.encode(ex)
        if len(prompt) + len(response) > max_tokens:
            raise DataError(
                f"domain {name!r}, example {ex.example_id!r}: {len(prompt) + len(response)} "
                f"tokens, more than max_tokens={max_tokens}; shorten or drop that record, or "
                f"raise `domains.{name}.max_tokens` (up to the model's context length)."
            )
        prompts.append(prompt)
        responses.append(response)
    return prompts, responses
