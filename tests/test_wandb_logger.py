"""WandbLogger: mode choice, the offline run's contents read back, disabled mode, failures.

Three real (offline) wandb runs in all; every W&B directory points into tmp_path.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from omegaconf import DictConfig, OmegaConf

from continual import metrics as clm
from continual.errors import ConfigError
from continual.recipe import run_experiment
from continual.rundir import PROMPTED_ACC_GAP
from continual.tracking.base import RunLogger, build_logger
from continual.tracking.wandb_run import WandbLogger, has_api_key, resolve_mode
from tests.conftest import compose_config

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2 as pb  # noqa: E402

FAKE_KEY = "fakekey_" + "0123456789abcdef" * 3  # valid-looking (40+ word characters)
SENTINEL = "continual-sentinel-env-value-7f3a"
ORDER = ["med", "code"]
IDS = {"run": "r", "sequence": "med_code", "method": "lora", "model": "tiny", "seed": 3}


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """No WANDB_* from the caller, every wandb directory under tmp_path, fresh wandb state."""
    for key in list(os.environ):
        if key.startswith("WANDB_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("WANDB_SERVICE", "")  # recorded, so wandb's own value is undone later
    monkeypatch.delenv("WANDB_SERVICE")
    for name in ("DIR", "CACHE_DIR", "CONFIG_DIR", "DATA_DIR", "ARTIFACT_DIR"):
        path = tmp_path / "wandb_home" / name.lower()
        path.mkdir(parents=True)
        monkeypatch.setenv(f"WANDB_{name}", str(path))
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    monkeypatch.setattr(WandbLogger, "_notices", set())
    monkeypatch.setattr(WandbLogger, "_open", None)
    wandb.teardown()
    yield tmp_path
    wandb.finish()
    wandb.teardown()


def make_cfg(**logger: Any) -> DictConfig:
    base = {
        "_target_": "continual.tracking.wandb_run.WandbLogger", "name": "wandb",
        "project": "continual", "entity": None, "mode": None, "tags": [], "group": None,
    }  # fmt: skip
    return OmegaConf.create(
        {"logger": {**base, **logger}, "sequence": {"name": "med_code", "order": ORDER}}
    )


def make_logger(run_dir: Path, **logger: Any) -> WandbLogger:
    """A WandbLogger built the way the recipe builds it, from a logger config."""
    built = build_logger(make_cfg(**logger), run_dir, IDS)
    assert isinstance(built, WandbLogger)
    return built


# task accuracy (pairs domains) after stages 0, 1, 2: med is at 0 right after its own stage
ACCURACY = {"med": [0.5, 0.0, 0.3], "code": [0.1, 0.25, 0.75]}


def fake_results() -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """The loss matrix, its forgetting table, and the summary with the accuracy metrics as
    continual.recipe.summarise appends them (``acc_forgetting_pct/med`` is NaN: 0% after med's
    own stage)."""
    index = pd.Index([0, 1, 2], name="stage")
    matrix = pd.DataFrame({"med": [2.0, 1.5, 1.8], "code": [3.0, 2.9, 2.2]}, index=index)
    forgetting = clm.forgetting_table(matrix, ORDER)
    summary = clm.summary_metrics(matrix, ORDER, general=None)
    summary |= clm.accuracy_summary(pd.DataFrame(ACCURACY, index=index), ORDER)
    summary[f"{PROMPTED_ACC_GAP}/code"] = 100 * (0.75 - 0.5)
    return matrix, forgetting, summary


def drive(logger: WandbLogger) -> None:
    """Two stages of three steps, three evaluations, the summary; not finished."""
    logger.start({"seed": 3, "method": {"name": "lora", "r": 8}, "api_key": "<redacted>"})
    for stage, domain in enumerate(ORDER, start=1):
        steps = [
            {"step": s, "loss": 3.0 - 0.1 * s, "grad_norm": 1.0 + s, "lr": 1e-3,
             "global_step": 3 * (stage - 1) + s}
            for s in (1, 2, 3)
        ]  # fmt: skip
        logger.log_steps(stage, domain, steps)
    for stage in (0, 1, 2):
        values = {("med", "holdout_nll"): 2.0 - 0.1 * stage, ("code", "holdout_nll"): 3.0}
        values[("all", "crma_gate_mean")] = 0.5
        values |= {(d, "accuracy"): acc[stage] for d, acc in ACCURACY.items()}
        if stage == 0:
            values[("code", "prompted_accuracy")] = 0.5
        logger.log_eval(stage, "base" if stage == 0 else ORDER[stage - 1], values)
    logger.log_summary(*fake_results())


def read_records(path: Path) -> list[pb.Record]:
    """Records of a ``run-*.wandb`` transaction log (LevelDB log format, 32 KiB blocks)."""
    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", data[:7]
    records, chunk, pos = [], b"", 7
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding up to the end of the block
            pos += left
            continue
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def _items(items: Any) -> dict[str, Any]:
    """History/summary items as a dict; a nested key (e.g. a table's fields) becomes a sub-dict."""
    out: dict[str, Any] = {}
    for item in items:
        *parents, last = list(item.nested_key) or [item.key]
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = json.loads(item.value_json)
    return out


def run_config(records: list[pb.Record]) -> dict[str, Any]:
    """The run's config: the one sent with the run record, then every config update."""
    config: dict[str, Any] = {}
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind in ("run", "config"):
            update = r.run.config.update if kind == "run" else r.config.update
            config.update({k: v for k, v in _items(update).items() if not k.startswith("_")})
    return config


def history_and_summary(records: list[pb.Record]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The history rows, and the final summary (every summary update applied in order)."""
    rows, summary = [], {}
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind == "history":
            rows.append(_items(r.history.item))
        elif kind == "summary":
            summary.update(_items(r.summary.update))
    return rows, summary


def test_offline_run_is_readable_and_holds_no_secret(
    wandb_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("CONTINUAL_SENTINEL", SENTINEL)
    run_dir = wandb_env / "runs" / "2026_med_code_lora_seed3"
    run_dir.mkdir(parents=True)
    logger = make_logger(run_dir, tags=["pilot"])
    assert (logger.mode, logger.why) == ("offline", "WANDB_MODE=offline")
    drive(logger)
    assert logger._run.settings.api_key == FAKE_KEY  # wandb did hold the key
    logger.finish("complete")
    logger.finish("complete")  # idempotent
    wandb.teardown()  # stops wandb-core, which flushes and closes the transaction log

    out = capsys.readouterr()
    notices = [line for line in out.out.splitlines() if "wandb sync" in line]
    assert len(notices) == 1, out.out
    (sync_dir,) = (run_dir / "wandb").glob("offline-run-*")
    assert notices[0].endswith(f"wandb sync {sync_dir}")
    assert "warning" not in out.err

    (log_file,) = sync_dir.glob("run-*.wandb")
    records = read_records(log_file)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.run_group, run.job_type) == ("med_code", "lora")
    assert run.display_name == "med_code-lora-s3"
    assert list(run.tags) == ["pilot"] and run.project == "continual"
    step_metrics = {
        (m.glob_name or m.name): m.step_metric
        for r in records
        if r.WhichOneof("record_type") == "metric"
        for m in [r.metric]
    }
    assert step_metrics["train/*"] == "train/global_step"
    assert step_metrics["eval/*"] == "eval/stage"

    assert run_config(records) == {
        "seed": 3, "method": {"name": "lora", "r": 8}, "api_key": "<redacted>"
    }  # fmt: skip

    rows, summary = history_and_summary(records)
    train = [r for r in rows if "train/loss" in r]
    assert [r["train/global_step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert {"train/grad_norm", "train/lr", "train/step", "train/stage"} <= set(train[0])
    evals = [r for r in rows if "eval/stage" in r]
    assert [r["eval/stage"] for r in evals] == [0, 1, 2]
    assert evals[2]["eval/med/holdout_nll"] == pytest.approx(1.8)
    assert {"eval/code/holdout_nll", "eval/all/crma_gate_mean"} <= set(evals[0])
    (tables,) = [r for r in rows if "tables/loss_matrix" in r]
    assert tables["tables/forgetting"]["_type"] == "table-file"

    assert summary["avg_forgetting_pct"] == pytest.approx(20.0)
    assert summary["forgetting_pct/med"] == pytest.approx(20.0)
    assert summary["status"] == "complete"
    assert summary["eval/med/holdout_nll"] == pytest.approx(1.8)
    # task accuracy: every stage's value in the history, the accuracy metrics in the summary
    assert [r["eval/code/accuracy"] for r in evals] == pytest.approx(ACCURACY["code"])
    assert [r["eval/med/accuracy"] for r in evals] == pytest.approx(ACCURACY["med"])
    assert evals[0]["eval/code/prompted_accuracy"] == pytest.approx(0.5)
    # med: 100 (0.0 - 0.3) = -30 pts forgetting (it improved), BWT +30; % undefined (NaN)
    assert summary["acc_forgetting_pts/med"] == pytest.approx(-30.0)
    assert summary["acc_bwt"] == pytest.approx(30.0)
    undefined = summary["acc_forgetting_pct/med"]  # NaN reaches W&B as null (wandb 0.31)
    assert undefined is None or math.isnan(undefined)
    assert summary["acc_fwt"] == pytest.approx(15.0)  # code: 100 (0.25 - 0.10)
    assert summary["final_avg_accuracy"] == pytest.approx(52.5)  # (30 + 75) / 2
    assert summary["final_accuracy/code"] == pytest.approx(75.0)
    assert summary[f"{PROMPTED_ACC_GAP}/code"] == pytest.approx(25.0)
    files = sync_dir / "files"
    matrix = json.loads((files / summary["tables/loss_matrix"]["path"]).read_text())
    assert matrix["columns"] == ["stage", "after", "med", "code"]
    assert [row[:2] for row in matrix["data"]] == [[0, "base"], [1, "med"], [2, "code"]]
    forgetting = json.loads((files / summary["tables/forgetting"]["path"]).read_text())
    assert forgetting["columns"][0] == "domain" and "forgetting_pct" in forgetting["columns"]
    assert [row[0] for row in forgetting["data"]] == ["med"]

    leaked = [
        str(p)
        for p in wandb_env.rglob("*")
        if p.is_file() and not p.is_symlink()
        for data in [p.read_bytes()]
        if FAKE_KEY.encode() in data or SENTINEL.encode() in data
    ]
    assert not leaked


def test_auto_mode_without_key_goes_offline_once_and_survives_tracker_errors(
    wandb_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Two jobs of one sweep in one process: the first breaks and never finishes."""
    assert not has_api_key()
    sweep = wandb_env / "multirun" / "2026-01-01_00-00-00_med_code"
    first, second = (make_logger(sweep / job) for job in ("lora_s3", "crma_s3"))
    for logger in (first, second):
        logger.run_dir.mkdir(parents=True)
        logger.multirun = True
    assert (first.mode, first.why) == ("offline", "no W&B API key found")
    first.start({"seed": 3})

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("tracker down")

    monkeypatch.setattr(first._run, "log", broken)
    drive(first)  # start again is a no-op; every log call hits the broken tracker
    out = capsys.readouterr()
    assert out.err.count("warning: W&B") == 1 and "tracker down" in out.err

    second.start({"seed": 3})  # finishes the run the first job left open, as failed
    second.finish("complete")
    first.finish("failed")  # late call: harmless
    assert wandb.run is None
    wandb.teardown()  # stops wandb-core, which flushes and closes the transaction logs
    stdout = out.out + capsys.readouterr().out
    lines = [line for line in stdout.splitlines() if "wandb" in line.lower()]
    assert lines == [
        f"wandb: logging offline (no W&B API key found); upload later with: "
        f"wandb sync {sweep}/*/wandb/offline-run-*"
    ]
    exits = {}
    for log_file in sweep.glob("*/wandb/offline-run-*/run-*.wandb"):
        records = read_records(log_file)
        (code,) = [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"]
        exits[log_file.parts[-4]] = code
    assert exits == {"lora_s3": 1, "crma_s3": 0}


@pytest.mark.parametrize("how", ["config", "env"])
def test_disabled_mode_writes_nothing(
    how: str, wandb_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    if how == "env":
        monkeypatch.setenv("WANDB_MODE", "disabled")
    run_dir = wandb_env / "run"
    run_dir.mkdir()
    logger = make_logger(run_dir, mode="disabled") if how == "config" else make_logger(run_dir)
    assert logger.mode == "disabled"
    drive(logger)
    logger.finish("failed")
    assert list(run_dir.iterdir()) == []
    assert capsys.readouterr().out == ""
    assert wandb.run is None


def test_init_failure_falls_back_then_disables(
    wandb_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    modes: list[str] = []

    def failing_init(**kwargs: Any) -> None:
        modes.append(kwargs["mode"])
        raise ConnectionError("no network")

    monkeypatch.setattr(wandb, "init", failing_init)
    logger = make_logger(wandb_env)
    assert logger.mode == "online"
    drive(logger)
    logger.finish("complete")
    assert modes == ["online", "offline"]  # automatic online failed: tried offline once
    err = capsys.readouterr().err
    assert err.count("warning: W&B init failed") == 1 and FAKE_KEY not in err


def test_mode_resolution(wandb_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_mode(None) == ("offline", "no W&B API key found")
    netrc = wandb_env / "netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert has_api_key()
    assert resolve_mode(None) == ("online", "auto")
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_mode(None)[0] == "offline"
    assert resolve_mode("disabled") == ("disabled", "logger.mode=disabled")  # config wins
    monkeypatch.setenv("WANDB_MODE", "sideways")
    with pytest.raises(ConfigError, match="WANDB_MODE"):
        resolve_mode(None)
    with pytest.raises(ConfigError, match="logger.mode"):
        resolve_mode("sideways")
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_DISABLED", "true")
    assert resolve_mode(None)[0] == "disabled"


def test_config_group_names_and_run_id(wandb_env: Path) -> None:
    cfg = compose_config(["+sequence=med_code", "logger=wandb"])
    assert cfg.logger.project == "continual" and cfg.logger.mode is None
    assert list(cfg.logger.tags) == [] and cfg.logger.entity is None
    job_dir = wandb_env / "multirun" / "2026-01-01_00-00-00_med_code" / "lora_seed3"
    logger = build_logger(cfg, job_dir, IDS)
    assert isinstance(logger, WandbLogger)
    assert logger.group() == "med_code"
    logger.multirun = True
    assert logger.group() == "2026-01-01_00-00-00_med_code"
    assert logger.run_id() == build_logger(cfg, job_dir, IDS).run_id()
    assert logger.run_id() != build_logger(cfg, job_dir.parent / "crma_seed3", IDS).run_id()


def test_a_chain_logged_offline_holds_its_metrics_and_redacted_config(
    tiny_cfg, wandb_env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A real tiny chain, its logger built from conf/logger/wandb.yaml: what the offline run
    holds equals what the run directory holds, and the key is nowhere."""
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = wandb_env / "chain"
    metrics = run_experiment(tiny_cfg("logger=wandb", f"+logger.api_key={FAKE_KEY}"), run_dir)
    wandb.teardown()  # flushes and closes the transaction log
    assert "logger=wandb does not use logger.api_key" in caplog.text
    assert FAKE_KEY not in caplog.text

    (log_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    records = read_records(log_file)
    saved = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    assert saved["logger"]["api_key"] == "<redacted>"
    assert run_config(records) == saved

    rows, summary = history_and_summary(records)
    evals = {r["eval/stage"]: r for r in rows if "eval/stage" in r}
    nll = metrics[metrics.metric == "holdout_nll"]
    assert sorted(evals) == sorted(nll.stage.unique()) == [0, 1, 2]
    for row in nll.itertuples():
        assert evals[row.stage][f"eval/{row.eval_domain}/holdout_nll"] == pytest.approx(row.value)
    final = metrics[(metrics.eval_domain == "all") & (metrics.metric == "avg_forgetting_pct")]
    assert summary["avg_forgetting_pct"] == pytest.approx(final.value.item())
    forgetting = metrics[metrics.metric == "forgetting_pct"].set_index("eval_domain").value
    assert summary["forgetting_pct/prose"] == pytest.approx(forgetting["prose"])
    assert summary["status"] == "complete"
    steps = [r["train/loss"] for r in rows if "train/loss" in r]
    assert steps == pytest.approx(pd.read_csv(run_dir / "train_log.csv").loss.tolist())

    leaked = [
        str(p)
        for p in wandb_env.rglob("*")
        if p.is_file() and not p.is_symlink() and FAKE_KEY.encode() in p.read_bytes()
    ]
    assert not leaked


def test_logger_config_errors_name_the_fix(tmp_path: Path) -> None:
    cfg = compose_config(["+sequence=med_code", "logger=none"])
    assert type(build_logger(cfg, tmp_path, IDS)) is RunLogger
    cfg.logger._target_ = "continual.tracking.nowhere.Logger"
    with pytest.raises(ConfigError, match="cannot be loaded.*logger=wandb or logger=none"):
        build_logger(cfg, tmp_path, IDS)
    cfg.logger._target_ = "collections.OrderedDict"
    with pytest.raises(ConfigError, match="not a RunLogger"):
        build_logger(cfg, tmp_path, IDS)
    untargeted = compose_config(["+sequence=med_code", "logger=none", "~logger._target_"])
    with pytest.raises(ConfigError, match="no _target_"):
        build_logger(untargeted, tmp_path, IDS)
    with pytest.raises(ConfigError, match="logger.mode"):
        build_logger(compose_config(["logger=wandb", "logger.mode=sideways"]), tmp_path, IDS)
