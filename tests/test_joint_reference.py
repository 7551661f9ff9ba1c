"""``method=joint`` as a single-stage multi-task reference: one stage on every domain for the
chain's total steps (a real run on the tiny model), and how the analysis shows it (a reference
row and a reference line, no forgetting numbers; synthetic runs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.lines import Line2D
from omegaconf import OmegaConf

from continual import analysis as an
from continual import metrics as clm
from continual.analysis import report
from continual.analysis.compare import compare
from continual.methods import joint
from continual.recipe import run_experiment, summarise
from continual.rundir import TIDY_COLUMNS, tidy_rows
from tests.conftest import interrupted_then_resumed
from tests.pairs_runs import write_run
from tests.test_report import make_run

CHAIN = ["avg_forgetting_pct", "avg_delta_nll", "avg_max_forgetting", "bwt", "fwt"]


def test_joint_run_trains_one_stage_on_every_domain_for_the_chains_steps(
    tiny_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[set[int]] = []
    real = joint.balanced_rows

    def recorded(pools, n, generator):
        rows = real(pools, n, generator)
        drawn.append({pool for pool, _ in rows})
        return rows

    monkeypatch.setattr(joint, "balanced_rows", recorded)
    cfg = tiny_cfg("method=joint", "train.steps=3", "train.warmup_steps=1")
    metrics = run_experiment(cfg, tmp_path / "run")
    run = tmp_path / "run"

    log = pd.read_csv(run / "train_log.csv")
    chain_steps = len(cfg.sequence.order) * cfg.train.steps  # what lora would take: 2 x 3
    assert len(log) == chain_steps and set(log.stage) == {1} and set(log.domain) == {"joint"}
    assert log.global_step.tolist() == list(range(1, chain_steps + 1))
    lr = log.lr.to_numpy()  # one schedule: warmup once, then one cosine decay over all steps
    assert lr[0] == 0 and lr[1] == pytest.approx(cfg.train.lr) and (np.diff(lr[1:]) < 0).all()
    assert len(drawn) == chain_steps and all(d == {0, 1} for d in drawn)  # both domains

    assert sorted(metrics.stage.unique()) == [0, 1]
    assert set(metrics.loc[metrics.stage == 1, "stage_domain"]) == {"joint"}
    final = metrics[metrics.eval_domain == "all"].set_index("metric").value
    nll = metrics[(metrics.stage == 1) & (metrics.metric == "holdout_nll")]
    assert final["final_avg_loss"] == pytest.approx(nll.value.mean())
    assert all(math.isnan(final[m]) for m in CHAIN)
    assert not metrics.metric.isin(["forgetting_pct", "delta_nll", "max_forgetting"]).any()

    assert pd.read_csv(run / "loss_matrix.csv").stage.tolist() == [0, 1]
    forgetting = pd.read_csv(run / "forgetting.csv")
    assert forgetting.empty and list(forgetting.columns) == clm.FORGETTING_TABLE_COLUMNS
    progress = json.loads((run / "progress.json").read_text())
    assert progress == {"completed_stage": 1, "trained": ["joint"]}
    assert (run / "adapters" / "stage1_joint").is_dir()
    info = json.loads((run / "run_info.json").read_text())
    assert list(info["trainable_parameters"]) == ["stage1_joint"]


def test_joint_interrupted_in_its_stage_resumes_to_the_same_result(
    tiny_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_cfg("method=joint", "train.steps=2", "train.warmup_steps=0")
    full = run_experiment(cfg, tmp_path / "full")
    resumed = interrupted_then_resumed(cfg, tmp_path / "cut", monkeypatch, at=2)  # its log

    def comparable(frame: pd.DataFrame) -> pd.DataFrame:
        kept = frame[frame.metric != "stage_seconds"].drop(columns="run")
        return kept.sort_values(["stage", "eval_domain", "metric"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(comparable(full), comparable(resumed))
    logs = [pd.read_csv(tmp_path / d / "train_log.csv") for d in ("full", "cut")]
    pd.testing.assert_frame_equal(*logs)


@pytest.mark.parametrize("kill", [["step", "4"], ["between", "1"]], ids=["mid-stage", "summary"])
def test_joint_killed_resumes_to_the_uninterrupted_result(
    local_domains, tmp_path: Path, kill: list[str]
) -> None:
    """A real SIGKILL through the CLI: in its one stage (nothing committed: it starts over),
    or after the stage's commit point, before the summary (it resumes and summarises)."""
    from tests.test_cli import _tiny_overrides
    from tests.test_reliability import _cli
    from tests.test_reliability import _comparable as comparable

    args = [*_tiny_overrides(local_domains), "train.steps=3", "method=joint"]
    cache, reference, run_dir = tmp_path / "cache", tmp_path / "reference", tmp_path / "killed"
    assert _cli([*args, f"hydra.run.dir={reference}"], cache).returncode == 0
    killed = _cli([*args, f"hydra.run.dir={run_dir}"], cache, killer=kill)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (run_dir / "forgetting.csv").exists()
    resumed = _cli([*args, f"hydra.run.dir={run_dir}"], cache)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert ("Resuming" in resumed.stdout) == (kill[0] == "between")
    pd.testing.assert_frame_equal(comparable(run_dir), comparable(reference))
    logs = [pd.read_csv(d / "train_log.csv") for d in (run_dir, reference)]
    pd.testing.assert_frame_equal(*logs)
    assert json.loads((run_dir / "run_info.json").read_text())["status"] == "complete"


