"""Gradient clipping modes (continual/train/clipping.py) and the LoRA-only gradient norm."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from continual.errors import ConfigError
from continual.train.clipping import build_clipper, group_norm
from tests.conftest import compose_config

ZCLIP = {"alpha": 0.97, "z_thresh": 2.5, "warmup_steps": 5, "mode": "zscore",
         "clip_option": "adaptive_scaling"}  # fmt: skip


def _train_cfg(**overrides: object) -> object:
    base = {"max_grad_norm": 0.0, "clipping": "zclip", "zclip": dict(ZCLIP)}
    return OmegaConf.create({**base, **overrides})


def _step(clip, param: torch.nn.Parameter, norm: float) -> tuple[float, float]:
    """Give ``param`` a gradient of the given norm; return (reported norm, norm after clip)."""
    direction = torch.tensor([3.0, 4.0]) / 5.0
    param.grad = direction * norm
    reported = clip([param])
    return reported, float(param.grad.norm())


def test_zclip_leaves_ordinary_steps_alone_and_clips_a_spike_to_the_hand_computed_bound() -> None:
    param = torch.nn.Parameter(torch.zeros(2))
    clip = build_clipper(_train_cfg())
    warmup = [1.0, 1.1, 0.9, 1.0, 1.05]
    for norm in warmup:  # statistics only, no clipping (max_grad_norm 0: no cap)
        assert _step(clip, param, norm) == pytest.approx((norm, norm))
    mean = sum(warmup) / 5  # 1.01
    var = sum((x - mean) ** 2 for x in warmup) / 5  # 0.0044
    reported, after = _step(clip, param, 1.0)  # z = (1.0 - 1.01) / 0.066 < 0: untouched
    assert (reported, after) == pytest.approx((1.0, 1.0))
    mean = 0.97 * mean + 0.03 * 1.0  # EMA update with the (unclipped) norm
    var = 0.97 * var + 0.03 * (1.0 - mean) ** 2
    std = math.sqrt(var)
    z = (10.0 - mean) / (std + 1e-6)
    bound = mean + 2.5 * std / (z / 2.5)  # adaptive scaling: mean + z_t * std / (z / z_t)
    reported, after = _step(clip, param, 10.0)
    assert reported == pytest.approx(10.0)  # the log keeps the norm before clipping
    assert after == pytest.approx(bound, rel=1e-4)
    assert 1.0 < after < 1.02  # the spike is cut to about the running mean


def test_zclip_caps_at_max_grad_norm_and_norm_mode_clips_globally() -> None:
    param = torch.nn.Parameter(torch.zeros(2))
    clip = build_clipper(_train_cfg(max_grad_norm=0.5))
    assert _step(clip, param, 2.0) == pytest.approx((2.0, 0.5))  # warm-up steps are capped
    norm_clip = build_clipper(_train_cfg(clipping="norm", max_grad_norm=1.0))
    assert _step(norm_clip, param, 3.0) == pytest.approx((3.0, 1.0))
    assert _step(norm_clip, param, 0.5) == pytest.approx((0.5, 0.5))
    no_clip = build_clipper(_train_cfg(clipping="norm", max_grad_norm=0.0))
    assert _step(no_clip, param, 30.0) == pytest.approx((30.0, 30.0))


def test_group_norm() -> None:
    a, b, c = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])
    assert group_norm([a, b, c]) == pytest.approx(5.0)  # c has no gradient
    assert group_norm([c]) == 0.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [(["train.clipping=sometimes"], "train.clipping='sometimes'"),
     (["train.clipping=zclip", "+train.zclip.bogus=1"], "train.zclip"),
     (["train.clipping=zclip", "train.zclip.mode=never"], "train.zclip")],
)  # fmt: skip
def test_bad_clipping_settings_fail_in_validation(overrides: list[str], message: str) -> None:
    from continual.config.validate import validate_config

    cfg = compose_config(["+sequence=med_code", "model=tiny_random", *overrides])
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        validate_config(cfg)


def _train_first_stage(tmp_path, method_name: str, **train: object) -> list:
    """The step records of stage 1 (med) of a tiny_random chain with ``train`` overrides."""
    from continual.data.domain import TextBlocks
    from continual.train.loop import train_stage
    from tests.test_methods import _blocks, _setup

    cfg, loaded, _, method, model = _setup(tmp_path, method_name)
    for key, value in train.items():
        cfg.train[key] = value
    method.before_stage(1, "med")
    return train_stage(
        model, method.param_groups(cfg.train.lr),
        TextBlocks(_blocks(model.config.vocab_size, 0)), cfg.train, loaded.device,
        torch.Generator().manual_seed(0),
    )  # fmt: skip


def test_stage_logs_the_lora_gradient_norm_apart_from_crma(tmp_path) -> None:
    for method_name in ("lora", "crma"):
        records = _train_first_stage(tmp_path / method_name, method_name, clipping="zclip")
        for r in records:
            assert math.isfinite(r.grad_norm_lora) and r.grad_norm_lora > 0
            if method_name == "lora":
                assert r.grad_norm_lora == pytest.approx(r.grad_norm, rel=1e-5)
            else:  # CRMA parameters add to the global norm
                assert r.grad_norm > r.grad_norm_lora


@pytest.mark.parametrize(
    "settings",
    [{"clipping": "norm", "max_grad_norm": 1e-3},  # every step cut
     {"clipping": "zclip", "max_grad_norm": 0.0,  # z_thresh 0: above-mean steps cut
      "zclip": {**ZCLIP, "warmup_steps": 2, "z_thresh": 0.01}}],
)  # fmt: skip
def test_logged_norm_after_clipping_equals_the_replay_of_the_logged_norms(
    tmp_path, settings: dict
) -> None:
    from continual.analysis.clip_events import replay_clipping

    records = _train_first_stage(tmp_path, "lora", steps=8, **settings)
    before = [r.grad_norm for r in records]
    after = [r.grad_norm_clipped for r in records]
    assert after == pytest.approx(replay_clipping(before, settings), rel=1e-5)
    cut = [a < b * (1 - 1e-4) for a, b in zip(after, before, strict=True)]
    if settings["clipping"] == "norm":
        assert all(cut) and after == pytest.approx([1e-3] * 8, rel=1e-3)
    else:  # warm-up steps pass; later, some steps are cut and some are not
        assert not any(cut[:2]) and any(cut[2:]) and not all(cut[2:])
        assert "grad_norm_clipped" in records[0].row()


def _log_run(run_dir, clipping: dict, norms: list[float], logged: list[float] | None = None):
    import pandas as pd
    import yaml

    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"train": clipping}))
    log = pd.DataFrame({"stage": 1, "domain": "med", "step": range(1, len(norms) + 1),
                        "loss": 1.0, "grad_norm": norms, "lr": 1e-3})  # fmt: skip
    if logged is not None:
        log["grad_norm_clipped"] = logged
    log.to_csv(run_dir / "train_log.csv", index=False)
    return run_dir


def test_clip_events_count_cut_steps_from_the_log_or_by_replay(tmp_path) -> None:
    from continual.analysis.clip_events import clip_events, clip_events_section
    from continual.analysis.runs import load_train_logs

    norm = {"clipping": "norm", "max_grad_norm": 1.0}
    replayed = _log_run(tmp_path / "a", norm, [0.5, 2.0, 4.0, 1.0])
    # a logged column wins over the replay (here it says nothing was cut)
    logged = _log_run(tmp_path / "b", norm, [0.5, 2.0, 4.0, 1.0], [0.5, 2.0, 4.0, 1.0])
    runs = [replayed, logged]
    events = clip_events(load_train_logs(runs), runs).set_index("run_dir")
    a, b = events.loc[str(replayed)], events.loc[str(logged)]
    assert (a["steps"], a["clipped"], a["source"]) == (4, 2, "replayed")  # 1.0 is not cut
    assert a["rate"] == 0.5 and a["median_scale"] == pytest.approx((0.5 + 0.25) / 2, rel=1e-4)
    assert (b["clipped"], b["source"]) == (0, "logged") and math.isnan(b["median_scale"])
    section = clip_events_section(events.reset_index())
    assert "| norm | 2/8 | 25.0% |" in section
