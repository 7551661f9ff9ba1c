"""The data cache: a miss, then a hit; a changed input misses; cached data equals a fresh build,
down to the run's result files; a corrupt or half-written entry is never used."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from continual.data import cache as data_cache
from continual.models.loading import LoadedModel, byte_tokenizer, load_model
from continual.recipe import prepare_data, run_experiment

NAMES = ["prose", "code"]


def _loaded(tokenizer=None) -> LoadedModel:
    return LoadedModel(None, tokenizer or byte_tokenizer(), torch.device("cpu"))


def _events(caplog: pytest.LogCaptureFixture) -> list[str]:
    """``hit``/``miss``/``off`` per domain, in order, from the cache's log records."""
    out = []
    for record in caplog.records:
        words = record.getMessage().split()
        if words[:2] == ["data", "cache"] and words[2] in ("hit", "miss", "off"):
            out.append(f"{words[2]} {words[5].rstrip(':')}")
    caplog.clear()
    return out


def _entries(cfg) -> list[Path]:
    root = Path(cfg.cache_dir) / "data"
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def _same(a, b) -> None:
    """Two prepared domains hold the same data."""
    assert a.stats == b.stats and a.kind == b.kind
    if a.kind == "text":
        assert torch.equal(a.train_blocks, b.train_blocks)
        assert torch.equal(a.holdout_blocks, b.holdout_blocks)
        assert a.train_docs == b.train_docs and a.holdout_docs == b.holdout_docs
    else:
        assert a.train == b.train and a.holdout == b.holdout
        assert a.train_encoded == b.train_encoded and a.holdout_encoded == b.holdout_encoded
        assert a.renderer.name == b.renderer.name and a.answer == b.answer


def test_first_build_misses_and_the_second_hits_with_the_same_data(tiny_cfg, caplog) -> None:
    caplog.set_level(logging.INFO, logger="continual")
    cfg = tiny_cfg()
    first = prepare_data(cfg, _loaded(), NAMES)
    assert _events(caplog) == ["miss prose", "miss code"]
    assert len(_entries(cfg)) == 2
    second = prepare_data(cfg, _loaded(), NAMES)
    assert _events(caplog) == ["hit prose", "hit code"]
    with open_dict(cfg):
        cfg.data_cache = False
    fresh = prepare_data(cfg, _loaded(), NAMES)
    assert _events(caplog) == []
    for name in NAMES:
        _same(first[name], second[name])
        _same(fresh[name], second[name])


@pytest.mark.parametrize(
    "change",
    ["domains.prose.max_documents=30", "domains.prose.min_chars=25", "train.block_len=16",
     "eval.split=validation", "domains.prose.split_salt=other", "file", "tokenizer"],
)  # fmt: skip
def test_a_changed_input_misses(tiny_cfg, caplog, change: str) -> None:
    caplog.set_level(logging.INFO, logger="continual")
    cfg = tiny_cfg("eval.holdout_blocks=2")
    with open_dict(cfg):
        cfg.domains.prose.validation_documents = 4
    prepare_data(cfg, _loaded(), ["prose"])
    tokenizer = byte_tokenizer()
    if change == "file":  # same size, new content: the key hashes the content
        path = Path(cfg.domains.prose.source.path)
        path.write_text(path.read_text().replace("Document 1.", "Document X."))
    elif change == "tokenizer":
        tokenizer.add_tokens(["<extra>"])
    else:
        key, value = change.split("=")
        OmegaConf.update(cfg, key, int(value) if value.isdigit() else value, force_add=True)
    caplog.clear()
    prepare_data(cfg, _loaded(tokenizer), ["prose"])
    assert _events(caplog) == ["miss prose"]
    assert len(_entries(cfg)) == 2


def test_pairs_domains_are_cached_too(tiny_cfg, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="continual")
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"Which number follows n{i}?", "response": f"n{i + 1}",
             "choices": [f"n{i + 1}", f"n{i + 2}"]} for i in range(40)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tiny_cfg()
    reader = "continual.data.sources.pairs_files.read_pairs_jsonl"
    with open_dict(cfg):
        cfg.domains.qa = {
            "kind": "pairs", "holdout_examples": 6, "max_tokens": 96, "template": "plain",
            "answer": "choice",
            "source": {"_target_": reader, "path": str(path), "choices_field": "choices"},
        }  # fmt: skip
    first = prepare_data(cfg, _loaded(), ["qa"])["qa"]
    second = prepare_data(cfg, _loaded(), ["qa"])["qa"]
    assert _events(caplog) == ["miss qa", "hit qa"]
    _same(first, second)
    batches = [d.training_set().batch([0, 1]) for d in (first, second)]
    assert all(batches[0][k].equal(batches[1][k]) for k in batches[0])


