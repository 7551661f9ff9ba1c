"""Multi-seed statistics of a sweep on the command line.

    python -m continual.compare multirun/<sweep> [--metric avg_forgetting_pct --metric bwt]

Prints, per method and metric, n / mean / sd / 95% Student-t CI over seeds, and for every pair
of methods the paired per-seed difference (a - b) with its CI (``--reference lora``: every
other method against ``lora`` only, a = the method). ``--csv DIR`` also writes both
tables as CSV files.

A multi-task reference (``method=joint``, one stage on every domain) has a row for every
metric; those that need a chain (forgetting, BWT, FWT) have ``n = 0`` and print ``n/a``, and
it is left out of their paired differences.

Any final-stage metric of :func:`continual.analysis.tables.run_summaries` can be chosen, e.g.
``forgetting_pct/med``, ``acc_bwt`` or ``acc_forgetting_pts/legal``. By default: the loss
metrics of :data:`DEFAULT_METRICS` and, for runs with ``pairs`` domains, the accuracy metrics of
:data:`ACCURACY_METRICS` (points of accuracy; ``acc_avg_forgetting_pct`` in %; ``acc_bwt`` /
``acc_fwt`` keep the literature sign, negative BWT = forgetting). A default metric that no run
has is left out; a ``--metric`` that no run has is an error naming the available ones.
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
# continual.metrics.accuracy_summary, shown by default for runs with pairs domains
ACCURACY_METRICS = ("final_avg_accuracy", "acc_bwt", "acc_fwt", "acc_avg_forgetting_pts",
                    "acc_avg_forgetting_pct")  # fmt: skip


class UnknownMetricError(ContinualError):
    """A ``--metric`` that none of the runs has."""


class UnknownMethodError(ContinualError):
    """A ``--reference`` method that none of the runs has."""


def compare(
    path: Path, metrics: Sequence[str] | None = None, reference: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-method summary, paired differences) for the chosen final-stage metrics.

    ``metrics=None``: :data:`DEFAULT_METRICS` and :data:`ACCURACY_METRICS`, those the runs have.
    ``reference``: paired differences of every other method against this one (default: every
    pair). Raises :class:`UnknownMetricError` when a chosen metric is in none of the runs, and
    :class:`UnknownMethodError` when ``reference`` is not one of the runs' methods.
    """
    found = find_runs(path)
    if not found:
        raise NoRunsError(f"no complete run under {path}; point at a run or sweep directory")
    table = load_metrics(found)
    runs = run_summaries(table)
    available = list(dict.fromkeys(runs["metric"]))
    if metrics is None:
        metrics = [m for m in (*DEFAULT_METRICS, *ACCURACY_METRICS) if m in available]
    missing = [m for m in metrics if m not in available]
    if missing:
        raise UnknownMetricError(
            f"no run under {path} has metric(s) {missing}; available: {', '.join(available)}"
        )
    methods = list(dict.fromkeys(runs["method"].astype(str)))
    if reference is not None and reference not in methods:
        raise UnknownMethodError(
            f"--reference {reference!r} is not a method of the runs under {path}; "
            f"they have: {', '.join(methods)}"
        )
    runs = runs[runs["metric"].isin(metrics)]
    summary = summarize_runs(runs, by=["method"])
    paired = [paired_differences(table, m, min_seeds=2, reference=reference) for m in metrics]
    shown = [p for p in paired if not p.empty] or paired[:1]  # no concat of empty frames
    return summary, pd.concat(shown, ignore_index=True) if shown else pd.DataFrame()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mean, sd, CI and paired differences by seed.")
    parser.add_argument("path", type=Path, help="a run or sweep directory")
    parser.add_argument(
        "--metric", action="append",
        help="repeatable; default: the main loss metrics, and the accuracy ones when present",
    )  # fmt: skip
    parser.add_argument(
        "--reference", default=None,
        help="pair every other method with this one only (e.g. lora); default: every pair",
    )  # fmt: skip
    parser.add_argument("--csv", type=Path, default=None, help="also write CSVs into this dir")
    args = parser.parse_args(argv)
    try:
        summary, paired = compare(args.path, args.metric, args.reference)
    except ContinualError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        # n/a: no value (e.g. one seed's SD, or a multi-task reference's forgetting, BWT, FWT)
        print(summary.to_string(index=False, float_format="{:.4f}".format, na_rep="n/a"))
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
