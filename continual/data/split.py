"""The train/holdout split: a salted hash of document ids, independent of seeds and order.

The evaluation split of a run (``eval.split``, :data:`SPLITS`): ``holdout`` evaluates on the
holdout, ``validation`` on the documents ranked next after it (taken out of training), so that
a pilot can choose settings without ever scoring the holdout."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from continual.data.documents import Document
from continual.errors import ConfigError, DataError

SPLITS = ("holdout", "validation")


def check_split(split: str) -> str:
    """``split`` if it is one of :data:`SPLITS`, else a :class:`ConfigError` naming them."""
    if split not in SPLITS:
        raise ConfigError(
            f"eval.split={split!r} is unknown; use holdout (evaluate on each domain's holdout, "
            "the default) or validation (on the documents ranked next after the holdout, taken "
            "out of training: for pilots that choose settings)."
        )
    return split


def split_rank(doc: Document, salt: str) -> str:
    """The document's rank key: ``sha256(f"{salt}:{doc_id}")`` as hex."""
    return hashlib.sha256(f"{salt}:{doc.doc_id}".encode()).hexdigest()


def rank_documents(docs: Sequence[Document], salt: str) -> list[Document]:
    """``docs`` sorted by :func:`split_rank`: the seed-independent order the holdout is cut from."""
    return sorted(docs, key=lambda d: split_rank(d, salt))


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
    check_unique_ids(docs)
    if len(docs) < holdout_documents + 1:
        raise DataError(
            f"only {len(docs)} documents are left (after cleaning and deduplication), but "
            f"holdout_documents={holdout_documents} needs at least {holdout_documents + 1} (the "
            f"holdout plus training data); lower `holdout_documents` to at most {len(docs) - 1}, "
            "or raise `max_documents`/use a larger source."
        )
    ranked = rank_documents(docs, salt)
    return ranked[holdout_documents:], ranked[:holdout_documents]


def check_unique_ids(docs: Sequence[Document]) -> None:
    """Raise :class:`DataError` if two documents share an id."""
    seen: set[str] = set()
    for doc in docs:
        if doc.doc_id in seen:
            raise DataError(
                f"document id {doc.doc_id!r} occurs more than once; ids must be unique so that "
                "a document lands on one side of the train/holdout split. For jsonl/hf sources "
                "set `source.id_field` to a unique column, or leave it out to use line/row "
                "numbers."
            )
        seen.add(doc.doc_id)
