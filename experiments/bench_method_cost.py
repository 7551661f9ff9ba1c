"""Per-method cost: step time and peak memory of every method relative to plain LoRA, side by side.

    python experiments/bench_method_cost.py --model smollm2_135m --steps 8 --repeats 3 \
        --out results/bench_method_cost.json

What is timed is each method's real training step in the second stage of a two-domain chain
(default `+sequence=med_code`, the default train config: 8 blocks of 128 tokens per step), where
every method's machinery is active: replay's and joint's batch composition, EWC's penalty with
the Fisher of the finished first stage, LwF's teacher forward with the first stage's adapter,
O-LoRA's orthogonality loss against the first stage's adapter, CRMA attached.

One measurement is one fresh child process per (method, repeat). The child composes the run
config as `python -m continual.run +sequence=<seq> method=<m> model=<model>` does and builds the
run with the recipe's own functions (validate_config, the runtime settings `threads` and
`cpu_malloc_retain`, load_model, prepare_data, build_method, setup, bind); then trains stage 1
(`--stage1-steps`, untimed) and its `after_stage` (the Fisher, the teacher, the memory, the
frozen adapter), then stage 2 for `--warmup` + `--steps` optimizer steps through
`continual.train.loop.train_stage`, unchanged. A step is timed from the moment the loop asks the
stage's training set for its batch to the same moment of the next step (the last: to the return
of train_stage): batch composition, forward, extra losses, backward, clipping, optimizer and
scheduler step. The first `--warmup` steps of stage 2 are not timed. Model loading, data
preparation, stage 1 and evaluation (none is run) are outside. Not built: the prompted baseline
and the general-text holdout (`eval.general_domain=null`), which no training step reads.

Memory: the child's peak RSS from `os.wait4` on that child (its whole life: model, data, both
stages), and on CUDA `torch.cuda.max_memory_allocated` over stage 2. The JSON also keeps each
child's peak RSS before stage 2, to see whether the peak was set by the timed stage.

The methods run in a rotated order in every repeat, so that drift in machine load hits all of
them. Reported per method: the median step time over all timed steps of all repeats; the median
over repeats of (its median step / lora's median step in the same repeat); the median peak RSS
over repeats, its ratio to lora's and the difference (extra MB). The JSON records the commit and
whether the tree was dirty (at start), package versions, the machine, torch threads, the device
and the resolved method and train config of every method.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's package: the one the recorded commit describes

from continual.config.validate import available  # noqa: E402
from continual.rundir import atomic_write_json, git_state, machine_info, package_versions  # noqa: E402

REFERENCE = "lora"
DEFAULT_METHODS = [
    "lora",
    "frozen_lora",
    "replay",
    "ewc",
    "lwf",
    "olora",
    "joint",
    "crma",
    "modular_crma",
]


# --- the parent: choose, order, run and summarise the children --------------------------------


def parse_methods(values: list[str]) -> list[str]:
    """The methods to measure (names or comma-separated lists), the reference ``lora`` first;
    raises ValueError naming the unknown ones and listing the known ones (conf/method/)."""
    names = [n for value in values for n in value.split(",") if n]
    known = available("method")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return list(dict.fromkeys([REFERENCE, *names]))


def rotation(methods: list[str], repeat: int, repeats: int) -> list[str]:
    """The order of repeat ``repeat``: ``methods`` rotated left by ``repeat * n // repeats``
    places, which spreads each method's position evenly over the repeats (with 3 repeats,
    every method runs once in each third of a repeat)."""
    shift = repeat * len(methods) // max(repeats, 1) % len(methods)
    return methods[shift:] + methods[:shift]


def summarise(runs: list[dict[str, Any]], reference: str = REFERENCE) -> dict[str, dict[str, Any]]:
    """Per method (in order of first appearance) from the child runs (each: ``method``,
    ``repeat``, ``step_s`` (timed steps), ``peak_rss_mb`` and optional ``cuda_peak_mb``):

    ``median_step_s`` over all timed steps of all repeats; ``step_ratios``, per repeat that
    measured both, its median step over the reference's median step in that repeat, and
    ``step_ratio`` their median (exactly 1 for the reference); ``peak_rss_mb`` the median over
    repeats, ``rss_ratio`` its ratio to the reference's and ``extra_rss_mb`` the difference;
    ``cuda_peak_mb`` the median (None without CUDA)."""
    by_method: dict[str, dict[int, dict[str, Any]]] = {}
    for run in runs:
        by_method.setdefault(run["method"], {})[run["repeat"]] = run
    ref = by_method[reference]
    ref_rss = statistics.median(r["peak_rss_mb"] for r in ref.values())
    summary = {}
    for method, repeats in by_method.items():
        ratios = [
            statistics.median(run["step_s"]) / statistics.median(ref[repeat]["step_s"])
            for repeat, run in sorted(repeats.items())
            if repeat in ref
        ]
        rss = statistics.median(r["peak_rss_mb"] for r in repeats.values())
        cuda = [r["cuda_peak_mb"] for r in repeats.values() if r.get("cuda_peak_mb") is not None]
        summary[method] = {
            "median_step_s": statistics.median(s for r in repeats.values() for s in r["step_s"]),
            "step_ratio": statistics.median(ratios),
            "step_ratios": ratios,
            "peak_rss_mb": rss,
            "rss_ratio": rss / ref_rss,
            "extra_rss_mb": rss - ref_rss,
            "cuda_peak_mb": statistics.median(cuda) if cuda else None,
        }
    return summary


def markdown(summary: dict[str, dict[str, Any]]) -> str:
    """The summary as a markdown table (a CUDA column when any method has a CUDA peak)."""
    cuda = any(row["cuda_peak_mb"] is not None for row in summary.values())
    head = [
        "method",
        "median step (s)",
        "step ratio vs lora",
        "peak RSS (MB)",
        "RSS ratio vs lora",
        "extra RSS (MB)",
    ] + (["CUDA peak (MB)"] if cuda else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, row in summary.items():
        cells = [
            method,
            f"{row['median_step_s']:.3f}",
            f"{row['step_ratio']:.3f}",
            f"{row['peak_rss_mb']:.0f}",
            f"{row['rss_ratio']:.3f}",
            f"{row['extra_rss_mb']:+.0f}",
        ]
        if cuda:
            cells.append(f"{row['cuda_peak_mb']:.0f}" if row["cuda_peak_mb"] is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _maxrss_mb(maxrss: int) -> float:
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes vs KiB


def run_child(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run one measurement in a fresh process; its result plus ``peak_rss_mb``, that child's
    own ``ru_maxrss`` (``os.wait4`` on its pid, not the maximum over all children)."""
    name = f"{spec['method']}_repeat{spec['repeat']}"
    spec = {**spec, "out": str(workdir / f"{name}.json")}
    (workdir / f"{name}.spec.json").write_text(json.dumps(spec))
    log_path = workdir / f"{name}.log"
    with log_path.open("w") as log_file:
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            str(workdir / f"{name}.spec.json"),
        ]
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if proc.returncode != 0:
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{name} failed (exit {proc.returncode}); its log ends:\n{tail}")
    result = json.loads(Path(spec["out"]).read_text())
    result["peak_rss_mb"] = _maxrss_mb(usage.ru_maxrss)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2_135m", help="a conf/model/<name>.yaml")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=DEFAULT_METHODS,
        help="conf/method/ names (lora, the reference, is always added)",
    )
    parser.add_argument("--sequence", default="med_code", help="a conf/sequence/ chain")
    parser.add_argument("--steps", type=int, default=8, help="timed steps of stage 2 per repeat")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps of stage 2")
    parser.add_argument("--stage1-steps", type=int, default=2, help="steps of stage 1 (untimed)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="blocks per step and per forward (default: the train config's)",
    )
    parser.add_argument(
        "--block-len", type=int, default=None, help="tokens per block (default: the train config's)"
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a further Hydra override for every method (repeatable)",
    )
    parser.add_argument("--cache-dir", default=None, help="default: the config's cache_dir")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(json.loads(args.child.read_text()))
        return {}
    try:
        methods = parse_methods(args.methods)
    except ValueError as exc:
        parser.error(str(exc))
    if args.steps < 1 or args.repeats < 1 or args.warmup < 0 or args.stage1_steps < 1:
        parser.error("--steps, --repeats and --stage1-steps must be >= 1, --warmup >= 0")
    # before the run: the results file written into the tree afterwards must not count as dirty
    git_sha, git_dirty = git_state(ROOT)
    started = time.perf_counter()
    overrides = list(args.override)
    if args.batch is not None:
        overrides += [f"train.batch_size={args.batch}", f"train.micro_batch_size={args.batch}"]
    if args.block_len is not None:
        overrides.append(f"train.block_len={args.block_len}")
    if args.cache_dir is not None:
        overrides.append(f"cache_dir={args.cache_dir}")
    common = {
        "model": args.model,
        "sequence": args.sequence,
        "overrides": overrides,
        "steps": args.steps,
        "warmup": args.warmup,
        "stage1_steps": args.stage1_steps,
    }
    runs, orders = [], []
    total = len(methods) * args.repeats
    with tempfile.TemporaryDirectory(prefix="bench_method_cost_") as tmp:
        for repeat in range(args.repeats):
            order = rotation(methods, repeat, args.repeats)
            orders.append(order)
            for position, method in enumerate(order):
                print(
                    f"[{len(runs) + 1}/{total}] repeat {repeat + 1}/{args.repeats} {method}: ",
                    end="",
                    flush=True,
                )
                t0 = time.perf_counter()
                run = run_child({**common, "method": method, "repeat": repeat}, Path(tmp))
                run |= {"position": position, "child_s": time.perf_counter() - t0}
                runs.append(run)
                print(
                    f"median {statistics.median(run['step_s']):.3f} s/step over "
                    f"{len(run['step_s'])} steps, peak RSS {run['peak_rss_mb']:.0f} MB, child "
                    f"{run['child_s']:.0f} s, elapsed {time.perf_counter() - started:.0f} s",
                    flush=True,
                )
    summary = summarise(runs)
    first = {run["method"]: run for run in reversed(runs)}  # each method's first run
    result = {
        "model": args.model,
        "sequence": args.sequence,
        "stages": runs[0]["stages"],
        "steps": args.steps,
        "warmup": args.warmup,
        "stage1_steps": args.stage1_steps,
        "repeats": args.repeats,
        "batch": [runs[0]["train"]["batch_size"], runs[0]["train"]["block_len"]],
        "overrides": overrides,
        "reference": REFERENCE,
        "methods": {
            method: {
                **row,
                **{
                    k: first[method][k]
                    for k in ("trainable_parameters", "training_set", "extra_terms")
                },
                "settings": first[method]["method_config"],
                "train": first[method]["train"],
            }
            for method, row in summary.items()
        },
        "orders": orders,
        "runs": [
            {k: v for k, v in run.items() if k not in ("method_config", "train")} for run in runs
        ],
        "device": runs[0]["device"],
        "torch_threads": runs[0]["torch_threads"],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "git_sha": git_sha,
        "git_dirty": git_dirty,
        "packages": package_versions(),
        "machine": machine_info(),
    }
    print(markdown(summary))
    print(
        f"{args.model}, {args.sequence} stage 2 ({result['stages'][1]}), batch "
        f"{result['batch'][0]} x {result['batch'][1]} tokens, {args.steps} timed steps x "
        f"{args.repeats} repeats, device {result['device']}, {result['torch_threads']} torch "
        f"threads; step ratio: median of per-repeat ratios"
    )
    if args.out:
        atomic_write_json(args.out, result)
    return result


# --- the child: one method, one repeat, in its own process -------------------------------------


class StepClock:
    """Time stamps taken at the start of every step (and one at the end of the stage); on
    CUDA after a synchronize, so that a step's queued kernels count towards that step."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.stamps: list[float] = []

    def stamp(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())

    def durations(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]


class ClockedSet:
    """A stage's training set, unchanged, that stamps the clock whenever the loop asks it for
    a batch: the first thing the loop does in a step."""

    def __init__(self, inner: Any, clock: StepClock) -> None:
        self.inner, self.clock = inner, clock

    def __len__(self) -> int:
        return len(self.inner)

    def batch(self, indices: Any) -> Any:
        self.clock.stamp()
        return self.inner.batch(indices)


def child(spec: dict[str, Any]) -> None:
    """Build the run as the recipe does, train stage 1, time stage 2; write the result JSON."""
    import resource

    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from continual.config.validate import validate_config, validate_for_model
    from continual.methods import build_method
    from continual.models.loading import load_model
    from continual.recipe import prepare_data, train_method_stage
    from continual.runtime import apply_runtime
    from continual.train.seeding import seed_everything, stage_seed

    overrides = [
        f"+sequence={spec['sequence']}",
        f"model={spec['model']}",
        f"method={spec['method']}",
        "logger=none",
        "eval.prompted_k=0",
        "eval.general_domain=null",
        f"train.steps={spec['warmup'] + spec['steps']}",
        "train.epochs=null",
        *spec["overrides"],
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    names = validate_config(cfg)
    apply_runtime(cfg)  # as continual.run does, before anything large exists
    order = list(cfg.sequence.order)
    if len(order) < 2:
        raise SystemExit(f"sequence {spec['sequence']} has one stage; the bench needs two")
    method = build_method(cfg.method)
    loaded = load_model(cfg.model, Path(cfg.cache_dir))
    validate_for_model(cfg, loaded.model, loaded.max_positions)
    data = prepare_data(cfg, loaded, names)
    seed_everything(stage_seed(int(cfg.seed), 0))  # adapter initialisation, as in the recipe
    model = method.setup(loaded.model)
    method.bind(data, loaded.device, cfg.train, int(cfg.seed))
    cuda = loaded.device.type == "cuda"

    def stage(number: int, steps: int, clock: StepClock | None) -> dict[str, Any]:
        """Train stage ``number`` as recipe.run_stage does (without its save and evaluation);
        returns what the stage trained and drew its batches from, and the mean of each extra
        loss term over its steps (evidence that the method's machinery was active)."""
        domain = order[number - 1]
        wrap = (lambda s: s) if clock is None else (lambda s: ClockedSet(s, clock))
        records, groups, train_set = train_method_stage(
            cfg, number, domain, method, model, loaded.device, f"stage {number} {domain}",
            steps=steps, wrap=wrap,
        )  # fmt: skip
        terms = sorted({name for r in records for name in r.terms})
        return {
            "trainable_parameters": sum(p.numel() for group in groups for p in group["params"]),
            "training_set": type(train_set).__name__,
            "extra_terms": {
                n: statistics.mean(r.terms[n] for r in records if n in r.terms) for n in terms
            },
        }

    stage(1, spec["stage1_steps"], None)
    method.after_stage(1, order[0])  # the Fisher, the teacher, the memory, the frozen adapter
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    clock = StepClock(cuda)
    trained = stage(2, spec["warmup"] + spec["steps"], clock)
    clock.stamp()  # the end of the last step
    step_s = clock.durations()[spec["warmup"] :]
    result = {
        "method": spec["method"],
        "repeat": spec["repeat"],
        "stages": order[:2],
        "step_s": step_s,
        "rss_before_stage2_mb": _maxrss_mb(rss_before),
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        **trained,
        "device": str(loaded.device),
        "torch_threads": torch.get_num_threads(),
        "method_config": OmegaConf.to_container(cfg.method, resolve=True),
        "train": OmegaConf.to_container(cfg.train, resolve=True),
    }
    Path(spec["out"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
