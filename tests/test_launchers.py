"""Sweeps beyond one process, through Hydra launchers (the `cluster` extra): submitit's local
executor (the SLURM launcher's code path, including the requeue of a preempted job) and joblib
(parallel local jobs with a per-job thread count)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from omegaconf import OmegaConf

from continual.config.launchers import launcher_problem, launchers
from continual.config.overrides import unknown_key_message
from continual.recipe import run_experiment
from continual.tracking.base import RunLogger
from tests.conftest import compose_config
from tests.test_cli import ROOT, _tiny_overrides

RESULT_FILES = ("metrics.csv", "loss_matrix.csv", "forgetting.csv", "train_log.csv")


class PreemptOnce(RunLogger):
    """Preempts its own job once, the way SLURM does: SIGUSR2 (submitit's preemption signal)
    after stage ``at`` of seed ``seed`` was evaluated, before that stage's commit point."""

    def __init__(self, *args: Any, marker: str, at: int = 2, seed: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.marker, self.at, self.seed = Path(marker), at, seed

    def log_eval(self, stage: int, stage_domain: str, values: dict) -> None:
        if stage == self.at and self.ids["seed"] == self.seed and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGUSR2)  # submitit checkpoints, requeues and exits


def _sweep(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "continual.run", "-m", *args, f"cache_dir={tmp_path / 'cache'}"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


def _complete(run_dir: Path) -> dict[str, Any]:
    """The run's run_info, after checking that the run finished and wrote every result."""
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["status"] == "complete", info.get("error")
    assert all((run_dir / name).is_file() for name in RESULT_FILES)
    return info


def _comparable(run_dir: Path) -> pd.DataFrame:
    table = pd.read_csv(run_dir / "metrics.csv")
    table = table[table.metric != "stage_seconds"].drop(columns="run")
    return table.sort_values(["stage", "eval_domain", "metric"]).reset_index(drop=True)


def test_submitit_requeues_a_preempted_job_into_its_run_dir_which_resumes(
    local_domains, tmp_path: Path
) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweeps, marker = tmp_path / "sweeps", tmp_path / "preempted"
    # ${now:...} down to microseconds: a requeued job that resolved it again would land elsewhere
    args = [
        *_tiny_overrides(local_domains), "method=lora", "seed=0,1",
        "hydra/launcher=local_submitit", f"hydra.sweep.dir={sweeps}/${{now:%H-%M-%S-%f}}",
        f"logger._target_={__name__}.PreemptOnce", f"+logger.marker={marker}",
    ]  # fmt: skip
    done = _sweep(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = sweeps.iterdir()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name[0] != ".") == [
        "lora_seed0", "lora_seed1",
    ]  # fmt: skip
    for run in ("lora_seed0", "lora_seed1"):
        assert _complete(sweep / run)["git_sha"]
    assert marker.is_file(), "the job was never preempted"
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "Requeued job" in logs  # submitit's requeue, not a second submission
    assert "Resuming" in (sweep / "lora_seed0" / "run.log").read_text()
    assert "Resuming" not in (sweep / "lora_seed1" / "run.log").read_text()

    reference = tmp_path / "reference"  # the same job, uninterrupted, in this process
    cfg = compose_config([*_tiny_overrides(local_domains), "method=lora", "seed=0",
                          f"cache_dir={tmp_path / 'cache'}"])  # fmt: skip
    run_experiment(cfg, reference)
    pd.testing.assert_frame_equal(_comparable(sweep / "lora_seed0"), _comparable(reference))


def test_joblib_runs_parallel_jobs_with_their_thread_count(local_domains, tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    # threads=2: joblib alone would give each of 2 workers cpu_count // 2 threads (1 here)
    args = [
        *_tiny_overrides(local_domains), "method=lora", "seed=0,1", "threads=2",
        "hydra/launcher=joblib_local", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    done = _sweep(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for run in ("lora_seed0", "lora_seed1"):
        assert _complete(sweep / run)["machine"]["torch_threads"] == 2
        hydra = OmegaConf.load(sweep / run / ".hydra" / "hydra.yaml").hydra
        assert hydra.launcher._target_.endswith("JoblibLauncher") and hydra.launcher.n_jobs == 2


def test_threads_limits_torch_and_the_environment(monkeypatch) -> None:
    import torch

    from continual.runtime import THREAD_ENV, apply_threads

    before = torch.get_num_threads()
    for name in THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    try:
        apply_threads(None)
        assert torch.get_num_threads() == before and "OMP_NUM_THREADS" not in os.environ
        apply_threads(1)
        assert torch.get_num_threads() == 1
        assert all(os.environ[name] == "1" for name in THREAD_ENV)
    finally:
        torch.set_num_threads(before)


def test_launcher_overrides_pass_the_key_check_and_compose() -> None:
    assert set(launchers()) == {"slurm", "local_submitit", "joblib_local"}
    overrides = ["+sequence=med_code", "hydra/launcher=slurm", "hydra.launcher.partition=gpu"]
    assert unknown_key_message([*overrides, "threads=2"]) is None
    assert "'threads'" in (unknown_key_message(["+sequence=med_code", "thread=2"]) or "")


def test_a_missing_launcher_plugin_names_the_install_command(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if "launcher" in name else real(name)
    )
    message = launcher_problem(["+sequence=med_code", "hydra/launcher=slurm"])
    assert message and "hydra-submitit-launcher" in message
    assert "pip install -e '.[cluster]'" in message
    assert launcher_problem(["hydra/launcher=joblib_local"]) and not launcher_problem(["seed=1"])


@pytest.mark.parametrize("override", ["threads=0", "threads=-1", "threads=two", "threads=true"])
def test_bad_thread_counts_fail_early(tiny_cfg, override: str) -> None:
    from continual.config.validate import validate_config
    from continual.errors import ConfigError

    with pytest.raises(ConfigError, match="threads=.* must be a positive integer"):
        validate_config(tiny_cfg(override))
