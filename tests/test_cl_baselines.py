"""The continual-learning baselines (replay, ewc, lwf, olora): each mechanism on a hand-checked
case, then every method on short chains of the tiny model (adapters only change, save -> reload
reproduces the holdout losses, an interrupted run resumes to the same metrics)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from peft.tuners.lora import LoraLayer

from continual.data.domain import TextBlocks
from continual.data.pairs import IGNORE, EncodedPairs
from continual.errors import ConfigError
from continual.methods import build_method
from continual.methods.ewc import empirical_fisher, ewc_penalty
from continual.methods.lwf import distillation_loss, task_logits
from continual.methods.olora import orthogonality_loss, owned
from continual.methods.replay import ReplayMix
from continual.models.loading import load_model
from continual.recipe import run_experiment
from continual.train.loop import NumericalError, StepRecord, response_logits, train_stage
from tests.conftest import compose_config, interrupted_then_resumed
from tests.test_train_loop import TinyLM

BASELINES = ("replay", "ewc", "lwf", "olora", "joint")


def _cfg(method: str, *overrides: str):
    return compose_config(["+sequence=med_code", "model=tiny_random", f"method={method}",
                           "train.steps=2", "train.batch_size=4", "train.micro_batch_size=2",
                           "train.lr=1e-2", "train.warmup_steps=0", *overrides])  # fmt: skip


def _text(value: int, n: int = 6, width: int = 8) -> TextBlocks:
    """Blocks whose every token is ``value + row``: a batch row tells its domain and item."""
    return TextBlocks(torch.arange(n).unsqueeze(1).repeat(1, width) + value)


def _domain(train_set, kind: str = "text") -> SimpleNamespace:
    return SimpleNamespace(kind=kind, training_set=lambda: train_set)


def _method(tmp_path: Path, method: str, data: dict, *overrides: str):
    """A method set up on the tiny model and bound to ``data`` (name -> fake domain)."""
    cfg = _cfg(method, *overrides)
    loaded = load_model(cfg.model, tmp_path / "cache")
    built = build_method(cfg.method)
    torch.manual_seed(0)  # the same LoRA initialisation in every call
    model = built.setup(loaded.model)
    built.bind(data, loaded.device, cfg.train, int(cfg.seed))
    return cfg, loaded, built, model


# --- the hooks in the training loop ----------------------------------------------------------


class LogitsLM(TinyLM):
    """The loop test's model, also returning the logits (as a transformers causal LM)."""

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> SimpleNamespace:
        h = self.embed(input_ids[:, :-1])
        prev = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)
        logits = self.head(torch.tanh(self.mix(torch.cat([h, prev], dim=-1))))
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten())
        # the loop passes logits[:, :-1] as the positions with targets: pad one position
        return SimpleNamespace(loss=loss, logits=torch.cat([logits, logits[:, -1:]], dim=1))


@pytest.mark.parametrize("micro", [1, 3, 8])
def test_extra_terms_are_batch_means_for_any_micro_batch_and_are_logged(micro: int) -> None:
    def terms(batch, logits, targets):
        assert logits.shape[:2] == targets.shape and torch.equal(targets, batch["input_ids"][:, 1:])
        weight = next(model.head.parameters())
        return {"sq": logits.square().mean(), "l2": 0.1 * weight.square().sum()}

    results = []
    for size in (8, micro):
        model = LogitsLM()
        params = [p for p in model.parameters() if p.requires_grad]
        cfg = OmegaConf.create({"steps": 2, "batch_size": 8, "micro_batch_size": size, "lr": 1e-2,
                                "weight_decay": 0.0, "warmup_steps": 0, "scheduler": "constant",
                                "max_grad_norm": 0.0})  # fmt: skip
        blocks = TextBlocks(
            torch.randint(0, 32, (16, 12), generator=torch.Generator().manual_seed(0))
        )
        records = train_stage(model, [{"params": params}], blocks, cfg, torch.device("cpu"),
                              torch.Generator().manual_seed(0), extra_losses=terms)  # fmt: skip
        results.append((records, torch.cat([p.detach().flatten() for p in params])))
    (whole, flat), (split, flat_split) = results
    torch.testing.assert_close(flat_split, flat)
    for a, b in zip(whole, split, strict=True):
        assert set(a.terms) == {"sq", "l2"}
        assert a.terms["sq"] == pytest.approx(b.terms["sq"]) and a.terms["l2"] == pytest.approx(
            b.terms["l2"]
        )
        row = a.row()
        assert row["loss_sq"] == a.terms["sq"] and "terms" not in row
        assert row["loss_total"] == pytest.approx(a.loss + a.terms["sq"] + a.terms["l2"])
    assert "loss_total" not in StepRecord(1, 1.0, 1.0, 1e-3).row()


