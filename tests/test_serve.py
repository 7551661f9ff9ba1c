"""Save, reload, swap: a finished run reloads from its directory and reproduces its losses."""

from __future__ import annotations

from pathlib import Path

import pytest

from continual.errors import ModelError
from continual.recipe import run_experiment
from continual.serve import check_adapter_kind, load_run


@pytest.mark.parametrize(
    ("method", "init"),
    [("lora", "default"), ("frozen_lora", "default"), ("crma", "default"),
     ("modular_crma", "default"), ("lora", "pissa"), ("frozen_lora", "pissa"),
     ("modular_crma", "pissa_niter_2")],
)  # fmt: skip
def test_reloaded_run_reproduces_its_losses_exactly(tiny_cfg, tmp_path: Path, method, init) -> None:
    """Also with PiSSA, which rewrites the base: the reload rebuilds the same residual base
    (sequential) or serves the folded plain-LoRA adapters on the original base (per domain)."""
    run_dir = tmp_path / method
    run_dir.mkdir()
    metrics = run_experiment(tiny_cfg(f"method={method}", f"method.lora.init={init}"), run_dir)
    final = metrics[(metrics.metric == "holdout_nll") & (metrics.stage == 2)]
    run = load_run(run_dir)
    for domain in ["prose", "code"]:
        expected = final[final.eval_domain == domain].value.item()
        assert run.holdout_nll(domain) == expected
    if method in ("frozen_lora", "modular_crma"):  # an earlier stage reloads too
        stage1 = metrics[(metrics.metric == "holdout_nll") & (metrics.stage == 1)]
        first = load_run(run_dir, stage=1)
        expected = stage1[stage1.eval_domain == "prose"].value.item()
        assert first.holdout_nll("prose") == expected


def test_adapter_kind_mismatch_is_a_clear_error(tiny_cfg, tmp_path: Path) -> None:
    lora_dir, crma_dir = tmp_path / "lora", tmp_path / "crma"
    lora_dir.mkdir()
    crma_dir.mkdir()
    run_experiment(tiny_cfg("method=lora"), lora_dir)
    run_experiment(tiny_cfg("method=crma"), crma_dir)
    with pytest.raises(ModelError, match="plain LoRA"):
        check_adapter_kind(lora_dir / "adapters" / "stage2_code", "crma")
    with pytest.raises(ModelError, match="CRMA backbone"):
        check_adapter_kind(crma_dir / "adapters" / "stage2_code", "lora")
