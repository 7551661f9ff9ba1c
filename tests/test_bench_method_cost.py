"""experiments/bench_method_cost.py: the summary of hand-made runs, the order of the methods, and
a real two-method run on the tiny model (one child process per method)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_experiments import _check_provenance, _load

SMALL_DATA = [
    f"domains.{domain}.{key}={value}"
    for domain in ("med", "code")
    for key, value in (("max_documents", 40), ("holdout_documents", 8))
]


def test_summary_takes_medians_and_pairs_the_ratios_by_repeat(monkeypatch) -> None:
    module = _load("bench_method_cost", monkeypatch)
    runs = [
        {"method": "lora", "repeat": 0, "step_s": [1.0, 2.0, 3.0], "peak_rss_mb": 100.0},
        {"method": "ewc", "repeat": 0, "step_s": [3.0, 5.0, 4.0], "peak_rss_mb": 150.0},
        {"method": "ewc", "repeat": 1, "step_s": [3.0], "peak_rss_mb": 170.0},
        {"method": "lora", "repeat": 1, "step_s": [2.0, 2.0], "peak_rss_mb": 120.0},
    ]
    summary = module.summarise(runs)
    assert list(summary) == ["lora", "ewc"]
    lora, ewc = summary["lora"], summary["ewc"]
    assert lora["step_ratio"] == 1.0 and lora["step_ratios"] == [1.0, 1.0]
    assert lora["median_step_s"] == 2.0 and lora["peak_rss_mb"] == 110.0
    assert lora["rss_ratio"] == 1.0 and lora["extra_rss_mb"] == 0.0
    assert ewc["median_step_s"] == 3.5  # over all timed steps: 3, 3, 4, 5
    assert ewc["step_ratios"] == [2.0, 1.5]  # repeat 0: 4 / 2, repeat 1: 3 / 2
    assert ewc["step_ratio"] == 1.75
    assert ewc["peak_rss_mb"] == 160.0 and ewc["extra_rss_mb"] == 50.0
    assert ewc["rss_ratio"] == pytest.approx(160 / 110)
    assert ewc["cuda_peak_mb"] is None


def test_every_method_runs_early_and_late_and_lora_is_always_measured(monkeypatch) -> None:
    module = _load("bench_method_cost", monkeypatch)
    methods = ["a", "b", "c", "d", "e", "f"]
    orders = [module.rotation(methods, r, 3) for r in range(3)]
    assert [order[0] for order in orders] == ["a", "c", "e"]
    assert all(sorted(order) == methods for order in orders)
    assert module.parse_methods(["ewc,lwf"]) == ["lora", "ewc", "lwf"]


def test_an_unknown_method_is_refused_with_the_known_ones(monkeypatch, capsys) -> None:
    module = _load("bench_method_cost", monkeypatch)
    with pytest.raises(SystemExit) as exit_:
        module.main(["--methods", "lora,nope"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unknown method(s) nope" in err and "modular_crma" in err and "olora" in err


def test_bench_times_two_methods_in_their_own_processes(tmp_path: Path, monkeypatch) -> None:
    module = _load("bench_method_cost", monkeypatch)
    out = tmp_path / "bench.json"
    args = [
        "--model", "tiny_random", "--methods", "lora", "ewc", "--repeats", "1", "--steps", "2",
        "--warmup", "1", "--stage1-steps", "1", "--batch", "4", "--block-len", "32",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
        *[arg for override in SMALL_DATA for arg in ("--override", override)],
    ]  # fmt: skip
    result = module.main(args)
    _check_provenance(result, out)
    methods = result["methods"]
    assert list(methods) == ["lora", "ewc"]
    assert methods["lora"]["step_ratio"] == 1.0 and methods["lora"]["rss_ratio"] == 1.0
    for row in methods.values():
        assert row["median_step_s"] > 0 and row["peak_rss_mb"] > 0
        assert row["settings"]["lora"]["r"] == 16 and row["train"]["batch_size"] == 4
    assert methods["ewc"]["settings"]["ewc"]["weight"] > 0
    assert methods["ewc"]["extra_terms"]["ewc"] > 0  # the Fisher of stage 1 is in the penalty
    assert [len(run["step_s"]) for run in result["runs"]] == [2, 2]
    assert result["stages"] == ["med", "code"] and result["device"] == "cpu"
