"""End-to-end: a two-stage chain on tiny_random writes every output file, consistently."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from continual.recipe import run_experiment
from continual.rundir import TIDY_COLUMNS


def test_two_stage_chain_writes_every_file(tiny_cfg, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="continual.recipe")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    metrics = run_experiment(tiny_cfg("method=lora"), run_dir)

    for name in ["config.yaml", "run_info.json", "metrics.csv", "train_log.csv",
                 "loss_matrix.csv", "forgetting.csv", "progress.json"]:  # fmt: skip
        assert (run_dir / name).is_file(), name
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["status"] == "complete"
    assert info["model"]["name"] == "tiny_random"
    assert info["packages"]["torch"] and info["packages"]["peft"]
    assert isinstance(info["git_dirty"], bool)  # this test runs inside a git checkout
    assert isinstance(info["git_sha"], str) and len(info["git_sha"]) == 40
    counts = info["trainable_parameters"]
    assert list(counts) == ["stage1_prose", "stage2_code"]
    assert counts["stage1_prose"] == counts["stage2_code"] > 0  # one LoRA through both stages

    table = pd.read_csv(run_dir / "metrics.csv")
    assert list(table.columns) == TIDY_COLUMNS
    # what was written is what was returned (CSV floats round-trip exactly)
    pd.testing.assert_frame_equal(
        table, metrics.reset_index(drop=True), check_dtype=False, check_exact=True
    )
    nll = table[table.metric == "holdout_nll"]
    assert sorted(nll.stage.unique()) == [0, 1, 2]
    assert set(nll.eval_domain) == {"prose", "code"}
    assert len(nll) == 3 * 2 and nll.value.gt(0).all()
    assert {"grad_norm_peak", "grad_norm_mean", "train_loss_final"} <= set(table.metric)
    assert {"forgetting_pct", "delta_nll", "bwt", "fwt"} <= set(table.metric)

    log = pd.read_csv(run_dir / "train_log.csv")
    assert len(log) == 2 * 3
    assert {"stage", "domain", "step", "loss", "grad_norm", "lr"} <= set(log.columns)

    for stage, domain in [(1, "prose"), (2, "code")]:
        adapter = run_dir / "adapters" / f"stage{stage}_{domain}" / "sequential"
        assert (adapter / "adapter_config.json").is_file()
        tensors = load_file(adapter / "adapter_model.safetensors")
        assert tensors and all("lora_" in k for k in tensors)

    matrix = pd.read_csv(run_dir / "loss_matrix.csv").set_index("stage")
    assert (
        matrix.loc[2, "prose"] == nll[(nll.stage == 2) & (nll.eval_domain == "prose")].value.item()
    )
    out = caplog.text
    assert "Stage x domain holdout loss" in out and "Forgetting" in out


@pytest.mark.parametrize(
    ("method", "adapter_files"),
    [
        ("frozen_lora", ["prose/adapter_model.safetensors"]),
        ("crma", ["sequential/adapter_model.safetensors", "crma/crma.safetensors"]),
        ("modular_crma", ["prose/adapter_model.safetensors", "crma/crma_config.json"]),
    ],
)
def test_every_protocol_completes(
    tiny_cfg, tmp_path: Path, method: str, adapter_files, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="continual.recipe")
    run_dir = tmp_path / method
    run_dir.mkdir()
    metrics = run_experiment(tiny_cfg(f"method={method}"), run_dir)
    final = run_dir / "adapters" / "stage2_code"
    for name in adapter_files:
        assert (final / name).is_file(), name
    nll = metrics[metrics.metric == "holdout_nll"]
    assert len(nll) == 6 and nll.value.notna().all()
    if "crma" in method:
        spectral = metrics[metrics.metric == "crma_spectral_norm"]
        assert len(spectral) == 3 and spectral.value.le(1 + 1e-5).all()
        bypass = metrics[metrics.metric == "crma_bypass_nll"]
        assert len(bypass) == 6 and (bypass[bypass.stage == 0].value == 0).all()
        ratio = metrics[metrics.metric == "crma_residual_ratio"]
        assert len(ratio) == 6 and (ratio[ratio.stage > 0].value > 0).all()
        inert = metrics[metrics.metric == "crma_inert"].value.item()
        verdict = "CRMA inert" if inert else "CRMA active"
        assert (
            f"CRMA bypass effect (holdout NLL with the branch off minus on, nats): {verdict}"
            in (caplog.text)
        )
        lora_peak = metrics[metrics.metric == "grad_norm_lora_peak"]
        peak = metrics[metrics.metric == "grad_norm_peak"].set_index("stage").value
        assert len(lora_peak) == 2 and (lora_peak.set_index("stage").value < peak).all()


def _numel(path: Path) -> int:
    return sum(t.numel() for t in load_file(path).values())


def test_trainable_parameters_count_what_each_stage_trains(tiny_cfg, tmp_path: Path) -> None:
    """run_info's per-stage counts: the stage's LoRA (a fresh one per stage for the per-domain
    protocols, so frozen earlier adapters must not be counted) plus the CRMA where there is one."""
    counts, lora, crma = {}, {}, {}
    for method in ("lora", "frozen_lora", "crma", "modular_crma"):
        run_dir = tmp_path / method
        run_experiment(tiny_cfg(f"method={method}", "train.steps=1"), run_dir)
        info = json.loads((run_dir / "run_info.json").read_text())
        counts[method] = info["trainable_parameters"]
        assert list(counts[method]) == ["stage1_prose", "stage2_code"], method
        for stage, domain in [(1, "prose"), (2, "code")]:
            adapters = run_dir / "adapters" / f"stage{stage}_{domain}"
            own = domain if "frozen" in method or "modular" in method else "sequential"
            lora[method, stage] = _numel(adapters / own / "adapter_model.safetensors")
            if "crma" in method:
                crma[method, stage] = _numel(adapters / "crma" / "crma.safetensors")

    size = lora["lora", 1]  # one LoRA of this config on tiny_random
    assert size > 0 and set(lora.values()) == {size}
    crma_size = crma["crma", 1]
    assert crma_size > 0 and set(crma.values()) == {crma_size}
    for method in ("lora", "frozen_lora"):  # each stage trains exactly one LoRA
        assert counts[method] == {"stage1_prose": size, "stage2_code": size}, method
    for method in ("crma", "modular_crma"):  # ... and the shared CRMA beside it
        expected = size + crma_size
        assert counts[method] == {"stage1_prose": expected, "stage2_code": expected}, method
    for stage in ("stage1_prose", "stage2_code"):
        assert counts["modular_crma"][stage] - counts["frozen_lora"][stage] == crma_size


# bitsandbytes repacks 4-bit weights for CPU inference after an eval pass and then trains through
# a kernel without autograd (a warning, wrong gradients); the loader must prevent it.
@pytest.mark.filterwarnings("error:.*gemv_4bit.*:UserWarning")
def test_qlora_nf4_base_runs_on_cpu(tiny_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / "nf4"
    run_dir.mkdir()
    metrics = run_experiment(tiny_cfg("method=crma", "model.quantization=nf4"), run_dir)
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["model"]["quantization"] == "nf4"
    nll = metrics[metrics.metric == "holdout_nll"]
    assert len(nll) == 6 and nll.value.notna().all()


def test_secrets_never_reach_run_files(tiny_cfg, tmp_path: Path, monkeypatch) -> None:
    secret = "wandb-secret-0123456789abcdef"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    run_dir = tmp_path / "secret"
    run_dir.mkdir()
    run_experiment(tiny_cfg("+logger.api_key=" + secret), run_dir)
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_prompted_baseline_and_lm_eval_holdout_land_in_the_table(tiny_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / "lm_eval"
    metrics = run_experiment(
        tiny_cfg("eval.prompted_k=2", "eval.lm_eval_holdout=true", "eval.lm_eval_limit=4"), run_dir
    )
    prompted = metrics[metrics.metric == "prompted_nll"]
    assert set(prompted.eval_domain) == {"prose", "code"} and set(prompted.stage) == {0}
    gap = metrics[metrics.metric == "finetune_minus_prompted_nll"].set_index("eval_domain").value
    nll = metrics[metrics.metric == "holdout_nll"]
    own = nll[(nll.stage == 1) & (nll.eval_domain == "prose")].value.item()
    assert gap["prose"] == pytest.approx(own - prompted.set_index("eval_domain").value["prose"])
    bpb = metrics[metrics.metric == "lm_eval/bits_per_byte"]
    assert len(bpb) == 3 * 2 and bpb.value.gt(0).all()
    assert (run_dir / "lm_eval_tasks" / "continual_prose.yaml").is_file()


def test_lm_eval_on_holdout_blocks_tracks_our_holdout_loss(tiny_cfg, tmp_path: Path) -> None:
    # unit=blocks: lm-eval scores the very blocks our loss scores (one document per block), so
    # after every stage the two agree once nats/token are converted to bits/byte
    run_dir = tmp_path / "blocks"
    cfg = tiny_cfg("eval.lm_eval_holdout=true", "eval.lm_eval_unit=blocks", "eval.prompted_k=0")
    metrics = run_experiment(cfg, run_dir)
    table = metrics.pivot_table(index=["stage", "eval_domain"], columns="metric", values="value")
    table = table.dropna(subset=["lm_eval/bits_per_byte"]).reset_index()
    assert len(table) == 3 * 2  # base + 2 stages, prose and code
    for domain in ("prose", "code"):
        lines = (run_dir / "lm_eval_tasks" / f"continual_{domain}.jsonl").read_text().splitlines()
        assert len(lines) == cfg.eval.holdout_blocks
        n_bytes = sum(len(json.loads(line)["text"].encode()) for line in lines)
        n_tokens = cfg.eval.holdout_blocks * cfg.train.block_len
        rows = table[table["eval_domain"] == domain]
        ours = rows["holdout_nll"] * n_tokens / (math.log(2) * n_bytes)
        # lm-eval also scores each block's first token (from a prefix token): within 2%
        assert (rows["lm_eval/bits_per_byte"] / ours).sub(1).abs().max() < 0.02


def test_wandb_logger_runs_offline_inside_the_run_dir(tiny_cfg, tmp_path: Path, monkeypatch):
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run_dir = tmp_path / "tracked"
    run_experiment(tiny_cfg("logger=wandb"), run_dir)
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    import wandb

    wandb.teardown()


def test_extra_lm_eval_task_is_reported_as_retention_after_every_stage(tiny_cfg, tmp_path):
    # the run's own holdout task stands in for any lm-eval task given by name
    cfg = tiny_cfg("eval.lm_eval_tasks=[continual_prose]", "eval.lm_eval_limit=4")
    metrics = run_experiment(cfg, tmp_path / "retention")
    task = metrics[metrics.eval_domain == "continual_prose"]
    bpb = task[task.metric == "lm_eval/bits_per_byte"].set_index("stage").value
    retention = task[task.metric == "lm_eval_retention_pct/bits_per_byte"].set_index("stage").value
    assert sorted(bpb.index) == sorted(retention.index) == [0, 1, 2]
    assert retention[0] == 0.0
    assert retention[2] == pytest.approx(100 * (bpb[2] - bpb[0]) / bpb[0])