def test_a_non_finite_extra_term_stops_the_stage() -> None:
    model = LogitsLM()
    cfg = OmegaConf.create({"steps": 1, "batch_size": 4, "micro_batch_size": 4, "lr": 1e-2,
                            "weight_decay": 0.0, "warmup_steps": 0, "scheduler": "constant",
                            "max_grad_norm": 1.0})  # fmt: skip
    blocks = TextBlocks(torch.randint(0, 32, (4, 12), generator=torch.Generator().manual_seed(0)))
    with pytest.raises(NumericalError, match="non-finite loss"):
        train_stage(model, [{"params": list(model.parameters())}], blocks, cfg,
                    torch.device("cpu"), torch.Generator().manual_seed(0),
                    extra_losses=lambda b, lg, t: {"bad": torch.tensor(float("nan"))})  # fmt: skip


# --- replay ----------------------------------------------------------------------------------


def test_replay_batch_has_the_configured_mix_balanced_over_earlier_domains(tmp_path) -> None:
    data = {"a": _domain(_text(100)), "b": _domain(_text(200)), "c": _domain(_text(300))}
    cfg, _, method, _ = _method(tmp_path, "replay", data, "method.replay.replay_ratio=0.5",
                                "method.replay.memory_size=3", "train.batch_size=4")  # fmt: skip
    assert method.training_set(1, "a") is not None and not isinstance(
        method.training_set(1, "a"), ReplayMix
    )  # no memory before the first stage finished: the domain's own set
    for stage, domain in [(1, "a"), (2, "b")]:
        method.after_stage(stage, domain)
    assert {d: len(m) for d, m in method.memory.items()} == {"a": 3, "b": 3}
    mixed = method.training_set(3, "c")
    assert isinstance(mixed, ReplayMix) and len(mixed) == 6 and mixed.n_memory == 2
    seen = {"a": set(), "b": set()}
    for _ in range(20):
        rows = mixed.batch(torch.tensor([0, 1, 2, 3]))["input_ids"][:, 0].tolist()
        assert rows[:2] == [300, 301]  # the own items first, the rest from the memory
        domains = [{1: "a", 2: "b"}[r // 100] for r in rows[2:]]
        assert sorted(domains) == ["a", "b"]  # balanced: one row per earlier domain
        for r, d in zip(rows[2:], domains, strict=True):
            seen[d].add(r % 100)
    assert seen == {d: set(method.memory[d]) for d in seen}  # drawn from the memory only


def test_replay_pads_pairs_of_different_widths_without_loss_on_padding() -> None:
    own = EncodedPairs([[5, 6]], [[7]], pad_id=0)
    memory = EncodedPairs([[8, 9, 10, 11]], [[12, 13]], pad_id=0)
    mixed = ReplayMix(own, [(memory, [0])], 1, torch.Generator().manual_seed(0))
    batch = mixed.batch(torch.tensor([0, 0]))
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0, 0, 0], [8, 9, 10, 11, 12, 13]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6]
    assert batch["labels"].tolist() == [[IGNORE, IGNORE, 7] + [IGNORE] * 3,
                                        [IGNORE] * 4 + [12, 13]]  # fmt: skip


