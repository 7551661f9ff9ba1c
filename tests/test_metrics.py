"""Tests for continual.metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from continual import metrics as M

ORDER = ["med", "legal", "code"]


@pytest.fixture
def probe() -> pd.DataFrame:
    """The 4x3 matrix from shared/design.md, "A first probe" (stage 0 = base)."""
    return M.loss_matrix(
        [
            [3.499, 3.019, 2.790],
            [3.222, 2.911, 2.778],
            [3.363, 2.344, 2.776],
            [3.324, 2.442, 2.536],
        ],
        columns=ORDER,
    )


def test_probe_forgetting_matches_published(probe: pd.DataFrame) -> None:
    pct = M.forgetting_pct(probe, ORDER)
    assert list(pct) == ["med", "legal"]  # the last domain has nothing to forget
    # med: (3.324 - 3.222) / 3.222 = 0.102 / 3.222
    assert pct["med"] == pytest.approx(100 * 0.102 / 3.222)
    assert round(pct["med"], 1) == 3.2
    # legal: (2.442 - 2.344) / 2.344 = 0.098 / 2.344
    assert pct["legal"] == pytest.approx(100 * 0.098 / 2.344)
    assert round(pct["legal"], 1) == 4.2
    ab = M.forgetting_abs(probe, ORDER)
    assert ab["med"] == pytest.approx(0.102)
    assert round(ab["med"], 2) == 0.10
    assert ab["legal"] == pytest.approx(0.098)
    assert M.average_forgetting_pct(probe, ORDER) == pytest.approx(
        (100 * 0.102 / 3.222 + 100 * 0.098 / 2.344) / 2
    )
    assert M.backbone_drift_pct(probe, ORDER) == pct


def test_probe_bwt_fwt_final(probe: pd.DataFrame) -> None:
    # BWT = mean(L[1][med] - L[3][med], L[2][legal] - L[3][legal]) = mean(-0.102, -0.098)
    assert M.bwt(probe, ORDER) == pytest.approx(-0.100)
    # FWT = mean(L[0][legal] - L[1][legal], L[0][code] - L[2][code]) = mean(0.108, 0.014)
    assert M.fwt(probe, ORDER) == pytest.approx(0.061)
    assert M.final_average_loss(probe, ORDER) == pytest.approx((3.324 + 2.442 + 2.536) / 3)
    # max-based: the loss right after the own stage is the best one here, so = delta NLL
    mx = M.max_forgetting(probe, ORDER)
    assert mx["med"] == pytest.approx(0.102)  # min(3.222, 3.363) = 3.222
    assert mx["legal"] == pytest.approx(0.098)


def test_vendor_average_convention() -> None:
    # 4 domains; post-stage losses 0.1, finals chosen to give 228 %, 593 %, 233 %.
    order = ["a", "b", "c", "d"]
    L = M.loss_matrix(
        [
            [1.0, 1.0, 1.0, 1.0],
            [0.1, 0.9, 0.9, 0.9],
            [0.2, 0.1, 0.8, 0.8],
            [0.3, 0.5, 0.1, 0.7],
            [0.328, 0.693, 0.333, 0.2],
        ],
        columns=order,
    )
    pct = M.forgetting_pct(L, order)
    assert pct == pytest.approx({"a": 228.0, "b": 593.0, "c": 233.0})
    assert M.average_forgetting_pct(L, order) == pytest.approx((228 + 593 + 233) / 3)
    assert round(M.average_forgetting_pct(L, order)) == 351


def test_max_forgetting_differs_from_delta() -> None:
    order = ["a", "b", "c"]
    L = M.loss_matrix(
        [[3.0, 3.0, 3.0], [2.0, 2.9, 2.9], [1.5, 2.0, 2.8], [1.8, 2.5, 2.0]], columns=order
    )
    # a: best after its stage is 1.5 (stage 2); final 1.8 -> 0.3 nats; delta = 1.8 - 2.0 = -0.2
    assert M.max_forgetting(L, order) == pytest.approx({"a": 0.3, "b": 0.5})
    assert M.forgetting_abs(L, order) == pytest.approx({"a": -0.2, "b": 0.5})
    assert M.bwt(L, order) == pytest.approx(((2.0 - 1.8) + (2.0 - 2.5)) / 2)


def test_general_retention_and_extra_column(probe: pd.DataFrame) -> None:
    L = probe.assign(general=[3.0, 3.03, 3.06, 3.3])
    ret = M.general_retention_pct(L)
    assert list(ret.index) == [0, 1, 2, 3]
    assert ret.to_numpy() == pytest.approx([0.0, 1.0, 2.0, 10.0])
    # the extra column changes nothing else
    assert M.forgetting_pct(L, ORDER) == M.forgetting_pct(probe, ORDER)
    assert M.final_average_loss(L, ORDER) == M.final_average_loss(probe, ORDER)
    with pytest.raises(ValueError, match="general"):
        M.general_retention_pct(probe)


def test_summary_metrics_names(probe: pd.DataFrame) -> None:
    L = probe.assign(general=[3.0, 3.03, 3.06, 3.3])
    s = M.summary_metrics(L, ORDER)
    expected = {
        "avg_forgetting_pct",
        "avg_delta_nll",
        "avg_max_forgetting",
        "bwt",
        "fwt",
        "final_avg_loss",
        "general_retention_pct_final",
        "general_loss_final",
        "forgetting_pct/med",
        "forgetting_pct/legal",
        "delta_nll/med",
        "delta_nll/legal",
        "max_forgetting/med",
        "max_forgetting/legal",
        "final_loss/med",
        "final_loss/legal",
        "final_loss/code",
    }
    assert set(s) == expected
    assert all(isinstance(v, float) for v in s.values())
    assert s["general_retention_pct_final"] == pytest.approx(10.0)
    assert s["bwt"] == pytest.approx(-0.1)
    assert s["delta_nll/legal"] == pytest.approx(0.098)
    # absent general column -> stable keys with NaN; general=None -> keys omitted
    s2 = M.summary_metrics(probe, ORDER)
    assert set(s2) == expected and math.isnan(s2["general_retention_pct_final"])
    s3 = M.summary_metrics(probe, ORDER, general=None)
    assert set(s3) == expected - {"general_retention_pct_final", "general_loss_final"}


def test_forgetting_table(probe: pd.DataFrame) -> None:
    t = M.forgetting_table(probe, ORDER)
    assert list(t.columns) == [
        "domain",
        "trained_at_stage",
        "loss_after_own_stage",
        "loss_final",
        "delta_nll",
        "forgetting_pct",
        "max_forgetting",
    ]
    assert t["domain"].tolist() == ["med", "legal"]
    assert t["trained_at_stage"].tolist() == [1, 2]
    assert t["loss_after_own_stage"].tolist() == pytest.approx([3.222, 2.344])
    assert t["loss_final"].tolist() == pytest.approx([3.324, 2.442])
    assert t["delta_nll"].tolist() == pytest.approx([0.102, 0.098])
    assert t["forgetting_pct"].tolist() == pytest.approx([100 * 0.102 / 3.222, 100 * 0.098 / 2.344])


def test_single_stage_gives_empty_or_nan() -> None:
    L = M.loss_matrix([[3.0], [2.0]], columns=["a"])
    assert M.forgetting_pct(L, ["a"]) == {}
    assert math.isnan(M.average_forgetting_pct(L, ["a"]))
    assert math.isnan(M.bwt(L, ["a"])) and math.isnan(M.fwt(L, ["a"]))
    assert M.final_average_loss(L, ["a"]) == 2.0
    assert M.forgetting_table(L, ["a"]).empty


def test_numpy_input_and_unsorted_index(probe: pd.DataFrame) -> None:
    arr = probe.to_numpy()
    assert M.forgetting_pct(arr, ORDER) == M.forgetting_pct(probe, ORDER)
    shuffled = probe.iloc[[3, 1, 0, 2]]
    assert M.bwt(shuffled, ORDER) == pytest.approx(M.bwt(probe, ORDER))


def test_validation_errors(probe: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="stage row"):
        M.forgetting_pct(probe.drop(index=2), ORDER)
    with pytest.raises(ValueError, match="domain column"):
        M.bwt(probe.drop(columns="legal"), ORDER)
    with pytest.raises(ValueError, match="duplicate"):
        M.fwt(probe, ["med", "legal", "med"])
    with pytest.raises(ValueError, match="outside"):
        M.bwt(probe, ORDER[:2])  # 4 rows but only 2 stages trained
    with pytest.raises(ValueError, match="integer stages"):
        M.bwt(probe.set_axis(["base", *ORDER]), ORDER)
    with pytest.raises(ValueError, match="empty"):
        M.bwt(probe, [])
    with pytest.raises(ValueError, match="shape"):
        M.bwt(np.ones((4, 4)), ORDER)


def test_gradient_stability() -> None:
    g = [1, 2, 3, 2, 1, 20, 2, 3, 1, 2]
    s = M.gradient_stability(g)
    # sorted: 1 1 1 2 2 2 2 3 3 20 -> median 2, spikes > 10: one (20)
    assert s["peak"] == 20.0 and s["peak_step"] == 5
    assert s["mean"] == pytest.approx(3.7)
    assert s["median"] == 2.0
    assert s["n_spikes"] == 1
    # linear percentile: rank 0.95 * 9 = 8.55 -> 3 + 0.55 * (20 - 3) = 12.35
    assert s["p95"] == pytest.approx(12.35)
    assert s["n_steps"] == 10 and s["n_nonfinite"] == 0
    assert M.gradient_stability(g, spike_factor=1.2)["n_spikes"] == 3  # 3, 3, 20 > 2.4
    s_nan = M.gradient_stability([1.0, float("inf"), 4.0, float("nan")])
    assert s_nan["n_nonfinite"] == 2 and s_nan["peak"] == 4.0 and s_nan["peak_step"] == 2
    with pytest.raises(ValueError):
        M.gradient_stability([])
