"""Hydra entry point: ``python -m continual.run +sequence=med_legal_code [overrides]``."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from continual.errors import ContinualError


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from continual.experiment import run_experiment

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        run_experiment(cfg, run_dir)
    except ContinualError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if hydra_cfg.mode != RunMode.MULTIRUN:
            sys.exit(2)


if __name__ == "__main__":
    main()
