"""A domain's evaluation sets, cut from its documents in a salted-hash rank order that no seed
or input order changes: the holdout (:func:`choose_holdout`, with the word 13-gram leakage
control of :mod:`continual.data.overlap`) and, for ``eval.split=validation``, the validation
documents ranked after it (:func:`choose_validation`). Text and pairs domains use both."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from continual.data.documents import Document
from continual.data.overlap import leakage_safe_holdout, overlap_fractions
from continual.data.split import check_split, check_unique_ids, rank_documents, split_documents
from continual.errors import ConfigError, DataError

# Most of a holdout document's word 13-grams that may occur in the domain's training documents.
DEFAULT_MAX_OVERLAP = 0.2
# Documents ranked after the holdout that eval.split=validation evaluates (domain key
# validation_documents)
DEFAULT_VALIDATION_DOCUMENTS = 100


def choose_holdout(
    name: str, cfg: Mapping[str, Any], docs: list[Document], split: str = "holdout"
) -> tuple[list[Document], list[Document], dict[str, Any]]:
    """Split ``docs`` into ``(train, holdout, overlap_stats)`` by a salted hash of their ids
    (``split_salt``, ``holdout_documents``, ``holdout_only``, ``max_holdout_overlap`` of
    ``cfg``), with the leakage control on the holdout.

    ``overlap_stats`` (trainable domains with leakage control only): holdout documents over
    the overlap bound before the control, documents skipped for it, and the largest overlap
    left. With ``split="validation"`` the second list is the validation set instead and
    ``train`` is without it (:func:`choose_validation`).
    """
    check_split(split)
    train_docs, holdout_docs, stats = _holdout(name, cfg, docs)
    if split == "holdout":
        return train_docs, holdout_docs, stats
    train_docs, validation, extra = choose_validation(name, cfg, docs, train_docs, holdout_docs)
    return train_docs, validation, {**stats, **extra}


def choose_validation(
    name: str, cfg: Mapping[str, Any], docs: list[Document], train_docs: list[Document],
    holdout_docs: list[Document],
) -> tuple[list[Document], list[Document], dict[str, Any]]:  # fmt: skip
    """The validation set: ``validation_documents`` documents (default 100; pairs domains:
    ``validation_examples``) in the same seed-independent rank order, after the holdout. For a
    trainable domain: the first documents of the training side (the holdout removed) that pass
    the same leakage control against what is left for training (``max_holdout_overlap``; a
    document over it stays in training); for a holdout-only domain: the documents ranked next
    after its holdout. Returns ``(train without the validation set, validation, stats)``; the
    holdout is in neither.

    Raises:
        ConfigError: ``validation_documents`` is not a positive integer, or a holdout-only
            domain's holdout takes every document (``holdout_documents: null``).
        DataError: too few documents for holdout + validation + training.
    """
    key = "validation_examples" if "validation_examples" in cfg else "validation_documents"
    n = cfg.get(key, DEFAULT_VALIDATION_DOCUMENTS)  # (pairs domains count examples)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(
            f"domain {name!r}: {key}={n!r} must be a positive integer; fix `domains.{name}.{key}`."
        )
    stats: dict[str, Any] = {
        "eval_split": "validation",
        "holdout_docs_set_aside": len(holdout_docs),
    }
    if cfg.get("holdout_only", False):
        if cfg.get("holdout_documents") is None:
            raise ConfigError(
                f"domain {name!r} evaluates every document as its holdout (holdout_documents: "
                f"null), so none is left for eval.split=validation; set "
                f"`domains.{name}.holdout_documents` to leave at least {n} documents."
            )
        ranked = rank_documents(docs, str(cfg.get("split_salt") or name))
        validation = ranked[len(holdout_docs) : len(holdout_docs) + n]
        if len(validation) < n:
            raise DataError(
                f"domain {name!r}: {len(docs)} documents hold the holdout "
                f"(holdout_documents={len(holdout_docs)}) and only {len(validation)} of the "
                f"{key}={n}; lower `domains.{name}.{key}` to at most {len(validation)}, or "
                "raise `max_documents`."
            )
        return [], validation, {**stats, "validation_docs": len(validation)}
    if len(train_docs) < n + 1:
        raise DataError(
            f"domain {name!r}: {len(docs)} documents (after cleaning and deduplication) cannot "
            f"hold holdout_documents={len(holdout_docs)}, {key}={n} and training documents: "
            f"{len(train_docs)} are left after the holdout; lower `domains.{name}.{key}` to at "
            f"most {len(train_docs) - 1}, or raise `max_documents`/use a larger source."
        )
    max_overlap = cfg.get("max_holdout_overlap", DEFAULT_MAX_OVERLAP)
    if max_overlap is None:
        return train_docs[n:], train_docs[:n], {**stats, "validation_docs": n}
    train, validation, skipped = leakage_safe_holdout(train_docs, n, max_overlap)
    if len(validation) < n:
        raise DataError(
            f"domain {name!r}: only {len(validation)} of the {len(train_docs)} documents left "
            f"after the holdout share at most {max_overlap:.0%} of their word 13-grams with the "
            f"rest, but {key}={n}; lower `domains.{name}.{key}`, raise `max_documents`, or "
            "relax `max_holdout_overlap` (null disables the check)."
        )
    return (
        train,
        validation,
        {
            **stats,
            "validation_docs": n,
            "validation_skipped_for_overlap": skipped,
            "validation_max_overlap": round(float(overlap_fractions(validation, train).max()), 4),
        },
    )


def _holdout(
    name: str, cfg: Mapping[str, Any], docs: list[Document]
) -> tuple[list[Document], list[Document], dict[str, Any]]:
    """The train/holdout split of :func:`choose_holdout`."""
    salt = str(cfg.get("split_salt") or name)
    holdout_documents = cfg.get("holdout_documents")
    if cfg.get("holdout_only", False):
        if not docs:
            raise DataError(
                f"domain {name!r}: no documents left after cleaning "
                f"(min_chars={int(cfg.get('min_chars') or 0)}); lower `min_chars` or check the "
                "source."
            )
        check_unique_ids(docs)
        holdout_docs = rank_documents(docs, salt)
        if holdout_documents is not None:
            holdout_docs = holdout_docs[: max(int(holdout_documents), 1)]
        return [], holdout_docs, {}

    train_docs, holdout_docs = split_documents(docs, holdout_documents, salt)
    max_overlap = cfg.get("max_holdout_overlap", DEFAULT_MAX_OVERLAP)
    if max_overlap is None:
        return train_docs, holdout_docs, {}
    leaked = int((overlap_fractions(holdout_docs, train_docs) > max_overlap).sum())
    train_docs, holdout_docs, skipped = leakage_safe_holdout(
        rank_documents(docs, salt), holdout_documents, max_overlap
    )
    if len(holdout_docs) < holdout_documents:
        raise DataError(
            f"domain {name!r}: only {len(holdout_docs)} of {len(docs)} documents share "
            f"at most {max_overlap:.0%} of their word 13-grams with the rest, but "
            f"holdout_documents={holdout_documents}; lower `holdout_documents`, raise "
            "`max_documents`, or relax `max_holdout_overlap` (null disables the check)."
        )
    return (
        train_docs,
        holdout_docs,
        {
            "holdout_leaking_before_control": leaked,
            "holdout_skipped_for_overlap": skipped,
            "holdout_max_overlap": round(
                float(overlap_fractions(holdout_docs, train_docs).max()), 4
            ),
        },
    )
