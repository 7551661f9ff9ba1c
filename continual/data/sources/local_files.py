"""Local files: JSON Lines (``.jsonl``/``.jsonl.gz``) and plain text (``.txt``/``.md``)."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

from continual.data.documents import Document
from continual.data.sources.common import decode_utf8, existing_path, read_bytes
from continual.errors import DataError


def read_jsonl(
    *, path: str, text_field: str = "text", id_field: str | None = None
) -> Iterator[Document]:
    """A local JSON Lines file (``.jsonl``, or gzipped ``.jsonl.gz``): one JSON object a line.

    Params:
        path: the file. text_field: key holding the text (a string or null).
        id_field: key holding a unique id (default: the 1-based line number).

    Blank lines are skipped. Errors name the file and line.
    """
    file = existing_path(path, "JSONL file")
    if file.is_dir():
        raise DataError(f"{file} is a directory; `source.path` of the jsonl reader must be a file.")
    empty = True
    for number, line in _numbered_lines(file):
        if not line.strip():
            continue
        empty = False
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{file}:{number}: invalid JSON ({e.msg} at column {e.colno}); each line must "
                "be one JSON object. Fix or delete that line."
            ) from e
        if not isinstance(row, dict):
            raise DataError(
                f"{file}:{number}: expected a JSON object, got {type(row).__name__}; each line "
                f'must look like {{"{text_field}": "..."}}.'
            )
        if text_field not in row:
            raise DataError(
                f"{file}:{number}: no field {text_field!r} (fields: {sorted(row)}); set "
                "`source.text_field` or fix that line."
            )
        text = row[text_field]
        if text is not None and not isinstance(text, str):
            raise DataError(
                f"{file}:{number}: field {text_field!r} is a {type(text).__name__}, not a "
                "string; fix that line or set `source.text_field`."
            )
        if id_field is None:
            doc_id = str(number)
        elif id_field in row and row[id_field] is not None:
            doc_id = str(row[id_field])
        else:
            raise DataError(
                f"{file}:{number}: no id field {id_field!r}; add it to that line or leave "
                "`source.id_field` out to use line numbers."
            )
        yield Document(doc_id=doc_id, text=text or "")
    if empty:
        raise DataError(f"{file} is empty; add one JSON object per line or fix `source.path`.")


def _numbered_lines(file: Path) -> Iterator[tuple[int, str]]:
    """Stream ``(line_number, text)`` from a (possibly gzipped) UTF-8 file."""
    try:
        with gzip.open(file, "rb") if file.suffix == ".gz" else open(file, "rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(
                        f"{file}:{number}: not valid UTF-8 text (column {e.start + 1}); is it a "
                        "binary file? Convert it to UTF-8 or fix that line."
                    ) from e
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"cannot read {file}: {e}; the file is corrupt or truncated, replace it with a good "
            "copy."
        ) from e


# --------------------------------------------------------------------------- text

_TEXT_SUFFIXES = (".txt", ".md")


def read_text(*, path: str) -> Iterator[Document]:
    """Local plain text.

    Params:
        path: a ``.txt``/``.md`` file, split into documents at blank lines (one or more empty
            or whitespace-only lines; doc_id is the 1-based line where the paragraph starts),
            or a directory whose ``*.txt``/``*.md`` files (recursively, sorted) are one
            document each (doc_id is the POSIX path relative to the directory).
    """
    target = existing_path(path, "text file or directory")
    if target.is_dir():
        files = sorted(
            (p for p in target.rglob("*") if p.is_file() and p.suffix.lower() in _TEXT_SUFFIXES),
            key=lambda p: p.relative_to(target).as_posix(),
        )
        if not files:
            raise DataError(
                f"no .txt or .md files in directory {target}; add some or fix `source.path`."
            )
        found = False
        for file in files:
            text = decode_utf8(read_bytes(file), file)
            if text.strip():
                found = True
                yield Document(doc_id=file.relative_to(target).as_posix(), text=text)
        if not found:
            raise DataError(f"all .txt/.md files in {target} are empty; add text to them.")
        return
    text = decode_utf8(read_bytes(target), target)
    if not text.strip():
        raise DataError(f"{target} is empty; add text (paragraphs separated by blank lines).")
    paragraph: list[str] = []
    start = 0
    for number, line in enumerate(
        [*text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), ""], start=1
    ):
        if line.strip():
            if not paragraph:
                start = number
            paragraph.append(line)
        elif paragraph:
            yield Document(doc_id=str(start), text="\n".join(paragraph))
            paragraph = []
