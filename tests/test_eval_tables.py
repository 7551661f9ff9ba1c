"""continual.analysis.eval_tables (prompted baseline, retention, lm-eval matrices), hand-computed.

The runs are built with the recipe's own ``tidy_rows`` and ``summarise`` (which appends the
summary and retention rows), so the tables see exactly what a real run directory holds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from continual.analysis import eval_tables as et
from continual.analysis import report
from continual.recipe import summarise
from continual.rundir import tidy_rows

ORDER = ["med", "legal"]
BPB = et.LM_EVAL_BPB


def make_metrics(seed: int, shift: float = 0.0, tasks: tuple[str, ...] = ()) -> pd.DataFrame:
    """One chain med -> legal. Holdout NLL (stage x med/legal/general):
    base 3.0/3.0/3.0, after med 2.5+shift/3.1/2.7, after legal 2.7/2.4/3.3; prompted base
    med 2.8, legal 2.9; lm-eval bits/byte of med 1.0 -> 1.0 -> 1.2, legal 1.1 -> 1.1 -> 0.9;
    an extra lm-eval task's acc 0.50 -> 0.45 -> 0.40."""
    ids = {"run": f"lora_seed{seed}", "sequence": "s", "method": "lora", "model": "m", "seed": seed}
    nll = [(3.0, 3.0, 3.0), (2.5 + shift, 3.1, 2.7), (2.7, 2.4, 3.3)]
    bpb = [(1.0, 1.1), (1.0, 1.1), (1.2, 0.9)]
    acc = [0.50, 0.45, 0.40]
    rows = []
    for stage, label in enumerate(["base", *ORDER]):
        domains = ["med", "legal", "general"]
        values = {(d, "holdout_nll"): v for d, v in zip(domains, nll[stage], strict=True)}
        values |= {(d, BPB): v for d, v in zip(ORDER, bpb[stage], strict=True)}
        values |= {(t, "lm_eval/acc"): acc[stage] for t in tasks}
        if stage == 0:
            values |= {("med", "prompted_nll"): 2.8, ("legal", "prompted_nll"): 2.9}
        rows += tidy_rows(ids, stage, label, values)
    cfg = OmegaConf.create(
        {
            "sequence": {"order": ORDER},
            "eval": {"general_domain": "general", "lm_eval_tasks": list(tasks)},
        }
    )
    return summarise(cfg, ids, rows)[0]


@pytest.fixture
def two_seeds() -> pd.DataFrame:
    return pd.concat([make_metrics(0), make_metrics(1, shift=0.1)], ignore_index=True)


def _value(table: pd.DataFrame, **where: object) -> pd.Series:
    mask = pd.Series(True, index=table.index)
    for key, value in where.items():
        mask &= table[key] == value
    assert mask.sum() == 1, where
    return table[mask].iloc[0]


def test_prompted_summary_hand_computed(two_seeds: pd.DataFrame) -> None:
    table = et.prompted_summary(two_seeds)
    gap = _value(table, domain="med", metric="finetuned_minus_prompted")
    # per seed: 2.5 - 2.8 = -0.3 and 2.6 - 2.8 = -0.2
    assert gap["n"] == 2 and gap["mean"] == pytest.approx(-0.25)
    assert gap["sd"] == pytest.approx(math.sqrt(0.005))
    # Student-t, 1 df: -0.25 +- 12.7062 * 0.05
    assert (gap["ci_low"], gap["ci_high"]) == pytest.approx((-0.88531, 0.38531), abs=1e-4)
    assert _value(table, domain="legal", metric="finetuned_minus_prompted")["mean"] == (
        pytest.approx(2.4 - 2.9)
    )
    assert _value(table, domain="med", metric="final_minus_prompted")["mean"] == pytest.approx(
        2.7 - 2.8
    )
    assert _value(table, domain="med", metric="base_nll")["mean"] == pytest.approx(3.0)
    assert set(table["domain"]) == {"med", "legal"}  # general: never trained, never prompted


def test_prompted_summary_without_prompted_rows_is_empty(two_seeds: pd.DataFrame) -> None:
    table = et.prompted_summary(two_seeds[two_seeds["metric"] != "prompted_nll"])
    assert table.empty and {"method", "domain", "metric", "mean"} <= set(table.columns)


