"""Built-in offline task domains: input-output pairs with an exact answer, made from the corpora
the project already reads (every answer is a fact recorded in the source, none is invented).

- :func:`read_abstract_sections` (medical): a passage of a structured MEDLINE abstract -> the
  section it comes from, as NLM normalised it (``NlmCategory``: BACKGROUND, OBJECTIVE,
  METHODS, RESULTS, CONCLUSIONS); multiple choice. The PubMed 200k RCT task of Dernoncourt &
  Lee (2017), one passage per abstract.
- :func:`read_licence_categories` (legal): the opening words of a licence text -> the licence's
  category in ScanCode's licence database (Permissive, Copyleft, Proprietary Free, ...);
  multiple choice.
- :func:`read_function_names` (code): a standard-library Python function with its name masked
  -> the name; free-text answer, scored by exact match (and ROUGE-L).
"""

from __future__ import annotations

import ast
import hashlib
import re
import textwrap
from collections import Counter
from collections.abc import Iterator

from continual.data.documents import Example
from continual.data.sources.licenses import iter_licences
from continual.data.sources.medline import iter_citations, section_text
from continual.data.sources.stdlib import read_stdlib
from continual.errors import ConfigError

SECTIONS = ("BACKGROUND", "OBJECTIVE", "METHODS", "RESULTS", "CONCLUSIONS")
MASK = "___"
_CATEGORY = re.compile(r"^category:\s*['\"]?(.+?)['\"]?\s*$", re.MULTILINE)


def _first_words(text: str, max_words: int, max_chars: int = 400) -> str:
    """The first ``max_words`` words, cut further to at most ``max_chars`` characters at a word
    boundary (scripts without spaces, e.g. Japanese, would otherwise give one huge word)."""
    text = " ".join(text.split()[:max_words])
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    return cut.rsplit(" ", 1)[0] if " " in cut else cut


def _pick(key: str, n: int) -> int:
    """A deterministic choice in ``range(n)`` from a hash of ``key`` (no RNG, no seed)."""
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % n


def read_abstract_sections(
    *, file: str = "pubmed21n1298.xml.gz", max_words: int = 60, min_words: int = 8
) -> Iterator[Example]:
    """One example per structured abstract: a passage -> its section (``NlmCategory``).

    Params:
        file: MEDLINE XML, as for :func:`~continual.data.sources.medline.read_pubmed`.
        max_words: the passage is cut to its first ``max_words`` words (and 400 characters).
        min_words: sections shorter than this are not used.

    Of an abstract's sections whose ``NlmCategory`` is one of :data:`SECTIONS` (UNASSIGNED
    ones are skipped), one is picked by a hash of the PMID, so every class occurs about as
    often as abstracts have it. ``example_id`` is the PMID; choices are :data:`SECTIONS`.
    """
    options = ", ".join(SECTIONS)
    for citation in iter_citations(file):
        pmid = (citation.findtext("PMID") or "").strip()
        sections = [
            (s.get("NlmCategory"), section_text(s))
            for s in citation.findall("Article/Abstract/AbstractText")
        ]
        usable = [(c, t) for c, t in sections if c in SECTIONS and len(t.split()) >= min_words]
        if not pmid or not usable:
            continue
        category, text = usable[_pick(pmid, len(usable))]
        prompt = (
            "Which section of a structured research abstract is this passage from? "
            f"Answer with one of: {options}.\n\nPassage: {_first_words(text, max_words)}"
        )
        yield Example(pmid, prompt, category, SECTIONS)


def read_licence_categories(
    *, path: str | None = None, max_words: int = 60, min_category_size: int = 50
) -> Iterator[Example]:
    """One example per licence: its opening words -> its ScanCode ``category``.

    Params:
        path: a directory of ScanCode ``*.LICENSE`` files (default: ``licensedcode-data``).
        max_words: the text is cut to its first ``max_words`` words (and 400 characters).
        min_category_size: categories with fewer licences (not deprecated) are left out, so
            every class has examples on both sides of the split (7 of 11 remain at 50).

    Licences whose opening is mostly in a non-Latin script are left out (see
    :func:`_mostly_latin`). ``example_id`` is the licence key; choices are the kept categories,
    sorted.
    """
    licences = [
        (key, match.group(1).strip(), body)
        for key, front, body in iter_licences(path)
        if (match := _CATEGORY.search(front))
    ]
    counts = Counter(category for _, category, _ in licences)
    kept = tuple(sorted(c for c, n in counts.items() if n >= min_category_size))
    if not kept:
        raise ConfigError(
            f"no licence category has {min_category_size} licences (counts: {dict(counts)}); "
            "lower `source.min_category_size`."
        )
    options = ", ".join(kept)
    for key, category, body in licences:
        text = _first_words(body, max_words)
        if category in kept and _mostly_latin(text):
            prompt = (
                "Which category of licence is this text from? "
                f"Answer with one of: {options}.\n\nText: {text}"
            )
            yield Example(key, prompt, category, kept)


def _mostly_latin(text: str) -> bool:
    """At most 10% of the characters are outside Latin-1 (the task is posed in English; a
    licence in another script would also cost several tokens per character)."""
    return sum(ord(ch) > 0xFF for ch in text) <= 0.1 * max(len(text), 1)


def read_function_names(
    *, root: str | None = None, min_lines: int = 3, max_lines: int = 16, max_chars: int = 600
) -> Iterator[Example]:
    """Standard-library functions and methods with their name masked -> the name.

    Params:
        root: the library directory (default: the running interpreter's, as in
            :func:`~continual.data.sources.stdlib.read_stdlib`).
        min_lines / max_lines: the function's source length in lines (decorators excluded).
        max_chars: longer functions are left out.

    Names starting with ``_`` (private and dunder methods) are left out. Every whole-word
    occurrence of the name in the function (its ``def`` line, recursive calls, the docstring)
    becomes :data:`MASK`. ``example_id`` is ``<file>:<qualified name>:<line>``.
    """
    for doc in read_stdlib(root=root):
        try:
            tree = ast.parse(doc.text)
        except (SyntaxError, ValueError):
            continue
        lines = doc.text.splitlines()
        for qualname, node in _functions(tree):
            name = node.name
            n_lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if name.startswith("_") or not min_lines <= n_lines <= max_lines:
                continue
            source = textwrap.dedent("\n".join(lines[node.lineno - 1 : node.end_lineno]))
            if len(source) > max_chars:
                continue
            masked = re.sub(rf"\b{re.escape(name)}\b", MASK, source)
            prompt = (
                f"What is the name of this Python function? Its name is replaced by {MASK}."
                f"\n\n{masked}"
            )
            yield Example(f"{doc.doc_id}:{qualname}:{node.lineno}", prompt, name)


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.FunctionDef]]:
    """``(qualified name, node)`` of module-level functions and class methods, in source order."""
    for node in getattr(tree, "body", []):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield f"{prefix}{node.name}", node  # type: ignore[misc]
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
