"""The vendor-reported numbers the report prints for side-by-side reading
(:func:`published_section`)."""

from __future__ import annotations

from continual.analysis.markdown import md_table

__all__ = ["PUBLISHED", "published_section"]

# From shared/research/published-numbers.md: self-reported by the CRMA vendor (ModelBrew AI),
# not replicated; different models, data, steps and hyper-parameters than any run here.
PUBLISHED = [
    ("Mistral-7B, 5 domains, 500 train / 100 holdout each, seeds 0/42/1234", "modular CRMA",
     "backbone drift", "-0.17% ± 0.17 (per seed -0.03, -0.10, -0.36)",
     "arXiv 2606.00382; HF dataset ModelBrew/sequential-forgetting-benchmark"),
    ("same", "naive sequential LoRA", "forgetting", "+42.96% ± 5.5 (38.1, 41.7, 49.0)", "same"),
    ("same", "modular vs frozen", "holdout-loss advantage", "1.99% ± 0.54", "vendor paper page"),
    ("Mistral-7B-v0.3, 4 domains med -> legal -> code -> fin, 1 run", "modular CRMA",
     "drift per domain", "-0.2, -0.1, -0.1, 0.0 (avg -0.1%)", "HF forum post 173860"),
    ("same", "naive sequential LoRA", "forgetting per domain", "+228, +593, +233 (avg +351.4%)",
     "same"),
    ("TinyLlama-1.1B-Chat, 4 domains", "modular CRMA", "drift", "-0.1%", "HF dataset"),
    ("TinyLlama-1.1B, 200 Alpaca rows, seed 42", "LoRA vs LoRA+CRMA",
     "final loss; peak / mean grad norm", "0.1658 vs 0.1651; 12.15 vs 5.75; 2.34 vs 2.07",
     "HF forum post 173691"),
    ("Mistral-7B single task", "LoRA vs CRMA", "holdout loss", "0.1519 vs 0.1426",
     "HF forum post 173818"),
    ("3 runs", "LoRA vs CRMA", "peak grad-norm reduction", "39-84%",
     "HF forum posts 173817/173818"),
    ("literature", "EWC", "forgetting (vendor's table)", "+58%", "HF forum post 173818"),
]  # fmt: skip


def published_section() -> str:
    return "\n".join([
        "## Published numbers (vendor-reported, for side-by-side reading only)",
        "",
        "**Self-reported by the CRMA vendor (ModelBrew AI); no public code, no independent "
        "replication.** Models, data, steps and hyper-parameters differ from the runs above, so "
        "read these next to our numbers, not as a like-for-like comparison. Source: "
        "`shared/research/published-numbers.md`.",
        "",
        md_table(["setting", "method", "metric", "value", "source"], PUBLISHED),
    ])  # fmt: skip
