"""Copy the small, text result files of finished runs into results/ and build their report.

    python experiments/collect_runs.py multirun/<sweep> --dest results/<study>

Copies, per run, config.yaml, run_info.json, metrics.csv, train_log.csv, loss_matrix.csv,
forgetting.csv and progress.json (not the adapters or W&B files) into <dest>/runs/<run>/, then
runs ``python -m continual.report <dest>/runs --out <dest>``.

Results are only what a commit can reproduce: a run whose ``run_info.json`` says the working
tree was dirty (or that has no commit), or that did not complete, is refused unless
``--allow-dirty`` / ``--allow-incomplete`` is given.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from continual.analysis import find_incomplete_runs, find_runs
from continual.analysis.report import main as report_main

FILES = ["config.yaml", "run_info.json", "metrics.csv", "train_log.csv", "loss_matrix.csv",
         "forgetting.csv", "progress.json"]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument(
        "--allow-dirty",
        action="store_true",
        help="accept runs from a working tree with uncommitted changes",
    )
    parser.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="accept failed, interrupted or unfinished runs",
    )
    args = parser.parse_args()
    target = args.dest / "runs"
    runs = []
    for source in args.sources:
        runs += find_runs(source)
        incomplete = [r.path for r in find_incomplete_runs(source)]
        if incomplete and not args.allow_incomplete:
            print(f"error: incomplete runs in {source}: {', '.join(map(str, incomplete))}; "
                  "finish them (rerun the sweep to resume) or pass --allow-incomplete.",
                  file=sys.stderr)  # fmt: skip
            return 2
        runs += incomplete
    dirty = [run for run in runs if not _from_clean_commit(run)]
    if dirty and not args.allow_dirty:
        print(f"error: runs not made from a clean commit: {', '.join(map(str, dirty))}; rerun "
              "them from a committed tree, or pass --allow-dirty.", file=sys.stderr)  # fmt: skip
        return 2
    for run in runs:
        out = target / run.name
        out.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, out / name)
        print(f"copied {run} -> {out}")
    return report_main([str(target), "--out", str(args.dest)])


def _from_clean_commit(run: Path) -> bool:
    """Whether ``run_info.json`` names a commit and a working tree without changes."""
    info = json.loads((run / "run_info.json").read_text())
    sha = info.get("git_sha") or ""
    return bool(sha) and "+dirty" not in sha and info.get("git_dirty") is False


if __name__ == "__main__":
    sys.exit(main())
