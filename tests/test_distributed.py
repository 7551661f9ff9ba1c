"""Multi-process (DDP) training: two gloo processes on CPU, launched by torchrun, train the same
chain as one process with the same global batch (continual/train/distributed.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from continual.train import distributed as dist
from tests.test_cli import ROOT, _tiny_overrides

LOSSES = ("loss", "grad_norm")


def _run(args: list[str], run_dir: Path, tmp_path: Path, nproc: int) -> None:
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = [sys.executable, *(launcher if nproc > 1 else []), "-m", "continual.run", *args,
           f"hydra.run.dir={run_dir}", f"cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]


def _pairs(path: Path, n: int = 24) -> list[str]:
    """Overrides making ``code`` a pairs domain whose answers differ in length, so that the two
    processes' shares of a batch hold different numbers of target tokens."""
    rows = [{"prompt": f"Add {i} and {i % 7}.", "response": " ".join(["x"] * (1 + i % 5))}
            for i in range(n)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [
        "domain@domains.code=pairs_jsonl", f"domains.code.source.path={path}",
        "domains.code.holdout_examples=4", "domains.code.validation_examples=0",
        "domains.code.max_tokens=200", "domains.code.max_new_tokens=2",
        "domains.code.rouge=false", "model.architecture.max_position_embeddings=1024",
    ]  # fmt: skip


@pytest.mark.parametrize("method", ["lora", "crma", "pairs"])
def test_two_processes_train_as_one_with_the_same_global_batch(
    local_domains, tmp_path: Path, method: str
) -> None:
    # 4 rows a batch, 1 a micro-batch: each process accumulates 2 micro-batches (no_sync);
    # no LoRA dropout, whose random masks depend on how the rows are split
    pairs = _pairs(tmp_path / "pairs.jsonl") if method == "pairs" else []
    base = [a for a in _tiny_overrides(local_domains) if not (pairs and "domains.code" in a)]
    args = [*base, *pairs, "train.batch_size=4", "threads=1",
            f"method={'lora' if method == 'pairs' else method}", "train.micro_batch_size=1",
            "train.steps=3", "method.lora.dropout=0"]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    _run(args, two, tmp_path, 2)  # first: the main process fills the cold model and data caches
    _run(args, one, tmp_path, 1)
    steps = [pd.read_csv(d / "train_log.csv") for d in (one, two)]
    assert len(steps[0]) == len(steps[1]) == 6
    for column in LOSSES:
        pd.testing.assert_series_equal(steps[0][column], steps[1][column], rtol=1e-5)
    matrices = [pd.read_csv(d / "loss_matrix.csv") for d in (one, two)]
    pd.testing.assert_frame_equal(matrices[0], matrices[1], rtol=1e-5)
    made = {p.name for p in tmp_path.iterdir()} - {"cache", "code.jsonl", "prose.jsonl"}
    assert made <= {"one", "two", "pairs.jsonl"}  # the other process wrote no run directory
    if method != "lora":
        return
    # resume: every process reads progress.json and rank 0's stage-1 adapters
    (two / "progress.json").write_text(json.dumps({"completed_stage": 1, "trained": ["med"]}))
    (two / "forgetting.csv").unlink()
    _run(args, two, tmp_path, 2)
    resumed = pd.read_csv(two / "train_log.csv")
    pd.testing.assert_frame_equal(resumed, steps[1])
    pd.testing.assert_frame_equal(pd.read_csv(two / "loss_matrix.csv"), matrices[1])


@pytest.mark.parametrize(
    ("rows", "world", "shares"), [(4, 2, [2, 2]), (5, 2, [3, 2]), (3, 3, [1, 1, 1])]
)
def test_each_process_takes_its_contiguous_share_of_the_rows(
    monkeypatch, rows: int, world: int, shares: list[int]
) -> None:
    monkeypatch.setenv("WORLD_SIZE", str(world))
    got = []
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        got.append(dist.shard_rows(rows))
    assert [s.stop - s.start for s in got] == shares
    assert got[0].start == 0 and got[-1].stop == rows
    assert all(a.stop == b.start for a, b in zip(got, got[1:], strict=False))


def test_one_process_is_not_distributed(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not dist.is_distributed() and dist.is_main() and dist.all_sum(2.5) == 2.5


def test_an_unknown_mixed_precision_fails_before_any_work(tiny_cfg) -> None:
    from continual.config.validate import validate_config
    from continual.errors import ConfigError

    with pytest.raises(ConfigError, match="train.mixed_precision='fp8' is not one of no, bf16"):
        validate_config(tiny_cfg("train.mixed_precision=fp8"))


def test_a_run_made_before_the_new_train_keys_resumes(tiny_cfg, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from continual.errors import ConfigError
    from continual.recipe import _check_same_config

    cfg = tiny_cfg()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    old = OmegaConf.create(resolved)
    del old.train.mixed_precision, old.train.gradient_checkpointing, old.train.loss_chunk_tokens
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(old))
    # an old run computed the full-logits loss: it resumes with loss_chunk_tokens=0, and the
    # error for the new default names the setting and both values
    with pytest.raises(ConfigError, match=r"\(train.loss_chunk_tokens: 0 -> 128\)"):
        _check_same_config(tmp_path, resolved)
    resolved["train"]["loss_chunk_tokens"] = 0
    _check_same_config(tmp_path, resolved)  # the defaults compute what the old run computed
    resolved["train"]["mixed_precision"] = "bf16"
    with pytest.raises(ConfigError, match="train.mixed_precision: 'no' -> 'bf16'"):
        _check_same_config(tmp_path, resolved)


@pytest.mark.slow
@pytest.mark.parametrize(
    "method", ["ewc", "replay", "lwf", "olora", "frozen_lora", "modular_crma", "joint"]
)
def test_every_method_trains_alike_on_two_processes(
    local_domains, tmp_path: Path, method: str
) -> None:
    """The other methods' extra state (Fisher, memory, teacher, old adapters) is the same on
    every process: 2 processes give 1 process's steps and loss matrix (about 25 s each)."""
    args = [*_tiny_overrides(local_domains), f"method={method}", "train.batch_size=4",
            "train.micro_batch_size=1", "train.steps=3", "threads=1",
            "method.lora.dropout=0"]  # fmt: skip
    runs = [tmp_path / "one", tmp_path / "two"]
    for nproc, run_dir in enumerate(runs, start=1):
        _run(args, run_dir, tmp_path, nproc)
    steps = [pd.read_csv(d / "train_log.csv") for d in runs]
    for column in LOSSES:
        pd.testing.assert_series_equal(steps[0][column], steps[1][column], rtol=1e-5)
    matrices = [pd.read_csv(d / "loss_matrix.csv") for d in runs]
    pd.testing.assert_frame_equal(matrices[0], matrices[1], rtol=1e-5)
