"""Every file under conf/ composes into a valid run config (files are discovered by globbing, so a
new one is covered without touching this test), and the CLI without a sequence fails cleanly."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from continual.config.validate import validate_config
from continual.methods import Method, build_method

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
# groups chosen with `+<group>=<name>`; every other group is in config.yaml's defaults list
ADDED = {"domain", "sequence", "experiment"}
DEFAULT_GROUPS = sorted(
    next(iter(entry))
    for entry in OmegaConf.load(CONF / "config.yaml").defaults
    if isinstance(entry, DictConfig) and not next(iter(entry)).startswith("override")
)
SEQUENCES = sorted(p.stem for p in (CONF / "sequence").glob("*.yaml"))


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def _job(cfg: DictConfig) -> DictConfig:
    """The config a run sees (without the hydra node), every interpolation resolved; a `???`
    (a value the user must give, e.g. a dataset path) may stay open."""
    HydraConfig.instance().set_config(cfg)  # `${hydra:...}` resolves as in a run
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    resolved = OmegaConf.to_container(job, resolve=True, throw_on_missing=False)
    return OmegaConf.create(resolved)


def _own_keys(path: Path) -> dict[str, Any]:
    """A config file's own values (its defaults list left out), unresolved."""
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    data.pop("defaults", None)
    return data


def _assert_contains(node: Any, expected: Any, where: str) -> None:
    """``node`` holds every value of ``expected`` (recursively; extra keys are allowed)."""
    if isinstance(expected, dict):
        assert isinstance(node, dict), f"{where}: {node!r} is not a mapping"
        for key, value in expected.items():
            assert key in node, f"{where}.{key} missing after composition"
            _assert_contains(node[key], value, f"{where}.{key}")
    else:
        assert node == expected, f"{where}: composed {node!r}, file says {expected!r}"


def _choice(cfg: DictConfig, group: str) -> str:
    return cfg.hydra.runtime.choices[group]


def _evaluated(job: DictConfig) -> list[str]:
    """What validate_config should return: the sequence, then the general domain if any."""
    general = job.eval.get("general_domain")
    return [*job.sequence.order, *([general] if general else [])]


def test_the_discovery_finds_every_group() -> None:
    groups = {p.name for p in CONF.iterdir() if p.is_dir()} - {"hydra"}  # Hydra's own groups
    assert {"model", "method", "train", "eval", "logger"} <= set(DEFAULT_GROUPS)
    assert groups == set(DEFAULT_GROUPS) | ADDED, "a new conf/ group: add it to this test"
    assert all(_names(g) for g in groups) and SEQUENCES


@pytest.mark.parametrize(
    ("group", "name"),
    [pytest.param(g, n, id=f"{g}={n}") for g in DEFAULT_GROUPS for n in _names(g)],
)
def test_every_choice_of_every_group_composes_and_validates(group: str, name: str) -> None:
    cfg = _compose([f"+sequence={SEQUENCES[0]}", f"{group}={name}"])
    assert _choice(cfg, group) == name
    job = _job(cfg)
    container = OmegaConf.to_container(cfg[group], resolve=False)
    _assert_contains(container, _own_keys(CONF / group / f"{name}.yaml"), group)
    if "name" in job[group]:
        assert job[group].name == name, f"conf/{group}/{name}.yaml names itself differently"
    if group == "method":
        method = build_method(job.method)  # its _target_ imports and accepts the settings
        assert isinstance(method, Method) and method.name == name
    assert validate_config(job) == _evaluated(job)


@pytest.mark.parametrize("name", _names("domain"))
def test_every_domain_composes_into_a_sequence(name: str) -> None:
    cfg = _compose([f"+sequence={SEQUENCES[0]}", f"+domain@domains.probe={name}"])
    assert _choice(cfg, "domain@domains.probe") == name
    probe = OmegaConf.to_container(cfg.domains.probe, resolve=False)
    assert probe, f"conf/domain/{name}.yaml composed to an empty node"
    _assert_contains(probe, _own_keys(CONF / "domain" / f"{name}.yaml"), "domains.probe")
    _job(cfg)  # every interpolation resolves


@pytest.mark.parametrize("name", SEQUENCES)
def test_every_sequence_composes_its_domains(name: str) -> None:
    job = _job(_compose([f"+sequence={name}"]))
    order = list(job.sequence.order)
    assert job.sequence.name == name
    assert order and len(set(order)) == len(order)
    for domain in order:
        assert domain in job.domains and job.domains[domain], domain
    assert validate_config(job) == _evaluated(job)


def _sweep(params: DictConfig) -> dict[str, list[str]]:
    """Every value each sweep parameter takes (Hydra's own override grammar)."""
    values = {}
    for override in OverridesParser.create().parse_overrides(
        [f"{key}={value}" for key, value in params.items()]
    ):
        if override.is_sweep_override():
            values[override.key_or_group] = list(override.sweep_string_iterator())
        else:
            values[override.key_or_group] = [override.get_value_element_as_str()]
    return values


@pytest.mark.parametrize("name", _names("experiment"))
def test_every_experiment_sets_a_sequence_and_a_sweep_of_valid_jobs(name: str) -> None:
    cfg = _compose([f"+experiment={name}"])
    job = _job(cfg)
    assert job.sequence is not None and list(job.sequence.order), "no sequence selected"
    assert set(job.sequence.order) <= set(job.domains)
    assert isinstance(cfg.hydra.sweep.dir, str) and cfg.hydra.sweep.dir.strip()
    params = cfg.hydra.sweeper.params
    assert params, f"experiment {name} defines no hydra.sweeper.params"
    for key, value in params.items():
        assert isinstance(value, (str, int)) and str(value).strip(), (key, value)
    sweep = _sweep(params)
    assert all(sweep.values()), sweep
    for group, values in sweep.items():
        if (CONF / group).is_dir():  # a config group: every swept choice is a file
            assert set(values) <= set(_names(group)), (group, values)
    # every job of the sweep composes with the experiment and passes the early checks
    keys = list(sweep)
    for combo in itertools.product(*(sweep[k] for k in keys)):
        overrides = [f"{k}={v}" for k, v in zip(keys, combo, strict=True)]
        composed = _compose([f"+experiment={name}", *overrides])
        run = _job(composed)
        for key, value in zip(keys, combo, strict=True):
            group = (CONF / key).is_dir()
            chosen = _choice(composed, key) if group else OmegaConf.select(run, key)
            assert str(chosen) == value, (key, chosen, value)
        assert validate_config(run) == _evaluated(run)


def test_vendor_protocol_is_the_embedded_variant_with_its_sweep_dir() -> None:
    # results/vendor_protocol/ is rerun by name: it must be the study that produced it
    study = _compose(["+experiment=vendor_protocol"])
    embedded = _compose(["+experiment=vendor_protocol_embedded"])
    assert _job(study) == _job(embedded)
    assert study.hydra.sweep.dir == embedded.hydra.sweep.dir
    assert study.hydra.sweeper.params == embedded.hydra.sweeper.params


def test_cli_without_a_sequence_names_the_choices_and_leaves_no_run_dir(tmp_path: Path) -> None:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    # this checkout's package, whichever one is installed; CONTINUAL_CACHE: the default cache_dir
    env = {**os.environ, "PYTHONPATH": path, "CONTINUAL_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "continual.run", "logger=none", "model=tiny_random"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "+sequence=" in errors[0]
    for name in SEQUENCES:
        assert name in errors[0].split("available", 1)[-1], (name, errors[0])
    assert "Traceback" not in done.stderr
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir()), list(runs.rglob("*"))
    assert not (tmp_path / "cache").exists()  # failed before loading any model
