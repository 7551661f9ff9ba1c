"""LoRA initialisation options (continual/methods/lora_init.py): PiSSA keeps the step-0 model
equal to the base, and per-domain adapters never see a base that another domain rewrote."""

from __future__ import annotations

import pytest
import torch

from continual.config.validate import validate_config
from continual.data.domain import TextBlocks
from continual.errors import ConfigError
from continual.methods import build_method
from continual.methods.lora_init import peft_init, rewrites_base
from continual.models.loading import load_model
from continual.train.loop import train_stage
from tests.conftest import compose_config
from tests.test_methods import _blocks

TOL = 1e-4  # float32 SVD round trip of W = W_res + s B0 A0


def _setup(tmp_path, method: str, init: str):
    cfg = compose_config([
        "+sequence=med_code", "model=tiny_random", f"method={method}", f"method.lora.init={init}",
        "train.steps=3", "train.batch_size=2", "train.micro_batch_size=2", "train.lr=1e-2",
        "train.warmup_steps=0",
    ])  # fmt: skip
    loaded = load_model(cfg.model, tmp_path)
    original = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    method_obj = build_method(cfg.method)
    model = method_obj.setup(loaded.model)
    return cfg, loaded, original, method_obj, model


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()  # no LoRA dropout
    with torch.no_grad():
        return model(input_ids=ids).logits


def _train(cfg, loaded, method, model, seed: int) -> None:
    train_stage(model, method.param_groups(cfg.train.lr),
                TextBlocks(_blocks(model.config.vocab_size, seed)), cfg.train, loaded.device,
                torch.Generator().manual_seed(seed))  # fmt: skip


def _base_weights(model) -> dict[str, torch.Tensor]:
    return {
        n.replace("base_model.model.", "").replace(".base_layer", ""): p
        for n, p in model.named_parameters() if "lora_" not in n
    }  # fmt: skip


def test_init_names() -> None:
    assert peft_init("default") is True
    assert peft_init("pissa_niter_4") == "pissa_niter_4" and rewrites_base("pissa_niter_4")
    assert not rewrites_base("gaussian") and rewrites_base("olora")
    for bad in ("kaiming", "pissa_niter_", "pissa_niter_0"):
        with pytest.raises(ConfigError, match="method.lora.init"):
            peft_init(bad)


def test_sequential_pissa_starts_at_the_base_and_rewrites_it(tmp_path) -> None:
    cfg, loaded, original, method, model = _setup(tmp_path, "lora", "pissa")
    ids = _blocks(model.config.vocab_size, 9)[:2]
    with model.disable_adapter():
        residual = _logits(model, ids)  # W_res alone: not the base
        base = {n: p.detach().clone() for n, p in _base_weights(model).items()}
    assert any(not torch.equal(base[n], original[n]) for n in original)  # peft rewrote W
    method.before_stage(1, "med")
    served = _logits(model, ids)
    reference = _logits(load_model(cfg.model, tmp_path / "fresh").model, ids)
    assert (served - reference).abs().max() < TOL
    assert (residual - reference).abs().max() > 100 * TOL


@pytest.mark.parametrize("method_name", ["frozen_lora", "modular_crma"])
def test_per_domain_pissa_serves_original_base_plus_its_adapter(tmp_path, method_name) -> None:
    cfg, loaded, original, method, model = _setup(tmp_path, method_name, "pissa")
    reference = load_model(cfg.model, tmp_path / "fresh").model
    ids = _blocks(loaded.model.config.vocab_size, 9)[:2]
    base_logits = _logits(reference, ids)
    method.before_stage(1, "med")
    model = method.model
    assert (_logits(model, ids) - base_logits).abs().max() < TOL  # step 0 = base
    _train(cfg, loaded, method, model, 0)
    trained_med = _logits(model, ids)
    method.after_stage(1, "med")
    for name, weight in _base_weights(method.model).items():  # the original base is back
        assert torch.equal(weight, original[name]), name
    with method.serving("med"):  # folded into a plain LoRA of the original base
        assert (_logits(method.model, ids) - trained_med).abs().max() < TOL
    with method.serving("code"):  # not trained yet: the original base (+ the backbone)
        untrained_code = _logits(method.model, ids)
    if method_name == "frozen_lora":
        assert torch.equal(untrained_code, base_logits)
    method.before_stage(2, "code")  # PiSSA of the original base, not of a rewritten one
    assert (_logits(method.model, ids) - untrained_code).abs().max() < TOL
    _train(cfg, loaded, method, method.model, 1)
    method.after_stage(2, "code")
    with method.serving("med"):
        med_after = _logits(method.model, ids)
    if method_name == "frozen_lora":  # med's adapter and the base are untouched by code
        assert (med_after - trained_med).abs().max() < TOL
    for name, weight in _base_weights(method.model).items():
        assert torch.equal(weight, original[name]), name
    med = [p for n, p in method.model.named_parameters() if ".med." in n and "lora_A" in n]
    assert med and med[0].shape[0] == 2 * cfg.method.lora.r  # rank-2r plain LoRA (peft)


def test_bad_init_and_pissa_on_a_quantised_base_fail_in_validation() -> None:
    cfg = compose_config(["+sequence=med_code", "model=tiny_random", "method.lora.init=svd"])
    with pytest.raises(ConfigError, match="method.lora.init='svd'"):
        validate_config(cfg)
    cfg = compose_config(["+sequence=med_code", "model=tiny_random", "method.lora.init=pissa",
                          "model.quantization=nf4"])  # fmt: skip
    with pytest.raises(ConfigError, match="rewrites the base weights"):
        validate_config(cfg)
