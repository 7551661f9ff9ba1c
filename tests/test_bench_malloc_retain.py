"""experiments/bench_malloc_retain.py: our step in fresh processes with and without
``cpu_malloc_retain``, alternating; the same losses either way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_runtime_malloc import GLIBC

ROOT = Path(__file__).resolve().parent.parent


def test_bench_alternates_both_settings_on_tiny_random_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "experiments/bench_malloc_retain.py", "--model", "tiny_random",
           "--steps", "2", "--repeats", "2", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "CONTINUAL_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [r["setting"] for r in result["runs"]] == ["retain", "default", "default", "retain"]
    assert [r["applied"] for r in result["runs"]] == [GLIBC, False, False, GLIBC]
    assert result["same_losses"] and len({r["loss"] for r in result["runs"]}) == 1
    by = {(r["setting"], r["repeat"]): r["s_per_step"] for r in result["runs"]}
    ratios = [by["default", rep] / by["retain", rep] for rep in (0, 1)]
    assert result["ratios"] == pytest.approx(ratios)
    assert result["ratio_default_over_retain"] == pytest.approx(sum(ratios) / 2)
    for setting in ("retain", "default"):
        row = result["summary"][setting]
        assert row["s_per_step"] > 0 and row["faults_per_step"] >= 0 and row["peak_rss_mb"] > 0
    assert "git_sha" in result and result["machine"]["device"] == "cpu"
