"""Hydra entry point: ``python -m continual.run +sequence=med_legal_code [overrides]``.

Problems the user can fix (bad config, data or model) print one ``error:`` line and exit with
status 2; a single run that failed before writing any result also removes its run directory.
In a multirun sweep a failed job is reported and the sweep goes on with the next one.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from continual.errors import ContinualError

HYDRA_ONLY = {".hydra", "run.log"}


def _remove_if_empty(run_dir: Path) -> None:
    """Delete a run directory that holds nothing but Hydra's own files."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= HYDRA_ONLY:
        shutil.rmtree(run_dir)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from continual.experiment import run_experiment

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        run_experiment(cfg, run_dir)
    except ContinualError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            return
        _remove_if_empty(run_dir)
        sys.exit(2)


if __name__ == "__main__":
    main()
