"""``cpu_malloc_retain``: glibc keeps what freed tensors give back, so a step-like loop of
allocations stops faulting fresh pages in; a bad value fails before anything runs."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from continual.errors import ConfigError
from continual.runtime import retain_freed_memory

# A step's pattern in miniature: a 16 MB tensor and a product of it (an activation and its
# output), allocated, touched and freed, 40 rounds; the minor page faults of the last 10 rounds
# (the heap has reached its steady size by then) are printed. "mmap" holds glibc's starting
# threshold (128 KiB) fixed, so blocks this large get fresh mmap'd pages every round, which the
# kernel faults in and zeroes; glibc's default moves that threshold, so whether a given round
# faults varies from run to run (the training step's numbers are in the README).
LOOP = """
import ctypes, json, resource, sys
import torch
from continual.runtime import M_MMAP_THRESHOLD, retain_freed_memory
if sys.argv[1] == "mmap":
    ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 128 * 1024)
applied = retain_freed_memory(sys.argv[1] == "retain")
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(40):
    if i == 30:
        start = faults()
    x = torch.ones(4 << 20)
    y = x * 2
    del x, y
print(json.dumps({"applied": applied, "faults_per_round": (faults() - start) / 10}))
"""

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _faults(mode: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", LOOP, mode],
        capture_output=True, text=True, check=True, timeout=120, env=env,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt's thresholds are glibc's")
def test_retained_memory_stops_the_page_faults_of_repeated_tensors() -> None:
    mmapped, retained = _faults("mmap"), _faults("retain")
    assert not mmapped["applied"] and retained["applied"]
    pages = 2 * (4 << 20) * 4 // 4096  # the two tensors' pages
    assert mmapped["faults_per_round"] > 0.9 * pages, mmapped  # the pattern does fault
    assert retained["faults_per_round"] < 0.02 * pages, retained


def test_disabled_does_nothing_and_a_bad_value_fails(tiny_cfg) -> None:
    from continual.config.validate import validate_config

    assert retain_freed_memory(False) is False
    with pytest.raises(ConfigError, match="cpu_malloc_retain='yes' must be true or false"):
        retain_freed_memory("yes")
    with pytest.raises(ConfigError, match="cpu_malloc_retain=.* must be true or false"):
        validate_config(tiny_cfg("cpu_malloc_retain=2"))


def test_a_resume_may_change_the_allocator_setting(tiny_cfg, tmp_path, caplog) -> None:
    import logging

    from continual.recipe import run_experiment

    caplog.set_level(logging.INFO, logger="continual")
    run_dir = tmp_path / "run"
    run_experiment(tiny_cfg("train.steps=2", "cpu_malloc_retain=false"), run_dir)
    (run_dir / "progress.json").write_text(json.dumps({"completed_stage": 1, "trained": ["prose"]}))
    (run_dir / "forgetting.csv").unlink()
    run_experiment(tiny_cfg("train.steps=2"), run_dir)  # a runtime key: not refused
    assert "Resuming" in caplog.text and (run_dir / "forgetting.csv").is_file()
