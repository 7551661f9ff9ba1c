"""CRMA bypass effect and residual-size diagnostic (continual/eval/crma_probe.py)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from continual.adapters.crma import CRMABlockAdapter, CRMAConfig
from continual.data.domain import TextBlocks
from continual.eval.crma_probe import (
    bypass_summary,
    is_inert,
    layer_groups,
    mean_ratio,
    residual_ratios,
)
from continual.eval.suite import evaluate_all
from continual.train.loop import train_stage
from tests.test_methods import _blocks, _setup


def test_residual_ratio_of_a_hand_built_block() -> None:
    """h = (3, 4, 0, 0), read picks h1 and h2 as two streams of rank 1, M is uniform (all
    logits equal), write copies the streams back to coordinates 1 and 2, gate 1: the residual
    is ((h1 + h2) / 2, (h1 + h2) / 2, 0, 0) = (3.5, 3.5, 0, 0), its norm 3.5 sqrt(2), ||h|| = 5."""
    block = CRMABlockAdapter(4, CRMAConfig(n_streams=2, rank=1, init_log_alpha=0.0))
    with torch.no_grad():
        block.read.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
        block.write.copy_(torch.tensor([[1.0, 0], [0, 1.0], [0, 0], [0, 0]]))
        block.log_mix.zero_()
    assert torch.allclose(block.mixing_matrix(), torch.full((2, 2), 0.5))
    block.probe = []
    h = torch.tensor([[[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]]])  # second token: no residual
    out = block(h)
    assert torch.allclose(out[0, 0], torch.tensor([6.5, 7.5, 0.0, 0.0]))
    ratios = block.probe[0]
    assert ratios.shape == (1, 2)
    assert ratios[0, 0].item() == pytest.approx(3.5 * math.sqrt(2) / 5, rel=1e-6)
    assert ratios[0, 1].item() == 0.0
    assert mean_ratio(block.probe, None) == pytest.approx(3.5 * math.sqrt(2) / 10, rel=1e-6)
    assert mean_ratio(block.probe, torch.tensor([[1, 0]])) == pytest.approx(
        3.5 * math.sqrt(2) / 5, rel=1e-6
    )


def test_layer_groups_are_contiguous_thirds() -> None:
    assert layer_groups(range(7)) == {"early": [0, 1, 2], "middle": [3, 4], "late": [5, 6]}
    assert layer_groups([4]) == {"early": [4], "middle": [], "late": []}


def test_bypass_summary_and_inert_verdict() -> None:
    bypass = pd.DataFrame({"med": [0.0, 0.05, 0.02], "code": [0.0, 0.001, 0.03]}, index=[0, 1, 2])
    summary = bypass_summary(bypass, ["med", "code"], threshold=0.01)
    assert summary["crma_bypass_own_nll"] == pytest.approx((0.05 + 0.03) / 2)
    assert summary["crma_bypass_own_nll_min"] == pytest.approx(0.03)
    assert summary["crma_inert"] == 0.0
    assert bypass_summary(bypass, ["med", "code"], threshold=0.1)["crma_inert"] == 1.0
    assert is_inert([0.005, -0.009], 0.01) and not is_inert([0.005, -0.011], 0.01)


def _text_domain(blocks: torch.Tensor) -> SimpleNamespace:
    return SimpleNamespace(kind="text", holdout_blocks=blocks)


def test_bypass_is_exactly_zero_untrained_and_nonzero_after_training(tmp_path) -> None:
    cfg, loaded, _, method, model = _setup(tmp_path, "crma")
    vocab = model.config.vocab_size
    data = {"med": _text_domain(_blocks(vocab, 5)), "code": _text_domain(_blocks(vocab, 6))}
    values = evaluate_all(method, model, data, cfg, loaded.device, 0)
    for domain in data:
        assert values[(domain, "crma_bypass_nll")] == 0.0
        assert values[(domain, "crma_residual_ratio")] == 0.0
        groups = [g for g, layers in layer_groups(method.crma.layer_indices).items() if layers]
        assert groups == ["early", "middle"]  # tiny_random has 2 decoder layers
        assert {f"crma_residual_ratio_{g}" for g in groups} <= {m for d, m in values if d == domain}
    method.before_stage(1, "med")
    train_stage(model, method.param_groups(cfg.train.lr), TextBlocks(_blocks(vocab, 0)),
                cfg.train, loaded.device, torch.Generator().manual_seed(0))  # fmt: skip
    values = evaluate_all(method, model, data, cfg, loaded.device, 1)
    assert values[("med", "crma_residual_ratio")] > 0
    assert values[("med", "crma_bypass_nll")] != 0.0
    with method.crma.disabled():  # the bypass equals a manual evaluation with the branch off
        off = evaluate_all(method, model, data, cfg, loaded.device, 1)
    expected = off[("med", "holdout_nll")] - values[("med", "holdout_nll")]
    assert values[("med", "crma_bypass_nll")] == pytest.approx(expected, abs=1e-9)
    assert all(b.probe is None for b in method.crma.blocks)  # probing switched off again


def test_no_bypass_for_methods_without_crma_or_when_disabled(tmp_path) -> None:
    cfg, loaded, _, method, model = _setup(tmp_path, "lora")
    data = {"med": _text_domain(_blocks(model.config.vocab_size, 5))}
    values = evaluate_all(method, model, data, cfg, loaded.device, 0)
    assert not any(m.startswith("crma_bypass") for _, m in values)
    cfg, loaded, _, method, model = _setup(tmp_path, "crma")
    cfg.eval.crma_bypass = False
    values = evaluate_all(method, model, data, cfg, loaded.device, 0)
    assert not any(m.startswith("crma_") and "bypass" in m for _, m in values)
    assert ("all", "crma_gate_mean") in values


def test_residual_ratios_ignore_padding(tmp_path) -> None:
    cfg, loaded, _, method, model = _setup(tmp_path, "crma")
    for block in method.crma.blocks:  # a non-zero branch
        torch.nn.init.normal_(block.write, std=0.5)
    ids = _blocks(model.config.vocab_size, 3)[:2]
    full = residual_ratios(model, method.crma, {"input_ids": ids}, loaded.device)
    mask = torch.ones_like(ids)
    padded_ids = torch.cat([ids, torch.zeros((2, 5), dtype=ids.dtype)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros((2, 5), dtype=mask.dtype)], dim=1)
    batch = {"input_ids": padded_ids, "attention_mask": padded_mask}
    padded = residual_ratios(model, method.crma, batch, loaded.device)
    assert full["crma_residual_ratio"] > 0
    for key, value in full.items():  # right padding changes no earlier position's state
        assert padded[key] == pytest.approx(value, rel=1e-5)


def test_bypass_section_verdicts_and_gradient_ratios() -> None:
    from continual.analysis.crma_sections import bypass_section, bypass_table, gradient_ratios

    rows = []
    for seed, (b1, b2, inert) in enumerate([(0.10, 0.001, 0.0), (0.12, -0.002, 1.0)]):
        for stage, d, bypass in ((1, "med", b1), (2, "code", b2)):
            rows += [
                ("crma", seed, stage, d, d, "crma_bypass_nll", bypass),
                ("crma", seed, stage, d, d, "crma_residual_ratio", 0.01),
                ("crma", seed, stage, d, "all", "crma_gate_mean", 0.9),
                ("crma", seed, stage, d, d, "grad_norm_peak", 2.0),
                ("lora", seed, stage, d, d, "grad_norm_peak", 4.0 + 4 * seed),
            ]
        rows.append(("crma", seed, 2, "code", "all", "crma_inert", inert))
    columns = ["method", "seed", "stage", "stage_domain", "eval_domain", "metric", "value"]
    metrics = pd.DataFrame(rows, columns=columns)
    table = bypass_table(metrics).set_index("stage")
    assert bool(table.loc[1, "above_spread"]) and not bool(table.loc[2, "above_spread"])
    text = bypass_section(metrics)
    assert "no (within noise)" in text and "**CRMA inert** in 1 of 2 `crma` run(s)" in text
    ratios = gradient_ratios(metrics).set_index("metric")
    # per (seed, stage) ratios 0.5 and 0.25: geometric mean sqrt(0.125)
    assert ratios.loc["grad_norm_peak", "ratio"] == pytest.approx(math.sqrt(0.125))
    one_seed = bypass_section(metrics[metrics["seed"] == 0])
    assert "n/a (one seed)" in one_seed


def test_labelled_arms_sort_with_their_method_and_compare_against_plain_lora() -> None:
    from continual.analysis import method_order
    from continual.analysis.crma_sections import gradient_ratio_section, gradient_ratios

    arms = ["crma_zclip_default", "lora_zclip_default", "crma_norm_default", "lora_norm_default"]
    rows = [
        (arm, seed, 1, "med", "med", "grad_norm_peak", peak)
        for seed in (0, 1)
        for arm, peak in zip(arms, (1.0, 2.0, 3.0, 4.0), strict=True)
    ]
    columns = ["method", "seed", "stage", "stage_domain", "eval_domain", "metric", "value"]
    metrics = pd.DataFrame(rows, columns=columns)
    assert method_order(metrics) == [
        "lora_norm_default", "lora_zclip_default", "crma_norm_default", "crma_zclip_default"
    ]  # fmt: skip
    ratios = gradient_ratios(metrics).set_index("method")["ratio"]
    assert "lora_norm_default" not in ratios.index
    assert ratios["crma_zclip_default"] == pytest.approx(0.25)
    assert ratios["lora_zclip_default"] == pytest.approx(0.5)
    assert "relative to `lora_norm_default`" in gradient_ratio_section(metrics)
    assert gradient_ratio_section(metrics[metrics["method"] != "lora_norm_default"]) is None
