"""Holdout leakage control: no holdout document shares more than 20% of its word 13-grams with
its domain's training documents, on every built-in trainable domain and on crafted data."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from continual.data.documents import Document
from continual.data.domain import build_domain
from continual.data.overlap import leakage_safe_holdout, overlap_fractions
from continual.models.loading import load_model
from tests.conftest import CONF, compose_config


@pytest.fixture(scope="module")
def byte_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    cfg = compose_config(["model=tiny_random"])
    return load_model(cfg.model, tmp_path_factory.mktemp("cache")).tokenizer


@pytest.mark.parametrize("domain", ["med", "legal", "code"])
def test_builtin_domain_holdout_does_not_leak(domain: str, byte_tokenizer) -> None:
    cfg = OmegaConf.load(f"{CONF}/domain/{domain}.yaml")
    data = build_domain(domain, cfg, byte_tokenizer, block_len=16, holdout_blocks=1,
                        max_train_blocks=1)  # fmt: skip
    fractions = overlap_fractions(data.holdout_docs, data.train_docs)
    assert len(data.holdout_docs) == cfg.holdout_documents
    assert fractions.max() <= 0.2, sorted(fractions)[-5:]
    assert data.stats["holdout_max_overlap"] == pytest.approx(fractions.max(), abs=1e-4)
    train_ids = {d.doc_id for d in data.train_docs}
    assert not train_ids & {d.doc_id for d in data.holdout_docs}


@pytest.mark.parametrize("domain", ["med", "legal", "code", "general"])
def test_builtin_domain_validation_set_does_not_leak(domain: str, byte_tokenizer) -> None:
    """eval.split=validation: the validation documents are as leak-free as the holdout, and
    disjoint from it and from training."""
    cfg = OmegaConf.load(f"{CONF}/domain/{domain}.yaml")
    held = build_domain(domain, cfg, byte_tokenizer, 16, 1, max_train_blocks=1)
    data = build_domain(domain, cfg, byte_tokenizer, 16, 1, max_train_blocks=1,
                        split="validation")  # fmt: skip
    valid, train = {d.doc_id for d in data.holdout_docs}, {d.doc_id for d in data.train_docs}
    assert len(valid) == cfg.validation_documents
    assert not valid & {d.doc_id for d in held.holdout_docs} and not valid & train
    assert train == {d.doc_id for d in held.train_docs} - valid
    if not cfg.holdout_only:
        fractions = overlap_fractions(data.holdout_docs, data.train_docs)
        assert fractions.max() <= 0.2 and data.stats["validation_max_overlap"] <= 0.2


def _doc(i: int, text: str) -> Document:
    return Document(str(i), text)


def test_overlap_fraction_counts_shared_13_grams() -> None:
    shared = " ".join(f"w{i}" for i in range(20))  # 8 distinct 13-grams
    holdout = [_doc(0, shared + " " + " ".join(f"h{i}" for i in range(20)))]  # 28 grams
    train = [_doc(1, shared), _doc(2, "unrelated words only here")]
    assert overlap_fractions(holdout, train)[0] == pytest.approx(8 / 28)
    assert overlap_fractions(holdout, [train[1]])[0] == 0.0


def test_leaking_documents_stay_on_the_training_side() -> None:
    template = " ".join(f"clause{i}" for i in range(40))
    variants = [_doc(i, f"{template} variant {i}") for i in range(3)]  # near-copies
    unique = [_doc(10 + i, " ".join(f"u{i}x{j}" for j in range(30))) for i in range(5)]
    ranked = variants + unique
    train, holdout, skipped = leakage_safe_holdout(ranked, holdout_documents=3, max_overlap=0.2)
    # the first variant would share its template with the other two: skipped, as are the rest
    assert [d.doc_id for d in holdout] == ["10", "11", "12"]
    assert skipped == 3
    assert overlap_fractions(holdout, train).max() <= 0.2
    # a whole cluster may go to the holdout when nothing of it remains in training
    train, holdout, _ = leakage_safe_holdout(variants, holdout_documents=2, max_overlap=0.2)
    assert len(holdout) == 0 or overlap_fractions(holdout, train).max() <= 0.2
