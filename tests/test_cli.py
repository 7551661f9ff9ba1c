"""The command line: a sweep smoke test and a clean early failure (subprocesses, tiny model)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def _cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env_cache = f"cache_dir={tmp_path / 'cache'}"
    cmd = [sys.executable, "-m", "continual.run", *args, env_cache]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _tiny_overrides(local_domains: dict[str, Path]) -> list[str]:
    return [
        "+sequence=med_code", "model=tiny_random", "eval.general_domain=null",
        "domain@domains.med=local_jsonl", f"domains.med.source.path={local_domains['prose']}",
        "domain@domains.code=local_jsonl", f"domains.code.source.path={local_domains['code']}",
        "domains.med.holdout_documents=8", "domains.code.holdout_documents=8",
        "train.steps=2", "train.batch_size=2", "train.block_len=32", "train.warmup_steps=0",
        "eval.holdout_blocks=2", "eval.batch_size=2", "logger=none",
        "eval.prompted_context_tokens=32",
    ]  # fmt: skip


def test_sweep_gives_one_run_per_seed(local_domains, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", *_tiny_overrides(local_domains), "method=lora", "seed=0,1"]
    done = _cli([*args, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert runs == ["lora_seed0", "lora_seed1"]
    tables = [pd.read_csv(sweep / r / "metrics.csv") for r in runs]
    assert [t.seed.unique().tolist() for t in tables] == [[0], [1]]
    # same holdout for every seed: identical base losses, different trained losses
    base = [t[(t.metric == "holdout_nll") & (t.stage == 0)].value.tolist() for t in tables]
    final = [t[(t.metric == "holdout_nll") & (t.stage == 2)].value.tolist() for t in tables]
    assert base[0] == base[1] and final[0] != final[1]


def test_bad_input_exits_2_and_leaves_no_run_dir(local_domains, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*_tiny_overrides(local_domains), "train.lr=0", f"hydra.run.dir={run_dir}"]
    done = _cli(args, tmp_path)
    assert done.returncode == 2
    assert "error: train.lr=0" in done.stderr and "learning rate" in done.stderr
    assert not run_dir.exists()


def test_sweep_goes_on_after_a_failed_job_and_records_it(local_domains, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", *_tiny_overrides(local_domains), "train.lr=0,1e-3"]
    done = _cli([*args, f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=lr${train.lr}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    failed = json.loads((sweep / "lr0" / "run_info.json").read_text())
    assert failed["status"] == "failed" and "train.lr" in failed["error"]
    ok = json.loads((sweep / "lr0.001" / "run_info.json").read_text())
    assert ok["status"] == "complete"


def test_a_secret_typed_on_the_command_line_is_written_nowhere(
    local_domains, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_home"))
    run_dir = tmp_path / "run"
    secret = "SECRET-5f0d2c9a"
    args = [*_tiny_overrides(local_domains), "logger=wandb", f"+logger.api_key={secret}"]
    done = _cli([*args, f"hydra.run.dir={run_dir}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files), "the W&B offline run is missing"
    assert any(p.parent.name == ".hydra" for p in files)
    leaked = [str(p) for p in files if secret.encode() in p.read_bytes()]
    assert leaked == []
    assert secret not in done.stdout + done.stderr
