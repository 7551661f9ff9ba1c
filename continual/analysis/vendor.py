"""Our runs beside the vendor's published numbers: one row per published number
(:data:`~continual.analysis.published.PUBLISHED_NUMBERS`) with our value, its 95% CI and a
verdict; ``experiments/vendor_table.py`` prints it.

Our value (the published row's ``quantity``), from the runs of one setting (a sequence on a
model); over seeds: mean and two-sided Student-t 95% CI (:mod:`continual.metrics.stats`):

* ``naive_forgetting``, ``modular_drift``, ``ewc_forgetting``: the average forgetting of
  ``lora``, ``modular_crma`` (there it is the backbone drift) and ``ewc``,
  ``avg_forgetting_pct`` = ``100 (L[T][i] - L[i][i]) / L[i][i]`` averaged over the domains
  trained before the last stage (the vendor's definition);
* ``modular_vs_frozen``: per seed ``100 (F_frozen - F_modular) / F_frozen``, ``F`` the final
  average holdout loss over the trained domains (``final_avg_loss``); > 0: modular is lower;
* ``peak_grad_ratio``: the per-stage peak global gradient norm (before clipping) of ``crma``
  over ``lora``'s, paired by seed and stage: the geometric mean ratio, its CI the Student-t
  interval of the mean log ratio (:func:`continual.analysis.crma_sections.gradient_ratios`);
  ``peak_grad_reduction`` = ``100 (1 - ratio)`` in %;
* ``single_task_gain``: each chain's first stage is a single-task fine-tune; per seed
  ``100 (L_lora[1][d] - L_crma[1][d]) / L_lora[1][d]`` for that domain ``d`` (> 0: CRMA lower).

Verdict rule (fixed before any vendor-protocol run):

1. **not comparable**, with the reasons, when the published row carries a reason of its own, or
   our setting differs from the vendor's in the model, the domain order or number of domains,
   or the examples per domain (where published), or - for rows the vendor trained to a holdout
   loss near :data:`~continual.analysis.published.VENDOR_LOSS` - our mean holdout loss right
   after each domain's own stage lies outside :data:`LOSS_BAND` (a factor 2: relative
   forgetting scales with 1 / that loss);
2. otherwise, with a CI (2 or more values): a ``value`` claim **agrees** when the published value
   lies inside our 95% CI and **disagrees** when it does not; a ``range`` claim agrees when our
   CI overlaps the range and disagrees when it does not; a ``sign`` claim agrees when our CI
   excludes 0 on the claimed side, disagrees when it excludes 0 on the other side, and is
   **inconclusive** when it spans 0;
3. **undetermined** with fewer than 2 values; **no runs** when no setting ran the methods.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from continual.analysis.crma_sections import gradient_ratios
from continual.analysis.markdown import fmt_mean_sd, md_table
from continual.analysis.published import PUBLISHED_NUMBERS, VENDOR_LOSS, PublishedNumber
from continual.analysis.runs import trained_order, without_references
from continual.analysis.tables import run_summaries
from continual.metrics.stats import mean_sd_ci

__all__ = [
    "LOSS_BAND", "QUANTITIES", "Estimate", "Setting", "estimate", "own_stage_loss", "reasons",
    "regime_table", "settings_from_runs", "side_by_side", "vendor_markdown", "verdict",
]  # fmt: skip

LOSS_BAND = (VENDOR_LOSS / 2, VENDOR_LOSS * 2)
# quantity -> the methods it needs (the first is the one whose loss level is checked first)
QUANTITIES: dict[str, tuple[str, ...]] = {
    "naive_forgetting": ("lora",),
    "modular_drift": ("modular_crma",),
    "ewc_forgetting": ("ewc",),
    "modular_vs_frozen": ("modular_crma", "frozen_lora"),
    "peak_grad_ratio": ("crma", "lora"),
    "peak_grad_reduction": ("crma", "lora"),
    "single_task_gain": ("crma", "lora"),
}
_RATIOS = ("peak_grad_ratio",)


@dataclass(frozen=True)
class Setting:
    """One group of our runs: a sequence on a model, with what its files say about the data."""

    sequence: str
    model: str
    order: tuple[str, ...]
    examples: tuple[tuple[int, int], ...] = ()  # distinct (training, holdout) examples a domain
    epochs: tuple[str, ...] = ()  # distinct train.epochs (or "steps N")

    def describe(self) -> str:
        parts = [self.model, " -> ".join(self.order)]
        if self.examples:
            parts.append(", ".join(f"{t} train / {h} holdout" for t, h in self.examples))
        return "; ".join(parts)


@dataclass(frozen=True)
class Estimate:
    """Our value of a quantity: mean and 95% CI over ``n`` values (seeds, or seed x stage)."""

    n: int
    mean: float
    low: float
    high: float
    unit: str = "seeds"


def _per_seed(runs: pd.DataFrame, method: str, metric: str) -> pd.Series:
    rows = runs[(runs["method"] == method) & (runs["metric"] == metric)]
    return rows.set_index("seed")["value"].astype(float).dropna()


def _from_values(values: Sequence[float], unit: str = "seeds") -> Estimate:
    s = mean_sd_ci(list(values))
    return Estimate(int(s["n"]), s["mean"], s["ci_low"], s["ci_high"], unit)


def estimate(quantity: str, metrics: pd.DataFrame) -> Estimate | None:
    """Our value of ``quantity`` (:data:`QUANTITIES`) from one setting's tidy metrics (as
    :func:`~continual.analysis.runs.load_metrics` gives them); None without the methods."""
    if quantity not in QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r}; known: {', '.join(QUANTITIES)}")
    methods = QUANTITIES[quantity]
    if not set(methods) <= set(metrics["method"].astype(str)):
        return None
    if quantity in ("peak_grad_ratio", "peak_grad_reduction"):
        pair = metrics[metrics["method"].isin(methods)]
        ratios = gradient_ratios(pair, reference="lora")
        row = ratios[(ratios["method"] == "crma") & (ratios["metric"] == "grad_norm_peak")]
        if row.empty:
            return None
        r = row.iloc[0]
        if quantity == "peak_grad_ratio":
            return Estimate(int(r.n), r.ratio, r.ci_low, r.ci_high, "seed x stage pairs")
        return Estimate(int(r.n), 100 * (1 - r.ratio), 100 * (1 - r.ci_high),
                        100 * (1 - r.ci_low), "seed x stage pairs")  # fmt: skip
    if quantity == "single_task_gain":
        first = metrics[(metrics["metric"] == "holdout_nll") & (metrics["stage"] == 1)]
        first = first[first["eval_domain"] == first["stage_domain"]]
        crma, lora = (first[first["method"] == m].set_index("seed")["value"] for m in methods)
        both = pd.concat([crma.rename("c"), lora.rename("l")], axis=1, join="inner").dropna()
        return _from_values(100 * (both["l"] - both["c"]) / both["l"])
    runs = run_summaries(metrics)
    if quantity == "modular_vs_frozen":
        mod, frozen = (_per_seed(runs, m, "final_avg_loss") for m in methods)
        both = pd.concat([mod.rename("m"), frozen.rename("f")], axis=1, join="inner").dropna()
        return _from_values(100 * (both["f"] - both["m"]) / both["f"])
    return _from_values(_per_seed(runs, methods[0], "avg_forgetting_pct").tolist())


def own_stage_loss(metrics: pd.DataFrame, methods: Sequence[str]) -> float:
    """Mean holdout loss of each domain right after its own stage, ``L[i][i]``, over the
    ``methods``' runs and stages (NaN without such rows)."""
    rows = metrics[(metrics["metric"] == "holdout_nll") & (metrics["stage"] >= 1)]
    rows = rows[(rows["eval_domain"] == rows["stage_domain"]) & rows["method"].isin(methods)]
    return float(rows["value"].mean()) if len(rows) else math.nan


