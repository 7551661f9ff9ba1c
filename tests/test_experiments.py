"""The benchmark scripts in experiments/: they parse their options, and the JSON they write
records where the numbers came from (commit, dirty tree, package versions, machine)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
BENCHES = [
    "bench_crma_step_time",
    "bench_eval_throughput",
    "bench_malloc_retain",
    "bench_train_throughput",
]


def _load(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the scripts put the checkout first
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", BENCHES)
def test_bench_script_parses_help(name: str, monkeypatch, capsys) -> None:
    module = _load(name, monkeypatch)
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--out" in out and "--model" in out


def _check_provenance(result: dict, written: Path) -> None:
    assert json.loads(written.read_text()) == json.loads(json.dumps(result))
    assert re.fullmatch(r"[0-9a-f]{40}", result["git_sha"])  # the tests run in a git checkout
    assert isinstance(result["git_dirty"], bool)
    packages = result["packages"]
    assert packages["torch"] and packages["transformers"] and packages["peft"]
    machine = result["machine"]
    assert machine["platform"] and machine["python"] and machine["cpu_count"] >= 1
    assert "torch_threads" in machine and "cuda" in machine


def test_crma_step_time_bench_records_provenance(tmp_path: Path, monkeypatch) -> None:
    module = _load("bench_crma_step_time", monkeypatch)
    out = tmp_path / "bench.json"
    args = [
        "--model", "tiny_random", "--repeats", "1", "--warmup", "0", "--batch", "2",
        "--block-len", "16", "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
    ]  # fmt: skip
    result = module.main(args)
    assert result["median_step_s"]["lora"] > 0 and result["crma_parameters"] > 0
    _check_provenance(result, out)


def test_eval_throughput_bench_records_provenance(tmp_path: Path, monkeypatch) -> None:
    module = _load("bench_eval_throughput", monkeypatch)
    monkeypatch.setenv("CONTINUAL_CACHE", str(tmp_path / "cache"))
    build_domain = module.build_domain

    def few_documents(name, cfg, *args, **kwargs):  # the default domain, cut to seconds
        small = {k: v for k, v in {"max_documents": 40, "holdout_documents": 8}.items() if k in cfg}
        return build_domain(name, OmegaConf.merge(cfg, small), *args, **kwargs)

    monkeypatch.setattr(module, "build_domain", few_documents)
    out = tmp_path / "bench.json"
    args = [
        "--model", "tiny_random", "--blocks", "2", "--block-len", "32", "--batch-size", "2",
        "--repeats", "1", "--out", str(out),
    ]  # fmt: skip
    result = module.main(args)
    assert [row["method"] for row in result["rows"]][0] == "continual.holdout_nll"
    _check_provenance(result, out)
    assert result["machine"]["device"] == "cpu"


def test_crma_pilot_decision_rule_picks_the_largest_stable_bypass() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
    from crma_pilot_decision import decide, variant_table

    rows = []
    for method, bypass, own_nll, spikes in [("crma_g001", 0.001, 1.00, 0),
                                            ("crma_g1", 0.05, 1.01, 0),
                                            ("crma_big", 0.20, 1.30, 0),
                                            ("crma_spiky", 0.30, 1.00, 2)]:  # fmt: skip
        for stage, domain in ((1, "a"), (2, "b")):
            rows += [(method, stage, domain, domain, "holdout_nll", own_nll),
                     (method, stage, domain, domain, "grad_norm_n_spikes", spikes / 2)]  # fmt: skip
        rows += [(method, 2, "b", "all", "crma_bypass_own_nll_min", bypass),
                 (method, 2, "b", "all", "crma_bypass_own_nll", bypass),
                 (method, 2, "b", "all", "crma_gate_mean", 0.5)]  # fmt: skip
    metrics = pd.DataFrame(
        rows, columns=["method", "stage", "stage_domain", "eval_domain", "metric", "value"]
    )
    table = variant_table(metrics, "crma_g001")
    by_method = table.set_index("method")
    assert by_method.loc["crma_big", "own_nll_vs_reference_max"] == pytest.approx(0.30)
    assert not by_method.loc["crma_spiky", "stable"] and by_method.loc["crma_g1", "stable"]
    assert decide(table, max_nll_increase=0.02) == "crma_g1"
    assert decide(table, max_nll_increase=0.5) == "crma_big"


def test_cl_pilot_decision_picks_the_lowest_finite_final_loss_per_method() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
    from cl_pilot_decision import decide, variant_table

    rows = []
    for method, final, nonfinite in [("ewc_w100", 2.50, 0), ("ewc_w1000", 2.40, 0),
                                     ("ewc_w10000", 2.30, 3), ("lwf_w1", 2.60, 0),
                                     ("lwf_w4", 2.70, 0)]:  # fmt: skip
        for stage, domain in ((1, "a"), (2, "b")):
            rows += [(method, stage, domain, domain, "grad_norm_n_nonfinite", nonfinite / 2),
                     (method, stage, domain, domain, "grad_norm_n_spikes", 0)]  # fmt: skip
        rows += [(method, 2, "b", "all", "final_avg_loss", final),
                 (method, 2, "b", "all", "avg_delta_nll", 0.1),
                 (method, 1, "a", "all", "final_avg_loss", 9.0)]  # fmt: skip
    metrics = pd.DataFrame(
        rows, columns=["method", "stage", "stage_domain", "eval_domain", "metric", "value"]
    )
    table = variant_table(metrics)
    assert table.loc["ewc_w1000", "final_avg_loss"] == pytest.approx(2.40)  # the last stage's
    assert not table.loc["ewc_w10000", "finite"] and table.loc["ewc_w100", "finite"]
    assert list(table["family"].unique()) == ["ewc", "lwf"]
    assert decide(table) == {"ewc": "ewc_w1000", "lwf": "lwf_w1"}


def test_cl_baselines_table_reports_methods_cost_and_paired_differences(capsys) -> None:
    sys.path.insert(0, str(ROOT / "experiments"))
    from cl_baselines_table import main

    runs = ROOT / "results" / "lora_vs_crma_default" / "runs"  # lora, crma, modular_crma x 3
    cost = ROOT / "results" / "bench_method_cost.json"
    assert main([str(runs), "--cost", str(cost)]) == 0
    first, second = capsys.readouterr().out.strip().split("\n\n")
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in first.splitlines()[2:]}
    assert list(rows) == ["lora", "crma", "modular_crma"]
    assert rows["crma"][1] == "3" and rows["crma"][-2] == "1.03x"  # the bench's step ratio
    finals = {}
    for run in sorted(runs.iterdir()):
        m = pd.read_csv(run / "metrics.csv")
        last = m[(m["metric"] == "final_avg_loss") & (m["stage"] == m["stage"].max())]
        finals[run.name] = float(last["value"].iloc[0])
    mean = sum(finals[f"modular_crma_seed{s}"] - finals[f"lora_seed{s}"] for s in range(3)) / 3
    paired = [line for line in second.splitlines() if line.startswith("| modular_crma |")]
    assert paired and paired[0].split(" | ")[1].startswith(f"{mean:+.4f} [")
    assert main([str(runs), "--reference", "ewc"]) == 2
    assert "not among the runs' methods" in capsys.readouterr().err
