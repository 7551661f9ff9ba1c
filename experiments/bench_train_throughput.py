"""Training throughput: our training step vs the Hugging Face Trainer with peft, same setting.

    python experiments/bench_train_throughput.py --model smollm2_135m --steps 8 --repeats 3 \
        --out results/bench_train_throughput.json

Both sides train a fresh LoRA (``conf/method/lora.yaml``'s ``lora``, via
``continual.methods.lora.lora_config``, same seed, so the same initial adapter) on a copy of the
same base model, for ``--steps`` optimizer steps of ``--batch`` blocks of ``--block-len``
fixed random tokens (every token a target), with the default train config's optimizer (AdamW,
same lr and weight decay), scheduler and warm-up, and global-norm clipping at ``max_grad_norm``:

* ``ours``: ``continual.train.loop.train_stage`` on a ``TextBlocks`` training set, unchanged;
* ``hf``: ``transformers.Trainer`` on ``peft.get_peft_model`` with the same ``LoraConfig``, a
  dataset of the same blocks (``labels`` = ``input_ids``), ``TrainingArguments`` with the same
  batch, max_steps, learning_rate, lr_scheduler_type, warmup_steps, max_grad_norm,
  weight_decay, optim ``adamw_torch``; no evaluation, no saving, no logging, report_to none,
  dataloader_num_workers 0, use_cpu on CPU.

Timed: ``train_stage(...)`` and ``trainer.train()`` only (each with its own batch assembly,
collation, optimizer and scheduler creation); model copy, peft wrapping and Trainer
construction are outside (each hf run also keeps the Trainer's own ``train_runtime``, its loop
without train()'s set-up). One untimed 1-step run of each side first (imports, lazy
initialisation), then ``--repeats`` repeats in alternating order (ours hf, hf ours, ...).
Reported: tokens/s per side (median over repeats) and the ratio ours / hf, the median of the
per-repeat ratios (> 1: ours is faster).

Effective FLOP/s: ``4 * (linear + head)`` FLOPs per trained token, where ``linear`` is the
weight count of the base model's ``nn.Linear`` layers other than the output head and ``head``
that of the output head (LoRA on a frozen base: forward 2N, activation gradients 2N; the LoRA
weights' own gradients and the attention score/value products are left out), against the
device's matmul ceiling measured in the same run (a 2048 x 2048 matmul in the model's dtype,
best of 10, before and after the repeats, at the current torch thread count).

References, timed in every repeat in the same process: the base model alone, frozen, on the
same blocks and batches (``run_frozen_base``): ``frozen_base_step``, its forward with the
model's own full-logits loss and the backward of the activation gradients (the same
``4 * (linear + head)`` FLOPs as a LoRA step, without LoRA, dropout or optimizer: what a
LoRA step at best approaches on this machine), and ``frozen_base_forward``, the forward alone
(``2 * (linear + head)``). Reported with their fraction of the ceiling, and
``ours_over_frozen_base_step``, our tokens/s over the first's.

``--profile``: torch.profiler over 3 of our steps; prints the top ops by self CPU time.
``--malloc`` (default ``retain``): the whole process, both sides, runs with glibc keeping freed
memory, as ``continual.run`` does by default (``cpu_malloc_retain``); ``default`` leaves glibc
as it is.
``--lora-dropout 0`` runs both sides without LoRA dropout: what its masks cost (a different
training run, so not the default comparison).
The JSON records the commit and whether the tree was dirty (at start), package versions and
the machine.
"""

from __future__ import annotations

import argparse
import atexit
import copy
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's package: the one the recorded commit describes

from continual.models.loading import load_model, use_bitsandbytes_only_if_quantised  # noqa: E402
from continual.rundir import (  # noqa: E402
    bench_provenance,
    git_state,
    write_bench_json,
)
from continual.runtime import retain_freed_memory  # noqa: E402

