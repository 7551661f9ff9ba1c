"""The CL-baselines study in two tables: every method's final metrics with its cost, and its
paired differences from naive LoRA.

    python experiments/cl_baselines_table.py results/cl_baselines/runs \
        --cost results/bench_method_cost.json

Table 1, per method (mean ± SD over seeds, holdout NLL in nats): ``final_avg_loss`` (mean over
the trained domains after the last stage), average forgetting in nats (``avg_delta_nll``: mean
over the earlier domains of L[T][d] - L[d][d]) and in % (``avg_forgetting_pct``, relative to
L[d][d]), ``bwt`` and ``fwt`` (literature sign: negative BWT = forgetting), general-text
retention (``general_retention_pct_final``, % change of the never-trained general holdout from
the base; positive = worse), and from the cost benchmark the step time and peak RSS relative
to the reference. ``joint`` trains one stage: no forgetting, BWT or FWT (``—``).
Table 2: for each method, the paired-by-seed difference method - reference of the final average
loss and of the forgetting (nats and %), mean with its Student-t 95% CI and the paired t-test's
p (no correction for multiple comparisons; negative = lower loss / less forgetting).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's package

from continual.analysis import find_runs, load_metrics  # noqa: E402
from continual.analysis.markdown import md_table  # noqa: E402
from continual.analysis.tables import paired_differences, summary_table  # noqa: E402

COLUMNS = {  # metric -> (header, digits, signed)
    "final_avg_loss": ("final avg loss", 4, False),
    "avg_delta_nll": ("forgetting (nats)", 4, True),
    "avg_forgetting_pct": ("forgetting %", 2, True),
    "bwt": ("BWT", 4, True),
    "fwt": ("FWT", 4, True),
    "general_retention_pct_final": ("general retention %", 2, True),
}
PAIRED = ["final_avg_loss", "avg_delta_nll", "avg_forgetting_pct"]


def _mean_sd(row: pd.Series | None, digits: int, signed: bool) -> str:
    if row is None or not math.isfinite(row["mean"]):
        return "—"
    mean = f"{row['mean']:+.{digits}f}" if signed else f"{row['mean']:.{digits}f}"
    return mean if not math.isfinite(row["sd"]) else f"{mean} ± {row['sd']:.{digits}f}"


def method_table(metrics: pd.DataFrame, cost: dict | None) -> tuple[list[str], list[list[str]]]:
    """Table 1: one row per method, in the report's display order."""
    summary = summary_table(metrics)
    header = ["method", "seeds", *(h for h, _, _ in COLUMNS.values())]
    if cost is not None:
        header += [f"step time vs {cost['reference']}", "peak RSS (MB)"]
    rows = []
    for method, group in summary.groupby("method", sort=False):
        by = {r["metric"]: r for _, r in group.iterrows()}
        seeds = int(by["final_avg_loss"]["n"]) if "final_avg_loss" in by else 0
        row = [str(method), str(seeds)]
        row += [_mean_sd(by.get(m), d, s) for m, (_, d, s) in COLUMNS.items()]
        if cost is not None:
            entry = cost["methods"].get(str(method))
            row += (
                ["n/a", "n/a"] if entry is None
                else [f"{entry['step_ratio']:.2f}x", f"{entry['extra_rss_mb']:+.0f}"]
            )  # fmt: skip
        rows.append(row)
    return header, rows


def paired_table(metrics: pd.DataFrame, reference: str) -> tuple[list[str], list[list[str]]]:
    """Table 2: each method minus ``reference``, paired by seed, per metric of :data:`PAIRED`."""
    header = ["method", *(f"Δ {COLUMNS[m][0]} [95% CI], p" for m in PAIRED)]
    found: dict[str, dict[str, str]] = {}
    for metric in PAIRED:
        digits = COLUMNS[metric][1]
        for _, r in paired_differences(metrics, metric, reference=reference).iterrows():
            found.setdefault(r["method_a"], {})[metric] = (
                f"{r['mean']:+.{digits}f} [{r['ci_low']:+.{digits}f}, {r['ci_high']:+.{digits}f}]"
                f", p={r['p_value']:.3f} (n={int(r['n'])})"
            )
    rows = [[m, *(cells.get(metric, "—") for metric in PAIRED)] for m, cells in found.items()]
    return header, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="the study's sweep folder (or collected runs/)")
    parser.add_argument("--cost", type=Path, default=None, help="bench_method_cost.py's JSON")
    parser.add_argument("--reference", default="lora", help="the method the others are paired with")
    args = parser.parse_args(argv)
    runs = find_runs(args.runs)
    if not runs:
        print(f"error: no complete run under {args.runs}", file=sys.stderr)
        return 2
    metrics = load_metrics(runs)
    methods = set(metrics["method"].astype(str))
    if args.reference not in methods:
        print(f"error: --reference {args.reference!r} is not among the runs' methods "
              f"({', '.join(sorted(methods))})", file=sys.stderr)  # fmt: skip
        return 2
    cost = json.loads(args.cost.read_text()) if args.cost is not None else None
    print(md_table(*method_table(metrics, cost)))
    print()
    print(md_table(*paired_table(metrics, args.reference)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