def reasons(number: PublishedNumber, setting: Setting, own_loss: float) -> list[str]:
    """Why ``setting`` is not comparable with ``number`` (rule 1 of the module docstring)."""
    why = [number.not_comparable] if number.not_comparable else []
    if number.model and setting.model != number.model:
        why.append(f"model {setting.model}, vendor {number.model}")
    if number.order and setting.order != number.order:
        why.append(f"domains {' -> '.join(setting.order)}, vendor {' -> '.join(number.order)}")
    elif number.n_domains and len(setting.order) != number.n_domains:
        why.append(f"{len(setting.order)} domains, vendor {number.n_domains}")
    if number.examples and set(setting.examples) != {number.examples}:
        ours = ", ".join(f"{t}/{h}" for t, h in setting.examples) or "not recorded"
        vendor = "/".join(map(str, number.examples))
        why.append(f"examples a domain (train/holdout) {ours}, vendor {vendor}")
    low, high = LOSS_BAND
    if number.loss_regime and not low <= own_loss <= high:
        why.append(f"holdout loss after own stage {own_loss:.3f}, vendor ~{VENDOR_LOSS}")
    return why


def verdict(number: PublishedNumber, ours: Estimate | None, why: Sequence[str] = ()) -> str:
    """The verdict of the module docstring's rule for one published number."""
    if ours is None:
        return "no runs"
    if why:
        return "not comparable: " + "; ".join(why)
    if ours.n < 2 or math.isnan(ours.low):
        return f"undetermined (n = {ours.n})"
    if number.claim == "value":
        return "agrees" if ours.low <= number.point <= ours.high else "disagrees"
    if number.claim == "range":
        return "agrees" if ours.high >= number.low and ours.low <= number.high else "disagrees"
    if number.claim == "sign":
        side = math.copysign(1.0, number.point)
        if ours.low > 0 or ours.high < 0:
            return "agrees" if math.copysign(1.0, ours.mean) == side else "disagrees"
        return "inconclusive (CI spans 0)"
    raise ValueError(f"unknown claim {number.claim!r}")