FLOP_FORMULA = (
    "flops_per_token = 4 * (linear + head): linear = weights of the base model's nn.Linear "
    "layers except the output head, head = output-head weights (forward 2N + activation "
    "gradients 2N; LoRA weight gradients and attention score/value products not counted)"
)
SEED = 0


def matmul_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Weights that take part in a matmul per token: ``linear`` (every ``nn.Linear`` but the
    output head) and ``head`` (the output head, ``get_output_embeddings``, 0 if none)."""
    head_module = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    linear = sum(
        m.weight.numel()
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and m is not head_module
    )
    head = head_module.weight.numel() if head_module is not None else 0
    return {"linear": int(linear), "head": int(head)}


def flops_per_token(params: dict[str, int]) -> int:
    """See :data:`FLOP_FORMULA`."""
    return 4 * (params["linear"] + params["head"])


def matmul_ceiling(
    device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 10
) -> float:
    """FLOP/s of the best of ``reps`` ``n x n`` matmuls (after one untimed)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for i in range(reps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def rate_row(tokens_per_s: list[float], per_token: int, ceiling: float) -> dict[str, float]:
    """The median of ``tokens_per_s``, its FLOP/s at ``per_token`` FLOPs per token and their
    fraction of the matmul ``ceiling``."""
    median = statistics.median(tokens_per_s)
    flops = median * per_token
    return {"tokens_per_s": median, "effective_flops": flops, "ceiling_fraction": flops / ceiling}


class BlockDataset(torch.utils.data.Dataset):
    """The blocks as a map-style dataset of ``input_ids`` / ``labels`` rows (HF's side)."""

    def __init__(self, blocks: torch.Tensor) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peft_model(base: torch.nn.Module, lora_cfg: Any) -> torch.nn.Module:
    from peft import get_peft_model

    from continual.methods.lora import lora_config

    torch.manual_seed(SEED)  # the same initial adapter on both sides
    return get_peft_model(copy.deepcopy(base), lora_config(lora_cfg))


def default_step(model: str, steps: int, batch: int = 8, block_len: int = 128) -> tuple:
    """What a child process of the other benches trains: ``(loaded, train_cfg, lora_cfg,
    blocks)``, the model loaded as runs load it, the default train config with one forward of
    ``batch`` blocks per step, conf/method/lora.yaml's LoRA and ``steps`` steps' fixed random
    blocks of ``block_len`` tokens (seed 0)."""
    model_cfg = OmegaConf.load(ROOT / "conf" / "model" / f"{model}.yaml")
    train_cfg = OmegaConf.load(ROOT / "conf" / "train" / "default.yaml")
    train_cfg.batch_size = train_cfg.micro_batch_size = batch
    lora_cfg = OmegaConf.load(ROOT / "conf" / "method" / "lora.yaml").lora
    cache = Path(os.environ.get("CONTINUAL_CACHE", Path.home() / ".cache" / "continual"))
    loaded = load_model(model_cfg, cache)
    gen = torch.Generator().manual_seed(0)
    vocab = loaded.model.config.vocab_size
    blocks = torch.randint(0, vocab, (batch * steps, block_len), generator=gen)
    return loaded, train_cfg, lora_cfg, blocks


def run_ours(base, lora_cfg, train_cfg, blocks, device, steps) -> dict[str, Any]:
    """One timed ``train_stage`` on a fresh LoRA; seconds and mean loss."""
    from continual.data.domain import TextBlocks
    from continual.train.loop import train_stage

    model = _peft_model(base, lora_cfg)
    groups = [{"name": "lora", "params": [p for p in model.parameters() if p.requires_grad]}]
    generator = torch.Generator().manual_seed(SEED)
    _sync(device)
    t0 = time.perf_counter()
    records = train_stage(
        model, groups, TextBlocks(blocks), train_cfg, device, generator, desc="ours", steps=steps
    )
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "loss": statistics.fmean(r.loss for r in records)}


