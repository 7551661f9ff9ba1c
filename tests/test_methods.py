"""Protocols: base weights never change, adapter weights move, serving picks the right model."""

from __future__ import annotations

import torch

from continual.data.domain import TextBlocks
from continual.methods import build_method
from continual.models.loading import load_model
from continual.train.loop import train_stage
from tests.conftest import compose_config


def _setup(tmp_path, method: str):
    cfg = compose_config(["+sequence=med_code", "model=tiny_random", f"method={method}",
                          "train.steps=4", "train.batch_size=2", "train.micro_batch_size=2",
                          "train.lr=1e-2", "train.warmup_steps=0"])  # fmt: skip
    loaded = load_model(cfg.model, tmp_path)
    base = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    method_obj = build_method(cfg.method)
    model = method_obj.setup(loaded.model)
    return cfg, loaded, base, method_obj, model


def _blocks(vocab: int, seed: int) -> torch.Tensor:
    return torch.randint(0, vocab, (8, 16), generator=torch.Generator().manual_seed(seed))


def _base_unchanged(model, base: dict[str, torch.Tensor]) -> None:
    state = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
             for k, v in model.state_dict().items() if "lora_" not in k}  # fmt: skip
    for name, before in base.items():
        assert torch.equal(state[name], before), f"base weight {name} changed"


def test_sequential_lora_moves_every_adapter_weight_and_no_base_weight(tmp_path) -> None:
    cfg, loaded, base, method, model = _setup(tmp_path, "lora")
    method.before_stage(1, "med")
    init = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert init and all("lora_" in n for n in init)
    groups = method.param_groups(cfg.train.lr)
    train_stage(model, groups, TextBlocks(_blocks(model.config.vocab_size, 0)), cfg.train,
                loaded.device,
                torch.Generator().manual_seed(0))  # fmt: skip
    for name, param in model.named_parameters():
        if name in init:
            assert not torch.equal(param, init[name]), f"{name} did not move"
    _base_unchanged(model, base)


def test_frozen_lora_keeps_earlier_adapter_bit_identical(tmp_path) -> None:
    cfg, loaded, base, method, model = _setup(tmp_path, "frozen_lora")
    vocab = loaded.model.config.vocab_size
    for stage, domain in enumerate(["med", "code"], start=1):
        method.before_stage(stage, domain)
        if stage == 2:
            med = {
                n: p.detach().clone() for n, p in method.model.named_parameters() if ".med." in n
            }
            assert med and not any(p.requires_grad for n, p in method.model.named_parameters()
                                   if ".med." in n)  # fmt: skip
        groups = method.param_groups(cfg.train.lr)
        assert all(
            f".{domain}." in n for n, p in method.model.named_parameters() if p.requires_grad
        )
        train_stage(method.model, groups, TextBlocks(_blocks(vocab, stage)), cfg.train,
                    loaded.device,
                    torch.Generator().manual_seed(stage))  # fmt: skip
        method.after_stage(stage, domain)
    after = dict(method.model.named_parameters())
    for name, before in med.items():
        assert torch.equal(after[name], before)
    _base_unchanged(method.model, base)

    ids = _blocks(vocab, 9)[:2]
    with torch.no_grad():
        with method.serving("med"):
            med_logits = method.model(input_ids=ids).logits
        with method.serving("code"):
            code_logits = method.model(input_ids=ids).logits
        with method.serving("general"):  # never trained: served by the base
            base_logits = method.model(input_ids=ids).logits
        with method.model.disable_adapter():
            plain = method.model(input_ids=ids).logits
    assert not torch.allclose(med_logits, code_logits)
    assert torch.equal(base_logits, plain)


def test_modular_crma_freezes_adapters_and_keeps_training_the_backbone(tmp_path) -> None:
    cfg, loaded, base, method, model = _setup(tmp_path, "modular_crma")
    vocab = loaded.model.config.vocab_size
    backbone_before = {k: v.clone() for k, v in method.crma.state_dict().items()}
    for stage, domain in enumerate(["med", "code"], start=1):
        method.before_stage(stage, domain)
        if stage == 2:
            med = {
                n: p.detach().clone() for n, p in method.model.named_parameters() if ".med." in n
            }
            backbone_mid = {k: v.clone() for k, v in method.crma.state_dict().items()}
        groups = method.param_groups(cfg.train.lr)
        names = {g.get("name") for g in groups}
        assert {"crma_proj", "crma_mix", "crma_gate"} <= names
        train_stage(method.model, groups, TextBlocks(_blocks(vocab, stage)), cfg.train,
                    loaded.device,
                    torch.Generator().manual_seed(stage))  # fmt: skip
        method.after_stage(stage, domain)
    after = dict(method.model.named_parameters())
    assert med and all(torch.equal(after[n], p) for n, p in med.items())
    final = method.crma.state_dict()
    for key in final:  # the shared backbone kept training in both stages
        assert not torch.equal(final[key], backbone_mid[key]), key
        assert not torch.equal(backbone_mid[key], backbone_before[key]), key
    _base_unchanged(method.model, base)
    diag = method.diagnostics()
    assert abs(diag["crma_row_sum_err"]) < 1e-5 and abs(diag["crma_col_sum_err"]) < 1e-5
    assert diag["crma_spectral_norm"] <= 1 + 1e-5


def test_crma_method_is_identity_at_setup(tmp_path) -> None:
    cfg = compose_config(["+sequence=med_code", "model=tiny_random", "method=crma"])
    loaded = load_model(cfg.model, tmp_path)
    ids = _blocks(loaded.model.config.vocab_size, 3)[:2]
    with torch.no_grad():
        plain = loaded.model(input_ids=ids).logits.clone()
        model = build_method(cfg.method).setup(loaded.model)
        adapted = model(input_ids=ids).logits
    assert (plain - adapted).abs().max() < 1e-4
