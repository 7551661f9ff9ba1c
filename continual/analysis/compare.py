"""Multi-seed statistics of a sweep on the command line.

    python -m continual.compare multirun/<sweep> [--metric avg_forgetting_pct --metric bwt]

Prints, per method and metric, n / mean / sd / 95% Student-t CI over seeds, and for every pair
of methods the paired per-seed difference (a - b) with its CI. ``--csv DIR`` also writes both
tables as CSV files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from continual.analysis.runs import NoRunsError, find_runs, load_metrics
from continual.analysis.tables import paired_differences, run_summaries
from continual.errors import ContinualError
from continual.metrics.stats import summarize_runs

DEFAULT_METRICS = ("avg_forgetting_pct", "avg_delta_nll", "bwt", "fwt", "final_avg_loss",
                   "general_retention_pct_final")  # fmt: skip


def compare(path: Path, metrics: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-method summary, paired differences) for the chosen final-stage metrics."""
    found = find_runs(path)
    if not found:
        raise NoRunsError(f"no complete run under {path}; point at a run or sweep directory")
    table = load_metrics(found)
    runs = run_summaries(table)
    runs = runs[runs["metric"].isin(metrics)]
    summary = summarize_runs(runs, by=["method"])
    paired = pd.concat(
        [paired_differences(table, metric=m, min_seeds=2) for m in metrics], ignore_index=True
    )
    return summary, paired


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mean, sd, CI and paired differences by seed.")
    parser.add_argument("path", type=Path, help="a run or sweep directory")
    parser.add_argument("--metric", action="append", help="repeatable; default: the main ones")
    parser.add_argument("--csv", type=Path, default=None, help="also write CSVs into this dir")
    args = parser.parse_args(argv)
    try:
        summary, paired = compare(args.path, args.metric or DEFAULT_METRICS)
    except ContinualError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(summary.to_string(index=False, float_format="{:.4f}".format))
        print("\nPaired differences (a - b, same seeds):")
        print(paired.to_string(index=False, float_format="{:.4f}".format) if len(paired) else
              "  (no pair of methods shares 2+ seeds)")  # fmt: skip
    if args.csv:
        args.csv.mkdir(parents=True, exist_ok=True)
        summary.to_csv(args.csv / "method_summary.csv", index=False)
        paired.to_csv(args.csv / "paired_differences.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
