"""The units of data that flow from a corpus reader to the tokenizer: documents (text domains)
and input-output examples (pairs domains)."""

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


@dataclass(frozen=True)
class Example:
    """One input-output pair of a ``pairs`` domain.

    Attributes:
        example_id: Stable identifier within its source; the train/holdout split hashes it.
        prompt: The input (rendered as the user turn, or into the plain template).
        response: The answer the loss is computed on and accuracy is scored against.
        choices: For multiple-choice tasks, every allowed answer (``response`` is one of them);
            ``None`` for free-text answers, which are scored by greedy generation.
    """

    example_id: str
    prompt: str
    response: str
    choices: tuple[str, ...] | None = None
