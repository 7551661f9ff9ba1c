"""experiments/bench_parallel_jobs.py: one job with every core vs several jobs with a share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(len(os.sched_getaffinity(0)) % 2 != 0, reason="needs an even core count")
def test_bench_times_both_sides_on_tiny_random_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "experiments/bench_parallel_jobs.py", "--model", "tiny_random",
           "--jobs", "2", "--steps", "1", "--repeats", "1", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "CONTINUAL_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    cores = len(os.sched_getaffinity(0))
    one, split = ({r["side"]: r for r in result["runs"]}[s] for s in ("one", "split"))
    assert [c["threads"] for c in one["children"]] == [cores]
    assert [c["threads"] for c in split["children"]] == [cores // 2] * 2
    for side in (one, split):  # tokens of 1 step of 8 x 128 per child, over the timed span
        assert side["tokens"] == 1024 * side["jobs"] and side["span_s"] > 0
        assert side["tokens_per_s"] == pytest.approx(side["tokens"] / side["span_s"])
        starts = [c["start"] for c in side["children"]]
        assert max(starts) - min(starts) < 2.0  # released together by the go file
    ratio = split["tokens_per_s"] / one["tokens_per_s"]
    assert result["ratio_split_over_one"] == pytest.approx(ratio)
    assert "git_sha" in result and "split / one" not in done.stderr


def test_bench_refuses_a_job_count_that_does_not_divide_the_cores() -> None:
    cores = len(os.sched_getaffinity(0))
    cmd = [sys.executable, "experiments/bench_parallel_jobs.py", "--jobs", str(cores + 1)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--jobs must be >= 2 and divide" in done.stderr