def test_replay_ratio_that_rounds_to_no_row_is_refused(tmp_path) -> None:
    data = {"a": _domain(_text(100))}
    with pytest.raises(ConfigError, match="rounds to no memory row"):
        _method(tmp_path, "replay", data, "method.replay.replay_ratio=0.1", "train.batch_size=4")
    _, _, method, _ = _method(tmp_path, "replay", data, "method.replay.replay_ratio=0.125",
                              "train.batch_size=4")  # fmt: skip
    assert method.n_memory_rows() == 1  # half up


def test_replay_memory_survives_save_and_load(tmp_path) -> None:
    data = {"a": _domain(_text(100, n=20)), "b": _domain(_text(200, n=20))}
    _, _, method, _ = _method(tmp_path, "replay", data, "method.replay.memory_size=5")
    method.after_stage(1, "a")
    method.save(tmp_path / "saved")
    _, _, again, _ = _method(tmp_path, "replay", data, "method.replay.memory_size=5")
    again.load(tmp_path / "saved", ["a"])
    assert again.memory == method.memory and len(method.memory["a"]) == 5
    assert again.trained == ["a"]


@pytest.mark.parametrize(
    ("override", "match"),
    [("method.replay.replay_ratio=1.5", "replay_ratio"), ("method.replay.memory_size=0",
     "memory_size"), ("method.ewc.weight=-1", "ewc.weight"), ("method.ewc.mode=both", "mode"),
     ("method.ewc.gamma=2", "gamma"), ("method.lwf.temperature=0", "temperature"),
     ("method.lwf.weight=-0.1", "lwf.weight"), ("method.olora.lambda_orth=-1", "lambda_orth"),
     ("method.olora.lambda_l2=nan", "lambda_l2"), ("method.lora.init=pissa", "init")],
)  # fmt: skip
def test_impossible_settings_are_refused(override: str, match: str) -> None:
    method = override.split(".")[1]
    method = {"replay": "replay", "ewc": "ewc", "lwf": "lwf"}.get(method, "olora")
    with pytest.raises(ConfigError, match=match):
        build_method(_cfg(method, override).method)


@pytest.mark.parametrize("method", BASELINES)
def test_crma_settings_are_refused(method: str) -> None:
    with pytest.raises(ConfigError, match="CRMA"):
        build_method(_cfg(method, "+method.crma.rank=4").method)


def test_replay_refuses_a_sequence_of_text_and_pairs(tmp_path) -> None:
    data = {"a": _domain(_text(100)), "b": _domain(EncodedPairs([[1]], [[2]], 0), "pairs")}
    with pytest.raises(ConfigError, match="text and pairs"):
        _method(tmp_path, "replay", data)


