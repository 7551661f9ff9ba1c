"""Text normalisation applied to every document before deduplication."""

from __future__ import annotations

import re

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