def run_hf(base, lora_cfg, train_cfg, blocks, device, steps, tmp: Path) -> dict[str, Any]:
    """One timed ``trainer.train()`` on a fresh LoRA; seconds, mean loss and the Trainer's own
    ``train_runtime`` (its training loop without train()'s set-up)."""
    from transformers import Trainer, TrainingArguments, default_data_collator

    model = _peft_model(base, lora_cfg)
    args = TrainingArguments(
        output_dir=str(tmp),
        per_device_train_batch_size=int(train_cfg.batch_size),
        gradient_accumulation_steps=1,
        max_steps=steps,
        learning_rate=float(train_cfg.lr),
        weight_decay=float(train_cfg.weight_decay),
        lr_scheduler_type=str(train_cfg.scheduler),
        warmup_steps=int(train_cfg.warmup_steps),
        max_grad_norm=float(train_cfg.max_grad_norm),
        optim="adamw_torch",
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=device.type == "cpu",
        seed=SEED,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=BlockDataset(blocks),
        data_collator=default_data_collator,
    )
    _sync(device)
    t0 = time.perf_counter()
    out = trainer.train()
    _sync(device)
    seconds = time.perf_counter() - t0
    runtime = float(out.metrics["train_runtime"])  # the Trainer's own clock, inside train()
    return {"seconds": seconds, "loss": float(out.training_loss), "hf_train_runtime_s": runtime}


def run_frozen_base(frozen, blocks, batch: int, device, backward: bool) -> dict[str, Any]:
    """The reference: the base model alone (no LoRA, no dropout, no optimizer), ``frozen`` (a
    copy whose weights do not require gradients), over the same blocks in batches of
    ``batch``. ``backward``: its full-logits loss (the model's own) and the gradient of the
    activations, through ``inputs_embeds`` that require it, i.e. the ``4 * (linear + head)``
    FLOPs of a LoRA step with nothing else; else the forward alone (``2 * (linear + head)``)
    without autograd. Seconds and mean loss (nan for the forward)."""
    model = frozen.train(backward)
    embed = model.get_input_embeddings()
    losses = []
    _sync(device)
    t0 = time.perf_counter()
    for start in range(0, len(blocks), batch):
        ids = blocks[start : start + batch].to(device)
        if backward:
            inputs = embed(ids).requires_grad_(True)
            loss = model(inputs_embeds=inputs, labels=ids).loss
            loss.backward()
            losses.append(float(loss.detach()))
        else:
            with torch.no_grad():
                model(input_ids=ids)
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "loss": statistics.fmean(losses) if losses else float("nan")}


