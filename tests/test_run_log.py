"""The command line's log: run.log in every run directory, each status line once on stdout;
and bitsandbytes imported only by a quantised run (subprocesses, tiny model)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.test_cli import ROOT, _cli, _tiny_overrides

STATUS = [
    "data med: ", "data code: ", "stage 1/2 med: done in", "stage 2/2 code: done in",
    "Stage x domain holdout loss", "Forgetting (final stage",
]  # fmt: skip
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO continual\.recipe: ", re.MULTILINE)
BNB_WARNING = "gemm_4bit_forward"

# The CLI, reporting after each finished run whether bitsandbytes was imported by then.
PROBE = """
import sys
import continual.rundir as rundir
real = rundir.atomic_write_json
def write(path, data):
    real(path, data)
    if path.name == "run_info.json" and data.get("status") == "complete":
        loaded = sys.modules.get("bitsandbytes") is not None
        print(f"probe {path.parent.name}: bitsandbytes loaded={loaded}", flush=True)
rundir.atomic_write_json = write
from continual.run import cli
sys.argv = ["continual.run", *sys.argv[1:]]
cli()
"""


def test_run_log_holds_every_status_line_once(local_domains, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = _cli([*_tiny_overrides(local_domains), f"hydra.run.dir={run_dir}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (run_dir / "run.log").read_text()
    for needle in STATUS:
        assert log.count(needle) == 1, (needle, log)
        assert done.stdout.count(needle) == 1, (needle, done.stdout)
        assert needle not in done.stderr
    assert len(RECORD.findall(log)) == len(RECORD.findall(done.stdout)) == len(STATUS)
    assert "after code" in log  # the tables themselves, not only their titles
    # progress bars stay on stderr, out of the log and of stdout
    assert "\r" not in log and "\r" not in done.stdout and "step/s" not in log
    assert "stage 1/2 med:" in done.stderr
    assert BNB_WARNING not in done.stdout + done.stderr + log


def test_bitsandbytes_is_imported_by_the_quantised_job_only(local_domains, tmp_path) -> None:
    sweep = tmp_path / "sweep"
    args = [
        "-m", *_tiny_overrides(local_domains), "model.quantization=none,nf4",
        f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${model.quantization}",
        f"cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    cmd = [sys.executable, "-c", PROBE, *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    probes = [line for line in done.stdout.splitlines() if line.startswith("probe ")]
    assert probes == [
        "probe none: bitsandbytes loaded=False",
        "probe nf4: bitsandbytes loaded=True",
    ]
    assert BNB_WARNING not in (sweep / "none" / "run.log").read_text()
    for job in ("none", "nf4"):  # each job's log holds its own run, once
        assert (sweep / job / "run.log").read_text().count("stage 2/2 code: done in") == 1