# --- the analysis ----------------------------------------------------------------------------

FINAL = {0: {"med": 2.0, "code": 1.5, "general": 3.4}, 1: {"med": 2.2, "code": 1.7, "general": 3.5}}


def joint_run(run_dir: Path, seed: int) -> Path:
    """A joint run's directory with the recipe's own rows: base, one ``joint`` stage, summary."""
    ids = {"run": run_dir.name, "sequence": "med_code", "method": "joint",
           "model": "tiny_random", "seed": seed}  # fmt: skip
    base = {"med": 3.4, "code": 2.5, "general": 3.3}
    rows = tidy_rows(ids, 0, "base", {(d, "holdout_nll"): v for d, v in base.items()})
    values = {(d, "holdout_nll"): v for d, v in FINAL[seed].items()}
    values |= {("joint", f"grad_norm_{k}"): v
               for k, v in clm.gradient_stability([1.0, 2.0, 1.5]).items()}  # fmt: skip
    rows += tidy_rows(ids, 1, "joint", values)
    cfg = OmegaConf.create(
        {
            "sequence": {"order": ["med", "code"]},
            "eval": {"general_domain": "general", "lm_eval_tasks": []},
        }
    )
    metrics, matrix, forgetting, summary = summarise(cfg, ids, rows, ["joint"])
    assert forgetting.empty and list(matrix.index) == [0, 1]
    assert summary["final_loss/med"] == FINAL[seed]["med"] and math.isnan(summary["bwt"])
    write_run(run_dir, metrics[TIDY_COLUMNS])
    log = [{"stage": 1, "domain": "joint", "global_step": i, "step": i, "loss": 2.0,
            "grad_norm": n, "lr": 1e-3} for i, n in enumerate([1.0, 2.0, 1.5], 1)]  # fmt: skip
    pd.DataFrame(log).to_csv(run_dir / "train_log.csv", index=False)
    return run_dir


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    for seed in (0, 1):
        make_run(root / f"lora_seed{seed}", "lora", seed)
        joint_run(root / f"joint_seed{seed}", seed)
    return root


def test_a_joint_run_is_a_reference_not_a_chain(sweep: Path) -> None:
    metrics = an.load_metrics(an.find_runs(sweep))
    assert an.reference_methods(metrics) == ["joint"]
    assert an.stage_labels(metrics) == {0: "base", 1: "after med", 2: "after code"}
    assert an.method_stage_labels(metrics, "joint") == {0: "base", 1: "after joint"}
    assert an.domain_order(metrics) == ["med", "code", "general"]
    runs = an.run_summaries(metrics)
    by = runs[runs.method == "joint"].groupby("metric").value.mean()
    assert by["final_avg_loss"] == pytest.approx((2.0 + 1.5 + 2.2 + 1.7) / 4)
    assert all(math.isnan(by[m]) for m in CHAIN)


