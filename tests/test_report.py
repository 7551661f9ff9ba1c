"""continual.analysis and the report CLI on synthetic run directories (and one real sweep, slow).

``make_run`` writes a run directory the way ``continual.experiment.run_experiment`` does (same
tidy rows via ``tidy_rows``, ``gradient_stability`` and ``summary_metrics``), with made-up
losses. ``tests/fixtures/sweep`` was written by it: ``python -m tests.test_report``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from continual import analysis as an
from continual import metrics as clm
from continual.analysis import report
from continual.analysis import tables as runs_module
from continual.rundir import TIDY_COLUMNS, loss_matrix, tidy_rows
from tests.pairs_runs import pairs_metrics, write_pairs_sweep, write_run

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "sweep"
BASE_LOSS = {"med": 3.4, "legal": 3.2, "code": 2.5, "general": 3.3}
FORGET = {"lora": 0.35, "frozen_lora": 0.0, "crma": 0.2, "modular_crma": 0.002}


def make_run(
    run_dir: Path,
    method: str,
    seed: int,
    order: tuple[str, ...] = ("med", "code"),
    general: str | None = "general",
    steps: int = 6,
    status: str = "complete",
    stages_done: int | None = None,
    sequence: str = "med_code",
) -> Path:
    """Write a synthetic run directory (metrics.csv, train_log.csv, run_info.json, progress)."""
    rng = np.random.default_rng(1000 * seed + sum(map(ord, method)))
    run_dir.mkdir(parents=True, exist_ok=True)
    ids = {"run": run_dir.name, "sequence": sequence, "method": method, "model": "tiny_random",
           "seed": seed}  # fmt: skip
    domains = [*order, *([general] if general else [])]
    loss = {d: BASE_LOSS.get(d, 3.0) for d in domains}
    crma = "crma" in method

    def evaluate() -> dict[tuple[str, str], float]:
        values = {(d, "holdout_nll"): loss[d] for d in domains}
        if crma:
            diag = {"crma_row_sum_err": 1e-6, "crma_col_sum_err": 2e-6,
                    "crma_spectral_norm": 1.0, "crma_gate_mean": 0.01}  # fmt: skip
            values |= {("all", k): v for k, v in diag.items()}
        return values

    rows = tidy_rows(ids, 0, "base", evaluate())
    log_rows = []
    done = len(order) if stages_done is None else stages_done
    for stage, domain in enumerate(order[:done], start=1):
        for d in domains:  # earlier domains forget, the trained one improves
            if d == domain:
                loss[d] *= 0.7 + 0.02 * rng.standard_normal()
            else:
                loss[d] *= 1 + FORGET.get(method, 0.1) * (1 + 0.1 * rng.standard_normal())
        norms = rng.lognormal(0.0 if crma else 0.5, 0.3, steps)
        if not crma:
            norms[1] *= 8  # a spike
        values = evaluate()
        for key, value in clm.gradient_stability(norms.tolist()).items():
            values[(domain, f"grad_norm_{key}")] = value
        values[(domain, "train_loss_final")] = loss[domain] * 0.9
        values[(domain, "stage_seconds")] = 1.0
        rows += tidy_rows(ids, stage, domain, values)
        log_rows += [
            {"stage": stage, "domain": domain, "global_step": (stage - 1) * steps + i + 1,
             "step": i + 1, "loss": 3.0 - 0.1 * i, "grad_norm": float(n), "lr": 1e-3}
            for i, n in enumerate(norms)
        ]  # fmt: skip
    if done == len(order):  # the summary rows, exactly as the recipe appends them
        matrix = loss_matrix(pd.DataFrame(rows))
        summary = clm.summary_metrics(matrix, list(order), general=general)
        rows += [
            {**ids, "stage": len(order), "stage_domain": order[-1],
             "eval_domain": k.split("/")[1] if "/" in k else "all",
             "metric": k.split("/")[0], "value": float(v)}
            for k, v in summary.items()
        ]  # fmt: skip
    pd.DataFrame(rows, columns=TIDY_COLUMNS).to_csv(run_dir / "metrics.csv", index=False)
    if log_rows:
        pd.DataFrame(log_rows).to_csv(run_dir / "train_log.csv", index=False)
    info = {"status": status, "ids": ids}
    if status != "complete":
        info |= {"error": "KeyboardInterrupt: ", "completed_stage": done}
    (run_dir / "run_info.json").write_text(json.dumps(info, indent=1))
    (run_dir / "progress.json").write_text(
        json.dumps({"completed_stage": done, "trained": list(order[:done])})
    )
    return run_dir


def make_sweep(root: Path, methods=("lora", "crma"), seeds=(0, 1), incomplete: bool = True) -> Path:
    """A sweep directory: methods x seeds complete runs (+ one crashed run)."""
    for m in methods:
        for s in seeds:
            make_run(root / f"{m}_seed{s}", m, s)
    if incomplete:
        make_run(root / f"{methods[-1]}_seed9", methods[-1], 9, status="interrupted", stages_done=1)
    return root


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    return make_sweep(tmp_path / "sweep")


@pytest.fixture
def metrics(sweep: Path) -> pd.DataFrame:
    return an.load_metrics(an.find_runs(sweep))


# --------------------------------------------------------------------------- finding / loading


def test_find_runs_lists_complete_and_incomplete(sweep: Path) -> None:
    runs = an.find_runs(sweep)
    assert [p.name for p in runs] == ["crma_seed0", "crma_seed1", "lora_seed0", "lora_seed1"]
    (inc,) = an.find_incomplete_runs(sweep)
    assert (
        inc.path.name == "crma_seed9" and inc.status == "interrupted" and inc.completed_stage == 1
    )
    assert inc.error.startswith("KeyboardInterrupt")
    assert an.find_runs(sweep / "lora_seed0") == [sweep / "lora_seed0"]  # a single run dir
    assert an.find_runs(sweep.parent) == runs  # any folder above
    with pytest.raises(an.NoRunsError, match="does not exist"):
        an.find_runs(sweep / "nope")


def test_load_metrics_and_train_logs(sweep: Path, metrics: pd.DataFrame) -> None:
    assert list(metrics.columns) == [*TIDY_COLUMNS, "run_dir"]
    assert metrics["run_dir"].nunique() == 4
    logs = an.load_train_logs(an.find_runs(sweep))
    assert {"method", "seed", "run", "global_step", "grad_norm"} <= set(logs.columns)
    one = logs[logs["run_dir"] == str(sweep / "lora_seed0")]
    assert one["global_step"].tolist() == list(range(1, 13))  # 2 stages x 6 steps
    assert set(one["method"]) == {"lora"} and set(one["seed"]) == {0}


def test_structure_helpers(metrics: pd.DataFrame) -> None:
    assert an.domain_order(metrics) == ["med", "code", "general"]
    assert an.stage_labels(metrics) == {0: "base", 1: "after med", 2: "after code"}
    assert an.method_order(metrics) == ["lora", "crma"]


# --------------------------------------------------------------------------- aggregation


def test_loss_matrices_and_mean_matrix(metrics: pd.DataFrame) -> None:
    mats = an.loss_matrices(metrics)
    assert list(mats) == [("lora", 0), ("lora", 1), ("crma", 0), ("crma", 1)]
    assert list(mats[("lora", 0)].columns) == ["med", "code", "general"]
    mean, sd = an.mean_matrix(metrics, "lora")
    stack = np.stack([mats[("lora", 0)].to_numpy(), mats[("lora", 1)].to_numpy()])
    np.testing.assert_allclose(mean.to_numpy(), stack.mean(0))
    np.testing.assert_allclose(sd.to_numpy(), stack.std(0, ddof=1))
    assert mean.index.tolist() == [0, 1, 2]


def test_forgetting_summary_matches_metrics_module(metrics: pd.DataFrame) -> None:
    table = an.forgetting_summary(metrics)
    assert table[["method", "domain"]].values.tolist() == [
        ["lora", "med"], ["lora", "average"], ["crma", "med"], ["crma", "average"]
    ]  # fmt: skip
    mats = an.loss_matrices(metrics)
    pct = [clm.forgetting_pct(mats[("lora", s)], ["med", "code"])["med"] for s in (0, 1)]
    dnll = [clm.forgetting_abs(mats[("lora", s)], ["med", "code"])["med"] for s in (0, 1)]
    row = table.iloc[0]
    assert row["n"] == 2 and row["trained_at_stage"] == 1
    assert row["forgetting_pct_mean"] == pytest.approx(np.mean(pct))
    assert row["forgetting_pct_sd"] == pytest.approx(np.std(pct, ddof=1))
    assert row["delta_nll_mean"] == pytest.approx(np.mean(dnll))
    assert row["forgetting_pct_ci_low"] < row["forgetting_pct_mean"] < row["forgetting_pct_ci_high"]
    lora, crma = table.iloc[0], table.iloc[2]
    assert lora["forgetting_pct_mean"] > crma["forgetting_pct_mean"] > 0


def test_run_summaries_read_stored_rows_or_recompute(metrics: pd.DataFrame) -> None:
    stored = an.run_summaries(metrics)
    assert {"avg_forgetting_pct", "bwt", "forgetting_pct/med", "final_loss/code"} <= set(
        stored["metric"]
    )
    assert "crma_spectral_norm" in set(stored.loc[stored["method"] == "crma", "metric"])
    bare = metrics[~metrics["metric"].isin(runs_module._summary_names())]  # as if no summary rows
    recomputed = an.run_summaries(bare)
    key = ["run_dir", "metric"]
    merged = stored.merge(recomputed, on=key, suffixes=("_s", "_r"))
    assert len(merged) == len(stored)
    np.testing.assert_allclose(merged["value_s"], merged["value_r"])


def test_gradient_summary_pools_stages_and_seeds(metrics: pd.DataFrame) -> None:
    grad = an.gradient_summary(metrics)
    peak = grad[grad["metric"] == "peak"].set_index("method")
    assert peak.loc["lora", "n"] == 4  # 2 stages x 2 seeds
    assert peak.loc["lora", "mean"] > peak.loc["crma", "mean"]
    by_stage = an.gradient_summary(metrics, by_stage=True)
    assert set(by_stage["stage_domain"]) == {"med", "code"}
    assert (by_stage["n"] == 2).all()


def test_paired_differences(metrics: pd.DataFrame) -> None:
    diffs = an.paired_differences(metrics)
    (row,) = diffs.itertuples(index=False)
    assert (row.method_a, row.method_b, row.n, row.seeds) == ("lora", "crma", 2, [0, 1])
    assert row.mean > 0
    one_seed = metrics[metrics["seed"] == 0]
    assert an.paired_differences(one_seed).empty


def test_label_methods_and_duplicates(tmp_path: Path) -> None:
    make_run(tmp_path / "a" / "lora_seed0", "lora", 0)
    make_run(tmp_path / "b" / "lora_seed0", "lora", 0)  # the same run, repeated
    make_run(tmp_path / "c" / "lora_seed0", "lora", 0, order=("med", "legal", "code"),
             sequence="med_legal_code")  # fmt: skip
    metrics = an.load_metrics(an.find_runs(tmp_path))
    with pytest.raises(ValueError, match="several runs share"):
        an.loss_matrices(metrics)
    labelled = an.label_methods(metrics)
    assert set(labelled["method"]) == {"lora [med_code]", "lora [med_legal_code]"}
    kept, dropped = an.drop_duplicate_runs(labelled)
    assert len(dropped) == 1 and kept["run_dir"].nunique() == 2
    assert len(an.loss_matrices(kept)) == 2


# --------------------------------------------------------------------------- plots


def test_plots_have_labels(sweep: Path, metrics: pd.DataFrame) -> None:
    fig = an.plot_forgetting_curves(metrics)
    axes = [a for a in fig.axes if a.get_visible()]
    assert isinstance(fig, Figure) and len(axes) == 3
    assert all(a.get_ylabel() == an.NLL_LABEL for a in axes)
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["base", "after med", "after code"]
    assert len(axes[0].lines) >= 2 and fig.legends

    fig = an.plot_heatmaps(metrics)
    colorbar = fig.axes[-1]
    assert "holdout NLL (nats/token)" in colorbar.get_ylabel()
    assert [a.get_title() for a in fig.axes[:2]] == ["lora (n=2 seeds)", "crma (n=2 seeds)"]
    assert len(fig.axes[0].texts) == 9  # 3 stages x 3 domains annotated

    fig = an.plot_grad_norms(an.load_train_logs(an.find_runs(sweep)))
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and "gradient norm" in ax.get_ylabel()
    assert "CRMA peak" in fig.axes[1].get_title()
    with pytest.raises(ValueError, match="no accuracy rows"):
        an.plot_accuracy_curves(metrics)


def test_accuracy_curves_plot_percent_per_pairs_domain(tmp_path: Path) -> None:
    metrics = an.load_metrics(an.find_runs(write_pairs_sweep(tmp_path / "pairs")))
    fig = an.plot_accuracy_curves(metrics)
    axes = [a for a in fig.axes if a.get_visible()]
    assert [a.get_title() for a in axes] == ["legal (trained at stage 2)",
                                             "code (trained at stage 3)"]  # fmt: skip
    assert all(a.get_ylabel() == an.ACC_LABEL for a in axes)
    lora, frozen = axes[0].lines[:2]
    # legal, mean over seeds of 100 A[k]: (10 + 10) / 2, (10 + 20) / 2, (80 + 90) / 2, (60 + 50) / 2
    np.testing.assert_allclose(lora.get_ydata(), [10.0, 15.0, 85.0, 55.0])
    np.testing.assert_allclose(frozen.get_ydata(), [10.0, 10.0, 65.0, 65.0])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["lora (n=2)", "frozen_lora (n=2)"]


# --------------------------------------------------------------------------- report CLI


def test_report_writes_tables_and_figures(sweep: Path, capsys: pytest.CaptureFixture) -> None:
    assert report.main([str(sweep)]) == 0
    out = sweep / "report"
    names = {p.name for p in out.iterdir()}
    assert {"summary.csv", "report.md", "forgetting_curves.png", "heatmaps.png",
            "grad_norms.png"} <= names  # fmt: skip
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == ["method", "metric", "n", "mean", "sd", "ci_low", "ci_high"]
    row = summary[(summary.method == "lora") & (summary.metric == "avg_forgetting_pct")].iloc[0]
    assert row["n"] == 2 and row["ci_low"] < row["mean"] < row["ci_high"]
    text = (out / "report.md").read_text()
    for heading in ["## Runs found", "## Holdout loss matrix", "## Forgetting / drift",
                    "## Gradient stability", "## Paired differences", "## Published numbers",
                    "vendor-reported", "crma_seed9", "lora - crma", "+351.4%"]:  # fmt: skip
        assert heading in text, heading
    assert " ± " in text and "delta NLL" in text
    assert "report written to" in capsys.readouterr().out
    # running again (the report folder now exists inside the sweep) finds the same runs
    assert report.main([str(sweep), "--out", str(sweep.parent / "r2")]) == 0
    assert (sweep.parent / "r2" / "report.md").read_text().count("complete run(s)") == 1


def test_report_single_run_and_no_logs(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", "modular_crma", 3, order=("med", "legal", "code"))
    (run / "train_log.csv").unlink()
    out = report.build_report(run, tmp_path / "out")
    assert not (out / "grad_norms.png").exists() and (out / "heatmaps.png").exists()
    text = (out / "report.md").read_text()
    assert "drift" in text and "no two methods share" in text.lower()


def test_report_with_pairs_domains_shows_accuracy(tmp_path: Path) -> None:
    """The hand-built sweep of tests/pairs_runs.py (numbers worked out in
    tests/test_accuracy_metrics.py); every accuracy section, with its numbers."""
    sweep = write_pairs_sweep(tmp_path / "pairs")
    out = report.build_report(sweep, tmp_path / "out")
    text = (out / "report.md").read_text()
    assert (out / "accuracy_curves.png").is_file() and "![accuracy_curves]" in text
    assert "ROUGE-L" not in text  # no rougeL rows in these runs
    # accuracy matrix in %, lora after legal: legal (80 + 90) / 2, code (30 + 40) / 2
    assert "| after legal | 85.00 ± 7.07 | 35.00 ± 7.07 |" in text
    # forgetting of legal: 20 and 40 pts (25% and 44.4%), delta NLL 0.3 and 0.5 nats
    assert ("| lora | legal | 2 | 85.00 ± 7.07 | 55.00 ± 7.07 | 30.00 ± 14.14 | [-97.06, 157.06] "
            "| 34.72 ± 13.75 | 30.00 ± 14.14 | 0.4000 ± 0.1414 |") in text  # fmt: skip
    assert "| frozen_lora | average | 2 |  |  | 0.00 ± 0.00 | [0.00, 0.00] |" in text
    # summary metrics: BWT -20 and -40; FWT 5 and 15; ACC 75 and 65
    assert "| lora | 2 | -30.00 ± 14.14 | [-157.06, 97.06] |" in text
    assert "| lora | 2 | 10.00 ± 7.07 | [-53.53, 73.53] |" in text
    assert "| lora | 2 | 70.00 ± 7.07 | [6.47, 133.53] |" in text
    assert "| lora - frozen_lora | final_avg_accuracy | 2 | 5.00 ± 7.07 | [-58.53, 68.53] |" in text
    # prompting: legal 80 - 30 and 90 - 40 = 50 both seeds; code 40 and 30 (CI spans 0)
    assert (
        "| lora | legal | 2 | 10.00 ± 0.00 | 35.00 ± 7.07 | 85.00 ± 7.07 | 55.00 ± 7.07 "
        "| 50.00 ± 0.00 | [50.00, 50.00] | 20.00 ± 14.14 | fine-tuning beat prompting |"
    ) in text
    assert "| 35.00 ± 7.07 | [-28.53, 98.53] | 35.00 ± 7.07 | no clear difference" in text
    # the loss summary table keeps the loss metrics only; summary.csv holds both
    loss_part = text.split("## Final-stage summary metrics")[1].split("## Task accuracy")[0]
    assert "| bwt | -0.4000 ± 0.0707 (n=2) |" in loss_part and "acc_" not in loss_part
    summary = pd.read_csv(out / "summary.csv").set_index(["method", "metric"])
    assert summary.at[("lora", "acc_bwt"), "mean"] == pytest.approx(-30.0)
    assert summary.at[("lora", "acc_forgetting_pts/legal"), "mean"] == pytest.approx(30.0)
    assert summary.at[("lora", "finetune_minus_prompted_acc_pts/code"), "mean"] == 35.0


def test_report_accuracy_one_seed_and_zero_accuracy(tmp_path: Path) -> None:
    """legal at 0% after its own stage: forgetting % n/a (left out of the average %)."""
    metrics = pairs_metrics(
        "lora", 0, {"legal": [0.0, 0.0, 0.0, 0.5], "code": [0.2, 0.2, 0.3, 0.9]},
        {d: [2.0, 2.0, 1.0, 1.3] for d in ("med", "legal", "code")}, {"code": 0.95},
        rouge={"code": [0.1, 0.1, 0.2, 0.55]},
    )  # fmt: skip
    out = report.build_report(write_run(tmp_path / "run", metrics), tmp_path / "out")
    text = (out / "report.md").read_text()
    # 100 (0 - 0.5) = -50 pts (it improved), % undefined, 1 seed: no SD, no CI
    assert (
        "| lora | legal | 1 | 0.00 | 50.00 | -50.00 | n/a | n/a (n=0) | -50.00 | 0.3000 |" in text
    )
    assert "| acc_avg_forgetting_pct | average forgetting, % of A[s(d)][d]" in text
    assert "| lora | 0 | n/a | n/a |" in text  # the average % over no defined domain
    assert "| -5.00 | n/a | -5.00 | prompting higher (1 seed) |" in text  # code: 90 - 95
    rouge = text.split("ROUGE-L F1 of the generated answers")[1].split("##")[0]
    assert "| stage | code |" in rouge and "| after code | 55.00 |" in rouge


def test_text_only_report_has_no_accuracy_part(sweep: Path) -> None:
    out = report.build_report(sweep, sweep.parent / "out")
    text = (out / "report.md").read_text()
    assert "accuracy" not in text.lower() and not (out / "accuracy_curves.png").exists()


@pytest.mark.parametrize("study", ["lora_eval_depth", "protocol_comparison"])
def test_committed_reports_regenerate_unchanged(
    study: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """results/<study>/report.md and summary.csv, rebuilt from the committed runs (as
    experiments/collect_runs.py builds them), differ only in the generation time."""
    monkeypatch.chdir(ROOT)
    out = report.build_report(Path("results") / study / "runs", tmp_path / study)

    def undated(path: Path) -> str:
        return re.sub(r"generated [^)]* UTC", "generated <time>", path.read_text())

    committed = ROOT / "results" / study
    assert undated(out / "report.md") == undated(committed / "report.md")
    assert (out / "summary.csv").read_text() == (committed / "summary.csv").read_text()


def test_report_without_runs_exits_2_with_one_line(tmp_path: Path) -> None:
    make_run(tmp_path / "x", "lora", 0, status="running", stages_done=1)
    done = subprocess.run(
        [sys.executable, "-m", "continual.report", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("error: no complete run under") and done.stderr.count("\n") == 1
    assert "1 incomplete" in done.stderr


def test_committed_fixture_is_a_sweep() -> None:
    runs = an.find_runs(FIXTURE)
    assert len(runs) == 4 and len(an.find_incomplete_runs(FIXTURE)) == 1
    assert set(an.load_metrics(runs)["method"]) == {"lora", "crma"}


@pytest.mark.slow
def test_report_on_a_real_tiny_sweep(local_domains: dict[str, Path], tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable, "-m", "continual.run", "-m", "+sequence=med_code", "model=tiny_random",
        "eval.general_domain=null",
        "domain@domains.med=local_jsonl", f"domains.med.source.path={local_domains['prose']}",
        "domain@domains.code=local_jsonl", f"domains.code.source.path={local_domains['code']}",
        "domains.med.holdout_documents=8", "domains.code.holdout_documents=8",
        "train.steps=3", "train.batch_size=2", "train.block_len=32", "eval.holdout_blocks=2",
        "eval.batch_size=2", "eval.prompted_context_tokens=32", "logger=none",
        f"cache_dir={tmp_path / 'cache'}", "method=lora,crma", "seed=0,1",
        f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert report.main([str(sweep)]) == 0
    summary = pd.read_csv(sweep / "report" / "summary.csv")
    assert set(summary["method"]) == {"lora", "crma"} and (summary["n"] == 2).all()
    assert (sweep / "report" / "grad_norms.png").is_file()


if __name__ == "__main__":  # regenerate tests/fixtures/sweep
    shutil.rmtree(FIXTURE, ignore_errors=True)
    make_sweep(FIXTURE)
    print(f"wrote {FIXTURE}")