def test_joint_is_one_stage_on_every_domain_for_the_chain_steps(tmp_path) -> None:
    data = {"a": _domain(_text(100)), "b": _domain(_text(200, n=10)), "c": _domain(_text(300)),
            "general": _domain(TextBlocks(torch.empty(0, 8, dtype=torch.long)))}  # fmt: skip
    _, _, method, _ = _method(tmp_path, "joint", data, "train.batch_size=6")
    assert method.stages(["a", "b", "c"]) == ["joint"]
    assert method.stage_steps(1, "joint") == 3 * 2  # train.steps=2 per domain of the chain
    mixed = method.training_set(1, "joint")
    assert len(mixed) == 6 + 10 + 6  # the loop's epochs count every domain's items
    for _ in range(5):
        rows = mixed.batch(torch.arange(6))["input_ids"][:, 0]
        assert sorted((rows // 100).tolist()) == [1, 1, 2, 2, 3, 3]  # balanced, general left out
    _, _, by_epochs, _ = _method(tmp_path, "joint", data, "train.epochs=2", "train.batch_size=4")
    assert by_epochs.stage_steps(1, "joint") == 3 + 5 + 3  # ceil(2 * n / 4) per domain, summed


# --- EWC -------------------------------------------------------------------------------------


class OneWeight(torch.nn.Module):
    """Logits (0, w) at every position of a 2-token vocabulary: the mean loss gradient of a
    block is ``sigmoid(w) - mean(targets)``."""

    def __init__(self, w: float) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> SimpleNamespace:
        n, width = input_ids.shape
        logits = torch.stack([torch.zeros_like(self.w), self.w]).expand(n, width - 1, 2)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten())
        return SimpleNamespace(loss=loss, logits=logits)


def test_empirical_fisher_equals_the_hand_computed_value() -> None:
    blocks = torch.tensor([[0, 1, 1, 1, 1], [1, 0, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 0, 1, 1]])
    model = OneWeight(0.3)
    fisher = empirical_fisher(model, {"w": model.w}, TextBlocks(blocks), n_batches=4,
                              batch_size=1, device=torch.device("cpu"),
                              generator=torch.Generator().manual_seed(0))  # fmt: skip
    s = 1 / (1 + math.exp(-0.3))
    means = [4 / 4, 1 / 4, 0 / 4, 3 / 4]  # targets of each block (tokens 1..4)
    expected = sum((s - m) ** 2 for m in means) / 4  # one epoch: every block once
    assert fisher["w"].item() == pytest.approx(expected, rel=1e-6)
    assert model.w.grad is None


def test_ewc_penalty_is_zero_at_the_anchor_and_quadratic_away_from_it() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    anchors = [({"w": torch.tensor([0.5, 2.0])}, {"w": torch.tensor([1.0, -2.0])})]
    assert ewc_penalty({"w": w}, anchors, 10.0).item() == 0.0
    step = torch.tensor([0.1, -0.3])
    values = []
    for k in (1, 2, 3):
        with torch.no_grad():
            w.copy_(anchors[0][1]["w"] + k * step)
        values.append(ewc_penalty({"w": w}, anchors, 10.0).item())
    by_hand = 10.0 / 2 * float((anchors[0][0]["w"] * step**2).sum())
    assert values == pytest.approx([by_hand, 4 * by_hand, 9 * by_hand])
    two = anchors + [({"w": torch.ones(2)}, {"w": torch.zeros(2)})]  # separate: penalties add
    extra = 10.0 / 2 * float((w.detach() ** 2).sum())
    assert ewc_penalty({"w": w}, two, 10.0).item() == pytest.approx(values[-1] + extra)


def test_online_ewc_keeps_one_running_fisher_and_separate_one_per_stage(tmp_path) -> None:
    data = {"a": _domain(_text(100)), "b": _domain(_text(200))}
    runs = {}
    for mode in ("separate", "online"):
        settings = [
            f"method.ewc.mode={mode}",
            "method.ewc.gamma=0.5",
            "method.ewc.fisher_batches=2",
        ]
        _, _, method, _ = _method(tmp_path, "ewc", data, *settings)
        for stage, domain in [(1, "a"), (2, "b")]:
            method.after_stage(stage, domain)
        runs[mode] = method.anchors
    (f1, a1), (f2, a2) = runs["separate"]
    [(online, anchor)] = runs["online"]
    assert f1 and all(f.ge(0).all() for f in f1.values()) and any(f.sum() > 0 for f in f1.values())
    for name in f1:
        torch.testing.assert_close(online[name], 0.5 * f1[name] + f2[name])
        assert torch.equal(anchor[name], a2[name])


def test_ewc_fisher_and_anchors_survive_save_and_load(tmp_path) -> None:
    data = {"a": _domain(_text(100)), "b": _domain(_text(200))}
    _, _, method, _ = _method(tmp_path, "ewc", data, "method.ewc.fisher_batches=2")
    method.after_stage(1, "a")
    method.after_stage(2, "b")
    method.save(tmp_path / "saved")
    _, _, again, _ = _method(tmp_path, "ewc", data)
    again.load(tmp_path / "saved", ["a", "b"])
    assert len(again.anchors) == 2
    for (f, a), (g, b) in zip(method.anchors, again.anchors, strict=True):
        assert f.keys() == g.keys() and all(torch.equal(f[n], g[n]) for n in f)
        assert all(torch.equal(a[n], b[n]) for n in a)


# --- LwF -------------------------------------------------------------------------------------


def test_distillation_is_zero_when_teacher_and_student_agree_and_positive_otherwise() -> None:
    g = torch.Generator().manual_seed(0)
    student = torch.randn(2, 5, 11, generator=g)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    assert distillation_loss(student, student.clone(), mask, 2.0).item() == 0.0
    teacher = student.clone()
    teacher[1, 3:] += torch.randn(2, 11, generator=g)  # only positions without task loss
    assert distillation_loss(student, teacher, mask, 2.0).item() == 0.0
    teacher[0, 0] += 1.0
    assert distillation_loss(student, teacher, mask, 2.0).item() > 0.0


@pytest.mark.parametrize("kind", ["text", "pairs"])
def test_lwf_term_is_zero_for_the_previous_model_and_leaves_the_student_graph_intact(
    tmp_path, kind: str
) -> None:
    _, _, method, model = _method(tmp_path, "lwf", {})
    ids = torch.randint(0, 200, (2, 12), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids}
    if kind == "pairs":
        labels = ids.clone()
        labels[:, :7] = IGNORE
        batch |= {"attention_mask": torch.ones_like(ids), "labels": labels}
    model.eval()  # no dropout, as the teacher
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}

    def student_step() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        for p in lora.values():
            p.grad = None
        if kind == "text":
            logits, targets = task_logits(model, batch), ids[:, 1:]
        else:
            logits, targets = response_logits(model, batch)
            assert torch.equal(logits, task_logits(model, batch))
        terms = method.extra_losses(batch, logits, targets)
        logits.float().square().mean().backward()  # a student loss; its gradients must not
        return terms, {n: p.grad.clone() for n, p in lora.items()}  # see the teacher's swap

    assert student_step()[0]["lwf"].item() == 0.0  # no stage finished: no teacher
    method.after_stage(1, "a")  # the teacher: the current weights
    terms, grads = student_step()
    assert terms["lwf"].item() == 0.0
    with torch.no_grad():
        for name, p in lora.items():
            if "lora_B" in name:
                p.add_(0.05)  # the student moves away from the teacher
    terms, moved = student_step()
    assert terms["lwf"].item() > 0.0 and terms["lwf"].requires_grad
    method.teacher = {}  # no swap: the plain student gradients
    _, plain = student_step()
    assert all(torch.equal(moved[n], plain[n]) for n in plain)
    assert any(not torch.equal(moved[n], grads[n]) for n in grads)


