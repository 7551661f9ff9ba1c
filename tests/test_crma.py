"""CRMA: Sinkhorn constraint, identity at step 0, training beside LoRA / 4-bit, save and load."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from continual.adapters.crma import (
    CRMA,
    CRMABlockAdapter,
    CRMAConfig,
    find_decoder_layers,
    load_crma,
    save_crma,
    sinkhorn,
)
from continual.errors import ConfigError, ModelError

TOL = 1e-5


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()


def batch(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(seed))


def lm_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, labels=ids).loss


def assert_doubly_stochastic(m: torch.Tensor) -> None:
    m = m.double()
    assert (m.sum(-1) - 1).abs().max() < TOL
    assert (m.sum(-2) - 1).abs().max() < TOL
    assert m.min() >= 0
    assert torch.linalg.matrix_norm(m, ord=2).max() <= 1 + TOL


@pytest.mark.parametrize("n", [4, 8])
@pytest.mark.parametrize("scale", [0.05, 1.0, 10.0])
def test_sinkhorn_random_logits(n: int, scale: float) -> None:
    torch.manual_seed(n)
    logits = torch.randn(256, n, n) * scale  # batched: one matrix per leading index
    assert_doubly_stochastic(sinkhorn(logits, iterations=20, temperature=0.05))


def test_sinkhorn_stays_doubly_stochastic_under_large_adamw_steps() -> None:
    torch.manual_seed(0)
    block = CRMABlockAdapter(16, CRMAConfig())
    report = block.constraint_report()
    assert report["max_row_err"] < TOL and report["spectral_norm"] <= 1 + TOL
    assert torch.diagonal(block.mixing_matrix()).min() > 0.99  # starts near the identity
    opt = torch.optim.AdamW([block.log_mix], lr=1.0, weight_decay=0.0)
    for step in range(200):
        opt.zero_grad()
        (block.mixing_matrix() * torch.randn(4, 4) * 100).sum().backward()
        assert torch.isfinite(block.log_mix.grad).all()
        opt.step()
        if step % 50 == 49:
            assert_doubly_stochastic(block.mixing_matrix().detach())
    assert block.log_mix.detach().abs().max() > 3  # pushed far (tempered logits > 60 apart)


def test_identity_at_step_zero() -> None:
    model, ids = tiny_llama(), batch()
    with torch.no_grad():
        ref = model(input_ids=ids, output_hidden_states=True)
        crma = CRMA.from_model(model)
        crma.attach(model)
        out = model(input_ids=ids, output_hidden_states=True)
    assert (out.logits - ref.logits).abs().max() < 1e-4
    for h_ref, h in zip(ref.hidden_states, out.hidden_states, strict=True):
        assert (h - h_ref).abs().max() < 1e-4  # no shrinking of hidden states at init
        assert torch.allclose(h.norm(), h_ref.norm())


def test_training_moves_only_crma_and_changes_outputs() -> None:
    model, ids = tiny_llama(), batch()
    model.requires_grad_(False)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    crma = CRMA.from_model(model)
    crma.attach(model)
    start = {k: v.clone() for k, v in crma.named_parameters()}
    with torch.no_grad():
        before = model(input_ids=ids).logits
    groups = crma.parameter_groups(base_lr=1e-2)
    assert [g["name"] for g in groups] == ["crma_proj", "crma_mix", "crma_gate"]
    opt = torch.optim.AdamW(groups)
    for _ in range(3):  # write moves at step 1, read / log_mix / gate from step 2
        opt.zero_grad()
        lm_loss(model, ids).backward()
        opt.step()
    for k, v in model.state_dict().items():
        assert torch.equal(v, base[k]), k
    for k, v in crma.named_parameters():
        assert not torch.equal(v, start[k]), f"{k} did not move"
    with torch.no_grad():
        assert (model(input_ids=ids).logits - before).abs().max() > 1e-6
    assert crma.constraint_report()["max_col_err"] < TOL


def test_beside_peft_lora() -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    crma = CRMA.from_model(model)
    crma.attach(model)
    lm_loss(model, batch()).backward()
    lora = {k: p for k, p in model.named_parameters() if "lora_" in k}
    assert lora and all(p.grad is not None for p in lora.values())
    assert any(p.grad.abs().sum() > 0 for k, p in lora.items() if "lora_B" in k)
    assert all(p.grad is not None for p in crma.parameters())
    assert all(b.write.grad.abs().sum() > 0 for b in crma.blocks)
    frozen = [p for k, p in model.named_parameters() if "lora_" not in k]
    assert frozen and all(p.grad is None and not p.requires_grad for p in frozen)


def test_detach_and_disabled_restore_the_base() -> None:
    model, ids = tiny_llama(), batch()
    with torch.no_grad():
        ref_out = model(input_ids=ids, output_hidden_states=True)
        ref, ref_hidden = ref_out.logits, ref_out.hidden_states
        crma = CRMA.from_model(model)
        for block in crma.blocks:
            block.write.normal_()
            block._log_alpha.fill_(0.0)
        crma.attach(model)
        out = model(input_ids=ids, output_hidden_states=True)
        changed = out.logits
        # hidden_states[1] is layer 0's output: it must include CRMA's change
        assert (out.hidden_states[1] - ref_hidden[1]).abs().max() > 1e-3
        with crma.disabled():
            assert torch.equal(model(input_ids=ids).logits, ref)
        assert torch.equal(model(input_ids=ids).logits, changed)
        crma.detach()
        assert torch.equal(model(input_ids=ids).logits, ref)
    assert (changed - ref).abs().max() > 1e-3


def test_save_load_round_trip_and_clear_errors(tmp_path) -> None:
    model, ids = tiny_llama(), batch()
    crma = CRMA.from_model(model, CRMAConfig(n_streams=2, rank=3, layers=[1]))
    with torch.no_grad():
        for p in crma.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        crma.attach(model)
        out = model(input_ids=ids).logits
        crma.detach()
    save_crma(crma, tmp_path / "crma")
    assert (
        json.loads((tmp_path / "crma" / "crma_config.json").read_text())["adapter_type"] == "crma"
    )
    loaded = load_crma(tmp_path / "crma", model)
    assert loaded.config == crma.config and loaded.layer_indices == [1]
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, out)
    loaded.detach()

    from peft import LoraConfig, get_peft_model

    get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(
        tmp_path / "lora"
    )
    with pytest.raises(ModelError, match="holds a LoRA .* not a CRMA adapter"):
        load_crma(tmp_path / "lora")
    with pytest.raises(ModelError, match="not a CRMA adapter directory"):
        load_crma(tmp_path)
    other = LlamaForCausalLM(LlamaConfig(**{**model.config.to_dict(), "hidden_size": 64}))
    with pytest.raises(ModelError, match="hidden size 32"):
        load_crma(tmp_path / "crma", other)


def test_bf16_base_and_tuple_outputs() -> None:
    model, ids = tiny_llama().to(torch.bfloat16), batch()
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        crma = CRMA.from_model(model)
        crma.attach(model)
        out = model(input_ids=ids).logits
    assert out.dtype == torch.bfloat16 and torch.equal(out, ref)
    assert crma.blocks[0].read.dtype == torch.float32

    class Block(nn.Module):  # an older-style layer returning (hidden_states, extra)
        def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, None]:
            return h * 2, None

    toy = nn.Module()
    toy.layers = nn.ModuleList([Block(), Block()])
    toy.config = SimpleNamespace(hidden_size=8)
    toy_crma = CRMA.from_model(toy)
    toy_crma.attach(toy)
    assert find_decoder_layers(toy) is toy.layers
    with torch.no_grad():
        toy_crma.blocks[0].write.fill_(1.0)
    h = torch.randn(3, 8)
    out, extra = toy.layers[0](h)
    assert extra is None and not torch.equal(out, 2 * h)
    assert torch.equal(toy.layers[1](h)[0], 2 * h)


def test_qlora_nf4_base(tmp_path) -> None:
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")
    from peft import LoraConfig, get_peft_model
    from transformers import BitsAndBytesConfig

    tiny_llama().save_pretrained(tmp_path)
    quant = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    try:
        base = LlamaForCausalLM.from_pretrained(
            tmp_path, quantization_config=quant, device_map="cpu"
        )
    except (RuntimeError, ImportError, NotImplementedError) as e:  # no CPU 4-bit backend
        pytest.skip(f"bitsandbytes cannot load an NF4 model on this CPU: {e}")
    assert type(base.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    # bitsandbytes' CPU inference fast path (eval + no grad) repacks the weight and fails for
    # in_features < 64 (its block size); train mode keeps the dequantising path (no dropout here).
    base.train()
    ids = batch()
    with torch.no_grad():
        ref = base(input_ids=ids).logits
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    crma = CRMA.from_model(model)
    crma.attach(model)
    with torch.no_grad():
        assert (model(input_ids=ids).logits - ref).abs().max() < 1e-4
    lm_loss(model, ids).backward()
    assert all(b.write.grad is not None and b.write.grad.abs().sum() > 0 for b in crma.blocks)
    assert all(p.grad is not None for k, p in model.named_parameters() if "lora_B" in k)


def test_config_round_trip_validation_and_parameter_count() -> None:
    cfg = CRMAConfig(n_streams=3, layers=[0, 2])
    assert CRMAConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert CRMAConfig().init_log_alpha == 0.0  # gate 1 (results/crma_gate_pilot)
    with pytest.raises(ConfigError, match="unknown config keys"):
        CRMAConfig.from_dict({"n_stream": 4})
    with pytest.raises(ConfigError, match="placement"):
        CRMAConfig(placement="attention")
    with pytest.raises(ConfigError, match="outside"):
        CRMA(CRMAConfig(layers=[5]), hidden_size=8, num_layers=2)
    # SmolLM2-135M sizes: d = 576, 30 layers; per layer 2 * d * (n * r) + n^2 + 1
    assert CRMA(CRMAConfig(), hidden_size=576, num_layers=30).num_parameters() == 30 * (
        2 * 576 * 16 + 16 + 1
    )


@pytest.mark.parametrize("reentrant", [True, False])
def test_gradient_checkpointing(reentrant: bool) -> None:
    model, ids = tiny_llama().train(), batch()
    model.requires_grad_(False)
    model.gradient_checkpointing_enable({"use_reentrant": reentrant})
    model.enable_input_require_grads()
    crma = CRMA.from_model(model)
    crma.attach(model)
    with torch.no_grad():
        for block in crma.blocks:
            block.write.normal_()
    lm_loss(model, ids).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in crma.parameters())
