"""The vendor's published numbers beside ours: one row per published number with our value, its
95% CI and a verdict (agrees / disagrees / not comparable, and why), then the training regime
(per-stage final training and holdout loss next to the vendor's ~0.15).

    python experiments/vendor_table.py results/vendor_protocol/*/runs --out <table.md>

Takes run or sweep directories (complete runs only; of a (sequence, model, method, seed) seen
twice, the newest). The published numbers are data in ``continual/analysis/published.py``; what
we compute for each and the verdict rule are in ``continual/analysis/vendor.py``. Our value for a
published number comes from the setting (sequence, model) that is most comparable with it;
``--every-setting`` gives one row per setting that ran the methods instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's package

from continual.analysis import (  # noqa: E402
    NoRunsError,
    drop_duplicate_runs,
    find_runs,
    load_metrics,
    load_train_logs,
)
from continual.analysis.vendor import (  # noqa: E402
    regime_table,
    settings_from_runs,
    side_by_side,
    vendor_markdown,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    parser.add_argument("--csv", type=Path, default=None, help="also write the table as CSV")
    parser.add_argument(
        "--every-setting", action="store_true",
        help="one row per (published number, our setting) instead of the most comparable one",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        runs = sorted({run for path in args.paths for run in find_runs(path)})
    except NoRunsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not runs:
        print(f"error: no complete run under {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 2
    metrics, dropped = drop_duplicate_runs(load_metrics(runs))
    for run_dir in dropped:
        print(f"left out (a newer run has the same sequence, model, method, seed): {run_dir}",
              file=sys.stderr)  # fmt: skip
    kept = sorted(set(metrics["run_dir"]))
    settings = settings_from_runs(kept)
    table = side_by_side(metrics, settings, every=args.every_setting)
    regime = regime_table(metrics, load_train_logs(kept), settings)
    text = vendor_markdown(table, regime)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