# --- O-LoRA ----------------------------------------------------------------------------------


def test_orthogonality_loss_is_zero_for_orthogonal_subspaces_and_positive_otherwise() -> None:
    basis = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(0)))[0].T
    new, old = basis[:2], basis[2:5]  # orthonormal rows: orthogonal subspaces
    assert orthogonality_loss([(new, old)]).item() == pytest.approx(0.0, abs=1e-6)
    tilted = new + 0.1 * old[:2]
    expected = float((tilted @ old.T).abs().sum())
    assert orthogonality_loss([(tilted, old)]).item() == pytest.approx(expected)
    assert expected > 0.1
    assert orthogonality_loss([(tilted, old), (new, old)]).item() == pytest.approx(expected)


def test_olora_trains_only_the_new_adapter_and_serves_the_sum_of_all(tmp_path) -> None:
    data = {"med": _domain(_text(3, n=8, width=12)), "code": _domain(_text(40, n=8, width=12))}
    cfg, loaded, method, model = _method(tmp_path, "olora", data, "train.warmup_steps=0")
    ids = _text(7, n=2, width=12).blocks
    with torch.no_grad():
        base_logits = model(input_ids=ids).logits
    for stage, domain in [(1, "med"), (2, "code")]:
        method.before_stage(stage, domain)
        trainable = [n for n, p in method.model.named_parameters() if p.requires_grad]
        assert trainable and all(owned(n, domain) for n in trainable)
        if stage == 2:
            assert method.model.base_model.active_adapters == ["med", "code"]
            before = {n: p.detach().clone() for n, p in method.model.named_parameters()}
            terms = method.extra_losses({"input_ids": ids}, torch.zeros(1), torch.zeros(1))
            assert terms["orth"].item() > 0 and terms["orth"].requires_grad
        train_stage(model, method.param_groups(cfg.train.lr), method.training_set(stage, domain),
                    cfg.train, loaded.device, torch.Generator().manual_seed(stage),
                    extra_losses=method.extra_losses)  # fmt: skip
        method.after_stage(stage, domain)
    changed = [n for n, p in method.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed and all(owned(n, "code") for n in changed)  # the base and med's adapter kept
    assert not any(p.requires_grad for p in method.model.parameters())
    with torch.no_grad():
        both = model(input_ids=ids).logits
        with method.serving("med"):  # every domain: the sum of both adapters
            assert torch.equal(model(input_ids=ids).logits, both)
        method.model.base_model.set_adapter(["med"])
        only_med = model(input_ids=ids).logits
        method.activate(["med", "code"])
        assert torch.equal(model(input_ids=ids).logits, both)
    assert not torch.allclose(both, only_med) and not torch.allclose(only_med, base_logits)
    layer = next(m for m in method.model.modules() if isinstance(m, LoraLayer))
    x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(2))
    outputs = {}
    with torch.no_grad():
        for names in (["med"], ["code"], ["med", "code"]):
            layer.set_adapter(names)
            outputs[tuple(names)] = layer(x)
        base = layer.base_layer(x)
    summed = outputs[("med",)] + outputs[("code",)] - base  # each adapter's update adds up
    torch.testing.assert_close(outputs[("med", "code")], summed)


