"""Experiment trackers (``logger=`` choices). ``none`` logs nothing; ``wandb`` see below.

The recipe calls, in order: ``start(config)``, then per stage ``log_steps`` and ``log_eval``,
and at the end ``log_summary`` and ``finish(status)``. Each call must be cheap and never raise
for tracker trouble (a tracker failure is reported once and logging stops, the run goes on).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig


class RunLogger:
    """The no-op logger (``logger=none``); subclasses send the same calls to a tracker."""

    def __init__(self, cfg: DictConfig, run_dir: Path, ids: dict[str, Any]) -> None:
        self.cfg, self.run_dir, self.ids = cfg, run_dir, ids

    def start(self, config: dict[str, Any]) -> None:
        """``config``: the resolved run config with secrets already redacted."""

    def log_steps(self, stage: int, domain: str, steps: list[dict[str, float]]) -> None:
        """Per-step training records of one stage (step, loss, grad_norm, lr, global_step)."""

    def log_eval(self, stage: int, stage_domain: str, values: dict[tuple[str, str], float]) -> None:
        """Evaluation after ``stage``: (eval_domain, metric) -> value."""

    def log_summary(
        self, matrix: pd.DataFrame, forgetting: pd.DataFrame, summary: dict[str, float]
    ) -> None:
        """End of the chain: the stage x domain loss matrix, forgetting table, scalar metrics."""

    def finish(self, status: str) -> None:
        """``status``: complete | failed."""


def build_logger(cfg: DictConfig, run_dir: Path, ids: dict[str, Any]) -> RunLogger:
    """The logger named by ``cfg.logger.name``."""
    name = cfg.logger.name
    if name == "none":
        return RunLogger(cfg, run_dir, ids)
    if name == "wandb":
        from continual.tracking.wandb_run import WandbLogger

        return WandbLogger(cfg, run_dir, ids)
    from continual.errors import ConfigError

    raise ConfigError(f"Unknown logger {name!r}; use logger=wandb or logger=none")
