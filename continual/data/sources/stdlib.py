"""The CPython standard library source of the running interpreter."""

from __future__ import annotations

import logging
import os
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from continual.data.documents import Document
from continual.data.sources.common import existing_path

logger = logging.getLogger(__name__)

_STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "__pycache__", "site-packages", "dist-packages"}
_STDLIB_SKIP_TOP = {"encodings", "pydoc_data"}


def read_stdlib(*, root: str | None = None, max_file_kb: float = 200) -> Iterator[Document]:
    """Python source files of the CPython standard library.

    Params:
        root: the library directory; defaults to ``sysconfig.get_paths()["stdlib"]``.
        max_file_kb: skip files larger than this (KiB).

    Skips ``test``/``tests`` directories (``lib2to3/tests``, ``idlelib/idle_test``, ...),
    ``__pycache__``, ``site-packages``, ``encodings/`` (generated codec tables), ``pydoc_data``,
    the generated ``_sysconfigdata_*.py`` and the ``config-*`` build directory. doc_id is the
    POSIX path relative to ``root``; files are sorted by it. Files that are not UTF-8 are
    skipped with a warning (the user cannot fix the interpreter's library).
    """
    base = existing_path(root or sysconfig.get_paths()["stdlib"], "stdlib directory")
    limit = max_file_kb * 1024
    rel_paths: list[str] = []
    for dirpath, dirnames, filenames in os.walk(base):
        rel_dir = Path(dirpath).relative_to(base)
        top = rel_dir == Path(".")
        dirnames[:] = [
            d
            for d in dirnames
            if d not in _STDLIB_SKIP_DIRS
            and not (top and (d in _STDLIB_SKIP_TOP or d.startswith("config-")))
        ]
        for name in filenames:
            if name.endswith(".py") and not name.startswith("_sysconfigdata_"):
                rel_paths.append((rel_dir / name).as_posix())
    for rel in sorted(rel_paths):
        file = base / rel
        try:
            if file.stat().st_size > limit:
                continue
            text = file.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            logger.warning("skipping %s: not UTF-8", file)
            continue
        if text.strip():
            yield Document(doc_id=rel, text=text)
