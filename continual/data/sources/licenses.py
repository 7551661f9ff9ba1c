"""Licence texts from ``licensedcode-data==32.1.0`` (ScanCode's licence database)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from continual.data.documents import Document
from continual.data.sources.common import decode_utf8, existing_path, package_file, read_bytes
from continual.errors import DataError

_LICENSES_PIP = "pip install licensedcode-data==32.1.0"
_DEPRECATED = re.compile(r"^is_deprecated:\s*(yes|true)\s*$", re.MULTILINE | re.IGNORECASE)


def read_licenses(
    *, path: str | None = None, include_deprecated: bool = False
) -> Iterator[Document]:
    """Licence texts (``*.LICENSE``) from licensedcode-data (ScanCode's licence database).

    Params:
        path: a directory of ``*.LICENSE`` files; defaults to ``licensedcode/data/licenses``
            of the installed ``licensedcode-data`` (~2,300 files).
        include_deprecated: keep licences whose front matter says ``is_deprecated: yes``
            (145 in 32.1.0; they mostly duplicate a newer key), dropped by default.

    Each file is YAML front matter between ``---`` lines, then the text. doc_id is the file
    stem (the licence key); files sorted by key; empty texts are skipped. The corpus has
    many near-duplicates (BSD/MIT variants): use ``near_dedup: true``.
    """
    for key, _front, body in iter_licences(path, include_deprecated):
        yield Document(doc_id=key, text=body)


def iter_licences(
    path: str | None = None, include_deprecated: bool = False
) -> Iterator[tuple[str, str, str]]:
    """``(key, front_matter, text)`` of every licence with a non-empty text, sorted by key
    (params as for :func:`read_licenses`)."""
    if path is None:
        directory = package_file("licensedcode-data", "licensedcode/data/licenses", _LICENSES_PIP)
    else:
        directory = existing_path(path, "licence directory")
    files = sorted(directory.glob("*.LICENSE"), key=lambda f: f.stem)  # base key first
    if not files:
        raise DataError(f"no *.LICENSE files in {directory}; point `source.path` at ScanCode data.")
    for file in files:
        text = decode_utf8(read_bytes(file), file)
        front, body = _split_front_matter(text, file)
        if not include_deprecated and _DEPRECATED.search(front):
            continue
        if body.strip():
            yield file.stem, front, body


def _split_front_matter(text: str, file: Path) -> tuple[str, str]:
    if not text.startswith("---"):
        return "", text
    lines = text.splitlines(keepends=True)
    for i in range(1, len(lines)):
        if lines[i].rstrip() == "---":
            return "".join(lines[1:i]), "".join(lines[i + 1 :])
    raise DataError(
        f"{file}:1: YAML front matter opened with '---' is never closed; add the closing '---' "
        "line or remove the opening one."
    )
