"""Pick the two arms of crma_comparison round 1 that get PiSSA in round 2, by the fixed rule.

    python experiments/crma_comparison_round2.py multirun/crma_comparison

The rule (conf/experiment/crma_comparison.yaml, fixed before round 1): among the round-1 arms
(``<method>_<clipping>_default``), the two with the lowest mean ``avg_forgetting_pct`` after the
last stage over the seeds every arm finished. Prints the per-arm table and the round-2 command;
arms that differ in clipping as well as method need two commands (one per clipping mode; ZClip
arms run without the fixed cap, as in round 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from continual.analysis import find_runs, load_metrics
from continual.analysis.markdown import md_table


def arm_forgetting(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean and SD of the final ``avg_forgetting_pct`` per round-1 arm, over common seeds."""
    final = metrics[(metrics["metric"] == "avg_forgetting_pct") & (metrics["eval_domain"] == "all")]
    final = final[final["method"].astype(str).str.endswith("_default")]
    last = final.groupby(["method", "seed"])["stage"].transform("max")
    finals = final[final["stage"] == last]
    table = finals.pivot_table(index="seed", columns="method", values="value")
    table = table.dropna()  # seeds that every arm finished
    out = pd.DataFrame({"n": len(table), "mean": table.mean(), "sd": table.std(ddof=1)})
    return out.sort_values("mean")


def round2_commands(best: list[str]) -> list[str]:
    """Round-2 sweep commands for arms named ``<method>_<clipping>_default``."""
    by_clip: dict[str, list[str]] = {}
    for arm in best:
        method, clipping, _ = arm.rsplit("_", 2)
        by_clip.setdefault(clipping, []).append(method)
    return [
        f"python -m continual.run -m +experiment=crma_comparison method={','.join(methods)} "
        f"train.clipping={clipping} method.lora.init=pissa"
        + (" train.max_grad_norm=0" if clipping == "zclip" else "")
        for clipping, methods in by_clip.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="the sweep folder (or collected runs/)")
    args = parser.parse_args(argv)
    table = arm_forgetting(load_metrics(find_runs(args.runs)))
    if len(table) < 2 or table["n"].iloc[0] < 1:
        print("error: need at least two round-1 arms with a finished chain", file=sys.stderr)
        return 2
    rows = [(m, int(r["n"]), f"{r['mean']:+.2f}", f"{r['sd']:.2f}") for m, r in table.iterrows()]
    print(md_table(["arm", "seeds", "avg forgetting % (mean)", "SD"], rows))
    best = list(table.index[:2])
    print(f"\nlowest mean forgetting: {', '.join(best)}")
    print("\n".join(round2_commands(best)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