def profile_ours(base, lora_cfg, train_cfg, blocks, device, steps: int = 3) -> list[dict]:
    """torch.profiler over ``steps`` of our steps; the top 15 ops by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        run_ours(base, lora_cfg, train_cfg, blocks, device, steps)
    averages = prof.key_averages()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=15))
    top = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    total = sum(e.self_cpu_time_total for e in averages) or 1
    return [
        {
            "op": e.key,
            "self_cpu_s": e.self_cpu_time_total / 1e6,
            "self_cpu_share": e.self_cpu_time_total / total,
            "calls": e.count,
        }
        for e in top
    ]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2_135m", help="a conf/model/<name>.yaml")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per timed run")
    parser.add_argument("--batch", type=int, default=None, help="blocks per step (default: 8)")
    parser.add_argument("--block-len", type=int, default=None, help="tokens per block (128)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--warmup-steps", type=int, default=None, help="LR warm-up steps (default: train config)"
    )
    parser.add_argument(
        "--lora-dropout", type=float, default=None,
        help="LoRA dropout on both sides (default: conf/method/lora.yaml's); 0 shows what the "
        "dropout masks cost",
    )  # fmt: skip
    parser.add_argument(
        "--malloc", choices=("retain", "default"), default="retain",
        help="the C allocator for the whole process, both sides: retain (as `continual.run` "
        "does, cpu_malloc_retain=true) or glibc's default",
    )  # fmt: skip
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: CONTINUAL_CACHE")
    parser.add_argument("--profile", action="store_true", help="profile 3 of our steps")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be >= 1")
    if args.lora_dropout is not None and not 0 <= args.lora_dropout < 1:
        parser.error("--lora-dropout must be in [0, 1)")
    # before the run: the results file written into the tree afterwards must not count as dirty
    git_sha, git_dirty = git_state(ROOT)
    started = time.perf_counter()

    malloc_retained = retain_freed_memory(args.malloc == "retain")  # before the model loads
    model_cfg = OmegaConf.load(ROOT / "conf" / "model" / f"{args.model}.yaml")
    use_bitsandbytes_only_if_quantised(model_cfg)
    train_cfg = OmegaConf.load(ROOT / "conf" / "train" / "default.yaml")
    for key, value in {
        "batch_size": args.batch,
        "block_len": args.block_len,
        "warmup_steps": args.warmup_steps,
    }.items():
        if value is not None:
            train_cfg[key] = value
    train_cfg.micro_batch_size = train_cfg.batch_size  # one forward per step, as HF's side
    train_cfg.steps = args.steps
    lora_cfg = OmegaConf.load(ROOT / "conf" / "method" / "lora.yaml").lora
    if args.lora_dropout is not None:
        lora_cfg.dropout = args.lora_dropout
    cache = args.cache_dir or Path(
        os.environ.get("CONTINUAL_CACHE", Path.home() / ".cache" / "continual")
    )
    loaded = load_model(model_cfg, cache)
    base, device = loaded.model, loaded.device
    dtype = next(base.parameters()).dtype
    params = matmul_parameters(base)
    per_token = flops_per_token(params)
    batch, block_len = int(train_cfg.batch_size), int(train_cfg.block_len)
    n_blocks = batch * args.steps  # one epoch: every block once per run, on both sides
    gen = torch.Generator().manual_seed(SEED)
    blocks = torch.randint(0, base.config.vocab_size, (n_blocks, block_len), generator=gen)
    tokens = n_blocks * block_len
    print(
        f"{args.model} on {device} ({dtype}), {torch.get_num_threads()} torch threads: "
        f"{args.steps} steps x {batch} blocks x {block_len} tokens = {tokens} tokens per run; "
        f"lr {train_cfg.lr}, {train_cfg.scheduler}, warm-up {train_cfg.warmup_steps}, "
        f"max_grad_norm {train_cfg.max_grad_norm}; LoRA r={lora_cfg.r} "
        f"on {lora_cfg.target_modules}; C allocator {args.malloc} "
        f"({'applied' if malloc_retained else 'glibc default'})",
        flush=True,
    )
    ceiling_before = matmul_ceiling(device, dtype)
    print(f"matmul ceiling (2048^2, {dtype}): {ceiling_before / 1e9:.1f} GFLOP/s", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))  # the Trainer's output_dir; removed at exit
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    sides = {
        "ours": lambda steps: run_ours(base, lora_cfg, train_cfg, blocks, device, steps),
        "hf": lambda steps: run_hf(base, lora_cfg, train_cfg, blocks, device, steps, tmp),
    }
    for name, run in sides.items():  # untimed: imports, lazy initialisation, allocator
        t0 = time.perf_counter()
        run(1)
        print(f"warm-up {name} (1 step, untimed): {time.perf_counter() - t0:.1f} s", flush=True)
    frozen = copy.deepcopy(base).requires_grad_(False)  # one copy for every reference run
    references = {  # flops per token, and the run: what the base model alone reaches
        "frozen_base_step": (
            per_token,
            lambda: run_frozen_base(frozen, blocks, batch, device, True),
        ),
        "frozen_base_forward": (
            per_token // 2,
            lambda: run_frozen_base(frozen, blocks, batch, device, False),
        ),
    }
    for _, measure in references.values():
        measure()  # untimed, as the sides
    runs: list[dict[str, Any]] = []
    reference_runs: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        for name, (_, measure) in references.items():  # in every repeat, same process
            ref = measure() | {"reference": name, "repeat": rep}
            ref["tokens_per_s"] = tokens / ref["seconds"]
            reference_runs.append(ref)
        order = ["ours", "hf"] if rep % 2 == 0 else ["hf", "ours"]
        for name in order:
            run = sides[name](args.steps) | {"side": name, "repeat": rep}
            run["tokens_per_s"] = tokens / run["seconds"]
            runs.append(run)
            print(
                f"repeat {rep + 1}/{args.repeats} {name}: {run['seconds']:.2f} s, "
                f"{run['tokens_per_s']:.0f} tokens/s, mean loss {run['loss']:.3f}, "
                f"elapsed {time.perf_counter() - started:.0f} s",
                flush=True,
            )
    ceiling_after = matmul_ceiling(device, dtype)
    ceiling = max(ceiling_before, ceiling_after)
    rate = {s: [r["tokens_per_s"] for r in runs if r["side"] == s] for s in sides}
    ratios = [o / h for o, h in zip(rate["ours"], rate["hf"], strict=True)]
    summary = {
        side: rate_row(rate[side], per_token, ceiling)
        | {
            "tokens_per_s_repeats": rate[side],
            "mean_loss": statistics.median(r["loss"] for r in runs if r["side"] == side),
        }
        for side in sides
    }
    ratio = statistics.median(ratios)
    reference_summary = {
        name: rate_row(
            [r["tokens_per_s"] for r in reference_runs if r["reference"] == name], flops, ceiling
        )
        | {"flops_per_token": flops}
        for name, (flops, _) in references.items()
    }
    ours_over_base_step = (
        summary["ours"]["tokens_per_s"] / reference_summary["frozen_base_step"]["tokens_per_s"]
    )
    print(f"\n{FLOP_FORMULA}")
    print(
        f"linear {params['linear']:,} + head {params['head']:,} -> "
        f"{per_token / 1e6:.1f} MFLOP per token; matmul ceiling {ceiling / 1e9:.1f} GFLOP/s "
        f"(before {ceiling_before / 1e9:.1f}, after {ceiling_after / 1e9:.1f})\n"
    )
    print("| side | tokens/s (median) | effective GFLOP/s | of ceiling |")
    print("|---|---|---|---|")
    labelled = [*summary.items(), *((f"{n} (reference)", r) for n, r in reference_summary.items())]
    for label, row in labelled:
        print(
            f"| {label} | {row['tokens_per_s']:.0f} | {row['effective_flops'] / 1e9:.1f} "
            f"| {row['ceiling_fraction']:.1%} |"
        )
    print(
        f"\nours / frozen_base_step (same FLOPs, no LoRA): {ours_over_base_step:.3f}. "
        f"ratio ours / hf: {ratio:.3f} (median of per-repeat ratios "
        f"{', '.join(f'{r:.3f}' for r in ratios)}; > 1: ours faster); load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    profile = profile_ours(base, lora_cfg, train_cfg, blocks, device) if args.profile else None
    result = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "train": OmegaConf.to_container(train_cfg, resolve=True),
        "lora": OmegaConf.to_container(lora_cfg, resolve=True),
        "tokens_per_run": tokens,
        "sides": summary,
        "ratio_ours_over_hf": ratio,
        "ratios": ratios,
        "runs": runs,
        "references": reference_summary,
        "reference_runs": reference_runs,
        "ours_over_frozen_base_step": ours_over_base_step,
        "flop_formula": FLOP_FORMULA,
        "matmul_parameters": params,
        "flops_per_token": per_token,
        "matmul_ceiling_flops": ceiling,
        "matmul_ceiling_flops_before_after": [ceiling_before, ceiling_after],
        "dtype": str(dtype),
        "cpu_malloc_retain": malloc_retained,
        "profile_top_ops": profile,
        "wall_seconds": round(time.perf_counter() - started, 1),
        **bench_provenance(git_sha, git_dirty, device),
    }
    return write_bench_json(args.out, result)


if __name__ == "__main__":
    main()