@pytest.mark.parametrize("method", BASELINES)
def test_only_adapter_weights_change_in_training(tmp_path, method: str) -> None:
    data = {"med": _domain(_text(3, n=8, width=12)), "code": _domain(_text(40, n=8, width=12))}
    cfg, loaded, built, model = _method(tmp_path, method, data, *SETTINGS[method])

    def weights() -> dict[str, torch.Tensor]:  # names as in the base model for base weights
        return {n.replace("base_model.model.", "").replace(".base_layer", ""): p.detach().clone()
                for n, p in built.model.named_parameters()}  # fmt: skip

    before = weights()
    for stage, domain in [(1, "med"), (2, "code")]:
        built.before_stage(stage, domain)
        train_stage(model, built.param_groups(cfg.train.lr), built.training_set(stage, domain),
                    cfg.train, loaded.device, torch.Generator().manual_seed(stage),
                    extra_losses=built.extra_losses)  # fmt: skip
        built.after_stage(stage, domain)
    after = weights()
    changed = [n for n in after if n not in before or not torch.equal(after[n], before[n])]
    assert changed and all("lora_" in n for n in changed), method
    assert set(before) <= set(after), method


# --- every method on short chains of the tiny model --------------------------------------------

SETTINGS = {
    "replay": ["method.replay.memory_size=4", "method.replay.replay_ratio=0.5"],
    "ewc": ["method.ewc.fisher_batches=2", "method.ewc.weight=100"],
    "lwf": [],
    "olora": ["method.olora.lambda_l2=0.01"],
    "joint": [],
}
TERMS = {"replay": [], "ewc": ["ewc"], "lwf": ["lwf"], "olora": ["orth", "l2"], "joint": []}


def _comparable(metrics: pd.DataFrame) -> pd.DataFrame:
    kept = metrics[metrics.metric != "stage_seconds"].drop(columns="run")
    return kept.sort_values(["stage", "eval_domain", "metric"]).reset_index(drop=True)


