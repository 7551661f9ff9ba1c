"""``eval.split=validation``: each domain is evaluated on the documents ranked next after its
holdout, which leave training; the holdout is neither trained on nor scored. The default
(``holdout``) is the split as it always was."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import open_dict

from continual.config.validate import validate_config
from continual.data.documents import Document
from continual.data.domain import build_domain
from continual.data.holdout import choose_holdout
from continual.data.overlap import overlap_fractions
from continual.data.pairs import build_pairs_domain
from continual.data.split import rank_documents
from continual.errors import ConfigError, DataError
from continual.models.loading import load_model
from continual.recipe import run_experiment
from tests.conftest import compose_config
from tests.test_data_pipeline import _cfg, _doc_text, tokenizer  # noqa: F401 (a fixture)


def _ids(docs: list[Document]) -> list[str]:
    return [d.doc_id for d in docs]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """60 documents whose every word is their own: nothing overlaps, nothing is skipped."""
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": _doc_text(i)}) + "\n" for i in range(60)))
    return path


def test_validation_documents_follow_the_holdout_and_leave_training(corpus: Path) -> None:
    docs = [Document(f"{i}", _doc_text(i)) for i in range(60)]
    cfg = {"holdout_documents": 10, "validation_documents": 15}
    ranked = _ids(rank_documents(docs, "med"))
    train, held, _ = choose_holdout("med", cfg, docs)
    assert _ids(held) == ranked[:10] and _ids(train) == ranked[10:]  # the default: as ever
    train, valid, stats = choose_holdout("med", cfg, docs, "validation")
    assert _ids(valid) == ranked[10:25] and _ids(train) == ranked[25:]
    assert not set(_ids(valid)) & set(ranked[:10]) and not set(_ids(valid)) & set(_ids(train))
    assert stats["eval_split"] == "validation" and stats["validation_docs"] == 15
    assert stats["holdout_docs_set_aside"] == 10 and stats["validation_skipped_for_overlap"] == 0


def test_the_validation_set_keeps_the_leakage_control(corpus: Path) -> None:
    """Templated documents share most of their 13-grams with the rest: they stay in training,
    for the validation set as for the holdout."""
    templated = " ".join(f"shared{k}" for k in range(40))
    docs = [Document(f"u{i}", _doc_text(i)) for i in range(40)]
    docs += [Document(f"t{i}", f"{templated} own{i}") for i in range(20)]
    cfg = {"holdout_documents": 5, "validation_documents": 10, "max_holdout_overlap": 0.2}
    train, valid, stats = choose_holdout("legal", cfg, docs, "validation")
    assert all(d.doc_id.startswith("u") for d in valid) and len(valid) == 10
    assert overlap_fractions(valid, train).max() <= 0.2 and stats["validation_max_overlap"] <= 0.2
    skipped = [d for d in rank_documents(docs, "legal") if d.doc_id.startswith("t")]
    assert stats["validation_skipped_for_overlap"] + stats["holdout_skipped_for_overlap"] > 0
    assert {d.doc_id for d in skipped} <= set(_ids(train))  # templated ones: all trained on


def test_build_domain_evaluates_the_validation_set_and_never_the_holdout(
    corpus: Path,
    tokenizer,  # noqa: F811
) -> None:
    holdout = build_domain("med", _cfg(corpus), tokenizer, 16, holdout_blocks=4)
    default = build_domain("med", _cfg(corpus), tokenizer, 16, 4, split="holdout")
    assert torch.equal(holdout.train_blocks, default.train_blocks)
    assert torch.equal(holdout.holdout_blocks, default.holdout_blocks)
    assert holdout.stats == default.stats and "eval_split" not in holdout.stats
    valid = build_domain("med", _cfg(corpus, validation_documents=12), tokenizer, 16, 4,
                         split="validation")  # fmt: skip
    held, seen = set(_ids(holdout.holdout_docs)), set(_ids(valid.holdout_docs))
    assert len(seen) == 12 and not seen & held and not seen & set(_ids(valid.train_docs))
    assert not held & set(_ids(valid.train_docs))  # the holdout: neither trained nor scored
    assert len(valid.train_docs) == len(holdout.train_docs) - 12
    eos = tokenizer.eos_token_id
    tokens = [set(t.flatten().tolist()) - {eos} for t in (valid.train_blocks, valid.holdout_blocks)]
    assert not tokens[0] & tokens[1]
    assert valid.stats["eval_split"] == "validation" and valid.stats["holdout_docs"] == 12


def test_the_validation_split_ignores_seeds_and_input_order(
    tmp_path: Path,
    tokenizer,  # noqa: F811
) -> None:
    texts = [_doc_text(i) for i in range(60)]
    found = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        rows = [{"text": t, "id": f"doc{i}"} for i, t in enumerate(texts)]
        random.Random(seed).shuffle(rows)
        path = tmp_path / f"c{seed}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        cfg = _cfg(path, validation_documents=12)
        cfg["source"]["id_field"] = "id"
        data = build_domain("med", cfg, tokenizer, 16, 4, split="validation")
        found.append((sorted(_ids(data.holdout_docs)), sorted(_ids(data.train_docs))))
    assert found[0] == found[1]


def test_holdout_only_domains_validate_on_the_documents_after_their_holdout(
    corpus: Path,
    tokenizer,  # noqa: F811
) -> None:
    cfg = _cfg(corpus, holdout_only=True, holdout_documents=20, validation_documents=15)
    held = build_domain("general", cfg, tokenizer, 16, 4)
    valid = build_domain("general", cfg, tokenizer, 16, 4, split="validation")
    ranked = _ids(rank_documents(valid.holdout_docs + held.holdout_docs, "general"))
    assert _ids(held.holdout_docs) == ranked[:20] and _ids(valid.holdout_docs) == ranked[20:]
    assert valid.train_docs == [] and valid.train_blocks.shape == (0, 16)
    with pytest.raises(DataError, match=r"only 40 of the validation_documents=45.*at most 40"):
        build_domain("general", {**cfg, "validation_documents": 45}, tokenizer, 16, 4,
                     split="validation")  # fmt: skip
    with pytest.raises(ConfigError, match="holdout_documents: null"):
        build_domain("general", {**cfg, "holdout_documents": None}, tokenizer, 16, 4,
                     split="validation")  # fmt: skip


def test_too_few_documents_and_bad_values_fail_with_the_fix(
    corpus: Path,
    tokenizer,  # noqa: F811
) -> None:
    with pytest.raises(DataError, match=r"60 documents.*holdout_documents=10, "
                       r"validation_documents=50.*50 are left.*at most 49"):  # fmt: skip
        build_domain("med", _cfg(corpus, validation_documents=50), tokenizer, 16, 4,
                     split="validation")  # fmt: skip
    with pytest.raises(ConfigError, match="validation_documents=0 must be a positive integer"):
        build_domain("med", _cfg(corpus, validation_documents=0), tokenizer, 16, 4,
                     split="validation")  # fmt: skip
    with pytest.raises(ConfigError, match=r"eval.split='test' is unknown; use holdout .* or "
                       "validation"):  # fmt: skip
        build_domain("med", _cfg(corpus), tokenizer, 16, 4, split="test")
    bad = compose_config(["+sequence=med_code", "eval.split=holdout_set"])
    with pytest.raises(ConfigError, match=r"eval.split='holdout_set' is unknown"):
        validate_config(bad)


def test_pairs_domains_validate_on_the_examples_after_their_holdout(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"Which number follows n{i}?", "response": f"n{i + 1}"} for i in range(40)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"source": {"_target_": "continual.data.sources.pairs_files.read_pairs_jsonl",
                      "path": str(path)},
           "holdout_examples": 6, "validation_examples": 8, "max_tokens": 64, "template": "plain",
           "answer": "generate"}  # fmt: skip
    tok = load_model(compose_config(["model=tiny_random"]).model, tmp_path / "cache").tokenizer
    held = build_pairs_domain("p", cfg, tok)
    valid = build_pairs_domain("p", cfg, tok, split="validation")
    sets = {"held": held.holdout, "valid": valid.holdout, "train": valid.train}
    ids = {k: {ex.example_id for ex in v} for k, v in sets.items()}
    assert len(ids["valid"]) == 8 and len(ids["train"]) == 40 - 6 - 8
    assert not ids["valid"] & ids["held"] and not ids["valid"] & ids["train"]
    assert not ids["held"] & ids["train"]
    assert {ex.example_id for ex in held.train} == ids["valid"] | ids["train"]
    with pytest.raises(DataError, match=r"validation_examples=40.*at most 33"):
        build_pairs_domain("p", {**cfg, "validation_examples": 40}, tok, split="validation")


def test_a_run_on_the_validation_split_records_it(tiny_cfg, tmp_path: Path) -> None:
    cfg = tiny_cfg("train.steps=1", "eval.prompted_k=0")
    valid_cfg = tiny_cfg("train.steps=1", "eval.prompted_k=0", "eval.split=validation")
    with open_dict(valid_cfg):
        for name in ("prose", "code"):
            valid_cfg.domains[name].validation_documents = 8
    held = run_experiment(cfg, tmp_path / "held")
    valid = run_experiment(valid_cfg, tmp_path / "valid")
    info = {r: json.loads((tmp_path / r / "run_info.json").read_text())["data"]
            for r in ("held", "valid")}  # fmt: skip
    assert [info["valid"][d]["eval_split"] for d in ("prose", "code")] == ["validation"] * 2
    assert "eval_split" not in info["held"]["prose"]
    nll = [m[(m.stage == 0) & (m.metric == "holdout_nll")].value.tolist() for m in (held, valid)]
    assert nll[0] != nll[1]  # other documents scored
    assert list(pd.read_csv(tmp_path / "valid" / "metrics.csv").columns) == list(held.columns)


def test_the_report_says_when_runs_scored_the_validation_split(tmp_path: Path) -> None:
    from continual.analysis.report import build_report
    from tests.test_report import make_run

    for seed, split in [(0, "validation"), (1, "holdout")]:
        run = make_run(tmp_path / "sweep" / f"lora_seed{seed}", "lora", seed)
        (run / "config.yaml").write_text(f"eval:\n  split: {split}\n")
    text = (build_report(tmp_path / "sweep", tmp_path / "out") / "report.md").read_text()
    assert "**Some runs (see Settings below) evaluated on the validation split" in text
    assert "`eval.split=validation/holdout`" in text
    (tmp_path / "sweep" / "lora_seed0" / "config.yaml").write_text("eval:\n  split: holdout\n")
    text = (build_report(tmp_path / "sweep", tmp_path / "out") / "report.md").read_text()
    assert "validation split" not in text
