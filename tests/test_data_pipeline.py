"""Cleaning, deduplication, the train/holdout split, packing and whole domains."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from continual.data.clean import clean_text
from continual.data.dedup import deduplicate
from continual.data.documents import Document
from continual.data.domain import DomainData, build_domain
from continual.data.pack import pack_blocks
from continual.data.sources import load_documents
from continual.data.split import split_documents
from continual.errors import ConfigError, DataError

FIXTURES = Path(__file__).parent / "fixtures"
JSONL_READER = "continual.data.sources.local_files.read_jsonl"
LICENSES_READER = "continual.data.sources.licenses.read_licenses"
WORDS_PER_DOC = 30


def _doc_text(i: int) -> str:
    """A document whose every word is unique to it (so a leak shows up as a shared token)."""
    return " ".join(f"d{i}w{k}" for k in range(WORDS_PER_DOC))


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer over the words of ``_doc_text`` (no download)."""
    vocab = {"<unk>": 0, "<eos>": 1}
    for i in range(200):
        for word in _doc_text(i).split():
            vocab[word] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>", model_max_length=16
    )


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": _doc_text(i)}) + "\n" for i in range(60)))
    return path


def _cfg(path: Path, **overrides: object) -> dict:
    cfg = {
        "source": {"_target_": JSONL_READER, "path": str(path)},
        "max_documents": None,
        "holdout_documents": 10,
        "near_dedup": False,
        "min_chars": 10,
        "holdout_only": False,
    }
    cfg.update(overrides)
    return cfg


# --------------------------------------------------------------------------- clean_text


def test_clean_text_normalises_but_keeps_indentation() -> None:
    raw = (
        "\ufeff\n\nclass A:\r\n    def f(self):  \r\n\t\treturn 1\x00\x07\r\r\n\n\n\n\nx = 2   \n\n"
    )
    assert clean_text(raw) == "class A:\n    def f(self):\n\t\treturn 1\n\n\nx = 2"
    assert clean_text("a\n\n\nb") == "a\n\n\nb"  # two blank lines (PEP 8) survive
    assert clean_text("  indented first line") == "  indented first line"


# --------------------------------------------------------------------------- deduplicate


def test_exact_dedup_ignores_case_and_whitespace_and_keeps_first() -> None:
    docs = [
        Document("a", "Hello   World\nagain"),
        Document("b", "something else"),
        Document("c", "hello world again"),
    ]
    kept, exact, near = deduplicate(docs, near=False)
    assert [d.doc_id for d in kept] == ["a", "b"]
    assert (exact, near) == (1, 0)


def test_near_dedup_removes_bsd_variant_that_differs_in_a_name() -> None:
    docs = load_documents({"_target_": LICENSES_READER, "path": str(FIXTURES / "licenses")})
    assert [d.doc_id for d in docs] == ["bsd-acme", "bsd-example-university", "mit"]
    kept, exact, near = deduplicate(docs, near=True)
    assert [d.doc_id for d in kept] == ["bsd-acme", "mit"]
    assert (exact, near) == (0, 1)
    kept, _, near = deduplicate(docs, near=False)
    assert len(kept) == 3 and near == 0
    kept, _, near = deduplicate(list(reversed(docs)), near=True)
    assert [d.doc_id for d in kept] == ["mit", "bsd-example-university"]  # first one wins


def test_near_dedup_keeps_documents_below_threshold() -> None:
    rng = random.Random(0)
    vocabulary = [f"w{i}" for i in range(500)]
    base = [rng.choice(vocabulary) for _ in range(200)]
    half = base[:100] + [rng.choice(vocabulary) for _ in range(100)]  # Jaccard ~0.33
    tweak = base.copy()
    tweak[100] = "changed"  # Jaccard ~0.95
    docs = [Document("base", " ".join(base)), Document("half", " ".join(half))]
    docs.append(Document("tweak", " ".join(tweak)))
    docs.append(Document("short", "too short"))
    kept, _, near = deduplicate(docs, near=True)
    assert [d.doc_id for d in kept] == ["base", "half", "short"] and near == 1
    kept, _, _ = deduplicate(docs, near=True, threshold=0.3)
    assert [d.doc_id for d in kept] == ["base", "short"]
    with pytest.raises(ConfigError, match="threshold"):
        deduplicate(docs, near=True, threshold=1.5)


