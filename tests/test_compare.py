"""The multi-seed statistics CLI on the committed fixture sweep (2 methods x 2 seeds) and on a
hand-built sweep with pairs domains (accuracy metrics)."""

from __future__ import annotations

from pathlib import Path

import pytest

from continual.analysis.compare import ACCURACY_METRICS, DEFAULT_METRICS, compare, main
from continual.metrics.stats import mean_sd_ci, paired_difference
from tests.pairs_runs import write_pairs_sweep

FIXTURE = Path(__file__).parent / "fixtures" / "sweep"


def test_compare_matches_the_stats_functions(tmp_path: Path, capsys) -> None:
    summary, paired = compare(FIXTURE, ["avg_forgetting_pct"])
    assert set(summary.method) == {"lora", "crma"}
    from continual.analysis import find_runs, load_metrics, run_summaries

    runs = run_summaries(load_metrics(find_runs(FIXTURE)))
    runs = runs[runs.metric == "avg_forgetting_pct"]
    lora = runs[runs.method == "lora"].value.tolist()
    row = summary[summary.method == "lora"].iloc[0]
    expected = mean_sd_ci(lora)
    assert row["n"] == 2 and row["mean"] == pytest.approx(expected["mean"])
    assert row["ci_low"] == pytest.approx(expected["ci_low"])
    pair = paired.iloc[0]
    direct = paired_difference(runs, pair.method_a, pair.method_b, "avg_forgetting_pct")
    assert pair["mean"] == pytest.approx(direct["mean"]) and pair["n"] == 2

    assert main([str(FIXTURE), "--metric", "bwt", "--csv", str(tmp_path)]) == 0
    assert (tmp_path / "method_summary.csv").is_file()
    assert "Paired differences" in capsys.readouterr().out


def test_compare_on_an_empty_dir_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err


def test_accuracy_metrics_are_shown_by_default_when_present(tmp_path: Path, capsys) -> None:
    """The hand-built pairs sweep (tests/pairs_runs.py): lora BWT -20 / -40 pts, FWT 5 / 15,
    final average accuracy 75 / 65; frozen_lora forgets nothing, 65 / 65."""
    sweep = write_pairs_sweep(tmp_path / "pairs")
    summary, paired = compare(sweep)
    lora = summary[summary.method == "lora"].set_index("metric")
    assert set(ACCURACY_METRICS) <= set(lora.index) and "bwt" in lora.index
    assert lora.at["acc_bwt", "mean"] == pytest.approx(-30.0)
    assert lora.at["acc_fwt", "mean"] == pytest.approx(10.0)
    assert lora.at["final_avg_accuracy", "mean"] == pytest.approx(70.0)
    assert lora.at["final_avg_accuracy", "ci_low"] == pytest.approx(70 - 12.7062047 * 5)
    pair = paired[paired.metric == "acc_bwt"].iloc[0]
    assert (pair.method_a, pair.method_b) == ("lora", "frozen_lora")
    assert pair["mean"] == pytest.approx(-30.0)
    assert main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "final_avg_accuracy  2  70.0000" in out and "acc_bwt  2 -30.0000" in out

    chosen, _ = compare(sweep, ["acc_forgetting_pts/legal"])  # per domain: 20 and 40 pts
    assert chosen.set_index("method").at["lora", "mean"] == pytest.approx(30.0)
    text_only, _ = compare(FIXTURE)  # no pairs domain: the loss metrics only
    assert set(text_only.metric) == set(DEFAULT_METRICS)


def test_an_unknown_metric_names_the_available_ones(tmp_path: Path, capsys) -> None:
    assert main([str(FIXTURE), "--metric", "acc_bwt"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no run under") and "['acc_bwt']" in err
    assert "avg_forgetting_pct, " in err


def test_reference_pairs_every_method_with_one(tmp_path: Path, capsys) -> None:
    """Seven methods x 2 seeds: ``--reference lora`` gives 6 pairs (m - lora) per metric, the
    negation of the all-pairs (lora - m) rows; the report pairs with lora alone past 6 methods."""
    from continual.analysis import find_runs, load_metrics, paired_differences
    from continual.analysis.report_sections import paired_section
    from tests.test_report import make_run

    methods = ["lora", "frozen_lora", "replay", "ewc", "lwf", "olora", "crma"]
    for method in methods:
        for seed in (0, 1):
            make_run(tmp_path / f"{method}_seed{seed}", method, seed)
    metrics = load_metrics(find_runs(tmp_path))
    every = paired_differences(metrics, "avg_delta_nll")
    against = paired_differences(metrics, "avg_delta_nll", reference="lora")
    assert len(every) == 21 and len(against) == 6
    assert set(against.method_b) == {"lora"} and set(against.method_a) == set(methods[1:])
    for row in against.itertuples(index=False):
        mirror = every[(every.method_a == "lora") & (every.method_b == row.method_a)]
        assert row.mean == pytest.approx(-mirror["mean"].item())
        assert row.p_value == pytest.approx(mirror["p_value"].item())

    _, paired = compare(tmp_path, ["final_avg_loss"], reference="lora")
    assert set(paired.method_b) == {"lora"} and len(paired) == 6
    section = paired_section(metrics)
    assert "paired with `lora` only" in section
    assert "| replay - lora |" in section and "replay - ewc" not in section
    assert "paired with" not in paired_section(metrics[metrics.method != "crma"])  # 6: all
    assert main([str(tmp_path), "--reference", "joint"]) == 2
    err = capsys.readouterr().err
    assert "'joint' is not a method" in err and "replay" in err
