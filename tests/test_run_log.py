"""The command line's log: run.log in every run directory, each status line once on stdout
(a subprocess, tiny model)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_cli import _cli, _tiny_overrides

STATUS = [
    "data med: ", "data code: ", "stage 1/2 med: done in", "stage 2/2 code: done in",
    "Stage x domain holdout loss", "Forgetting (final stage",
]  # fmt: skip
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO continual\.recipe: ", re.MULTILINE)


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