@pytest.mark.parametrize("method", BASELINES)
def test_text_chain_logs_its_terms_reloads_and_resumes_to_the_same_result(
    tiny_cfg, tmp_path: Path, monkeypatch, method: str
) -> None:
    from continual.serve import load_run

    cfg = tiny_cfg(f"method={method}", "train.steps=2", "train.warmup_steps=0", *SETTINGS[method])
    full = run_experiment(cfg, tmp_path / "full")
    log = pd.read_csv(tmp_path / "full" / "train_log.csv")
    for term in TERMS[method]:
        low, high = log.groupby("stage")[f"loss_{term}"].agg(["min", "max"]).T.to_numpy()
        first = low[0] > 0 if term == "l2" else high[0] == 0  # no earlier stage yet
        assert first and high[1] > 0, term
    if TERMS[method]:
        total = log.loss + sum(log[f"loss_{t}"] for t in TERMS[method])
        assert total.to_numpy() == pytest.approx(log.loss_total.to_numpy())
    else:
        assert not any(c.startswith("loss_") for c in log.columns)

    final = full[(full.stage == full.stage.max()) & (full.metric == "holdout_nll")]
    run = load_run(tmp_path / "full")
    for domain, value in zip(final.eval_domain, final.value, strict=True):
        assert run.holdout_nll(domain) == pytest.approx(value, abs=1e-6), domain

    resumed = interrupted_then_resumed(cfg, tmp_path / "cut", monkeypatch)
    pd.testing.assert_frame_equal(_comparable(full), _comparable(resumed))
    again = pd.read_csv(tmp_path / "cut" / "train_log.csv")
    pd.testing.assert_frame_equal(log, again)


@pytest.mark.parametrize("method", BASELINES)
def test_pairs_chain_trains_and_a_reloaded_run_reproduces_its_results(
    tmp_path: Path, method: str
) -> None:
    from continual.serve import load_run
    from tests.test_pairs import PAIRS_TINY

    cfg = compose_config([*PAIRS_TINY, "+sequence=pairs_med_legal_code", "eval.prompted_k=0",
                          "sequence.order=[med,legal]", f"method={method}",
                          "train.warmup_steps=0", *SETTINGS[method]])  # fmt: skip
    metrics = run_experiment(cfg, tmp_path / "run")
    log = pd.read_csv(tmp_path / "run" / "train_log.csv")
    for term in TERMS[method]:
        assert log[log.stage == 2][f"loss_{term}"].max() > 0, term
    final = metrics[metrics.stage == metrics.stage.max()].set_index(["eval_domain", "metric"])
    final = final.value
    run = load_run(tmp_path / "run")
    for domain in ("med", "legal"):
        values = run.evaluate(domain)
        assert values["accuracy"] == final[(domain, "accuracy")]
        assert values["holdout_nll"] == pytest.approx(final[(domain, "holdout_nll")], abs=1e-6)


# A real SIGKILL through the CLI (about 20 s): for EWC, the method with the most saved state;
# the in-process interruption above covers every method.
@pytest.mark.parametrize("method", ["ewc"])
def test_run_killed_mid_stage_resumes_to_the_uninterrupted_result(
    local_domains, tmp_path: Path, method: str
) -> None:
    from tests.test_cli import _tiny_overrides
    from tests.test_reliability import _cli
    from tests.test_reliability import _comparable as comparable

    args = [*_tiny_overrides(local_domains), "train.steps=3", f"method={method}",
            *SETTINGS[method]]  # fmt: skip
    cache = tmp_path / "cache"
    reference, run_dir = tmp_path / "reference", tmp_path / "killed"
    assert _cli([*args, f"hydra.run.dir={reference}"], cache).returncode == 0
    killed = _cli([*args, f"hydra.run.dir={run_dir}"], cache, killer=["step", "5"])
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = _cli([*args, f"hydra.run.dir={run_dir}"], cache)
    assert resumed.returncode == 0 and "Resuming" in resumed.stdout, resumed.stderr[-2000:]
    pd.testing.assert_frame_equal(comparable(run_dir), comparable(reference))
    logs = [pd.read_csv(d / "train_log.csv") for d in (run_dir, reference)]
    pd.testing.assert_frame_equal(*logs)
