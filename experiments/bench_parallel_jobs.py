"""Sweep throughput on a CPU machine: one job with every core, or several jobs with a share each.

    python experiments/bench_parallel_jobs.py --model smollm2_135m --jobs 2 --steps 6 \
        --repeats 2 --out results/bench_parallel_jobs.json

What a `-m` sweep on one machine chooses between: the basic launcher (one job at a time, torch
using every core) or `hydra/launcher=joblib_local hydra.launcher.n_jobs=J threads=C/J` (J jobs at
once, C/J threads each). Each side runs our real training step
(`experiments/bench_train_throughput.py`'s `run_ours`: `continual.train.loop.train_stage` on a
fresh LoRA of the default config, `--steps` steps of 8 blocks x 128 fixed random tokens) in
fresh child processes:

* ``one``: 1 child with ``C`` threads (``C`` = the cores this process may use);
* ``split``: ``J`` children at once with ``C // J`` threads each.

Every child loads the model, trains one untimed step (lazy initialisation), then waits until
all children of its side are ready, so that the timed parts overlap. Throughput of a side =
all its children's tokens / (last timed end - first timed start), wall clock. The sides
alternate in order (one split, split one, ...); reported: each side's median tokens/s and the
median of the per-repeat ratios split / one (> 1: parallel jobs get more done). The JSON keeps
the commit (at start), packages and machine. Thread count changes float rounding only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's package: the one the recorded commit describes

from continual.rundir import atomic_write_json, bench_provenance, git_state  # noqa: E402

BLOCKS_PER_STEP, BLOCK_LEN = 8, 128


def child(args: argparse.Namespace) -> None:
    """One job: load, warm up, wait for ``<sync>/go``, train ``--steps``; print JSON."""
    from continual.runtime import apply_threads

    apply_threads(args.threads)
    import torch
    from bench_train_throughput import default_step, run_ours

    loaded, train_cfg, lora_cfg, blocks = default_step(
        args.model, args.steps, BLOCKS_PER_STEP, BLOCK_LEN
    )
    n_blocks = BLOCKS_PER_STEP * args.steps
    run_ours(loaded.model, lora_cfg, train_cfg, blocks, loaded.device, 1)  # untimed
    sync = Path(args.sync)
    (sync / f"ready-{os.getpid()}").touch()
    while not (sync / "go").exists():
        time.sleep(0.01)
    start = time.time()
    run = run_ours(loaded.model, lora_cfg, train_cfg, blocks, loaded.device, args.steps)
    end = time.time()
    print(json.dumps({"start": start, "end": end, "tokens": n_blocks * BLOCK_LEN,
                      "threads": torch.get_num_threads(), "loss": run["loss"]}))  # fmt: skip


def run_side(model: str, jobs: int, threads: int, steps: int) -> dict[str, Any]:
    """``jobs`` children with ``threads`` threads each, timed together."""
    with tempfile.TemporaryDirectory(prefix="bench_jobs_") as sync:
        cmd = [sys.executable, __file__, "--child", "--model", model, "--steps", str(steps),
               "--threads", str(threads), "--sync", sync]  # fmt: skip
        procs = [
            subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(jobs)
        ]
        while len(list(Path(sync).glob("ready-*"))) < jobs:
            if any(p.poll() not in (None, 0) for p in procs):
                raise SystemExit("a benchmark child failed before it was ready")
            time.sleep(0.05)
        (Path(sync) / "go").touch()
        outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit("a benchmark child failed")
    results = [json.loads(out.strip().splitlines()[-1]) for out in outs]
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    tokens = sum(r["tokens"] for r in results)
    return {"jobs": jobs, "threads": threads, "span_s": span, "tokens": tokens,
            "tokens_per_s": tokens / span, "children": results}  # fmt: skip


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2_135m", help="a conf/model/<name>.yaml")
    parser.add_argument("--jobs", type=int, default=2, help="jobs at once on the split side")
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps per job")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sync", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return None
    cores = len(os.sched_getaffinity(0))
    if args.jobs < 2 or cores % args.jobs or args.steps < 1 or args.repeats < 1:
        parser.error(f"--jobs must be >= 2 and divide the {cores} cores; --steps, --repeats >= 1")
    git_sha, git_dirty = git_state(ROOT)
    sides = {"one": (1, cores), "split": (args.jobs, cores // args.jobs)}
    runs = []
    for rep in range(args.repeats):
        for name in ["one", "split"] if rep % 2 == 0 else ["split", "one"]:
            run = run_side(args.model, *sides[name], args.steps) | {"side": name, "repeat": rep}
            runs.append(run)
            print(f"repeat {rep + 1}/{args.repeats} {name} ({run['jobs']} x {run['threads']} "
                  f"threads): {run['tokens_per_s']:.0f} tokens/s over {run['span_s']:.1f} s",
                  flush=True)  # fmt: skip
    rate = {s: [r["tokens_per_s"] for r in runs if r["side"] == s] for s in sides}
    ratios = [s / o for o, s in zip(rate["one"], rate["split"], strict=True)]
    ratio = statistics.median(ratios)
    print(f"\nsplit ({args.jobs} jobs x {cores // args.jobs} threads) / one (1 job x {cores} "
          f"threads): {ratio:.2f} (per repeat {', '.join(f'{r:.2f}' for r in ratios)}; "
          "> 1: parallel jobs finish a sweep sooner)")  # fmt: skip
    result = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "cores": cores, "tokens_per_s": {s: statistics.median(v) for s, v in rate.items()},
        "ratio_split_over_one": ratio, "ratios": ratios, "runs": runs,
        **bench_provenance(git_sha, git_dirty, "cpu"),
    }  # fmt: skip
    if args.out is not None:
        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