# --------------------------------------------------------------------------- split


def _docs(n: int) -> list[Document]:
    return [Document(f"id{i}", f"text {i}") for i in range(n)]


def test_split_is_disjoint_complete_and_sized() -> None:
    docs = _docs(100)
    train, holdout = split_documents(docs, 15, salt="med")
    assert len(holdout) == 15 and len(train) == 85
    assert not {d.doc_id for d in train} & {d.doc_id for d in holdout}
    assert not {d.text for d in train} & {d.text for d in holdout}
    assert sorted(train + holdout, key=lambda d: d.doc_id) == sorted(docs, key=lambda d: d.doc_id)


def test_split_ignores_seeds_and_input_order_but_follows_salt() -> None:
    docs = _docs(100)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    first = split_documents(docs, 10, salt="legal")
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    shuffled = docs.copy()
    random.shuffle(shuffled)
    assert split_documents(shuffled, 10, salt="legal") == first
    other = split_documents(docs, 10, salt="code")[1]
    assert {d.doc_id for d in other} != {d.doc_id for d in first[1]}
    # growing the corpus only adds documents: the holdout ranking of old ones is stable
    bigger = split_documents(_docs(200), 10, salt="legal")[1]
    assert {d.doc_id for d in bigger} & {d.doc_id for d in first[1]}


def test_split_too_few_documents() -> None:
    with pytest.raises(DataError, match=r"only 5 documents.*holdout_documents=5.*at most 4"):
        split_documents(_docs(5), 5, salt="x")
    with pytest.raises(ConfigError, match="holdout_documents"):
        split_documents(_docs(5), 0, salt="x")
    with pytest.raises(DataError, match="'id1' occurs more than once"):
        split_documents([*_docs(5), Document("id1", "other")], 1, salt="x")


# --------------------------------------------------------------------------- packing


def test_pack_blocks_eos_shapes_and_remainder() -> None:
    blocks = pack_blocks([[1, 2, 3], [4, 5], [6, 7, 8, 9]], block_len=4, eos_id=0, max_blocks=None)
    # stream: 1 2 3 0 4 5 0 6 7 8 9 0 -> three full blocks, nothing left over
    assert blocks.dtype == torch.long
    assert blocks.tolist() == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]]
    blocks = pack_blocks([[1, 2, 3], [4, 5]], block_len=4, eos_id=None, max_blocks=None)
    assert blocks.tolist() == [[1, 2, 3, 4]]  # remainder [5] dropped
    assert pack_blocks([[1] * 50], 4, 0, max_blocks=3).shape == (3, 4)
    assert pack_blocks([[1, 2]], 4, None, None).shape == (0, 4)
    with pytest.raises(ConfigError, match="block_len"):
        pack_blocks([[1]], 0, None, None)


# --------------------------------------------------------------------------- build_domain


def _token_set(blocks: torch.Tensor, eos_id: int) -> set[int]:
    return set(blocks.flatten().tolist()) - {eos_id}


