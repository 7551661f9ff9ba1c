"""Markdown rendering for the report: tables and the number formats of their cells.

Cells show a statistic over seeds as ``mean ± SD`` (:func:`fmt_mean_sd`) and its confidence
interval as ``[low, high]`` (:func:`fmt_ci`); an undefined value (NaN: one seed, no data) reads
``n/a``. Percent metrics (``*_pct``) get 2 decimals, losses in nats 4 (:func:`metric_digits`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

__all__ = ["fmt_ci", "fmt_mean_sd", "fmt_num", "md_table", "metric_digits", "stage_table"]


def fmt_num(x: float | None, digits: int) -> str:
    """``x`` with ``digits`` decimals, ``n/a`` when missing."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def fmt_mean_sd(mean: float | None, sd: float | None, digits: int = 3) -> str:
    """``mean ± sd`` (just the mean when the SD is undefined: one seed).

    Fixed-point with ``digits`` decimals, or 3 significant digits when the mean is a tiny
    non-zero value (e.g. a constraint error of 1e-8).
    """
    if mean is None or math.isnan(mean):
        return "n/a"
    spec = ".3g" if mean != 0 and abs(mean) < 10 ** (-digits) else f".{digits}f"
    return f"{mean:{spec}}" + ("" if sd is None or math.isnan(sd) else f" ± {sd:{spec}}")


def fmt_ci(low: float, high: float, digits: int = 3) -> str:
    """A confidence interval ``[low, high]``, ``n/a`` when undefined (fewer than 2 seeds)."""
    return "n/a" if math.isnan(low) else f"[{low:.{digits}f}, {high:.{digits}f}]"


def metric_digits(metric: str) -> int:
    """Decimals shown for a metric: 2 for percentages (``*_pct``), 4 otherwise (nats)."""
    return 2 if "pct" in metric else 4


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table (``|`` in cells escaped)."""

    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def stage_table(
    mean: pd.DataFrame, sd: pd.DataFrame, labels: dict[int, str], digits: int = 3
) -> str:
    """A stage x domain table of mean ± SD cells, rows labelled "base", "after <domain>"."""
    rows = [
        [labels.get(int(k), str(k))]
        + [fmt_mean_sd(mean.at[k, c], sd.at[k, c], digits) for c in mean.columns]
        for k in mean.index
    ]
    return md_table(["stage", *mean.columns], rows)
