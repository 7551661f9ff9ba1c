"""Shared fixtures: composed Hydra configs with tiny CPU settings and small local domains."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

CONF = str(Path(__file__).resolve().parent.parent / "conf")
JSONL_READER = "continual.data.sources.local_files.read_jsonl"

TINY = [
    "model=tiny_random",
    "train.steps=3",
    "train.batch_size=4",
    "train.micro_batch_size=2",
    "train.block_len=32",
    "train.warmup_steps=1",
    "eval.holdout_blocks=4",
    "eval.batch_size=4",
    "eval.general_domain=null",
    "eval.prompted_context_tokens=64",
    "logger=none",
]


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose conf/config.yaml with overrides, the way `python -m continual.run` does."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=False)


def _write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def prose_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    subjects = ["The patient", "A clinician", "The trial", "Each cohort", "The study"]
    verbs = ["reported", "measured", "observed", "compared", "reviewed"]
    objects = ["blood pressure", "mortality", "adverse events", "dosage", "recovery time"]
    return [
        f"Document {i}. "
        + " ".join(
            f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} "
            f"in week {rng.randint(1, 52)}."
            for _ in range(12)
        )
        for i in range(n)
    ]


def code_texts(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [
        f"# module {i}\n"
        + "\n".join(
            f"def f{i}_{j}(x):\n    return x * {rng.randint(2, 99)} + {rng.randint(0, 9)}\n"
            for j in range(8)
        )
        for i in range(n)
    ]


@pytest.fixture(autouse=True)
def _no_wandb_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs composed with the default logger (wandb) stay off the network and out of $HOME;
    the W&B tests set their own mode."""
    monkeypatch.setenv("WANDB_MODE", "disabled")


@pytest.fixture
def local_domains(tmp_path: Path) -> dict[str, Path]:
    """Two small JSONL domains (prose, code) written into a temporary directory."""
    return {
        "prose": _write_jsonl(tmp_path / "prose.jsonl", prose_texts(40)),
        "code": _write_jsonl(tmp_path / "code.jsonl", code_texts(40)),
    }


@pytest.fixture
def tiny_cfg(local_domains: dict[str, Path], tmp_path: Path) -> Callable[..., DictConfig]:
    """Factory: a two-stage (prose -> code) config on tiny_random, with extra overrides."""

    def make(*overrides: str) -> DictConfig:
        cfg = compose_config(["+sequence=med_code", *TINY, *overrides])
        with open_dict(cfg):
            cfg.cache_dir = str(tmp_path / "cache")
            cfg.sequence.order = ["prose", "code"]
            template = {
                "source": {"_target_": JSONL_READER, "text_field": "text", "id_field": None},
                "max_documents": None, "holdout_documents": 8, "near_dedup": False,
                "min_chars": 20, "holdout_only": False,
            }  # fmt: skip
            cfg.domains = {
                name: {**template, "source": {**template["source"], "path": str(path)}}
                for name, path in local_domains.items()
            }
        return cfg

    return make


def interrupted_then_resumed(
    cfg: Any, run_dir: Path, monkeypatch: Any, at: int = 4
) -> pd.DataFrame:
    """Stop a run at its ``at``-th CSV write, then rerun. The default, 4: after stage 2's
    training and save, before its commit point (of a one-stage run: the summary's write)."""
    from continual import recipe
    from continual.recipe import run_experiment

    real, calls = recipe.atomic_write_csv, [0]

    def interrupted(path: Path, frame: pd.DataFrame) -> None:
        calls[0] += 1
        if calls[0] == at:  # metrics(stage 0), log+metrics(stage 1), then log(stage 2)
            raise KeyboardInterrupt
        real(path, frame)

    monkeypatch.setattr(recipe, "atomic_write_csv", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, run_dir)
    monkeypatch.setattr(recipe, "atomic_write_csv", real)
    return run_experiment(cfg, run_dir)
