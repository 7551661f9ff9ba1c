"""Multi-seed statistics: mean, sample SD, Student-t confidence intervals, paired differences.

Pure functions with no dependency beyond numpy/pandas: the Student-t distribution is computed
here from the regularised incomplete beta function (continued fraction, Lentz's method), so
scipy is not required. Tidy run tables have one row per run x metric with columns such as
``method``, ``seed``, ``metric``, ``value``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "mean_sd_ci",
    "paired_difference",
    "summarize_runs",
    "t_cdf",
    "t_quantile",
]

SUMMARY_COLUMNS = ["n", "mean", "sd", "ci_low", "ci_high"]

# ----------------------------------------------------------------- Student-t distribution

_EPS = 1e-15
_TINY = 1e-300
_NORMAL_DF = 1e7  # beyond this many degrees of freedom the t is the normal to ~1e-7


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta did not converge (a={a}, b={b}, x={x})")


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _t_two_sided_tail(t: float, df: float) -> float:
    """P(|T| > |t|) for a Student-t variable with ``df`` degrees of freedom."""
    if math.isnan(t):
        return float("nan")
    if math.isinf(t):
        return 0.0
    if df > _NORMAL_DF:
        return 2.0 * (1.0 - statistics.NormalDist().cdf(abs(t)))
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def t_cdf(t: float, df: float) -> float:
    """Student-t cumulative distribution function P(T <= t) with ``df`` > 0 degrees of freedom."""
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * _t_two_sided_tail(t, df)
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Student-t quantile (inverse CDF): the ``t`` with P(T <= t) = ``p``, for 0 < p < 1.

    Solved by bisection on :func:`t_cdf` to ~1e-12 relative accuracy; the normal quantile is
    used beyond 1e7 degrees of freedom. E.g. ``t_quantile(0.975, 2) = 4.302653...``.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {p}")
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if df > _NORMAL_DF:
        return statistics.NormalDist().inv_cdf(p)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
        if hi > 1e300:
            return math.inf
    for _ in range(400):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


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
    common = a.index.intersection(b.index)
    common = [s for s in common if not (math.isnan(a[s]) or math.isnan(b[s]))]
    if not common:
        raise ValueError(
            f"no common seeds with values for {method_a!r} (seeds {sorted(a.index.tolist())}) "
            f"and {method_b!r} (seeds {sorted(b.index.tolist())}) on metric {metric!r}"
        )
    try:
        seeds = sorted(common)
    except TypeError:
        seeds = list(common)
    diffs = [float(a[s] - b[s]) for s in seeds]
    seeds = [s.item() if isinstance(s, np.generic) else s for s in seeds]
    out: dict[str, Any] = dict(mean_sd_ci(diffs, confidence))
    n = out["n"]
    if n >= 2:
        se = out["sd"] / math.sqrt(n)
        if se > 0:
            t_stat = out["mean"] / se
        else:
            t_stat = math.copysign(math.inf, out["mean"]) if out["mean"] != 0 else math.nan
        out["t_stat"] = t_stat
        out["p_value"] = _t_two_sided_tail(t_stat, n - 1)
    else:
        out["t_stat"] = math.nan
        out["p_value"] = math.nan
    out.update(
        seeds=seeds,
        differences=diffs,
        method_a=method_a,
        method_b=method_b,
        metric=metric,
    )
    return out
