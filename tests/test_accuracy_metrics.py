"""continual.metrics.accuracy and the over-seed accuracy tables, against hand-computed numbers.

Accuracy matrices ``A`` hold fractions (stage x domain); every metric is in points (or % for
``*_pct``). Positive forgetting = worse; BWT keeps the literature sign (negative = forgetting).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from continual import analysis as an
from continual import metrics as M
from continual.analysis import accuracy_tables as at
from continual.recipe import summarise
from continual.rundir import PROMPTED_ACC_GAP, loss_matrix, tidy_rows
from tests.pairs_runs import SWEEP, pairs_metrics, write_pairs_sweep

T_975_1DF = 12.706204736  # Student-t quantile, 2 seeds (1 degree of freedom)


def matrix(columns: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame(
        columns, index=pd.Index(range(len(next(iter(columns.values())))), name="stage")
    )


@pytest.fixture
def three() -> pd.DataFrame:
    """order med -> legal -> code, every domain with an accuracy."""
    return matrix({
        "med":   [0.20, 0.80, 0.60, 0.50],
        "legal": [0.10, 0.15, 0.90, 0.70],
        "code":  [0.05, 0.05, 0.10, 0.95],
    })  # fmt: skip


@pytest.fixture
def four() -> pd.DataFrame:
    """order a -> b -> c -> d: a peaks after a later stage, c is at 0 after its own stage."""
    return matrix({
        "a": [0.25, 0.50, 0.75, 0.25, 0.50],
        "b": [0.50, 0.40, 0.80, 0.60, 0.70],
        "c": [0.00, 0.10, 0.20, 0.00, 0.30],
        "d": [0.10, 0.10, 0.05, 0.20, 0.90],
    })  # fmt: skip


def test_three_domains_hand_computed(three: pd.DataFrame) -> None:
    order = ["med", "legal", "code"]
    table = M.accuracy_forgetting_table(three, order).set_index("domain")
    assert list(table.index) == ["med", "legal"]  # code is the last stage
    # med: own A[1] = 0.80, final A[3] = 0.50 -> 100 (0.80 - 0.50) = 30 pts, 30 / 0.80 = 37.5%
    assert table.at["med", "forgetting_pts"] == pytest.approx(30.0)
    assert table.at["med", "forgetting_pct"] == pytest.approx(37.5)
    # legal: own A[2] = 0.90, final 0.70 -> 20 pts, 20 / 0.90 = 22.22%
    assert table.at["legal", "forgetting_pts"] == pytest.approx(20.0)
    assert table.at["legal", "forgetting_pct"] == pytest.approx(200 / 9)
    assert table.at["legal", "trained_at_stage"] == 2
    s = M.accuracy_summary(three, order)
    assert s["acc_avg_forgetting_pts"] == pytest.approx(25.0)  # (30 + 20) / 2
    assert s["acc_avg_forgetting_pct"] == pytest.approx((37.5 + 200 / 9) / 2)  # 29.86
    # the accuracy right after the own stage is the best one: max forgetting = forgetting
    assert s["acc_avg_max_forgetting_pts"] == pytest.approx(25.0)
    assert s["acc_bwt"] == pytest.approx(-25.0)  # mean(50 - 80, 70 - 90): negative = forgot
    # FWT: legal 100 (A[1] - A[0]) = 15 - 10 = 5; code 100 (A[2] - A[0]) = 10 - 5 = 5
    assert s["acc_fwt"] == pytest.approx(5.0)
    assert s["final_avg_accuracy"] == pytest.approx((50 + 70 + 95) / 3)  # 71.67
    assert s["final_accuracy/code"] == pytest.approx(95.0)
    assert s["acc_forgetting_pts/med"] == pytest.approx(30.0)
    assert "acc_forgetting_pts/code" not in s


def test_four_domains_max_forgetting_zero_accuracy_and_signs(four: pd.DataFrame) -> None:
    order = ["a", "b", "c", "d"]
    table = M.accuracy_forgetting_table(four, order).set_index("domain")
    # a: own A[1] = 0.50 = final A[4]: no forgetting, but it reached 0.75 after stage 2, so
    # max forgetting (Chaudhry) = 100 (max(0.50, 0.75, 0.25) - 0.50) = 25 pts
    assert table.at["a", "forgetting_pts"] == pytest.approx(0.0)
    assert table.at["a", "max_forgetting_pts"] == pytest.approx(25.0)
    # b: 0.80 -> 0.70: 10 pts, 12.5%; max over stages 2..3 = max(0.80, 0.60) = 0.80
    assert table.at["b", "forgetting_pts"] == pytest.approx(10.0)
    assert table.at["b", "forgetting_pct"] == pytest.approx(12.5)
    assert table.at["b", "max_forgetting_pts"] == pytest.approx(10.0)
    # c: 0 after its own stage, 0.30 at the end: improved (negative), % undefined
    assert table.at["c", "forgetting_pts"] == pytest.approx(-30.0)
    assert math.isnan(table.at["c", "forgetting_pct"])
    assert table.at["c", "max_forgetting_pts"] == pytest.approx(-30.0)
    s = M.accuracy_summary(four, order)
    assert s["acc_avg_forgetting_pts"] == pytest.approx(-20 / 3)  # (0 + 10 - 30) / 3
    assert s["acc_bwt"] == pytest.approx(20 / 3)  # later stages helped on average: positive
    assert s["acc_avg_forgetting_pct"] == pytest.approx(6.25)  # (0 + 12.5) / 2, c left out
    assert math.isnan(s["acc_forgetting_pct/c"])
    assert s["acc_avg_max_forgetting_pts"] == pytest.approx(5 / 3)  # (25 + 10 - 30) / 3
    # FWT: b 40 - 50 = -10, c 20 - 0 = 20, d 20 - 10 = 10 -> 20 / 3
    assert s["acc_fwt"] == pytest.approx(20 / 3)
    assert s["final_avg_accuracy"] == pytest.approx(60.0)  # (50 + 70 + 30 + 90) / 4
    # the row order and the type of the stage labels do not matter
    shuffled = four.iloc[[3, 0, 4, 2, 1]]
    shuffled.index = shuffled.index.astype(float)
    assert M.accuracy_summary(shuffled, order) == pytest.approx(s, nan_ok=True)


def test_forgetting_drop_is_positive_and_bwt_negative() -> None:
    A = matrix({"x": [0.0, 0.9, 0.3], "y": [0.0, 0.0, 0.8]})
    s = M.accuracy_summary(A, ["x", "y"])
    assert s["acc_forgetting_pts/x"] == pytest.approx(60.0)  # 90% -> 30%: positive
    assert s["acc_bwt"] == pytest.approx(-60.0)  # the literature sign: negative = forgot


def test_mixed_chain_only_some_domains_have_accuracy() -> None:
    """order med (raw text) -> legal -> code; accuracy columns for legal and code only."""
    A = matrix({"legal": [0.10, 0.30, 0.80, 0.60], "code": [0.20, 0.20, 0.25, 0.90]})
    order = ["med", "legal", "code"]
    table = M.accuracy_forgetting_table(A, order)
    assert table["domain"].tolist() == ["legal"] and table["trained_at_stage"].tolist() == [2]
    s = M.accuracy_summary(A, order)
    assert s["acc_forgetting_pts/legal"] == pytest.approx(20.0)  # 80 - 60
    assert s["acc_forgetting_pct/legal"] == pytest.approx(25.0)  # 20 / 0.80
    assert s["acc_bwt"] == pytest.approx(-20.0)
    # FWT: legal (stage 2) 100 (A[1] - A[0]) = 20; code (stage 3) 100 (A[2] - A[0]) = 5
    assert s["acc_fwt"] == pytest.approx(12.5)
    assert s["final_avg_accuracy"] == pytest.approx(75.0)  # (60 + 90) / 2
    assert not [k for k in s if k.endswith("/med")]
    # a pairs domain only at the end of the chain: no forgetting yet, FWT and ACC still defined
    late = M.accuracy_summary(A[["code"]], order)
    assert math.isnan(late["acc_bwt"]) and math.isnan(late["acc_avg_forgetting_pts"])
    assert late["acc_fwt"] == pytest.approx(5.0) and late["final_avg_accuracy"] == 90.0
    assert M.accuracy_summary(A[[]], order) == {}  # no trained domain with an accuracy


def test_bad_inputs_are_clear_errors(three: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        M.accuracy_summary(three, ["med", "med", "code"])
    with pytest.raises(ValueError, match="lacks stage row"):
        M.accuracy_summary(three.iloc[:3], ["med", "legal", "code"])
    with pytest.raises(ValueError, match="outside 0..2"):
        M.accuracy_summary(three, ["med", "legal"])
    with pytest.raises(ValueError, match="integer stages"):
        M.accuracy_summary(three.rename(index={0: "base"}), ["med", "legal", "code"])


def test_recipe_summary_rows_keep_loss_metrics_unchanged() -> None:
    """summarise on a mixed chain: the loss metrics equal summary_metrics on the loss matrix
    alone, the accuracy ones accuracy_summary, and the prompted gap is in points."""
    spec = SWEEP[("lora", 0)]
    rows = pairs_metrics("lora", 0, spec["accuracy"], spec["nll"], spec["prompted_accuracy"])
    final = rows[rows["stage"] == 3]
    stored = {
        (m if d == "all" else f"{m}/{d}"): v
        for m, d, v in zip(final["metric"], final["eval_domain"], final["value"], strict=True)
    }
    order = ["med", "legal", "code"]
    loss = M.summary_metrics(loss_matrix(rows), order, general=None)
    acc = M.accuracy_summary(loss_matrix(rows, "accuracy"), order)
    assert {k: stored[k] for k in loss} == pytest.approx(loss)
    assert {k: stored[k] for k in acc} == pytest.approx(acc)
    assert not set(loss) & set(acc)
    # legal: 100 (0.80 - 0.30) = 50 pts; code: 100 (0.90 - 0.50) = 40 pts
    assert stored[f"{PROMPTED_ACC_GAP}/legal"] == pytest.approx(50.0)
    assert stored[f"{PROMPTED_ACC_GAP}/code"] == pytest.approx(40.0)
    # without accuracy rows, the same chain writes exactly the loss metrics
    ids = {"run": "r", "sequence": "s", "method": "lora", "model": "m", "seed": 0}
    text = [r for k in range(4) for r in tidy_rows(ids, k, "x", {
        (d, "holdout_nll"): v[k] for d, v in spec["nll"].items()})]  # fmt: skip
    cfg = OmegaConf.create({"sequence": {"order": order},
                            "eval": {"general_domain": None, "lm_eval_tasks": []}})  # fmt: skip
    assert summarise(cfg, ids, text)[3] == pytest.approx(loss)


# --------------------------------------------------------------------------- over-seed tables
# SWEEP (tests/pairs_runs.py), lora: legal A = [.10, .10, .80, .60] (seed 0), [.10, .20, .90,
# .50] (seed 1); code [.20, .20, .30, .90], [.20, .20, .40, .80]; prompted legal .30 / .40,
# code .50 / .50; legal NLL after its own stage 1.0, final 1.3 / 1.5.


@pytest.fixture(scope="module")
def sweep_metrics(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    root = write_pairs_sweep(tmp_path_factory.mktemp("pairs") / "sweep")
    return an.load_metrics(an.find_runs(root))


def _row(table: pd.DataFrame, **where: object) -> pd.Series:
    mask = pd.Series(True, index=table.index)
    for key, value in where.items():
        mask &= table[key] == value
    assert mask.sum() == 1, where
    return table[mask].iloc[0]


def test_accuracy_matrix_in_percent(sweep_metrics: pd.DataFrame) -> None:
    mean, sd = at.accuracy_matrix(sweep_metrics, "lora")
    assert list(mean.columns) == ["legal", "code"]  # med has no accuracy
    assert mean.at[2, "legal"] == pytest.approx(85.0)  # (80 + 90) / 2
    assert sd.at[2, "legal"] == pytest.approx(math.sqrt(50))  # |80 - 90| / sqrt(2) = 7.07


def test_accuracy_forgetting_summary(sweep_metrics: pd.DataFrame) -> None:
    table = at.accuracy_forgetting_summary(sweep_metrics)
    assert set(table["domain"]) == {"legal", "average"}  # code: last stage; med: no accuracy
    pts = _row(table, method="lora", domain="legal", metric="forgetting_pts")
    # seeds: 80 - 60 = 20 and 90 - 50 = 40 -> 30 ± 14.14, CI 30 ± 12.706 x 10
    assert (pts["n"], pts["mean"], pts["sd"]) == pytest.approx((2, 30.0, math.sqrt(200)))
    assert pts["ci_low"] == pytest.approx(30 - T_975_1DF * 10)
    pct = _row(table, method="lora", domain="legal", metric="forgetting_pct")
    assert pct["mean"] == pytest.approx((25.0 + 400 / 9) / 2)  # 20/0.8 and 40/0.9
    delta = _row(table, method="lora", domain="legal", metric="delta_nll")
    assert delta["mean"] == pytest.approx(0.4)  # 1.3 - 1.0 and 1.5 - 1.0
    own = _row(table, method="lora", domain="legal", metric="acc_after_own_stage")
    assert own["mean"] == pytest.approx(85.0)
    avg = _row(table, method="lora", domain="average", metric="forgetting_pts")
    assert avg["mean"] == pytest.approx(30.0)
    frozen = _row(table, method="frozen_lora", domain="legal", metric="forgetting_pts")
    assert frozen["mean"] == 0.0
    assert table["method"].drop_duplicates().tolist() == ["lora", "frozen_lora"]


def test_accuracy_summary_table_and_prompted(sweep_metrics: pd.DataFrame) -> None:
    table = at.accuracy_summary_table(sweep_metrics)
    lora = table[table["method"] == "lora"].set_index("metric")
    assert list(lora.index) == at.ACC_SUMMARY_METRICS
    assert lora.at["acc_bwt", "mean"] == pytest.approx(-30.0)  # -20 and -40
    # FWT per seed: mean(0, 10) = 5 and mean(10, 20) = 15 -> 10 ± 7.07
    assert lora.at["acc_fwt", "mean"] == pytest.approx(10.0)
    assert lora.at["acc_fwt", "ci_high"] == pytest.approx(10 + T_975_1DF * 5)
    assert lora.at["final_avg_accuracy", "mean"] == pytest.approx(70.0)  # 75 and 65
    prompted = at.accuracy_prompted_summary(sweep_metrics)
    gap = _row(prompted, method="lora", domain="legal", metric="finetuned_minus_prompted_pts")
    assert (gap["mean"], gap["sd"]) == pytest.approx((50.0, 0.0))  # 80 - 30 and 90 - 40
    code = _row(prompted, method="lora", domain="code", metric="finetuned_minus_prompted_pts")
    assert code["mean"] == pytest.approx(35.0)  # 90 - 50 and 80 - 50
    assert _row(prompted, method="lora", domain="legal", metric="prompted_acc")["mean"] == 35.0
    assert _row(prompted, method="lora", domain="legal", metric="base_acc")["mean"] == 10.0
    stored = an.run_summaries(sweep_metrics)
    stored = stored[(stored["method"] == "lora") & (stored["metric"] == f"{PROMPTED_ACC_GAP}/code")]
    assert sorted(stored["value"]) == pytest.approx([30.0, 40.0])


def test_run_summaries_recompute_accuracy_without_summary_rows(
    sweep_metrics: pd.DataFrame,
) -> None:
    stored = an.run_summaries(sweep_metrics)
    assert {"acc_bwt", "acc_forgetting_pts/legal", "final_accuracy/code"} <= set(stored["metric"])
    final = sweep_metrics["stage"] == 3
    per_stage = {"holdout_nll", "accuracy"}
    bare = sweep_metrics[~final | sweep_metrics["metric"].isin(per_stage)]
    recomputed = an.run_summaries(bare)
    merged = stored.merge(recomputed, on=["run_dir", "metric"], suffixes=("_s", "_r"))
    acc = merged[merged["metric"].map(at.is_accuracy_metric)]
    acc = acc[~acc["metric"].str.startswith(PROMPTED_ACC_GAP)]  # not recomputed
    assert len(acc) == 4 * 11  # 6 run-level, 3 forgetting of legal, 2 final_accuracy; 4 runs
    pd.testing.assert_series_equal(acc["value_s"], acc["value_r"], check_names=False)


def test_tables_without_accuracy_rows_are_empty(sweep_metrics: pd.DataFrame) -> None:
    text = sweep_metrics[~sweep_metrics["metric"].map(lambda m: "acc" in m)]
    assert not at.has_accuracy(text)
    assert at.accuracy_forgetting_summary(text).empty
    assert at.accuracy_summary_table(text).empty
    assert at.accuracy_prompted_summary(text).empty


def test_builder_writes_complete_runs(tmp_path: Path) -> None:
    root = write_pairs_sweep(tmp_path / "s")
    assert [p.name for p in an.find_runs(root)] == [
        "frozen_lora_seed0", "frozen_lora_seed1", "lora_seed0", "lora_seed1"
    ]  # fmt: skip
