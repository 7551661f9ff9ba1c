"""Copy the small, text result files of finished runs into results/ and build their report.

    python experiments/collect_runs.py multirun/<sweep> --dest results/<study>

Copies, per run, config.yaml, run_info.json, metrics.csv, train_log.csv, loss_matrix.csv,
forgetting.csv and progress.json (not the adapters or W&B files) into <dest>/runs/<run>/, then
runs ``python -m continual.report <dest>/runs --out <dest>``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from continual.analysis import find_incomplete_runs, find_runs
from continual.report import main as report_main

FILES = ["config.yaml", "run_info.json", "metrics.csv", "train_log.csv", "loss_matrix.csv",
         "forgetting.csv", "progress.json"]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument("--dest", type=Path, required=True)
    args = parser.parse_args()
    target = args.dest / "runs"
    for source in args.sources:
        runs = find_runs(source) + [r.path for r in find_incomplete_runs(source)]
        for run in runs:
            out = target / run.name
            out.mkdir(parents=True, exist_ok=True)
            for name in FILES:
                if (run / name).is_file():
                    shutil.copy2(run / name, out / name)
            print(f"copied {run} -> {out}")
    return report_main([str(target), "--out", str(args.dest)])


if __name__ == "__main__":
    sys.exit(main())
