"""Config checks that used to fail deep inside a library (or after the stage-0 evaluation) now
fail before any data, training or evaluation, with one clear message and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from continual import recipe
from continual.errors import ConfigError
from tests.test_bad_input import _run_fails


def _fails_early(cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *needles: str) -> None:
    def no_data(*args, **kwargs):
        raise AssertionError("data was prepared before the config check")

    monkeypatch.setattr(recipe, "prepare_data", no_data)
    _run_fails(cfg, tmp_path, ConfigError, *needles)


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("train.lr=inf", ["train.lr=inf", "finite"]),
        ("train.lr=nan", ["train.lr=nan", "finite"]),
        ("train.max_grad_norm=inf", ["max_grad_norm", "finite"]),
        ("train.scheduler=cosine_annealing", ["cosine_annealing", "linear", "cosine"]),
    ],
)
def test_impossible_training_settings(tiny_cfg, tmp_path, monkeypatch, override, needles) -> None:
    _fails_early(tiny_cfg(override), tmp_path, monkeypatch, *needles)


def test_lora_targets_the_model_lacks(tiny_cfg, tmp_path, monkeypatch) -> None:
    cfg = tiny_cfg("method.lora.target_modules=[q_proj,query_key_value]")
    _fails_early(cfg, tmp_path, monkeypatch, "query_key_value", "q_proj", "all-linear")


def test_prompted_context_longer_than_the_model(tiny_cfg, tmp_path, monkeypatch) -> None:
    # tiny_random has 256 positions; 32-token blocks leave room for 224 context tokens
    cfg = tiny_cfg("eval.prompted_k=2", "eval.prompted_context_tokens=240")
    _fails_early(cfg, tmp_path, monkeypatch, "prompted_context_tokens=240", "at most 224")


def test_block_longer_than_the_model(tiny_cfg, tmp_path, monkeypatch) -> None:
    _fails_early(tiny_cfg("train.block_len=512"), tmp_path, monkeypatch, "block_len=512", "256")


def test_fitting_settings_pass_the_model_checks(tiny_cfg, tmp_path) -> None:
    from continual.config.validate import validate_config, validate_for_model
    from continual.models.loading import load_model

    cfg = tiny_cfg("eval.prompted_k=2", "eval.prompted_context_tokens=224",
                   "method.lora.target_modules=[q_proj,v_proj]")  # fmt: skip
    validate_config(cfg)
    loaded = load_model(cfg.model, tmp_path / "cache")
    validate_for_model(cfg, loaded.model, loaded.max_positions)  # raises nothing


def test_method_target_that_cannot_be_built(tiny_cfg, tmp_path, monkeypatch) -> None:
    cfg = tiny_cfg("method._target_=continual.methods.lora.NoSuchProtocol")
    _fails_early(cfg, tmp_path, monkeypatch, "NoSuchProtocol", "conf/method/")


def test_a_domain_without_its_dataset_fails_before_the_model_loads(tmp_path, monkeypatch) -> None:
    # the vendor-protocol sequences take finance (and science) from a file the user names
    from tests.conftest import TINY, compose_config

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the config check")

    monkeypatch.setattr(recipe, "load_model", no_model)
    overrides = ["+sequence=pairs_med_legal_code_fin", "domain@domains.fin=pairs_jsonl", *TINY]
    cfg = compose_config(overrides)
    needles = ["domain 'fin' needs a dataset", "domains.fin.source.path=", "JSONL", "=pairs_hf"]
    _run_fails(cfg, tmp_path, ConfigError, *needles)


def test_a_text_domain_without_its_file_names_the_key(tiny_cfg, tmp_path, monkeypatch) -> None:
    from omegaconf import OmegaConf

    cfg = tiny_cfg()
    OmegaConf.update(cfg, "domains.code.source.path", "???")
    needles = ["domain 'code' needs a dataset", "domains.code.source.path=", "=hf_dataset"]
    _fails_early(cfg, tmp_path, monkeypatch, *needles)