@pytest.mark.parametrize("fault", ["truncated", "flipped", "no_entry_json", "records"])
def test_a_corrupt_entry_is_rebuilt_with_a_warning(tiny_cfg, caplog, fault: str) -> None:
    caplog.set_level(logging.INFO, logger="continual")
    cfg = tiny_cfg()
    good = prepare_data(cfg, _loaded(), ["prose"])["prose"]
    (entry,) = _entries(cfg)
    tensors = entry / data_cache.TENSORS
    if fault == "truncated":
        tensors.write_bytes(tensors.read_bytes()[:100])
    elif fault == "flipped":  # one token id changed: only the checksum can tell
        raw = bytearray(tensors.read_bytes())
        raw[-8] ^= 1
        tensors.write_bytes(bytes(raw))
    elif fault == "no_entry_json":
        (entry / data_cache.ENTRY).unlink()
    else:
        (entry / data_cache.RECORDS).write_text('{"train": [')
    caplog.clear()
    rebuilt = prepare_data(cfg, _loaded(), ["prose"])["prose"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unreadable" in warnings[0] and "rebuilding" in warnings[0]
    assert _events(caplog) == ["miss prose"]
    _same(good, rebuilt)
    prepare_data(cfg, _loaded(), ["prose"])
    assert _events(caplog) == ["hit prose"]  # the rebuilt entry is whole again


def test_a_killed_writer_leaves_no_entry(tiny_cfg, caplog, monkeypatch) -> None:
    cfg = tiny_cfg()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(data_cache, "file_sha256", killed)  # after the files, before the rename
    with pytest.raises(KeyboardInterrupt):
        prepare_data(cfg, _loaded(), ["prose"])
    assert list((Path(cfg.cache_dir) / "data").iterdir()) == []


def test_an_unversioned_source_is_not_cached(tiny_cfg, caplog) -> None:
    caplog.set_level(logging.INFO, logger="continual")
    cfg = tiny_cfg()
    with open_dict(cfg):  # a user's reader: the cache cannot tell when its data changes
        cfg.domains.prose.source._target_ = "tests.test_data_cache.my_reader"
    prepare_data(cfg, _loaded(), ["prose"])
    assert _events(caplog) == ["off prose"] and _entries(cfg) == []


def my_reader(*, path: str, text_field: str = "text", id_field: str | None = None):
    from continual.data.sources.local_files import read_jsonl

    return read_jsonl(path=path, text_field=text_field, id_field=id_field)


def _results(run_dir: Path) -> dict[str, bytes]:
    metrics = pd.read_csv(run_dir / "metrics.csv")
    metrics = metrics[metrics.metric != "stage_seconds"]  # wall time
    return {
        "metrics": metrics.to_csv(index=False).encode(),
        **{name: (run_dir / f"{name}.csv").read_bytes()
           for name in ("train_log", "loss_matrix", "forgetting")},
    }  # fmt: skip


def test_results_are_byte_identical_with_and_without_the_cache(
    tiny_cfg, tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="continual")
    cfg = tiny_cfg("train.steps=2")
    prepare_data(cfg, load_model(cfg.model, Path(cfg.cache_dir)), NAMES)  # fill the cache
    caplog.clear()
    cached, fresh = tmp_path / "cached" / "run", tmp_path / "fresh" / "run"
    run_experiment(cfg, cached)
    assert _events(caplog) == ["hit prose", "hit code"]
    run_experiment(tiny_cfg("train.steps=2", "data_cache=false"), fresh)
    assert _events(caplog) == []
    assert _results(cached) == _results(fresh)
    info = [json.loads((d / "run_info.json").read_text()) for d in (cached, fresh)]
    assert info[0]["data"] == info[1]["data"]


def test_a_resume_may_turn_the_cache_off(tiny_cfg, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="continual")
    run_dir = tmp_path / "run"
    run_experiment(tiny_cfg("train.steps=2"), run_dir)
    (run_dir / "progress.json").write_text(json.dumps({"completed_stage": 1, "trained": ["prose"]}))
    (run_dir / "forgetting.csv").unlink()
    run_experiment(tiny_cfg("train.steps=2", "data_cache=false"), run_dir)  # not refused
    assert "Resuming" in caplog.text and (run_dir / "forgetting.csv").is_file()
