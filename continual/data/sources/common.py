"""Helpers shared by the corpus readers: locating, reading and decoding files, param coercion."""

from __future__ import annotations

import gzip
import importlib.metadata
import os
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from continual.errors import ConfigError, DataError


def existing_path(path: str | os.PathLike[str], what: str) -> Path:
    """Resolve ``path`` (relative to the current directory) and check that it exists."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(
            f"{what} not found: {p.resolve()} (current directory: {Path.cwd()}); check the path "
            "in the domain config's `source`."
        )
    return p


def read_bytes(path: Path) -> bytes:
    """Read a file, transparently un-gzipping ``*.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"cannot read {path}: {e}; the file is corrupt or truncated, replace it with a good "
            "copy."
        ) from e


def decode_utf8(data: bytes, path: Path) -> str:
    """Decode UTF-8; a DataError names the file and line otherwise."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 text (byte offset {e.start}); is it a binary file? "
            "Convert it to UTF-8 or point `source` at a text file."
        ) from e


def package_file(dist_name: str, relative: str, pip_spec: str) -> Path:
    """Locate a data file shipped in an installed distribution without importing it."""
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            f"the package {dist_name!r} that ships this corpus is not installed; install it with "
            f"`{pip_spec}`."
        ) from None
    path = Path(str(dist.locate_file(relative)))
    if not path.exists():
        raise DataError(
            f"{relative!r} is not in the installed {dist_name} ({path} does not exist); "
            f"reinstall it with `{pip_spec}`."
        )
    return path


def as_str_list(value: Any, name: str) -> list[str]:
    """``None`` -> ``[]``, a string -> ``[it]``, a list of strings as it is; else a ConfigError."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"param {name!r} must be a string or a list of strings, got {value!r}.")


def compile_patterns(patterns: list[str], name: str) -> list[re.Pattern[str]]:
    """Compile case-insensitive regular expressions; a bad one is a ConfigError naming it."""
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern, re.IGNORECASE))
        except re.error as e:
            raise ConfigError(
                f"param {name!r}: {pattern!r} is not a valid regular expression ({e}); escape "
                "special characters or use a plain substring."
            ) from e
    return compiled
