"""The multi-seed statistics CLI on the committed fixture sweep (2 methods x 2 seeds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from continual.analysis.compare import compare, main
from continual.metrics.stats import mean_sd_ci, paired_difference

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
