"""Weights & Biases tracker (``logger=wandb``): one W&B run per chain (sequence x method x seed).

Built by :func:`continual.tracking.base.build_logger` from ``conf/logger/wandb.yaml``, whose
fields (project, entity, mode, tags, group) are the keyword arguments of :class:`WandbLogger`.

Mode: ``logger.mode`` if set, else ``WANDB_MODE``, else online when an API key is configured
locally (``WANDB_API_KEY``, netrc or wandb settings; checked without any network call) and
offline otherwise. An offline run lives under ``<run_dir>/wandb/`` and is uploaded later with
the ``wandb sync`` command printed once. Training curves are plotted against
``train/global_step`` and evaluations against ``eval/stage`` (every (domain, metric) the stage
measured, as ``eval/<domain>/<metric>``: ``holdout_nll``, and for pairs domains ``accuracy``,
``rougeL``, ``prompted_accuracy`` ...); the end of the chain adds the loss matrix and forgetting
table (``tables/...``) and every scalar of the summary to ``run.summary`` (loss metrics and, with
pairs domains, ``acc_bwt``, ``final_avg_accuracy``, ``acc_forgetting_pts/<domain>`` ...; W&B
stores an undefined NaN value as null).
A tracker failure prints one warning and turns logging off; the run itself goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from numbers import Real
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
from omegaconf import DictConfig

from continual.errors import ConfigError
from continual.tracking.base import RunLogger

MODES = ("online", "offline", "disabled")
_ALIASES = {"dryrun": "offline", "run": "online", "shared": "online"}
_TRUE = {"1", "true", "yes", "on"}


def _normalise_mode(value: str, source: str) -> str:
    mode = _ALIASES.get(value.strip().lower(), value.strip().lower())
    if mode not in MODES:
        raise ConfigError(f"{source}={value!r} is not a W&B mode; use one of {', '.join(MODES)}")
    return mode


def has_api_key() -> bool:
    """Whether W&B credentials are configured on this machine (env, netrc, settings file).

    Reads local configuration only: no network call and no prompt.
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:  # wandb >= 0.22: the credential lookup behind wandb.init(), without verification
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth
    except ImportError:
        wbauth = None
    try:
        if wbauth is not None:
            settings = wandb_setup.singleton().settings
            host = wbauth.HostUrl(settings.base_url, app_url=settings.app_url)
            auth = wbauth.authenticate_session(
                host=host, source="continual", prompt=False, verify=False, update_session=False
            )
            return auth is not None
        import wandb  # older wandb: the then-current wandb.api.api_key

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(wandb.api.api_key)
    except Exception:  # a malformed netrc/settings entry: treat as no usable key
        return False


def resolve_mode(cfg_mode: str | None) -> tuple[str, str]:
    """(mode, why): ``logger.mode`` > ``WANDB_MODE`` > ``WANDB_DISABLED`` > API key present."""
    if cfg_mode:
        mode = _normalise_mode(str(cfg_mode), "logger.mode")
        return mode, f"logger.mode={mode}"
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode:
        return _normalise_mode(env_mode, "WANDB_MODE"), f"WANDB_MODE={env_mode}"
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in _TRUE:
        return "disabled", "WANDB_DISABLED is set"
    if has_api_key():
        return "online", "auto"
    return "offline", "no W&B API key found"


def _is_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    return float(value)


