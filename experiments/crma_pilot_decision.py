"""Apply the decision rule of conf/experiment/crma_gate_pilot.yaml to the pilot's runs.

    python experiments/crma_pilot_decision.py results/crma_gate_pilot/runs

Per variant (method ``crma_<variant>``): the smallest and mean bypass effect on the domain just
trained, the gate after the last stage, gradient spikes, and the holdout NLL of each domain right
after its own stage against the reference variant's; then the variant the rule picks: among the
stable ones (finite, no spike, own-stage NLL at most ``--max-nll-increase`` nats above the
reference on every domain), the largest ``crma_bypass_own_nll_min``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from continual.analysis import find_runs, load_metrics
from continual.analysis.markdown import md_table


def variant_table(metrics: pd.DataFrame, reference: str) -> pd.DataFrame:
    """One row per method: the decision rule's inputs and whether the variant is stable."""
    own = metrics[(metrics["stage"] >= 1) & (metrics["eval_domain"] == metrics["stage_domain"])]
    nll = own[own["metric"] == "holdout_nll"].pivot_table(
        index="method", columns="stage_domain", values="value"
    )
    spikes = own[own["metric"] == "grad_norm_n_spikes"].groupby("method")["value"].sum()
    final = metrics[metrics["stage"] == metrics["stage"].max()]
    rows = []
    for method in nll.index:
        summary = final[(final["method"] == method) & (final["eval_domain"] == "all")]
        value = dict(zip(summary["metric"], summary["value"], strict=True))
        worse = float((nll.loc[method] - nll.loc[reference]).max())
        finite = bool(nll.loc[method].map(math.isfinite).all())
        rows.append({
            "method": method,
            "bypass_own_min": value.get("crma_bypass_own_nll_min", math.nan),
            "bypass_own_mean": value.get("crma_bypass_own_nll", math.nan),
            "gate_final": value.get("crma_gate_mean", math.nan),
            "spikes": int(spikes.get(method, 0)),
            "own_nll_vs_reference_max": worse,
            "stable": finite and spikes.get(method, 0) == 0,
        })  # fmt: skip
    return pd.DataFrame(rows)


def decide(table: pd.DataFrame, max_nll_increase: float) -> str | None:
    """The rule: stable variants whose own-stage NLL is at most ``max_nll_increase`` above the
    reference everywhere; the largest smallest-bypass among them (None when none qualifies)."""
    ok = table["stable"] & (table["own_nll_vs_reference_max"] <= max_nll_increase)
    return None if not ok.any() else str(table[ok].set_index("method")["bypass_own_min"].idxmax())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--reference", default="crma_g001")
    parser.add_argument("--max-nll-increase", type=float, default=0.02)
    args = parser.parse_args(argv)
    metrics = load_metrics(find_runs(args.runs))
    table = variant_table(metrics, args.reference)
    table["stable"] &= table["own_nll_vs_reference_max"] <= args.max_nll_increase
    rows = [
        (r.method, f"{r.bypass_own_min:.4f}", f"{r.bypass_own_mean:.4f}", f"{r.gate_final:.4f}",
         r.spikes, f"{r.own_nll_vs_reference_max:+.4f}", "yes" if r.stable else "no")
        for r in table.itertuples(index=False)
    ]  # fmt: skip
    header = ["variant", "min bypass own (nats)", "mean bypass own", "gate after last stage",
              "spikes", "own-stage NLL vs reference, worst", "stable"]  # fmt: skip
    print(md_table(header, rows))
    chosen = decide(table, args.max_nll_increase)
    print(f"\nChosen by the rule: {chosen}" if chosen else "\nNo variant is stable under the rule.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
