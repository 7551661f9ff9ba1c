"""Step time of LoRA + CRMA over plain LoRA on the same model and batch, measured side by side.

    python experiments/bench_crma_step_time.py --model smollm2_135m --repeats 7 \
        --out results/bench_crma_step_time.json

One process, one model, one LoRA; CRMA is attached for the "crma" variant and detached for the
"lora" variant, alternating the order every repeat so that drift in machine load hits both.
Each timed step is forward + backward + AdamW step on the same fixed batch. Reports the median
step time of each variant and the median of the per-repeat ratios. The JSON also records the
commit and whether the tree was dirty (at start), package versions and the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's package: the one the recorded commit describes

from continual.adapters.crma import CRMA, CRMAConfig  # noqa: E402
from continual.methods.lora import lora_config  # noqa: E402
from continual.models.loading import load_model  # noqa: E402
from continual.rundir import atomic_write_json, git_state, machine_info, package_versions  # noqa: E402


def timed_step(model, optimizer, ids: torch.Tensor) -> float:
    start = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2_135m", help="a conf/model/<name>.yaml")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--block-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "continual"))
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    # before the run: the results file written into the tree afterwards must not count as dirty
    git_sha, git_dirty = git_state(ROOT)

    from peft import get_peft_model

    model_cfg = OmegaConf.load(ROOT / "conf" / "model" / f"{args.model}.yaml")
    method_cfg = OmegaConf.load(ROOT / "conf" / "method" / "lora.yaml")
    crma_cfg = OmegaConf.load(ROOT / "conf" / "method" / "crma.yaml")["crma"]
    loaded = load_model(model_cfg, Path(args.cache_dir))
    torch.manual_seed(0)
    model = get_peft_model(loaded.model, lora_config(method_cfg.lora), "sequential")
    crma = CRMA.from_model(model, CRMAConfig.from_dict(OmegaConf.to_container(crma_cfg)))
    lora_params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": lora_params}, *crma.parameter_groups(1e-3)], lr=1e-3)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.block_len)).to(loaded.device)
    model.train()

    times: dict[str, list[float]] = {"lora": [], "crma": []}
    ratios = []
    for repeat in range(args.warmup + args.repeats):
        order = ["lora", "crma"] if repeat % 2 == 0 else ["crma", "lora"]
        measured = {}
        for variant in order:
            if variant == "crma":
                crma.attach(model)
            else:
                crma.detach()
            measured[variant] = timed_step(model, optimizer, ids)
        if repeat >= args.warmup:
            for variant, seconds in measured.items():
                times[variant].append(seconds)
            ratios.append(measured["crma"] / measured["lora"])
        print(f"repeat {repeat}: lora {measured['lora']:.3f} s, crma {measured['crma']:.3f} s")
    crma.detach()

    result = {
        "model": args.model,
        "batch": [args.batch, args.block_len],
        "repeats": args.repeats,
        "median_step_s": {k: statistics.median(v) for k, v in times.items()},
        "median_ratio_crma_over_lora": statistics.median(ratios),
        "ratios": ratios,
        "crma_parameters": crma.num_parameters(),
        "lora_parameters": sum(p.numel() for p in lora_params),
        "base_parameters": loaded.identity["parameters"],
        "device": str(loaded.device),
        "torch_threads": torch.get_num_threads(),
        "git_sha": git_sha,
        "git_dirty": git_dirty,
        "packages": package_versions(),
        "machine": machine_info(),
    }
    print(
        f"| variant | median step (s) |\n|---|---|\n"
        f"| LoRA | {result['median_step_s']['lora']:.3f} |\n"
        f"| LoRA + CRMA | {result['median_step_s']['crma']:.3f} |\n"
        f"median ratio (LoRA+CRMA / LoRA): {result['median_ratio_crma_over_lora']:.3f}"
    )
    if args.out:
        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
