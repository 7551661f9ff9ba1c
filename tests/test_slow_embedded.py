"""Slow tests on the real embedded model and corpora (`pytest -m slow`, several minutes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import open_dict

from continual.models import embedded
from continual.recipe import run_experiment
from tests.conftest import compose_config

pytestmark = pytest.mark.slow


def test_default_chain_on_the_embedded_model(tmp_path: Path) -> None:
    cfg = compose_config(["+sequence=med_legal_code", "train.steps=2", "eval.holdout_blocks=2",
                          "train.max_train_blocks=64"])  # fmt: skip
    metrics = run_experiment(cfg, tmp_path / "run")
    nll = metrics[metrics.metric == "holdout_nll"]
    assert set(nll.eval_domain) == {"med", "legal", "code", "general"}
    assert sorted(nll.stage.unique()) == [0, 1, 2, 3]
    base = nll[nll.stage == 0].set_index("eval_domain").value
    assert base.between(1.0, 6.0).all(), base  # a pretrained model, not a random one (ln V = 10.8)
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["model"]["sha256"] and info["status"] == "complete"


def test_corrupt_model_cache_is_prepared_again(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    model_dir = embedded.prepare_embedded(cache)
    weights = model_dir / "model.safetensors"
    with open(weights, "r+b") as fh:
        fh.seek(4096)
        fh.write(b"corrupt!")
    assert not embedded.verify_manifest(model_dir)
    again = embedded.prepare_embedded(cache)
    assert embedded.verify_manifest(again)
    shutil.rmtree(cache)


def test_embedded_model_loads_in_4bit(tmp_path: Path) -> None:
    cfg = compose_config(["+sequence=med_code", "model.quantization=nf4"])
    with open_dict(cfg):
        cfg.cache_dir = str(Path.home() / ".cache" / "continual")
    from continual.models.loading import load_model

    loaded = load_model(cfg.model, Path(cfg.cache_dir))
    assert getattr(loaded.model, "is_loaded_in_4bit", False)
