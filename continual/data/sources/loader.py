"""Run the corpus reader that a domain's ``source`` node names, Hydra ``_target_`` style.

A domain config names its reader by dotted path and gives the reader's keyword arguments
beside it::

    source:
      _target_: continual.data.sources.medline.read_pubmed
      file: pubmed21n1298.xml.gz

A reader is any function whose keyword arguments are its params and that returns an iterable
of :class:`~continual.data.documents.Document` in a deterministic order, so ``max_documents``
always keeps the same prefix (generators stop reading there). Params are checked against the
reader's signature before ``hydra.utils.instantiate`` binds and calls it.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf

from continual.data.documents import Document
from continual.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

Reader = Callable[..., Iterable[Any]]

# The readers that ship with the project, by the name the docs use for them.
BUILTIN_READERS: dict[str, str] = {
    "pubmed": "continual.data.sources.medline.read_pubmed",
    "licenses": "continual.data.sources.licenses.read_licenses",
    "stdlib": "continual.data.sources.stdlib.read_stdlib",
    "wiki": "continual.data.sources.wiki.read_wiki",
    "hf": "continual.data.sources.hub.read_hf",
    "jsonl": "continual.data.sources.local_files.read_jsonl",
    "text": "continual.data.sources.local_files.read_text",
    "pairs_jsonl": "continual.data.sources.pairs_files.read_pairs_jsonl",
    "pairs_hf": "continual.data.sources.pairs_files.read_pairs_hf",
    "abstract_sections": "continual.data.sources.tasks.read_abstract_sections",
    "licence_categories": "continual.data.sources.tasks.read_licence_categories",
    "function_names": "continual.data.sources.tasks.read_function_names",
}
_BUILTINS = ", ".join(BUILTIN_READERS.values())


def load_documents(
    source: Any, max_documents: int | None = None, record_type: type = Document
) -> list[Any]:
    """Read the documents (or, with ``record_type=Example``, the pairs) of the reader that
    ``source`` names.

    Args:
        source: A mapping (dict or ``DictConfig``) with ``_target_``, the dotted path of a reader
            (see :data:`BUILTIN_READERS`), and the reader's params beside it.
        max_documents: Keep only the first N documents of the deterministic order; reading
            stops there. ``None`` reads everything.

    Returns:
        The documents, in the same order on every call.

    Raises:
        ConfigError: no or unimportable ``_target_``, unknown/missing params, bad
            ``max_documents``.
        DataError: missing, unreadable, corrupt or empty data.
    """
    target, params = _target_and_params(to_plain(source))
    reader = resolve_reader(target)
    check_params(target, reader, params)
    if max_documents is not None and (
        isinstance(max_documents, bool) or not isinstance(max_documents, int) or max_documents < 1
    ):
        raise ConfigError(
            f"max_documents must be a positive integer or null, got {max_documents!r}; "
            "fix `max_documents` in the domain config."
        )
    documents = _call(target, params)
    try:
        docs = list(islice(documents, max_documents))
    finally:
        if hasattr(documents, "close"):
            documents.close()  # releases open files when we stopped early
    if not docs:
        raise DataError(
            f"reader {target} with params {params} produced no records; check the params "
            "(paths, filters, field names) or the data itself."
        )
    if not all(isinstance(d, record_type) for d in docs):
        raise ConfigError(
            f"reader {target} must yield continual.data.documents.{record_type.__name__} "
            "objects (Document for a text domain, Example for a pairs domain); fix the reader, "
            "point `source._target_` at another one, or check the domain's `kind`."
        )
    logger.info("loaded %d records from reader %s", len(docs), target)
    return docs


def resolve_reader(target: str) -> Reader:
    """The function at dotted path ``target``; a ConfigError names it and the built-ins."""
    hydra_log = logging.getLogger("hydra.utils")
    try:
        with _disabled(hydra_log):  # it logs the failure we are about to explain
            return get_method(target)
    except Exception as e:
        raise ConfigError(
            f"cannot import the reader `_target_: {target}` ({_why_not(target, e)}); set "
            f"`source._target_` to a built-in reader ({_BUILTINS}) or to the dotted path of "
            "your own reader."
        ) from e


def check_params(target: str, reader: Reader, params: Mapping[str, Any]) -> None:
    """Raise a ConfigError for params ``reader`` does not accept or needs but lacks."""
    try:
        signature = inspect.signature(reader).parameters
    except (TypeError, ValueError):  # no introspectable signature: the call decides
        return
    named = {
        n: p for n, p in signature.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.values())
    unknown = [] if takes_any else sorted(set(params) - set(named))
    if unknown:
        raise ConfigError(
            f"unknown param(s) {unknown} for reader {target}; it accepts: {', '.join(named)}. "
            "Fix the keys beside `_target_` under `source` in the domain config."
        )
    missing = [n for n, p in named.items() if p.default is p.empty and n not in params]
    if missing:
        raise ConfigError(
            f"reader {target} needs param(s) {missing}; add them beside `_target_` under "
            "`source` in the domain config."
        )


def to_plain(obj: Any) -> Any:
    """Turn OmegaConf containers into plain dicts/lists; leave anything else as it is."""
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


def _target_and_params(source: Any) -> tuple[str, dict[str, Any]]:
    """Split a plain ``source`` node into its ``_target_`` and the reader's params."""
    if isinstance(source, str) and source in BUILTIN_READERS:
        raise ConfigError(
            f"`source: {source}` is the old short form; write `source:` as a node with "
            f"`_target_: {BUILTIN_READERS[source]}` and the reader's params beside it."
        )
    if not isinstance(source, Mapping):
        raise ConfigError(
            f"`source` must be a node with `_target_` (a reader's dotted path) and its params, "
            f"got {source!r}; e.g. `source: {{_target_: {BUILTIN_READERS['jsonl']}, path: "
            "my.jsonl}`."
        )
    params = dict(source)
    target = params.pop("_target_", None)
    if not isinstance(target, str) or not target:
        raise ConfigError(
            f"`source` has no `_target_` naming its reader (got {target!r}); add one, e.g. "
            f"`_target_: {BUILTIN_READERS['jsonl']}` (built-in readers: {_BUILTINS})."
        )
    return target, params


