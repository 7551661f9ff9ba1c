"""Experiment trackers (``logger=`` choices): the interface, the no-op logger, and the factory.

``conf/logger/<name>.yaml`` names its class with ``_target_``; its other fields are passed to
that class as keyword arguments. The recipe calls, in order: ``start(config)``, then per stage
``log_steps`` and ``log_eval``, and at the end ``log_summary`` and ``finish(status)``. Each call
must be cheap and never raise for tracker trouble (a tracker failure is reported once and
logging stops, the run goes on). Nothing here imports a tracker library.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from continual.errors import ConfigError
from continual.rundir import SECRET_KEY

log = logging.getLogger(__name__)

_CHOICES = "use logger=wandb or logger=none"
_SECRET_HINT = (
    "; trackers read credentials from the environment (e.g. WANDB_API_KEY or `wandb login`), "
    "and a key given on the command line is kept in the run's .hydra/ files"
)


class RunLogger:
    """The tracker interface, and the no-op logger itself (``logger=none``).

    Built with the run config ``cfg``, the run directory and the run's ``ids``, plus the
    fields of its logger config: ``name``, and any others, which a class that does not use
    them ignores with a warning that names them (never their values).
    """

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        ids: dict[str, Any],
        *,
        name: str = "none",
        **settings: Any,
    ) -> None:
        self.cfg, self.run_dir, self.ids, self.name = cfg, Path(run_dir), ids, name
        if settings:
            unused = ", ".join(f"logger.{key}" for key in settings)
            hint = _SECRET_HINT if any(SECRET_KEY.search(key) for key in settings) else ""
            log.warning("logger=%s does not use %s%s", name, unused, hint)

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
        """``status``: complete | failed | interrupted."""


def build_logger(cfg: DictConfig, run_dir: Path, ids: dict[str, Any]) -> RunLogger:
    """Instantiate ``cfg.logger`` (its ``_target_`` with its other fields) for one run.

    Raises:
        ConfigError: no ``_target_``, a target that cannot be imported, or one that is not a
            :class:`RunLogger`; errors of the tracker's own settings come through unchanged.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    node = cfg.get("logger")
    target = node.get("_target_") if node is not None else None
    if not target:
        raise ConfigError(
            f"The logger config has no _target_ (the tracker class to build); {_CHOICES}, or "
            "add `_target_: continual.tracking.base.RunLogger` (no tracker) to your logger YAML."
        )
    try:
        factory = instantiate(node, _partial_=True, _convert_="all")
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(
            f"logger._target_={target!r} cannot be loaded ({type(cause).__name__}: "
            f"{' '.join(str(cause).split())[:300]}); {_CHOICES}, or point _target_ at a "
            "RunLogger subclass."
        ) from exc
    logger = factory(cfg=cfg, run_dir=Path(run_dir), ids=ids)
    if not isinstance(logger, RunLogger):
        raise ConfigError(
            f"logger._target_={target!r} built a {type(logger).__name__} object, not a "
            f"RunLogger; {_CHOICES}, or point _target_ at a RunLogger subclass."
        )
    return logger
