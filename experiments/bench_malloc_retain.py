"""What ``cpu_malloc_retain`` buys: our training step with glibc keeping freed memory or not.

    python experiments/bench_malloc_retain.py --model smollm2_135m --steps 6 --repeats 3 \
        --out results/bench_malloc_retain.json

Each measurement is a fresh child process, as every run is: it sets the C allocator
(``retain``: ``continual.runtime.retain_freed_memory``, what ``continual.run`` does by default;
``default``: glibc left as it is), loads the model, trains one untimed step, then ``--steps``
timed steps of our real training step (``bench_train_throughput.py``'s ``run_ours``:
``train_stage`` on a fresh LoRA of the default config, 8 blocks x 128 fixed random tokens per
step). The child reports seconds per step and, from ``getrusage`` over the timed steps, minor
page faults, user and system CPU seconds per step, its peak RSS and the mean loss. The two
settings alternate in order (retain default, default retain, ...); reported: each setting's
medians over repeats and the median of the per-repeat ratios of step time default / retain
(> 1: retaining is faster). Both settings must train the same losses. The JSON keeps the
commit (at start), packages and machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's package: the one the recorded commit describes

from continual.rundir import bench_provenance, git_state, write_bench_json  # noqa: E402

SETTINGS = ("retain", "default")
BLOCKS_PER_STEP, BLOCK_LEN = 8, 128


def child(args: argparse.Namespace) -> None:
    """One measurement: allocator setting, load, one untimed step, ``--steps`` timed; JSON."""
    from continual.runtime import retain_freed_memory

    applied = retain_freed_memory(args.child == "retain")  # before anything large is allocated
    from bench_train_throughput import default_step, run_ours

    loaded, train_cfg, lora_cfg, blocks = default_step(args.model, args.steps, BLOCKS_PER_STEP)
    run_ours(loaded.model, lora_cfg, train_cfg, blocks[:BLOCKS_PER_STEP], loaded.device, 1)
    before = resource.getrusage(resource.RUSAGE_SELF)
    run = run_ours(loaded.model, lora_cfg, train_cfg, blocks, loaded.device, args.steps)
    after = resource.getrusage(resource.RUSAGE_SELF)
    n = args.steps
    print(json.dumps({
        "setting": args.child, "applied": applied, "s_per_step": run["seconds"] / n,
        "faults_per_step": (after.ru_minflt - before.ru_minflt) / n,
        "user_s_per_step": (after.ru_utime - before.ru_utime) / n,
        "sys_s_per_step": (after.ru_stime - before.ru_stime) / n,
        "peak_rss_mb": after.ru_maxrss / 1024, "loss": run["loss"],
    }))  # fmt: skip


def measure(setting: str, model: str, steps: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", setting, "--model", model, "--steps", str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"the {setting} child failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2_135m", help="a conf/model/<name>.yaml")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per child")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--child", choices=SETTINGS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args)
        return None
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be >= 1")
    git_sha, git_dirty = git_state(ROOT)
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        order = SETTINGS if rep % 2 == 0 else SETTINGS[::-1]
        for setting in order:
            run = measure(setting, args.model, args.steps) | {"repeat": rep}
            runs.append(run)
            print(
                f"repeat {rep + 1}/{args.repeats} {setting}: {run['s_per_step']:.3f} s/step, "
                f"{run['faults_per_step']:.0f} page faults/step, sys {run['sys_s_per_step']:.2f} "
                f"s/step, loss {run['loss']:.6f}",
                flush=True,
            )
    keys = ("s_per_step", "faults_per_step", "user_s_per_step", "sys_s_per_step", "peak_rss_mb")
    summary = {
        s: {k: statistics.median(r[k] for r in runs if r["setting"] == s) for k in keys}
        for s in SETTINGS
    }
    by = {(r["setting"], r["repeat"]): r for r in runs}
    ratios = [
        by["default", rep]["s_per_step"] / by["retain", rep]["s_per_step"]
        for rep in range(args.repeats)
    ]
    same_loss = len({r["loss"] for r in runs}) == 1
    print("\n| setting | s/step | page faults/step | user s/step | sys s/step | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for s, row in summary.items():
        print(
            f"| {s} | {row['s_per_step']:.3f} | {row['faults_per_step']:.0f} | "
            f"{row['user_s_per_step']:.2f} | {row['sys_s_per_step']:.2f} | "
            f"{row['peak_rss_mb']:.0f} |"
        )
    ratio = statistics.median(ratios)
    print(
        f"\nstep time default / retain: {ratio:.3f} (median of per-repeat ratios "
        f"{', '.join(f'{r:.3f}' for r in ratios)}); same losses: {same_loss}"
    )
    result = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "summary": summary,
        "ratio_default_over_retain": ratio,
        "ratios": ratios,
        "same_losses": same_loss,
        "runs": runs,
        "wall_seconds": round(time.perf_counter() - started, 1),
        **bench_provenance(git_sha, git_dirty, "cpu"),
    }
    return write_bench_json(args.out, result)


if __name__ == "__main__":
    main()
