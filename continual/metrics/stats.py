"""Multi-seed statistics: mean, sample SD, Student-t confidence intervals, paired differences.

Definitions (``x_1..x_n`` the values of one metric over runs, usually seeds; NaNs dropped):

* mean and sample SD ``sd = sqrt(sum (x_i - mean)^2 / (n - 1))``;
* two-sided Student-t confidence interval of the mean:
  ``mean -/+ t_{(1 + confidence) / 2, n - 1} * sd / sqrt(n)`` (:func:`mean_sd_ci`);
* paired difference of two methods over the seeds both ran, ``d_s = a_s - b_s``: the interval
  above on ``d`` and the two-sided paired t-test, ``t = mean(d) / (sd(d) / sqrt(n))`` with
  ``n - 1`` degrees of freedom (:func:`paired_difference`).

The Student-t distribution and the paired test come from :mod:`scipy.stats`. Tidy run tables
have one row per run x metric with columns such as ``method``, ``seed``, ``metric``, ``value``.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "SUMMARY_COLUMNS",
    "mean_sd_ci",
    "paired_difference",
    "summarize_runs",
    "t_cdf",
    "t_quantile",
]

SUMMARY_COLUMNS = ["n", "mean", "sd", "ci_low", "ci_high"]

# ----------------------------------------------------------------- Student-t distribution


def _check_df(df: float) -> None:
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")


def t_cdf(t: float, df: float) -> float:
    """Student-t cumulative distribution function P(T <= t) with ``df`` > 0 degrees of freedom."""
    _check_df(df)
    return float(stats.t.cdf(t, df))


def t_quantile(p: float, df: float) -> float:
    """Student-t quantile (inverse CDF): the ``t`` with P(T <= t) = ``p``, for 0 < p < 1.

    E.g. ``t_quantile(0.975, 2) = 4.302653...``; ``df`` may be large (the normal quantile is the
    limit).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {p}")
    _check_df(df)
    return float(stats.t.ppf(p, df))


# ----------------------------------------------------------------- summaries


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def mean_sd_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, float | int]:
    """Mean, sample SD and Student-t confidence interval of the mean over runs (seeds).

    Returns ``n`` (non-NaN values used), ``mean``, ``sd`` (sample SD, ddof=1), ``ci_low``,
    ``ci_high``: ``mean -/+ t_{(1+confidence)/2, n-1} * sd / sqrt(n)`` (two-sided Student-t
    interval). ``sd`` and the CI are NaN when ``n < 2``; ``mean`` is NaN when ``n == 0``.
    NaN values (missing runs) are dropped; infinities are kept and propagate. Units are those of
    the values.
    """
    _check_confidence(confidence)
    arr = np.asarray(list(values), dtype=float).ravel()
    arr = arr[~np.isnan(arr)]
    n = int(arr.size)
    nan = float("nan")
    if n == 0:
        return {"n": 0, "mean": nan, "sd": nan, "ci_low": nan, "ci_high": nan}
    mean = float(arr.mean())
    if n < 2:
        return {"n": n, "mean": mean, "sd": nan, "ci_low": nan, "ci_high": nan}
    sd = float(arr.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half}


def _require_columns(df: pd.DataFrame, cols: Sequence[str]) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"run table lacks column(s) {missing}; columns are {list(df.columns)}")


