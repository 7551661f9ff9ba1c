"""The unit of data that flows from a corpus reader to the tokenizer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    """One document of a corpus.

    Attributes:
        doc_id: Stable identifier within its source (PMID, licence key, relative path, line
            number, ...). The train/holdout split hashes it, so it must not change between runs.
        text: The document text.
    """

    doc_id: str
    text: str
