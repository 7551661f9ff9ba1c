"""experiments/bench_train_throughput.py: our training step vs the HF Trainer; its FLOP count."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests.test_experiments import _load as load_experiment
from tests.test_runtime_malloc import GLIBC


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_experiment("bench_train_throughput", monkeypatch)


class TinyLM(torch.nn.Module):
    """Embedding, two projections (one with a bias) and an untied head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(11, 4)
        self.up = torch.nn.Linear(4, 6)
        self.down = torch.nn.Linear(6, 4, bias=False)
        self.head = torch.nn.Linear(4, 11, bias=False)

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.head


def test_flop_count_counts_linear_weights_and_the_head(bench: ModuleType) -> None:
    params = bench.matmul_parameters(TinyLM())
    assert params == {"linear": 4 * 6 + 6 * 4, "head": 4 * 11}  # biases and embedding excluded
    assert bench.flops_per_token(params) == 4 * (48 + 44)
    plain = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    assert bench.matmul_parameters(plain) == {"linear": 15 + 10, "head": 0}


def test_bench_runs_both_sides_and_records_provenance(tmp_path: Path, bench: ModuleType) -> None:
    out = tmp_path / "bench.json"
    args = [
        "--model", "tiny_random", "--repeats", "1", "--steps", "2", "--batch", "2",
        "--block-len", "16", "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
        "--lora-dropout", "0",
    ]  # fmt: skip
    result = bench.main(args)
    assert result["lora"]["dropout"] == 0  # the override, on both sides (one lora config)
    assert result["cpu_malloc_retain"] is GLIBC  # --malloc retain, the default, where glibc is
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    ours, hf = result["sides"]["ours"], result["sides"]["hf"]
    assert ours["tokens_per_s"] > 0 and hf["tokens_per_s"] > 0
    assert result["tokens_per_run"] == 2 * 2 * 16
    for o, h, ratio in zip(
        ours["tokens_per_s_repeats"], hf["tokens_per_s_repeats"], result["ratios"], strict=True
    ):
        assert ratio == pytest.approx(o / h)
    assert result["ratio_ours_over_hf"] == pytest.approx(ours["tokens_per_s"] / hf["tokens_per_s"])
    assert [r["side"] for r in result["runs"]] == ["ours", "hf"]
    assert re.fullmatch(r"[0-9a-f]{40}", result["git_sha"])
    assert isinstance(result["git_dirty"], bool)
    assert "4 * (linear + head)" in result["flop_formula"]
    assert result["flops_per_token"] == 4 * sum(result["matmul_parameters"].values())
    assert result["matmul_ceiling_flops"] > 0 and ours["ceiling_fraction"] > 0
    assert result["packages"]["torch"] and result["packages"]["transformers"]
    assert result["machine"]["device"] == "cpu"
    assert result["train"]["batch_size"] == 2 and result["train"]["micro_batch_size"] == 2
    refs = result["references"]
    assert refs["frozen_base_step"]["flops_per_token"] == result["flops_per_token"]
    assert refs["frozen_base_forward"]["flops_per_token"] == result["flops_per_token"] // 2
    assert [(r["reference"], r["repeat"]) for r in result["reference_runs"]] == [
        ("frozen_base_step", 0), ("frozen_base_forward", 0)
    ]  # fmt: skip
    for name, row in refs.items():
        assert row["tokens_per_s"] > 0, name
        assert row["ceiling_fraction"] == pytest.approx(
            row["tokens_per_s"] * row["flops_per_token"] / result["matmul_ceiling_flops"]
        )
    assert result["ours_over_frozen_base_step"] == pytest.approx(
        ours["tokens_per_s"] / refs["frozen_base_step"]["tokens_per_s"]
    )


def test_bench_refuses_an_impossible_dropout(bench: ModuleType) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--lora-dropout", "1.5"])
