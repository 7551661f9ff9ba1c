"""Corpus readers, one module per source family; :func:`load_documents` runs one."""

# importing the reader modules registers them
from continual.data.sources import hub, licenses, local_files, medline, stdlib, wiki
from continual.data.sources.loader import (
    available_sources,
    load_documents,
    register_source,
    source_params,
    to_plain,
)

__all__ = [
    "available_sources",
    "hub",
    "licenses",
    "load_documents",
    "local_files",
    "medline",
    "register_source",
    "source_params",
    "stdlib",
    "to_plain",
    "wiki",
]
