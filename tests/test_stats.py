"""Tests for continual.metrics.stats against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from continual.metrics import stats as S


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [
        (0.975, 1, 12.706204736174694),
        (0.975, 2, 4.302652729749464),
        (0.975, 10, 2.228138851986274),
        (0.975, 30, 2.0422724563012373),
        (0.95, 5, 2.0150483733330233),
        (0.995, 3, 5.840909309733355),
        (0.975, 1e9, 1.959963986912325),
    ],
)
def test_t_quantile_table(p: float, df: float, expected: float) -> None:
    # reference values: scipy.stats.t.ppf (agree with printed t-tables to their digits)
    assert S.t_quantile(p, df) == pytest.approx(expected, rel=1e-8)
    assert S.t_quantile(1 - p, df) == pytest.approx(-expected, rel=1e-8)


def test_t_closed_forms() -> None:
    for p in (0.6, 0.9, 0.99):
        assert S.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    for t in (0.3, 1.0, 2.5, 10.0):  # df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2))
        assert S.t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), rel=1e-12)
        assert S.t_cdf(-t, 2) == pytest.approx(0.5 - t / (2 * math.sqrt(2 + t * t)), rel=1e-12)


def test_t_against_scipy_if_available() -> None:
    st = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 7, 19, 29, 60, 500, 1e5):
        for p in (0.55, 0.8, 0.9, 0.95, 0.975, 0.995, 0.9995):
            assert S.t_quantile(p, df) == pytest.approx(st.t.ppf(p, df), rel=1e-8)


def test_mean_sd_ci_hand_value() -> None:
    r = S.mean_sd_ci([1, 2, 3])
    assert r["n"] == 3 and r["mean"] == 2.0 and r["sd"] == pytest.approx(1.0)
    half = 4.302652729749464 * 1.0 / math.sqrt(3)  # t_{0.975, 2} * sd / sqrt(n)
    assert r["ci_low"] == pytest.approx(2 - half)
    assert r["ci_high"] == pytest.approx(2 + half)
    r90 = S.mean_sd_ci([1, 2, 3], confidence=0.90)  # t_{0.95, 2} = 2.919986
    assert r90["ci_high"] - 2 == pytest.approx(2.919985580355516 / math.sqrt(3))


def test_mean_sd_ci_edge_cases() -> None:
    one = S.mean_sd_ci([5.0])
    assert one["n"] == 1 and one["mean"] == 5.0
    assert all(math.isnan(one[k]) for k in ("sd", "ci_low", "ci_high"))
    assert S.mean_sd_ci([])["n"] == 0 and math.isnan(S.mean_sd_ci([])["mean"])
    nan_dropped = S.mean_sd_ci([1.0, float("nan"), 3.0])
    assert nan_dropped["n"] == 2 and nan_dropped["mean"] == 2.0
    const = S.mean_sd_ci([2.0, 2.0, 2.0])
    assert const["sd"] == 0.0 and const["ci_low"] == const["ci_high"] == 2.0
    with pytest.raises(ValueError):
        S.mean_sd_ci([1, 2], confidence=1.0)


def _runs() -> pd.DataFrame:
    rows = []
    a = {0: 1.0, 1: 2.0, 2: 4.0, 5: 9.0}
    b = {0: 0.5, 1: 1.5, 2: 2.5, 3: 7.0}
    for method, vals in (("lora", a), ("crma", b)):
        for seed, v in vals.items():
            rows.append({"method": method, "seed": seed, "metric": "bwt", "value": v})
            rows.append({"method": method, "seed": seed, "metric": "fwt", "value": 10 * v})
    return pd.DataFrame(rows)


def test_summarize_runs() -> None:
    out = S.summarize_runs(_runs())
    assert list(out.columns) == ["method", "metric", "n", "mean", "sd", "ci_low", "ci_high"]
    assert out[["method", "metric"]].values.tolist() == [
        ["lora", "bwt"],
        ["lora", "fwt"],
        ["crma", "bwt"],
        ["crma", "fwt"],
    ]
    row = out[(out.method == "lora") & (out.metric == "bwt")].iloc[0]
    vals = [1.0, 2.0, 4.0, 9.0]
    assert row["n"] == 4 and row["mean"] == pytest.approx(4.0)
    assert row["sd"] == pytest.approx(np.std(vals, ddof=1))
    half = 3.182446305284263 * np.std(vals, ddof=1) / 2  # t_{0.975, 3} * sd / sqrt(4)
    assert row["ci_high"] == pytest.approx(4.0 + half)
    dup = pd.concat([_runs(), _runs().iloc[:1]])
    with pytest.raises(ValueError, match="seed"):
        S.summarize_runs(dup)
    with pytest.raises(ValueError, match="lacks column"):
        S.summarize_runs(_runs(), by=["nope"])


def test_paired_difference() -> None:
    r = S.paired_difference(_runs(), "lora", "crma", "bwt")
    # common seeds 0, 1, 2: diffs 0.5, 0.5, 1.5 -> mean 5/6, sd sqrt(1/3)
    assert r["seeds"] == [0, 1, 2]
    assert r["differences"] == pytest.approx([0.5, 0.5, 1.5])
    assert r["n"] == 3
    assert r["mean"] == pytest.approx(5 / 6)
    assert r["sd"] == pytest.approx(math.sqrt(1 / 3))
    half = 4.302652729749464 * math.sqrt(1 / 3) / math.sqrt(3)
    assert r["ci_low"] == pytest.approx(5 / 6 - half)
    assert r["ci_high"] == pytest.approx(5 / 6 + half)
    # t = (5/6) / (sqrt(1/3)/sqrt(3)) = 2.5 with df 2; two-sided p = 1 - t / sqrt(2 + t^2)
    assert r["t_stat"] == pytest.approx(2.5)
    assert r["p_value"] == pytest.approx(1 - 2.5 / math.sqrt(8.25))
    rev = S.paired_difference(_runs(), "crma", "lora", "bwt")
    assert rev["mean"] == pytest.approx(-5 / 6) and rev["p_value"] == pytest.approx(r["p_value"])


def test_paired_difference_errors() -> None:
    df = _runs()
    only_a = df[~((df.method == "crma") & df.seed.isin([0, 1, 2]))]
    with pytest.raises(ValueError, match="no common seeds"):
        S.paired_difference(only_a, "lora", "crma", "bwt")
    with pytest.raises(ValueError, match="no runs"):
        S.paired_difference(df, "lora", "missing", "bwt")
    with pytest.raises(ValueError, match="several"):
        S.paired_difference(pd.concat([df, df.iloc[:1]]), "lora", "crma", "bwt")
