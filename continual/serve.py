"""Reload a finished (or partly finished) run from its directory for evaluation or inference.

run = load_run("runs/<run>")              # state after the last finished stage
with run.serving("med"):                  # adapter of med (+ the backbone, if any)
    logits = run.model(input_ids=ids).logits
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from continual.errors import ConfigError, ModelError
from continual.eval.holdout import holdout_nll
from continual.methods import Method, build_method
from continual.models.loading import LoadedModel, load_model
from continual.recipe import check_stages, prepare_data, read_progress
from continual.train.seeding import seed_everything, stage_seed


@dataclass
class LoadedRun:
    """A run's model with the adapters saved after ``stage``; ``serving(d)`` picks domain d's."""

    cfg: DictConfig
    loaded: LoadedModel
    method: Method
    model: Any
    stage: int

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    def serving(self, domain: str) -> AbstractContextManager[None]:
        return self.method.serving(domain)

    def holdout_nll(self, domain: str) -> float:
        """Recompute domain's holdout loss exactly as the run evaluated it (for a pairs domain,
        the response-only NLL)."""
        return self.evaluate(domain)["holdout_nll"]

    def evaluate(self, domain: str) -> dict[str, float]:
        """Recompute domain's evaluation as the run did: ``holdout_nll`` for a text domain;
        ``holdout_nll``, ``accuracy`` (and ``rougeL`` if configured) for a pairs domain."""
        from continual.eval.pairs import evaluate_pairs

        data = prepare_data(self.cfg, self.loaded, [domain])[domain]
        batch_size, device = self.cfg.eval.batch_size, self.loaded.device
        with self.serving(domain):
            if data.kind == "pairs":
                return evaluate_pairs(self.model, data, batch_size, device)
            nll, _ = holdout_nll(self.model, data.holdout_blocks, batch_size, device)
        return {"holdout_nll": nll}


def check_adapter_kind(directory: Path, expected: str) -> None:
    """Fail clearly when a directory holds another kind of adapter than ``expected``."""
    has_crma = (directory / "crma" / "crma_config.json").is_file()
    if expected == "lora" and has_crma:
        raise ModelError(
            f"{directory} holds a CRMA backbone as well as LoRA; it was saved by a CRMA method. "
            "Load it with load_run(<run dir>) (which rebuilds that method) or "
            "continual.adapters.crma.load_crma for the backbone alone."
        )
    if expected == "crma" and not has_crma:
        raise ModelError(
            f"{directory} holds plain LoRA adapters (no crma/crma_config.json); it was not saved "
            "by a CRMA method. Load it with peft.PeftModel.from_pretrained."
        )


def load_run(run_dir: str | Path, stage: int | None = None) -> LoadedRun:
    """Rebuild the model of ``run_dir`` with the adapters saved after ``stage`` (default: last)."""
    run_dir = Path(run_dir)
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = OmegaConf.load(config)
    progress = read_progress(run_dir)
    done = progress["completed_stage"]
    stage = done if stage is None else stage
    if not 0 <= stage <= done:
        raise ConfigError(f"{run_dir} finished stages 0..{done}; stage {stage} is not available")
    method = build_method(cfg.method)
    stages = method.stages(list(cfg.sequence.order))
    check_stages(run_dir, progress, stages)
    loaded = load_model(cfg.model, Path(cfg.cache_dir))
    seed_everything(stage_seed(int(cfg.seed), 0))  # as the run did: a seeded init (PiSSA's
    model = method.setup(loaded.model)  # randomized SVD) rebuilds the same residual base
    if stage:
        directory = run_dir / "adapters" / f"stage{stage}_{stages[stage - 1]}"
        check_adapter_kind(directory, "crma" if "crma" in cfg.method else "lora")
        method.load(directory, stages[:stage])
        model = method.model
    return LoadedRun(cfg=cfg, loaded=loaded, method=method, model=model, stage=stage)