def test_summarise_keeps_the_prompted_gap_for_summary_tables() -> None:
    rows = make_metrics(0)
    gap = rows[rows["metric"] == "finetune_minus_prompted_nll"].set_index("eval_domain")["value"]
    assert gap.to_dict() == pytest.approx({"med": -0.3, "legal": -0.5})


def test_retention_summary_general_loss_and_lm_eval_tasks() -> None:
    metrics = pd.concat([make_metrics(s, tasks=("arc_easy",)) for s in (0, 1)])
    table = et.retention_summary(metrics)
    retention = table[table["metric"] == "retention_pct"].set_index("stage")["mean"]
    assert retention.to_dict() == pytest.approx({0: 0.0, 1: -10.0, 2: 10.0})
    general = table[(table["metric"] == "holdout_nll")].set_index("stage")["mean"]
    assert general.to_dict() == pytest.approx({0: 3.0, 1: 2.7, 2: 3.3})
    assert set(table.loc[table["metric"] == "holdout_nll", "eval_domain"]) == {"general"}
    task = table[table["metric"] == "lm_eval_retention_pct/acc"].set_index("stage")["mean"]
    assert task.to_dict() == pytest.approx({0: 0.0, 1: -10.0, 2: -20.0})


def test_metric_matrix_and_forgetting_in_bits_per_byte(two_seeds: pd.DataFrame) -> None:
    matrix = et.metric_matrix_summary(two_seeds)
    assert _value(matrix, stage=2, eval_domain="med")["mean"] == pytest.approx(1.2)
    assert (matrix["n"] == 2).all() and set(matrix["eval_domain"]) == {"med", "legal"}
    forgetting = et.metric_forgetting_summary(two_seeds)
    med = _value(forgetting, domain="med", metric="forgetting_pct")
    assert med["mean"] == pytest.approx(20.0) and med["sd"] == pytest.approx(0.0)
    assert _value(forgetting, domain="med", metric="delta")["mean"] == pytest.approx(0.2)
    assert _value(forgetting, domain="average", metric="delta")["mean"] == pytest.approx(0.2)
    assert set(forgetting["domain"]) == {"med", "average"}  # legal is the last stage


def test_metric_tables_without_lm_eval_rows_are_empty(two_seeds: pd.DataFrame) -> None:
    plain = two_seeds[two_seeds["metric"] != BPB]
    assert et.metric_matrix_summary(plain).empty
    assert et.metric_forgetting_summary(plain).empty


def test_report_and_summary_show_the_depth_tables(tmp_path: Path) -> None:
    for seed, shift in ((0, 0.0), (1, 0.1)):
        run = tmp_path / f"lora_seed{seed}"
        run.mkdir()
        make_metrics(seed, shift, tasks=("arc_easy",)).to_csv(run / "metrics.csv", index=False)
        (run / "run_info.json").write_text(json.dumps({"status": "complete"}))
    out = report.build_report(tmp_path, tmp_path / "report")
    text = (out / "report.md").read_text()
    for heading in ["## Fine-tuning vs prompting the base model",
                    "## General-capability retention", "## lm-eval holdout perplexity",
                    "Forgetting in bits per byte", "lm_eval_retention_pct/acc"]:  # fmt: skip
        assert heading in text, heading
    # med: gap -0.25 with a CI spanning 0; legal: -0.5 in both seeds (SD 0: a zero-width CI)
    assert "-0.250 ± 0.071 | [-0.885, 0.385] | -0.100 ± 0.000 | no clear difference" in text
    assert "-0.500 ± 0.000 | [-0.500, -0.500] | -0.500 ± 0.000 | fine-tuning beat prompting" in text
    summary = pd.read_csv(out / "summary.csv").set_index("metric")
    assert summary.at["finetune_minus_prompted_nll/med", "mean"] == pytest.approx(-0.25)


def test_report_without_depth_rows_has_no_depth_sections(tmp_path: Path) -> None:
    run = tmp_path / "lora_seed0"
    run.mkdir()
    plain = make_metrics(0)
    plain = plain[~plain["metric"].isin(["prompted_nll", BPB, "retention_pct"])]
    plain.to_csv(run / "metrics.csv", index=False)
    (run / "run_info.json").write_text(json.dumps({"status": "complete"}))
    text = (report.build_report(tmp_path, tmp_path / "report") / "report.md").read_text()
    assert "## Holdout loss matrix" in text
    for heading in ["Fine-tuning vs prompting", "General-capability", "lm-eval holdout"]:
        assert heading not in text
