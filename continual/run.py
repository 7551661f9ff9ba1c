"""Hydra entry point: ``python -m continual.run +sequence=med_legal_code [overrides]``.

Problems the user can fix (bad config, data or model) print one ``error:`` line and exit with
status 2; a single run that failed before writing any result also removes its run directory.
In a multirun sweep a failed job is reported and the sweep goes on with the next one.
Log records go to the console and to ``<run dir>/run.log`` (conf/hydra/job_logging/).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from continual.config.validate import CONF_DIR
from continual.errors import ContinualError
from continual.rundir import atomic_write_json, redact, redact_hydra_copies
from continual.runtime import apply_runtime

HYDRA_ONLY = {".hydra", "run.log"}


def _remove_if_empty(run_dir: Path) -> None:
    """Delete a run directory that holds nothing but Hydra's own files."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= HYDRA_ONLY:
        shutil.rmtree(run_dir)
        if run_dir.parent.name == "runs":  # the default runs/ folder, if left empty
            with contextlib.suppress(OSError):
                run_dir.parent.rmdir()


def _record_failure(run_dir: Path, exc: Exception) -> None:
    """Leave a failed sweep job's status where the sweep summary (continual.report) reads it."""
    info_path = run_dir / "run_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    atomic_write_json(info_path, info)


def next_steps(run_dir: Path, multirun: bool) -> str:
    """Where a finished run's results are, and the commands that read them."""
    target = run_dir.parent if multirun else run_dir
    lines = [
        f"\nResults: {run_dir}/ (metrics.csv, loss_matrix.csv, forgetting.csv, run_info.json)",
        f"Report:  python -m continual.report {target}",
    ]
    if multirun:
        lines.append(f"Compare: python -m continual.compare {target}")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from continual.config.validate import validate_config
    from continual.models.loading import use_bitsandbytes_only_if_quantised
    from continual.train import distributed as dist

    hydra_cfg = HydraConfig.get()
    dist.init()  # launched by accelerate launch or torchrun: one process of several
    run_dir = dist.agree_run_dir(Path(hydra_cfg.runtime.output_dir))
    redact_hydra_copies(run_dir)
    sys.argv[:] = redact(sys.argv)  # trackers record the command line
    try:
        use_bitsandbytes_only_if_quantised(cfg.model)  # before transformers or peft load
        validate_config(cfg)  # before the heavy imports: a bad config fails in seconds
        apply_runtime(cfg)  # before the libraries start their thread pools and the model loads
        from continual.recipe import run_experiment

        with logging_redirect_tqdm():  # console log lines printed above progress bars
            run_experiment(cfg, run_dir)
        if dist.is_main():
            print(next_steps(run_dir, hydra_cfg.mode == RunMode.MULTIRUN))
    except ContinualError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if not dist.is_main():
            sys.exit(2)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            _record_failure(run_dir, exc)
            return
        _remove_if_empty(run_dir)
        sys.exit(2)
    finally:
        dist.finish()


def cli() -> None:
    """Check override keys (typos get the closest valid key) and the launcher plugin, then hand
    over to Hydra."""
    from continual.config.launchers import launcher_problem
    from continual.config.overrides import unknown_key_message

    overrides = [a for a in sys.argv[1:] if not a.startswith("-")]
    problem = launcher_problem(overrides)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    if not any(a.startswith("-") and a not in ("-m", "--multirun") for a in sys.argv[1:]):
        message = unknown_key_message(overrides)
        if message:
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