def test_the_report_shows_joint_as_a_reference_row_and_line(sweep: Path) -> None:
    out = report.build_report(sweep, sweep.parent / "out")
    text = (out / "report.md").read_text()
    assert "Multi-task reference(s), one stage on every domain" in text and "`joint`" in text
    assert "Trained order: `med_code`: med -> code." in text
    assert "### joint (n=2; seeds 0, 1, multi-task reference)" in text
    assert "| after joint | 2.100 ± 0.141 | 1.600 ± 0.141 | 3.450 ± 0.071 |" in text
    assert "| joint | multi-task reference | — |  | 2 | — | — | — | — | — |" in text
    summary = text.split("## Final-stage summary metrics")[1].split("## ")[0]
    assert "| avg_forgetting_pct |" in summary and "| bwt |" in summary
    for metric in ("avg_forgetting_pct", "bwt", "fwt", "forgetting_pct/med"):
        line = next(x for x in summary.splitlines() if x.startswith(f"| {metric} |"))
        assert line.endswith("| — |"), line  # joint's column, the last one
    side = text.split("## Methods beside the multi-task reference")[1].split("## ")[0]
    assert "| method | n | final avg loss | final med | final code | avg forgetting, % |" in side
    assert "| joint (multi-task reference) | 2 | 1.8500 ± 0.1414 | 2.1000 ± 0.1414 " in side
    assert side.rstrip().endswith("| — | — | — |")
    lora = next(x for x in side.splitlines() if x.startswith("| lora |"))
    assert "—" not in lora and "n/a" not in lora


def test_the_forgetting_curves_draw_joint_as_a_dashed_line_at_its_final_value(
    sweep: Path,
) -> None:
    metrics = an.load_metrics(an.find_runs(sweep))
    fig = an.plot_forgetting_curves(metrics)
    panels = {ax.get_title().split(" ")[0]: ax for ax in fig.axes if ax.get_visible()}
    for domain, ax in panels.items():
        lines = {str(line.get_label()): line for line in ax.get_lines()}
        reference = next(v for k, v in lines.items() if k.startswith("joint (multi-task"))
        assert reference.get_linestyle() == "--"
        mean = np.mean([FINAL[s][domain] for s in (0, 1)])
        assert reference.get_ydata() == pytest.approx([mean, mean])  # horizontal
        curves = [k for k, v in lines.items() if isinstance(v, Line2D) and len(v.get_xdata()) > 2]
        assert curves == ["lora (n=2)"]  # lora is a curve over the stages; joint is not


def test_compare_gives_joint_its_losses_and_no_forgetting(sweep: Path) -> None:
    summary, paired = compare(sweep)
    rows = summary.set_index(["method", "metric"])
    assert rows.at[("joint", "final_avg_loss"), "n"] == 2
    assert rows.at[("joint", "avg_forgetting_pct"), "n"] == 0
    assert math.isnan(rows.at[("joint", "bwt"), "mean"])
    pairs = set(zip(paired.method_a, paired.metric, strict=True))
    assert ("lora", "final_avg_loss") in pairs and ("lora", "avg_forgetting_pct") not in pairs


def test_a_run_from_the_old_three_stage_joint_is_refused(tiny_cfg, tmp_path: Path) -> None:
    from continual.errors import ConfigError
    from continual.serve import load_run

    cfg = tiny_cfg("method=joint", "train.steps=1", "eval.prompted_k=0")
    run_experiment(cfg, tmp_path / "run")
    progress = {"completed_stage": 2, "trained": ["prose", "code"]}  # as the old joint wrote
    (tmp_path / "run" / "progress.json").write_text(json.dumps(progress))
    (tmp_path / "run" / "forgetting.csv").unlink()
    for call in (lambda: run_experiment(cfg, tmp_path / "run"),
                 lambda: load_run(tmp_path / "run")):  # fmt: skip
        with pytest.raises(ConfigError, match=r"finished the stages \['prose', 'code'\].*"
                           r"trains \['joint'\].*new hydra.run.dir"):  # fmt: skip
            call()
