"""lm-eval task files for our holdout, and the units that relate lm-eval's numbers to ours.

:func:`write_holdout_tasks` turns the holdout of every domain into an lm-eval perplexity task
(``loglikelihood_rolling`` over a local JSONL file) that
:func:`continual.eval.lm_eval_bridge.evaluate_tasks` runs.

Units. Our holdout metric (:func:`continual.eval.holdout.holdout_nll`) is the mean next-token
NLL in nats per token over fixed blocks; lm-eval reports ``bits_per_byte`` over whole
documents::

    bits_per_byte = (sum of NLL in nats) / (ln 2 * UTF-8 bytes)
                  = mean NLL per token * tokens / bytes / ln 2

(:func:`bits_per_byte`, :func:`nll_to_bits_per_byte`). Two conventions differ, so the numbers
are comparable but not identical: lm-eval scores *every* token of a document, the first one
predicted from a prefix token (BOS, or EOS when the tokenizer has no BOS), and cuts documents
longer than the model's context into disjoint windows; our blocks score tokens 2..n of each
block with no prefix. Written as ``unit="blocks"`` (each holdout block decoded to one
document) and scored by us with the prefix token prepended, the two agree exactly in principle
(``tests/test_lm_eval_bridge.py`` checks 1e-4 with a byte-level tokenizer).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from continual.errors import ConfigError, DataError

if TYPE_CHECKING:
    from continual.data.domain import DomainData

# metric -> lm-eval aggregation (as in lm-eval's bundled wikitext task)
METRICS = {
    "word_perplexity": "weighted_perplexity",
    "byte_perplexity": "weighted_perplexity",
    "bits_per_byte": "bits_per_byte",
}
UNITS = ("documents", "blocks")


# --------------------------------------------------------------------------- units


def bits_per_byte(total_nll_nats: float, n_bytes: int) -> float:
    """lm-eval's ``bits_per_byte``: total NLL (nats) / (ln 2 * UTF-8 bytes)."""
    if n_bytes <= 0:
        raise ValueError(f"n_bytes must be positive, got {n_bytes}")
    return total_nll_nats / (math.log(2) * n_bytes)


def nll_to_bits_per_byte(mean_nll: float, n_tokens: int, n_bytes: int) -> float:
    """Our mean NLL (nats/token) over ``n_tokens`` scored tokens -> bits per byte."""
    return bits_per_byte(mean_nll * n_tokens, n_bytes)


# --------------------------------------------------------------------------- task files


def _task_texts(domain: DomainData, unit: str, tokenizer: Any) -> list[str]:
    if unit == "documents":
        return [d.text for d in domain.holdout_docs]
    if tokenizer is None:
        raise ConfigError(
            'write_holdout_tasks(unit="blocks") needs the tokenizer to decode blocks.'
        )
    # Special tokens (the EOS between packed documents) stay as their literal text, so that
    # re-tokenization gives the same ids; lm-eval counts their characters as bytes.
    return [
        tokenizer.decode(block.tolist(), skip_special_tokens=False)
        for block in domain.holdout_blocks
    ]


def write_holdout_tasks(
    data: Mapping[str, DomainData],
    out_dir: Path,
    prefix: str = "continual",
    unit: str = "documents",
    tokenizer: Any = None,
) -> list[str]:
    """Write one lm-eval perplexity task per domain: ``<prefix>_<domain>.{jsonl,yaml}``.

    Args:
        data: Domains by name (their holdout side is used; nothing from training).
        out_dir: Directory for the task files (created); pass it as ``include_path``.
        prefix: Task names are ``f"{prefix}_{domain}"``.
        unit: ``"documents"``: the holdout documents, whole, in split-rank order (a prefix is
            a fair sample, so ``limit`` works); lm-eval's own perplexity protocol.
            ``"blocks"``: each holdout block decoded to text, one document per block (the
            tokens our metric scores; needs ``tokenizer``; the round trip is exact for byte-
            level tokenizers and nearly so for BPE ones).
        tokenizer: The model's tokenizer (``unit="blocks"`` only).

    Returns:
        The task names, in the order of ``data``.
    """
    if unit not in UNITS:
        raise ConfigError(f"unit={unit!r} is unknown; use one of {UNITS}.")
    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for domain_name, domain in data.items():
        task = f"{prefix}_{domain_name}"
        texts = _task_texts(domain, unit, tokenizer)
        if not texts:
            raise DataError(f"domain {domain_name!r} has no holdout {unit} to write.")
        jsonl = out_dir / f"{task}.jsonl"
        with jsonl.open("w", encoding="utf-8") as f:
            for text in texts:
                f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        config = {
            "task": task,
            "dataset_path": "json",
            "dataset_kwargs": {
                "data_files": {"test": str(jsonl)},
                "cache_dir": str(out_dir / ".hf_datasets"),  # beside the tasks, not in ~/.cache
            },
            "output_type": "loglikelihood_rolling",
            "test_split": "test",
            "doc_to_text": "",
            # A column name, not "{{text}}": lm-eval renders templates with Jinja and then
            # literal_evals results that look like "[...]", which would corrupt such documents.
            "doc_to_target": "text",
            "metric_list": [
                {"metric": m, "aggregation": agg, "higher_is_better": False}
                for m, agg in METRICS.items()
            ],
            "metadata": {"version": 1.0, "domain": domain_name, "unit": unit},
        }
        (out_dir / f"{task}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        names.append(task)
    return names


__all__ = ["METRICS", "UNITS", "bits_per_byte", "nll_to_bits_per_byte", "write_holdout_tasks"]