def _plain(value: Any) -> Any:
    """A JSON-friendly Python scalar for a table cell (numpy scalars -> int/float)."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    return value


class WandbLogger(RunLogger):
    """Sends the recipe's calls to one W&B run; every call is guarded (see module docstring)."""

    _notices: ClassVar[set[str]] = set()  # messages already printed in this process
    _open: ClassVar[Any] = None  # our run that a crashed job left unfinished (multirun)

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        ids: dict[str, Any],
        *,
        name: str = "wandb",
        project: str | None = "continual",
        entity: str | None = None,
        mode: str | None = None,
        tags: Sequence[str] | None = (),
        group: str | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(cfg, run_dir, ids, name=name, **settings)
        self.project = project or "continual"
        self.entity = entity or None
        self.tags = [str(t) for t in tags or []]
        self.group_name = group
        self.mode, self.why = resolve_mode(mode)
        self.multirun = _is_multirun()
        self._run: Any = None
        self._failed = False
        self._global_step = 0
        self._stage_names: dict[int, str] = {}  # stage -> what it trained, as logged

    # -- helpers -------------------------------------------------------------------------

    def _say_once(self, message: str, file: Any = None) -> None:
        if message not in WandbLogger._notices:
            WandbLogger._notices.add(message)
            print(message, file=file or sys.stdout, flush=True)

    def _fail(self, what: str, exc: BaseException) -> None:
        """Report the first tracker failure and turn logging off for the rest of the run."""
        if not self._failed:
            self._failed = True
            print(
                f"warning: W&B {what} failed ({type(exc).__name__}: {exc}); W&B logging is off "
                f"for the rest of this run (results are still written to {self.run_dir})",
                file=sys.stderr,
                flush=True,
            )

    def _call(self, what: str, fn: Callable[[], None]) -> None:
        if self._run is None or self._failed:
            return
        try:
            fn()
        except Exception as exc:
            self._fail(what, exc)

    def group(self) -> str:
        """The sweep: the Hydra sweep directory for multirun jobs, else the sequence."""
        if self.group_name:
            return str(self.group_name)
        if self.multirun:
            return self.run_dir.parent.name
        return str(self.ids.get("sequence", self.run_dir.name))

    def run_id(self) -> str:
        """Stable id derived from the run directory, so a resumed chain continues its run."""
        return hashlib.sha1(str(self.run_dir.resolve()).encode()).hexdigest()[:16]

    def _init(self, config: dict[str, Any], mode: str) -> Any:
        import wandb

        if WandbLogger._open is not None:  # an earlier job in this process never finished
            abandoned, WandbLogger._open = WandbLogger._open, None
            with contextlib.suppress(Exception):
                abandoned.finish(exit_code=1)
        ids = self.ids
        return wandb.init(
            project=self.project,
            entity=self.entity,
            group=self.group(),
            job_type=str(ids.get("method", "run")),
            name=f"{ids.get('sequence')}-{ids.get('method')}-s{ids.get('seed')}",
            tags=self.tags,
            dir=str(self.run_dir),
            config=config,
            id=self.run_id(),
            resume="allow" if mode == "online" else None,
            mode=mode,
            reinit="create_new",  # never reuse or finish a run the caller opened
            # Offline: our own one-line notice replaces wandb's banner and sync hints.
            settings=wandb.Settings(silent=mode == "offline"),
        )

    def _offline_notice(self, why: str) -> None:
        if self.multirun:
            target = f"{self.run_dir.parent}/*/wandb/offline-run-*"
        else:
            try:
                target = str(self._run.settings.sync_dir)
            except Exception:
                target = f"{self.run_dir}/wandb/offline-run-*"
        self._say_once(f"wandb: logging offline ({why}); upload later with: wandb sync {target}")

    # -- RunLogger -----------------------------------------------------------------------

    def start(self, config: dict[str, Any]) -> None:
        """Open the W&B run (falls back to offline when an automatic online start fails)."""
        if self.mode == "disabled" or self._run is not None:
            return
        mode, why = self.mode, self.why
        try:
            self._run = self._init(config, mode)
        except Exception as exc:
            if not (mode == "online" and why == "auto"):
                self._fail("init", exc)
                return
            mode, why = "offline", f"W&B unreachable: {type(exc).__name__}"
            try:
                self._run = self._init(config, mode)
            except Exception as exc2:
                self._fail("init", exc2)
                return
        self.mode = mode
        WandbLogger._open = self._run
        if mode == "offline":
            self._offline_notice(why)

        def define() -> None:
            run = self._run
            run.define_metric("train/global_step")
            run.define_metric("train/*", step_metric="train/global_step")
            run.define_metric("eval/stage")
            run.define_metric("eval/*", step_metric="eval/stage")

        self._call("define_metric", define)

    def log_steps(self, stage: int, domain: str, steps: list[dict[str, float]]) -> None:
        """One history row per optimizer step: ``train/<field>`` against ``train/global_step``."""

        def send() -> None:
            for record in steps:
                step = _number(record.get("global_step"))
                self._global_step = int(step) if step is not None else self._global_step + 1
                row: dict[str, float] = {"train/global_step": self._global_step}
                row["train/stage"] = stage
                for key, value in record.items():
                    number = _number(value)
                    if key not in ("global_step", "stage") and number is not None:
                        row[f"train/{key}"] = number
                self._run.log(row)

        self._call("log", send)

    def log_eval(self, stage: int, stage_domain: str, values: dict[tuple[str, str], float]) -> None:
        """One history row: ``eval/<domain>/<metric>`` against ``eval/stage``."""
        self._stage_names[stage] = stage_domain  # the loss table's "after" column

        def send() -> None:
            row: dict[str, float] = {"eval/stage": stage}
            for (domain, metric), value in values.items():
                number = _number(value)
                if number is not None:
                    row[f"eval/{domain}/{metric}"] = number
            self._run.log(row)

        self._call("log", send)

    def log_summary(
        self, matrix: pd.DataFrame, forgetting: pd.DataFrame, summary: dict[str, float]
    ) -> None:
        """``tables/loss_matrix``, ``tables/forgetting`` and the scalars into ``run.summary``."""

        def send() -> None:
            import wandb

            order = list(self.cfg.sequence.order) if self.cfg.get("sequence") else []
            names = {0: "base", **dict(enumerate(order, start=1)), **self._stage_names}
            domains = [str(c) for c in matrix.columns]
            rows = []
            for stage, values in zip(matrix.index, matrix.itertuples(index=False), strict=True):
                k = int(stage)
                after = names.get(k, str(k))
                rows.append([k, after, *(float(v) for v in values)])
            loss_table = wandb.Table(columns=["stage", "after", *domains], data=rows)
            forget_table = wandb.Table(
                columns=[str(c) for c in forgetting.columns],
                data=[[_plain(v) for v in row] for row in forgetting.itertuples(index=False)],
            )
            self._run.log({"tables/loss_matrix": loss_table, "tables/forgetting": forget_table})
            scalars = {k: (v if _number(v) is None else _number(v)) for k, v in summary.items()}
            self._run.summary.update(scalars)

        self._call("summary", send)

    def finish(self, status: str) -> None:
        """Close the run; ``failed`` marks it failed in W&B (exit code 1)."""
        run, self._run = self._run, None
        if run is None:
            return
        if WandbLogger._open is run:
            WandbLogger._open = None
        try:
            if not self._failed:
                run.summary["status"] = status
            run.finish(exit_code=0 if status == "complete" else 1)
        except Exception as exc:
            self._fail("finish", exc)