def test_build_domain_split_blocks_and_no_leak(corpus: Path, tokenizer) -> None:
    data = build_domain("med", OmegaConf.create(_cfg(corpus)), tokenizer, 16, holdout_blocks=6)
    assert isinstance(data, DomainData)
    assert data.holdout_blocks.shape == (6, 16) and data.holdout_blocks.dtype == torch.long
    assert data.train_blocks.shape[1] == 16 and data.train_blocks.shape[0] == 50 * 31 // 16
    assert len(data.holdout_docs) == 10 and len(data.train_docs) == 50
    eos = tokenizer.eos_token_id
    assert not _token_set(data.train_blocks, eos) & _token_set(data.holdout_blocks, eos)
    assert 0 not in data.train_blocks  # no unknown tokens: the words survived intact
    holdout_words = {w for d in data.holdout_docs for w in d.text.split()}
    held_words = set(tokenizer.decode(data.holdout_blocks.flatten()).split()) - {"<eos>"}
    assert held_words <= holdout_words
    assert data.stats["holdout_docs_used"] > 2  # evenly spaced blocks cover several documents
    expected = {"documents_raw": 60, "documents_after_dedup": 60, "exact_duplicates": 0}
    assert expected.items() <= data.stats.items()
    assert data.stats["train_tokens"] == data.train_blocks.numel()
    again = build_domain("med", _cfg(corpus), tokenizer, 16, holdout_blocks=6)
    assert torch.equal(again.holdout_blocks, data.holdout_blocks)
    assert torch.equal(again.train_blocks, data.train_blocks)


def test_build_domain_caps_training_blocks_and_drops_short_docs(tmp_path: Path, tokenizer) -> None:
    path = tmp_path / "c.jsonl"
    texts = [_doc_text(i) for i in range(40)] + ["tiny", _doc_text(0)]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    data = build_domain("x", _cfg(path), tokenizer, 16, holdout_blocks=2, max_train_blocks=3)
    assert data.train_blocks.shape == (3, 16)
    assert data.stats["documents_short"] == 1 and data.stats["exact_duplicates"] == 1
    assert data.stats["train_docs_used"] == 2  # only what the cap needs


def test_build_domain_holdout_only(corpus: Path, tokenizer) -> None:
    cfg = _cfg(corpus, holdout_only=True, holdout_documents=20)
    data = build_domain("general", cfg, tokenizer, 16, holdout_blocks=4)
    assert data.train_blocks.shape == (0, 16) and data.train_docs == []
    assert data.holdout_blocks.shape == (4, 16) and len(data.holdout_docs) == 20
    everything = build_domain("general", {**cfg, "holdout_documents": None}, tokenizer, 16, 4)
    assert len(everything.holdout_docs) == 60


def test_build_domain_too_few_holdout_blocks(corpus: Path, tokenizer) -> None:
    cfg = _cfg(corpus, holdout_documents=2)  # 2 docs x 31 tokens -> 3 blocks of 16
    pattern = r"give only 3 full blocks.*10 are needed.*holdout_documents.*eval\.holdout_blocks"
    with pytest.raises(DataError, match=pattern):
        build_domain("med", cfg, tokenizer, 16, holdout_blocks=10)


def test_build_domain_too_few_documents_and_training_tokens(tmp_path: Path, tokenizer) -> None:
    path = tmp_path / "few.jsonl"
    path.write_text("".join(json.dumps({"text": _doc_text(i)}) + "\n" for i in range(3)))
    with pytest.raises(DataError, match=r"only 3 documents.*lower `holdout_documents`"):
        build_domain("med", _cfg(path), tokenizer, 16, holdout_blocks=1)
    with pytest.raises(DataError, match=re.escape("give no full block of 40 tokens")):
        build_domain("med", _cfg(path, holdout_documents=2), tokenizer, 40, holdout_blocks=1)


def test_build_domain_config_errors(corpus: Path, tokenizer) -> None:
    with pytest.raises(ConfigError, match="no `source`"):
        build_domain("x", {"holdout_documents": 10}, tokenizer, 16, 1)
    with pytest.raises(ConfigError, match=r"`params` is no longer read.*beside `_target_`"):
        build_domain("x", {**_cfg(corpus), "params": {"path": str(corpus)}}, tokenizer, 16, 1)
    with pytest.raises(ConfigError, match="holdout_blocks"):
        build_domain("x", _cfg(corpus), tokenizer, 16, 0)
