"""Apply the decision rule of conf/experiment/cl_baselines_pilot.yaml to the pilot's runs.

    python experiments/cl_pilot_decision.py multirun/cl_baselines_pilot

Every pilot run evaluates on the validation split (``eval.split=validation``), never on the
holdout. A variant is a method name ``<family>_<setting>`` (``ewc_w1000.0``); per family, the
rule picks the variant with the lowest ``final_avg_loss`` (mean validation NLL over the trained
domains after the last stage, the average-loss counterpart of final average accuracy) among
the variants whose training stayed finite. Prints, per variant, that loss, the mean forgetting,
the general-text retention and the number of gradient spikes, then the choice per family.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from continual.analysis import find_runs, load_metrics
from continual.analysis.markdown import md_table

SUMMARY = ["final_avg_loss", "avg_delta_nll", "avg_forgetting_pct", "general_retention_pct_final"]


def variant_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per variant (method name): the rule's inputs after the variant's last stage."""
    last = metrics.groupby("method")["stage"].transform("max")
    final = metrics[(metrics["stage"] == last) & (metrics["eval_domain"] == "all")]
    table = final.pivot_table(index="method", columns="metric", values="value")
    table = table.reindex(columns=SUMMARY)
    trained = metrics[(metrics["stage"] >= 1) & (metrics["eval_domain"] == metrics["stage_domain"])]
    table["spikes"] = (
        trained[trained["metric"] == "grad_norm_n_spikes"].groupby("method")["value"].sum()
    )
    nonfinite = (
        trained[trained["metric"] == "grad_norm_n_nonfinite"].groupby("method")["value"].sum()
    )
    finite_loss = table["final_avg_loss"].map(math.isfinite)
    table["finite"] = (nonfinite.reindex(table.index).fillna(0) == 0) & finite_loss
    table["family"] = [str(m).split("_", 1)[0] for m in table.index]
    return table


def decide(table: pd.DataFrame) -> dict[str, str]:
    """Per family, the finite variant with the lowest ``final_avg_loss``."""
    ok = table[table["finite"]]
    return {family: str(group["final_avg_loss"].idxmin()) for family, group in ok.groupby("family")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="the pilot's sweep folder (or collected runs/)")
    args = parser.parse_args(argv)
    runs = find_runs(args.runs)
    holdout = [str(r) for r in runs if OmegaConf.load(r / "config.yaml").eval.split != "validation"]
    if holdout:
        message = (f"error: runs not scored on the validation split: {', '.join(holdout)}; a "
                   "pilot must not choose on the holdout (eval.split=validation).")  # fmt: skip
        print(message, file=sys.stderr)
        return 2
    table = variant_table(load_metrics(runs))
    rows = [
        (m, f"{r.final_avg_loss:.4f}", f"{r.avg_delta_nll:+.4f}", f"{r.avg_forgetting_pct:+.2f}",
         f"{r.general_retention_pct_final:.2f}", int(r.spikes), "yes" if r.finite else "no")
        for m, r in table.sort_values(["family", "final_avg_loss"]).iterrows()
    ]  # fmt: skip
    header = ["variant", "final avg loss (nats)", "avg forgetting (nats)", "avg forgetting %",
              "general retention %", "spikes", "finite"]  # fmt: skip
    print(md_table(header, rows))
    for family, variant in decide(table).items():
        print(f"{family}: {variant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
