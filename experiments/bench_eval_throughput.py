"""Holdout-evaluation throughput: our ``holdout_nll`` vs lm-eval on the same holdout blocks.

    python experiments/bench_eval_throughput.py --model smollm2_135m --blocks 16 --block-len 128 \
        --repeats 3 --out results/bench_eval_throughput.json

The holdout blocks of one domain (``conf/domain/<name>.yaml``, built by the project's data
pipeline) are scored, in one process and interleaved, by

* ``continual.holdout_nll``: our evaluation (fixed blocks, batched, no prefix token);
* ``lm-eval rolling``: lm-eval's ``HFLM.loglikelihood_rolling`` on the blocks decoded to text
  (the model calls and lm-eval's request handling, no task setup);
* ``lm-eval evaluate``: :func:`continual.lm_eval_bridge.evaluate_tasks` end to end (task
  files from ``write_holdout_tasks(unit="blocks")``: task index, dataset load, requests).

Throughput is input tokens per second (lm-eval's inputs: prefix token + tokens - 1 per
document). Each is run once to warm up, then ``--repeats`` times, interleaved and in rotated
order; the table gives the median and minimum wall time and the median process CPU time (steadier
than wall time on a shared machine; the load average is printed and saved). The JSON also records
the commit and whether the tree was dirty (at start), package versions and the machine.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from continual.data.domain import build_domain  # noqa: E402
from continual.eval.holdout import holdout_nll  # noqa: E402
from continual.eval.lm_eval_bridge import evaluate_tasks, write_holdout_tasks  # noqa: E402
from continual.models.loading import load_model  # noqa: E402
from continual.rundir import (  # noqa: E402
    bench_provenance,
    git_state,
    write_bench_json,
)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["tiny_random", "smollm2_135m"], default="tiny_random")
    parser.add_argument("--domain", default="code", help="a conf/domain/ entry (default: code)")
    parser.add_argument("--blocks", type=int, default=16)
    parser.add_argument("--block-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    # before the run: the results file written into the tree afterwards must not count as dirty
    git_sha, git_dirty = git_state(ROOT)

    cache = Path(os.environ.get("CONTINUAL_CACHE", Path.home() / ".cache" / "continual"))
    loaded = load_model(OmegaConf.load(ROOT / "conf" / "model" / f"{args.model}.yaml"), cache)
    model, tok, device = loaded.model, loaded.tokenizer, loaded.device
    domain_cfg = OmegaConf.load(ROOT / "conf" / "domain" / f"{args.domain}.yaml")
    data = build_domain(args.domain, domain_cfg, tok, args.block_len, args.blocks, 1)
    blocks = data.holdout_blocks

    tmp = Path(tempfile.mkdtemp(prefix="bench_eval_"))  # task files; removed at exit
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    tasks = write_holdout_tasks({args.domain: data}, tmp, unit="blocks", tokenizer=tok)
    texts = [json.loads(line)["text"] for line in (tmp / f"{tasks[0]}.jsonl").open()]
    lm_tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)

    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    hflm = HFLM(pretrained=model, tokenizer=tok, batch_size=args.batch_size)
    requests = [Instance("loglikelihood_rolling", doc={}, arguments=(t,), idx=0) for t in texts]

    def ours() -> float:
        return holdout_nll(model, blocks, args.batch_size, device, desc="ours")[0]

    def rolling() -> float:  # nats per token
        return -sum(hflm.loglikelihood_rolling(requests, disable_tqdm=True)) / lm_tokens

    def end_to_end() -> float:  # bits per byte
        return evaluate_tasks(model, tok, tasks, tmp, args.batch_size)[tasks[0]]["bits_per_byte"]

    runs = {
        "continual.holdout_nll": (ours, blocks.numel()),
        "lm-eval rolling": (rolling, lm_tokens),
        "lm-eval evaluate": (end_to_end, lm_tokens),
    }
    names = list(runs)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    warmups, values = {}, {}
    for name in names:  # warm-up (imports, task index, dataset cache), in order
        start = time.perf_counter()
        values[name] = runs[name][0]()
        warmups[name] = time.perf_counter() - start
    for rep in range(args.repeats):  # interleaved and rotated: drifts and order hit all alike
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            start, start_cpu = time.perf_counter(), time.process_time()
            values[name] = runs[name][0]()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)

    base = statistics.median(wall[names[0]])
    base_cpu = statistics.median(cpu[names[0]])
    rows = []
    for name in names:
        tokens = runs[name][1]
        median = statistics.median(wall[name])
        rows.append(
            {
                "method": name,
                "tokens": int(tokens),
                "median_s": median,
                "min_s": min(wall[name]),
                "tokens_per_s": tokens / median,
                "time_vs_ours": median / base,
                "median_cpu_s": statistics.median(cpu[name]),
                "cpu_vs_ours": statistics.median(cpu[name]) / base_cpu,
                "warmup_s": warmups[name],
                "times_s": wall[name],
                "cpu_times_s": cpu[name],
            }
        )
    ln2 = math.log(2)
    metric = {
        "ours_nll_per_token": values["continual.holdout_nll"],
        "lm_eval_nll_per_token": values["lm-eval rolling"],
        "lm_eval_bits_per_byte": values["lm-eval evaluate"],
        "lm_eval_bits_per_byte_from_rolling": values["lm-eval rolling"] * lm_tokens / n_bytes / ln2,
    }
    print(
        f"\n{args.model}, domain {args.domain}: {len(blocks)} blocks x {args.block_len} tokens, "
        f"batch {args.batch_size}, {args.repeats} repeats (median), device {device}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| method | tokens | median s | min s | tokens/s (median) | time vs ours "
        "| CPU s (median) | CPU vs ours | warm-up s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['tokens']} | {r['median_s']:.2f} | {r['min_s']:.2f} "
            f"| {r['tokens_per_s']:.0f} | {r['time_vs_ours']:.2f}x | {r['median_cpu_s']:.2f} "
            f"| {r['cpu_vs_ours']:.2f}x | {r['warmup_s']:.2f} |"
        )
    print(
        f"\nours: {metric['ours_nll_per_token']:.4f} nats/token; lm-eval: "
        f"{metric['lm_eval_nll_per_token']:.4f} nats/token, {metric['lm_eval_bits_per_byte']:.4f}"
        " bits/byte (lm-eval also scores the first token of each block, from a prefix token)"
    )
    result = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": rows,
        "metric": metric,
        "lm_eval_bytes": n_bytes,
        **bench_provenance(git_sha, git_dirty, device),
    }
    return write_bench_json(args.out, result)


if __name__ == "__main__":
    main()