def summarize_runs(
    df: pd.DataFrame,
    by: Sequence[str] = ("method",),
    value_col: str = "value",
    metric_col: str = "metric",
    confidence: float = 0.95,
    seed_col: str = "seed",
) -> pd.DataFrame:
    """Per-(``by``..., metric) summary over runs: n, mean, sd, ci_low, ci_high.

    ``df`` is tidy: one row per run x scalar metric (e.g. columns method, seed, metric, value).
    Statistics as in :func:`mean_sd_ci` (sample SD, Student-t CI of the mean, NaNs dropped).
    Groups keep their order of first appearance. If ``seed_col`` is present, a (group, metric,
    seed) appearing twice raises ValueError (it would be counted twice).
    """
    _check_confidence(confidence)
    by = [by] if isinstance(by, str) else list(by)
    keys = [*by, metric_col]
    _require_columns(df, [*keys, value_col])
    if seed_col in df.columns:
        dup = df.duplicated([*keys, seed_col], keep=False)
        if dup.any():
            raise ValueError(
                f"run table has {int(dup.sum())} rows sharing (group, metric, seed) "
                f"{keys + [seed_col]}; add the distinguishing column to `by` or deduplicate"
            )
    rows: list[dict[str, Any]] = []
    for key, group in df.groupby(keys, sort=False, dropna=False):
        key_tuple = key if isinstance(key, tuple) else (key,)
        stats = mean_sd_ci(group[value_col].to_numpy(dtype=float), confidence)
        rows.append({**dict(zip(keys, key_tuple, strict=True)), **stats})
    return pd.DataFrame(rows, columns=[*keys, *SUMMARY_COLUMNS])


def paired_difference(
    df: pd.DataFrame,
    method_a: str,
    method_b: str,
    metric: str,
    confidence: float = 0.95,
    *,
    method_col: str = "method",
    seed_col: str = "seed",
    metric_col: str = "metric",
    value_col: str = "value",
) -> dict[str, Any]:
    """Paired (by seed) difference ``a - b`` of one metric between two methods.

    Runs are paired on ``seed``; only seeds present in both methods (with non-NaN values) are
    used. Returns ``n``, ``mean``, ``sd`` (sample, ddof=1), ``ci_low``, ``ci_high`` (Student-t
    interval of the mean difference, as :func:`mean_sd_ci`), ``t_stat`` and ``p_value``
    (two-sided paired t-test; NaN when ``n < 2``), ``seeds`` (sorted, used), ``differences``
    (per seed, same order), and the method/metric names. Units are those of the metric.
    Raises ValueError when there is no common seed or a (method, seed) has several values.
    """
    _check_confidence(confidence)
    _require_columns(df, [method_col, seed_col, metric_col, value_col])
    sub = df[df[metric_col] == metric]
    per_method: list[pd.Series] = []
    for m in (method_a, method_b):
        rows = sub[sub[method_col] == m]
        if rows.empty:
            raise ValueError(f"no runs of method {m!r} for metric {metric!r}")
        if rows[seed_col].duplicated().any():
            dups = sorted(rows.loc[rows[seed_col].duplicated(), seed_col].unique().tolist())
            raise ValueError(
                f"method {m!r} has several {metric!r} values for seed(s) {dups}; "
                "filter the table to one value per (method, seed)"
            )
        per_method.append(rows.set_index(seed_col)[value_col].astype(float))
    a, b = per_method
    pairs = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    if pairs.empty:
        raise ValueError(
            f"no common seeds with values for {method_a!r} (seeds {sorted(a.index.tolist())}) "
            f"and {method_b!r} (seeds {sorted(b.index.tolist())}) on metric {metric!r}"
        )
    with contextlib.suppress(TypeError):  # seeds of mixed types: keep method a's order
        pairs = pairs.sort_index()
    diffs = (pairs["a"] - pairs["b"]).tolist()
    out: dict[str, Any] = dict(mean_sd_ci(diffs, confidence))
    if out["n"] >= 2:
        with warnings.catch_warnings():
            # identical differences: scipy warns, then returns t = +-inf (p = 0) or NaN (all 0)
            warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
            test = stats.ttest_rel(pairs["a"], pairs["b"])
        out["t_stat"], out["p_value"] = float(test.statistic), float(test.pvalue)
    else:
        out["t_stat"] = math.nan
        out["p_value"] = math.nan
    out.update(
        seeds=pairs.index.tolist(),
        differences=diffs,
        method_a=method_a,
        method_b=method_b,
        metric=metric,
    )
    return out