def _why_not(target: str, error: Exception) -> str:
    """A short reason why ``target`` could not be imported."""
    module, _, name = target.rpartition(".")
    if module:
        try:
            found = importlib.import_module(module)
        except ModuleNotFoundError as e:
            return str(e)
        except Exception as e:  # the module exists but fails to import
            return f"importing {module} raises {type(e).__name__}: {e}"
        if not hasattr(found, name):
            return f"module {module} has no {name!r}"
    return str(error.__cause__ or error).splitlines()[0]


def _call(target: str, params: dict[str, Any]) -> Iterator[Any]:
    """Bind the reader with ``hydra.utils.instantiate`` and call it with ``params`` as they are.

    ``_partial_`` keeps the plain values away from OmegaConf, which would read a literal
    ``???`` or ``${...}`` in them as a missing value or an interpolation.
    """
    try:
        reader = instantiate({"_target_": target, "_partial_": True})
    except InstantiationException as e:
        raise ConfigError(
            f"Hydra refuses `_target_: {target}` ({str(e).splitlines()[0]}); point "
            "`source._target_` at a reader function."
        ) from e
    documents = reader(**params)
    try:
        return iter(documents)
    except TypeError:
        raise ConfigError(
            f"reader {target} returned a {type(documents).__name__}, not an iterable of "
            "documents; point `source._target_` at a reader function."
        ) from None


@contextlib.contextmanager
def _disabled(log: logging.Logger) -> Iterator[None]:
    previous, log.disabled = log.disabled, True
    try:
        yield
    finally:
        log.disabled = previous
