"""The vendor side-by-side table (continual/analysis/vendor.py, experiments/vendor_table.py):
our values and 95% CIs, and the verdict rule, on hand-made runs (no model is run)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from continual.analysis.published import PUBLISHED, PUBLISHED_NUMBERS, PublishedNumber
from continual.analysis.vendor import Estimate, Setting, estimate, reasons, side_by_side, verdict
from continual.metrics.stats import mean_sd_ci
from continual.rundir import TIDY_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
FIVE = ("med", "legal", "fin", "code", "sci")
SEEDS = (0, 42, 1234)
MISTRAL = Setting("pairs_med_legal_fin_code_sci", "mistral_7b", FIVE, ((500, 100),), ("3",))
MISTRAL_SETTING = "mistral_7b; med -> legal -> fin -> code -> sci; 500 train / 100 holdout"
BY_QUANTITY = {(n.quantity, n.point): n for n in PUBLISHED_NUMBERS}


def chain(method: str, seed: int, forgetting: float, own: float | list[float] = 0.15,
          order: tuple[str, ...] = FIVE, model: str = "mistral_7b",
          sequence: str = MISTRAL.sequence, peak: float = 10.0) -> pd.DataFrame:  # fmt: skip
    """One run's tidy rows: every domain at 2.0 nats before its stage, ``own[i]`` right after it,
    rising linearly to ``own[i] * (1 + forgetting / 100)`` by the last stage (so every earlier
    domain forgets ``forgetting`` %); ``grad_norm_peak`` = ``peak`` at every stage."""
    own = [own] * len(order) if isinstance(own, float) else own
    last = len(order)
    run = f"{method}_seed{seed}"
    ids = {"run": run, "sequence": sequence, "method": method, "model": model, "seed": seed,
           "run_dir": f"{sequence}/{model}/{run}"}  # fmt: skip
    rows = []
    for stage, label in enumerate(["base", *order]):
        for i, domain in enumerate(order):
            if stage <= i:
                value = 2.0
            else:  # trained at stage i + 1
                grown = (stage - i - 1) / (last - i - 1) if i < last - 1 else 0.0
                value = own[i] * (1 + forgetting / 100 * grown)
            rows.append({**ids, "stage": stage, "stage_domain": label, "eval_domain": domain,
                         "metric": "holdout_nll", "value": value})  # fmt: skip
        if stage:
            rows.append({**ids, "stage": stage, "stage_domain": label, "eval_domain": label,
                         "metric": "grad_norm_peak", "value": peak})  # fmt: skip
    return pd.DataFrame(rows)


def sweep(forgetting: dict[str, list[float]], **kwargs) -> pd.DataFrame:
    return pd.concat(
        [chain(m, s, f, **kwargs) for m, values in forgetting.items()
         for s, f in zip(SEEDS, values, strict=True)],
        ignore_index=True,
    )  # fmt: skip


def test_published_rows_are_the_source_notes_and_carry_numbers() -> None:
    assert len(PUBLISHED) == len(PUBLISHED_NUMBERS) == 10
    assert PUBLISHED[1][3] == "+42.96% ± 5.5 (38.1, 41.7, 49.0)"
    for number in PUBLISHED_NUMBERS:
        if number.claim == "range":
            assert number.low < number.high
        else:
            assert number.point is not None and math.isfinite(number.point)
    # the 4-domain drift averages the domains before the last, as the forgetting's 351 does
    assert BY_QUANTITY[("modular_drift", -0.133)].order == ("med", "legal", "code", "fin")
    assert BY_QUANTITY[("peak_grad_ratio", 0.4733)].point == pytest.approx(5.75 / 12.15, abs=1e-4)


@pytest.mark.parametrize(
    ("claim", "ours", "expected"),
    [
        ({"claim": "value", "point": 1.0}, (0.5, 1.5), "agrees"),
        ({"claim": "value", "point": 1.0}, (1.2, 1.5), "disagrees"),
        ({"claim": "range", "low": 39.0, "high": 84.0}, (30.0, 40.0), "agrees"),
        ({"claim": "range", "low": 39.0, "high": 84.0}, (-1.0, 9.0), "disagrees"),
        ({"claim": "sign", "point": 6.1}, (0.5, 2.0), "agrees"),
        ({"claim": "sign", "point": 6.1}, (-2.0, -0.5), "disagrees"),
        ({"claim": "sign", "point": 6.1}, (-0.5, 2.0), "inconclusive (CI spans 0)"),
    ],
)
def test_verdict_rule(claim: dict, ours: tuple[float, float], expected: str) -> None:
    number = PublishedNumber("s", "m", "x", "v", "src", "naive_forgetting", **claim)
    low, high = ours
    assert verdict(number, Estimate(3, (low + high) / 2, low, high)) == expected
    assert verdict(number, Estimate(1, low, math.nan, math.nan)) == "undetermined (n = 1)"
    assert verdict(number, None) == "no runs"
    assert verdict(number, Estimate(3, low, low, high), ["model x"]) == "not comparable: model x"


def test_reasons_name_every_difference_from_the_vendor_setting() -> None:
    headline = PUBLISHED_NUMBERS[0]  # Mistral-7B, 5 domains, 500/100, holdout loss ~0.15
    assert reasons(headline, MISTRAL, 0.15) == []
    assert reasons(headline, MISTRAL, 0.29) == []  # within a factor 2 of 0.15
    embedded = Setting("pairs_med_legal_code", "smollm2_135m", ("med", "legal", "code"),
                       ((48, 24),))  # fmt: skip
    why = reasons(headline, embedded, 0.42)
    assert len(why) == 4
    assert "model smollm2_135m, vendor mistral_7b" in why
    assert any("med -> legal -> code, vendor med -> legal -> fin -> code -> sci" in w for w in why)
    assert any("48/24, vendor 500/100" in w for w in why)
    assert any("0.420, vendor ~0.15" in w for w in why)
    tinyllama = PUBLISHED_NUMBERS[5]  # 4 domains, order not published
    assert reasons(tinyllama, embedded, 0.15) == ["model smollm2_135m, vendor tinyllama_1b",
                                                  "3 domains, vendor 4"]  # fmt: skip


def test_our_values_and_cis_from_hand_made_runs() -> None:
    lora, drift = [40.0, 42.0, 46.0], [-0.05, -0.10, -0.30]
    metrics = sweep({"lora": lora, "modular_crma": drift})
    for quantity, values in [("naive_forgetting", lora), ("modular_drift", drift)]:
        ours, s = estimate(quantity, metrics), mean_sd_ci(values)
        assert (ours.n, ours.unit) == (3, "seeds")
        assert ours.mean == pytest.approx(s["mean"]) and ours.low == pytest.approx(s["ci_low"])
        assert ours.high == pytest.approx(s["ci_high"])
    assert estimate("modular_vs_frozen", metrics) is None  # no frozen_lora runs


def test_modular_vs_frozen_is_paired_by_seed() -> None:
    advantage = {0: 0.2, 42: 0.25, 1234: 0.3}  # % lower own-stage loss of modular, per seed
    frozen = pd.concat([chain("frozen_lora", s, 0.0) for s in SEEDS])
    modular = pd.concat([chain("modular_crma", s, -0.1, own=0.15 * (1 - a / 100))
                         for s, a in advantage.items()])  # fmt: skip
    ours = estimate("modular_vs_frozen", pd.concat([frozen, modular], ignore_index=True))
    # final average loss over the 5 domains: 4 drifted by -0.1%, the last one not
    final = {s: 0.15 * (1 - a / 100) * (4 * 0.999 + 1) / 5 for s, a in advantage.items()}
    expected = mean_sd_ci([100 * (0.15 - f) / 0.15 for f in final.values()])
    assert ours.n == 3 and ours.mean == pytest.approx(expected["mean"])
    assert (ours.low, ours.high) == pytest.approx((expected["ci_low"], expected["ci_high"]))
    assert verdict(PUBLISHED_NUMBERS[2], ours) == "disagrees"  # 1.99 lies above the CI


def test_gradient_ratio_and_first_stage_gain_pair_seed_and_stage() -> None:
    lora = pd.concat([chain("lora", s, 40.0, peak=10.0) for s in SEEDS])
    peaks = zip(SEEDS, [5.0, 6.0, 7.0], strict=True)
    crma = pd.concat([chain("crma", s, 40.0, own=[0.14 - 0.001 * i] + [0.15] * 4, peak=p)
                      for i, (s, p) in enumerate(peaks)])  # fmt: skip
    metrics = pd.concat([lora, crma], ignore_index=True)
    ratio = estimate("peak_grad_ratio", metrics)
    logs = mean_sd_ci([math.log(p / 10) for p in [5.0, 6.0, 7.0] for _ in FIVE])
    assert (ratio.n, ratio.unit) == (15, "seed x stage pairs")
    assert ratio.mean == pytest.approx(math.exp(logs["mean"]))
    assert ratio.low == pytest.approx(math.exp(logs["ci_low"]))
    reduction = estimate("peak_grad_reduction", metrics)
    assert reduction.mean == pytest.approx(100 * (1 - ratio.mean))
    assert (reduction.low, reduction.high) == pytest.approx((100 * (1 - ratio.high),
                                                             100 * (1 - ratio.low)))  # fmt: skip
    gain = estimate("single_task_gain", metrics)
    expected = mean_sd_ci([100 * (0.15 - (0.14 - 0.001 * i)) / 0.15 for i in range(3)])
    assert gain.n == 3 and gain.mean == pytest.approx(expected["mean"])


def test_side_by_side_gives_verdicts_only_where_settings_compare() -> None:
    metrics = pd.concat([
        sweep({"lora": [40.0, 42.0, 46.0], "modular_crma": [-0.05, -0.10, -0.30],
               "frozen_lora": [0.0, 0.0, 0.0], "ewc": [30.0, 31.0, 32.0]}),
        pd.concat([chain("crma", s, 40.0, peak=p) for s, p in zip(SEEDS, [5.0, 6.0, 7.0],
                                                                    strict=True)]),
    ], ignore_index=True)  # fmt: skip
    table = side_by_side(metrics, {(MISTRAL.sequence, MISTRAL.model): MISTRAL})
    assert len(table) == len(PUBLISHED_NUMBERS)
    keys = zip(table["setting"], table["metric"], strict=True)
    got = dict(zip(keys, table["verdict"], strict=True))
    headline = PUBLISHED_NUMBERS[0].setting
    assert got[(headline, "backbone drift")] == "agrees"  # -0.17 inside [-0.48, +0.18]
    assert got[("same", "forgetting")] == "agrees"  # 42.96 inside [35.1, 50.3]
    assert got[("3 runs", "peak grad-norm reduction")] == "agrees"  # ~40% overlaps 39-84%
    four = PUBLISHED_NUMBERS[3].setting
    assert got[(four, "drift per domain")].startswith("not comparable: domains")
    assert got[("same", "forgetting per domain")].startswith("not comparable: domains")
    assert "model mistral_7b, vendor tinyllama_1b" in got[("TinyLlama-1.1B-Chat, 4 domains",
                                                           "drift")]  # fmt: skip
    assert got[("literature", "forgetting (vendor's table)")].startswith(
        "not comparable: a literature figure"
    )
    row = table[table["metric"] == "backbone drift"].iloc[0]
    assert row["ours"].startswith("-0.15% [") and row["ours"].endswith("(n = 3 seeds)")
    assert row["our_setting"] == MISTRAL.describe() == MISTRAL_SETTING


def test_an_embedded_study_is_never_compared_with_the_vendor() -> None:
    order = ("med", "legal", "code")
    kwargs = {"order": order, "model": "smollm2_135m", "sequence": "pairs_med_legal_code",
              "own": 0.4}  # fmt: skip
    metrics = sweep({m: [5.0, 6.0, 7.0] for m in ("lora", "frozen_lora", "modular_crma", "crma",
                                                  "ewc")}, **kwargs)  # fmt: skip
    embedded = Setting("pairs_med_legal_code", "smollm2_135m", order, ((48, 24),), ("3",))
    table = side_by_side(metrics, {("pairs_med_legal_code", "smollm2_135m"): embedded})
    assert all(v.startswith("not comparable: ") for v in table["verdict"]), table["verdict"]
    assert table["ours"].str.contains(r"\(n = ").all()


def _write_run(root: Path, run: pd.DataFrame, setting: Setting, epochs: int = 3) -> Path:
    first = run.iloc[0]
    run_dir = root / str(first["run"])
    run_dir.mkdir(parents=True)
    run[TIDY_COLUMNS].to_csv(run_dir / "metrics.csv", index=False)
    ids = {k: (int(first[k]) if k == "seed" else str(first[k]))
           for k in ("run", "sequence", "method", "model", "seed")}  # fmt: skip
    data = {d: {"train_examples": 500, "holdout_examples": 100} for d in setting.order}
    info = {"status": "complete", "ids": ids, "data": data}
    (run_dir / "run_info.json").write_text(json.dumps(info))
    config = {"sequence": {"name": setting.sequence, "order": list(setting.order)},
              "model": {"name": setting.model},
              "train": {"epochs": epochs, "steps": 20}}  # fmt: skip
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    log = [{"stage": k, "domain": d, "global_step": 4 * (k - 1) + j, "step": j,
            "loss": 1.0 if j <= 2 else 0.12, "grad_norm": 1.0, "lr": 1e-4, "epoch": 1 + (j > 2)}
           for k, d in enumerate(setting.order, start=1) for j in (1, 2, 3, 4)]  # fmt: skip
    pd.DataFrame(log).to_csv(run_dir / "train_log.csv", index=False)
    return run_dir


def test_the_script_reads_run_directories_and_writes_markdown(tmp_path: Path, capsys) -> None:
    for seed, f in zip(SEEDS, [40.0, 42.0, 46.0], strict=True):
        _write_run(tmp_path / "runs", chain("lora", seed, f), MISTRAL)
    script = ROOT / "experiments" / "vendor_table.py"
    spec = importlib.util.spec_from_file_location("vendor_table", script)
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)
        out = tmp_path / "table.md"
        assert module.main([str(tmp_path / "runs"), "--out", str(out)]) == 0
    finally:
        sys.path[:] = saved
    text = out.read_text()
    assert text == capsys.readouterr().out
    row = next(
        line for line in text.splitlines() if "| naive sequential LoRA | forgetting |" in line
    )
    assert row.endswith(f"| {MISTRAL_SETTING} | agrees |")
    regime = next(line for line in text.splitlines() if "| lora | 1 (med) |" in line)
    assert "| 3 | 3 | 0.120 ± 0.000 | 0.150 ± 0.000 |" in regime  # last epoch: steps 3-4
    assert "| modular CRMA | backbone drift |" in text and "| no runs |" in text
    assert module.main([str(tmp_path / "nowhere")]) == 2