def settings_from_runs(
    run_dirs: Iterable[str | os.PathLike[str]],
) -> dict[tuple[str, str], Setting]:
    """The :class:`Setting` of every (sequence, model) among the run directories, from their
    ``config.yaml`` (names, order, epochs or steps) and ``run_info.json`` (the training and
    holdout examples each pairs domain really had)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for run_dir in map(Path, run_dirs):
        try:
            cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
            info = json.loads((run_dir / "run_info.json").read_text())
        except (OSError, ValueError, yaml.YAMLError):
            continue
        ids = info.get("ids", {})
        key = (str(ids.get("sequence")), str(ids.get("model")))
        order = tuple(cfg.get("sequence", {}).get("order") or ())
        entry = found.setdefault(key, {"order": order, "examples": [], "epochs": []})
        train = cfg.get("train", {})
        epochs = f"{train['epochs']}" if train.get("epochs") else f"steps {train.get('steps')}"
        if epochs not in entry["epochs"]:
            entry["epochs"].append(epochs)
        for domain in order:
            stats = info.get("data", {}).get(domain, {})
            pair = (stats.get("train_examples"), stats.get("holdout_examples"))
            if None not in pair and pair not in entry["examples"]:
                entry["examples"].append(pair)
    return {
        key: Setting(key[0], key[1], e["order"], tuple(e["examples"]), tuple(e["epochs"]))
        for key, e in found.items()
    }


def _settings(metrics: pd.DataFrame, given: Mapping[tuple[str, str], Setting]) -> dict:
    out = {}
    for (sequence, model), group in metrics.groupby(["sequence", "model"], sort=True):
        key = (str(sequence), str(model))
        chain = without_references(group)
        order = tuple(trained_order(chain[chain["run_dir"] == chain["run_dir"].iloc[0]]))
        out[key] = given.get(key) or Setting(key[0], key[1], order)
    return out


def side_by_side(
    metrics: pd.DataFrame,
    settings: Mapping[tuple[str, str], Setting] | None = None,
    numbers: Sequence[PublishedNumber] = PUBLISHED_NUMBERS,
    every: bool = False,
) -> pd.DataFrame:
    """One row per published number: the published value, ours with its 95% CI, our setting and
    the verdict. Our value comes from the setting (sequence, model) with the fewest reasons not
    to compare (:func:`reasons`; on a tie, the own-stage holdout loss nearest the vendor's) among
    those that ran the methods; ``every=True``: one row per such setting. ``settings`` (from
    the run files, :func:`settings_from_runs`) adds example counts and epochs."""
    groups = _settings(metrics, settings or {})
    rows = []
    for number in numbers:
        methods = QUANTITIES[number.quantity]
        found = []
        for key, setting in groups.items():
            group = metrics[(metrics["sequence"] == key[0]) & (metrics["model"] == key[1])]
            ours = estimate(number.quantity, group)
            if ours is not None:
                loss = own_stage_loss(group, methods)
                why = reasons(number, setting, loss)
                gap = abs(math.log(loss / VENDOR_LOSS)) if loss > 0 else math.inf
                found.append((len(why), gap, key, setting, ours, why))
        found.sort(key=lambda f: f[:3])  # fewest reasons, then the loss nearest the vendor's
        for *_, setting, ours, why in found if every else found[:1]:
            rows.append(_row(number, setting, ours, why))
        if not found:
            rows.append(_row(number, None, None, []))
    return pd.DataFrame(rows)


def _row(number: PublishedNumber, setting: Setting | None, ours: Estimate | None,
         why: list[str]) -> dict:  # fmt: skip
    return {
        "setting": number.setting, "method": number.method, "metric": number.metric,
        "published": number.value, "quantity": number.quantity,
        "ours": _fmt(number.quantity, ours), "n": None if ours is None else ours.n,
        "mean": math.nan if ours is None else ours.mean,
        "ci_low": math.nan if ours is None else ours.low,
        "ci_high": math.nan if ours is None else ours.high,
        "our_setting": "" if setting is None else setting.describe(),
        "verdict": verdict(number, ours, why),
    }  # fmt: skip


def _fmt(quantity: str, ours: Estimate | None) -> str:
    if ours is None:
        return "no runs"
    if quantity in _RATIOS:
        ci = "n/a" if math.isnan(ours.low) else f"[{ours.low:.3f}, {ours.high:.3f}]"
        return f"{ours.mean:.3f} {ci} (n = {ours.n} {ours.unit})"
    ci = "n/a" if math.isnan(ours.low) else f"[{ours.low:+.2f}, {ours.high:+.2f}]"
    return f"{ours.mean:+.2f}% {ci} (n = {ours.n} {ours.unit})"


def final_epoch_loss(logs: pd.DataFrame) -> pd.DataFrame:
    """Per run and stage, the mean training loss of the last epoch (``epoch`` column; without
    one, of the last quarter of the stage's steps). Columns: sequence, model, method, seed,
    stage, domain, train_loss."""
    rows = []
    for (_, stage), log in logs.groupby(["run_dir", "stage"], sort=True):
        if "epoch" in log.columns and log["epoch"].notna().any():
            last = log[log["epoch"] == log["epoch"].max()]
        else:
            last = log.sort_values("step").tail(max(1, len(log) // 4))
        row = log.iloc[0][["sequence", "model", "method", "seed", "domain"]].to_dict()
        rows.append({**row, "stage": int(stage), "train_loss": float(last["loss"].mean())})
    columns = ["sequence", "model", "method", "seed", "stage", "domain", "train_loss"]
    return pd.DataFrame(rows, columns=columns)


def regime_table(
    metrics: pd.DataFrame, logs: pd.DataFrame, settings: Mapping[tuple[str, str], Setting] | None
) -> pd.DataFrame:
    """Per setting, method and stage: epochs, the final-epoch training loss and the holdout loss
    right after the stage (of the domain it trained), mean and SD over seeds."""
    groups = _settings(metrics, settings or {})
    held = metrics[(metrics["metric"] == "holdout_nll") & (metrics["stage"] >= 1)]
    held = held[held["eval_domain"] == held["stage_domain"]]
    train = final_epoch_loss(logs) if len(logs) else pd.DataFrame()
    keys = ["sequence", "model", "method", "stage"]
    rows = []
    for key, group in held.groupby(keys, sort=False):
        h = mean_sd_ci(group["value"].to_numpy(float))
        t = {"mean": math.nan, "sd": math.nan}
        if len(train):
            match = np.logical_and.reduce([train[k] == v for k, v in zip(keys, key, strict=True)])
            t = mean_sd_ci(train.loc[match, "train_loss"].to_numpy(float))
        setting = groups.get((str(key[0]), str(key[1])))
        rows.append({"setting": "" if setting is None else f"{key[1]}, {key[0]}",
                     "method": key[2], "stage": int(key[3]),
                     "domain": group["stage_domain"].iloc[0], "n": h["n"],
                     "epochs": ", ".join(setting.epochs) if setting else "",
                     "train_loss": t["mean"], "train_loss_sd": t["sd"],
                     "holdout_loss": h["mean"], "holdout_loss_sd": h["sd"]})  # fmt: skip
    return pd.DataFrame(rows)


def vendor_markdown(table: pd.DataFrame, regime: pd.DataFrame | None = None) -> str:
    """The side-by-side table (and the training-regime table) as markdown, with the rule."""
    low, high = LOSS_BAND
    out = [
        "## Published numbers beside ours",
        "",
        "Vendor-reported numbers (self-reported, not replicated) and ours: mean and two-sided "
        "Student-t 95% CI over seeds (gradient ratios: over seed x stage pairs). Verdict: "
        "*agrees* when the published value lies inside our CI (a range: overlaps it; a sign "
        "claim: our CI excludes 0 on its side), *disagrees* when it does not and the settings "
        "are comparable, *not comparable* (with the reasons) when the model, the domains, the "
        f"examples a domain or the loss level (holdout loss after each own stage within "
        f"[{low:.3f}, {high:.2f}] nats, vendor ~{VENDOR_LOSS}) differ "
        "(`continual/analysis/vendor.py`).",
        "",
        md_table(["setting", "method", "metric", "published", "ours (95% CI)", "our setting",
                  "verdict"],
                 [(r.setting, r.method, r.metric, r.published, r.ours, r.our_setting, r.verdict)
                  for r in table.itertuples(index=False)]),
    ]  # fmt: skip
    if regime is not None and len(regime):
        out += [
            "",
            f"## Training regime (vendor: trained to a holdout loss near {VENDOR_LOSS})",
            "",
            "Per stage: the mean training loss of its last epoch and the holdout loss of the "
            "domain it trained, right after it (nats; mean ± SD over seeds).",
            "",
            md_table(["setting", "method", "stage", "epochs", "n", "final-epoch training loss",
                      "holdout loss after the stage"],
                     [(r.setting, r.method, f"{r.stage} ({r.domain})", r.epochs, r.n,
                       fmt_mean_sd(r.train_loss, r.train_loss_sd, 3),
                       fmt_mean_sd(r.holdout_loss, r.holdout_loss_sd, 3))
                      for r in regime.itertuples(index=False)]),
        ]  # fmt: skip
    return "\n".join(out)
