"""The readers of user pairs data (a local JSONL file, a Hugging Face dataset) and how bad pairs
data and pairs domains in text-only options fail a run: one clear error, nothing written."""

from __future__ import annotations

import gzip
import inspect
import json
from pathlib import Path
from typing import Any

import pytest
from hydra.utils import get_method
from omegaconf import OmegaConf

from continual.data.documents import Example
from continual.data.sources import BUILTIN_READERS, check_params, load_documents
from continual.errors import ConfigError, DataError
from tests.conftest import CONF, TINY, compose_config
from tests.test_bad_input import _run_fails

PAIRS_JSONL = "continual.data.sources.pairs_files.read_pairs_jsonl"
PAIRS_HF = "continual.data.sources.pairs_files.read_pairs_hf"


def _lines(path: Path, rows: list[Any]) -> Path:
    """One line per row: JSON for objects, the string itself for a raw line."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _qa(i: int) -> dict[str, str]:
    return {"prompt": f"Which code word belongs to catalogue entry {i}?", "response": f"word{i}"}


def _pairs(source: dict[str, Any], **kwargs: Any) -> list[Example]:
    return load_documents(source, record_type=Example, **kwargs)


# --------------------------------------------------------------------------- registry, configs


def test_readers_are_registered_generators() -> None:
    assert BUILTIN_READERS["pairs_jsonl"] == PAIRS_JSONL
    assert BUILTIN_READERS["pairs_hf"] == PAIRS_HF
    for target in (PAIRS_JSONL, PAIRS_HF):
        assert inspect.isgeneratorfunction(get_method(target)), target


@pytest.mark.parametrize("name", ["pairs_jsonl", "pairs_hf", "finance_hf", "science_hf"])
def test_domain_configs_name_a_pairs_reader_with_its_params(name: str) -> None:
    cfg = OmegaConf.load(Path(CONF) / "domain" / f"{name}.yaml")
    assert cfg.kind == "pairs"
    params = OmegaConf.to_container(cfg.source)
    target = params.pop("_target_")
    assert target in (PAIRS_JSONL, PAIRS_HF)
    check_params(target, get_method(target), params)  # raises for unknown or missing params
    med = OmegaConf.load(Path(CONF) / "domain" / "med_sections.yaml")
    assert set(med) - {"source"} <= set(cfg), "a pairs key of med_sections.yaml is missing"


# --------------------------------------------------------------------------- read_pairs_jsonl


def test_jsonl_fields_ids_and_gzip(tmp_path: Path) -> None:
    path = _lines(tmp_path / "qa.jsonl", [_qa(0), "", _qa(1)])
    assert _pairs({"_target_": PAIRS_JSONL, "path": str(path)}) == [
        Example("qa.jsonl:1", _qa(0)["prompt"], "word0"),
        Example("qa.jsonl:3", _qa(1)["prompt"], "word1"),  # blank lines keep the numbering
    ]
    rows = [
        {"q": "Two plus two?", "a": "four", "key": 7},
        {"q": "Sky colour?", "a": "blue", "key": 8},
    ]
    packed = tmp_path / "custom.jsonl.gz"
    with gzip.open(packed, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    params = {"path": str(packed), "prompt_field": "q", "response_field": "a", "id_field": "key"}
    got = _pairs({"_target_": PAIRS_JSONL, **params}, max_documents=1)
    assert got == [Example("7", "Two plus two?", "four")]


def test_jsonl_messages_and_choices(tmp_path: Path) -> None:
    def chat(*turns: tuple[str, str]) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in turns]

    yes_no = ["yes", "no"]
    rows = [
        {"messages": chat(("user", "Is water wet?"), ("assistant", "yes")), "options": yes_no},
        {"messages": chat(("system", "Be brief."), ("user", "Is fire cold?"), ("assistant", "no")),
         "options": yes_no},
    ]  # fmt: skip
    path = _lines(tmp_path / "chat.jsonl", rows)
    params = {"path": str(path), "messages_field": "messages", "choices_field": "options"}
    assert _pairs({"_target_": PAIRS_JSONL, **params}) == [
        Example("chat.jsonl:1", "Is water wet?", "yes", ("yes", "no")),
        Example("chat.jsonl:2", "Is fire cold?", "no", ("yes", "no")),  # system turn ignored
    ]


def _msgs(*roles: str) -> dict[str, Any]:
    return {"messages": [{"role": r, "content": f"{r} text"} for r in roles]}


MESSAGES = {"messages_field": "messages"}
CHOICES = {"choices_field": "choices"}


@pytest.mark.parametrize(
    ("line", "params", "needles"),
    [
        ('{"prompt": "unterminated', {}, ["invalid JSON", "Fix or delete that line"]),
        ('["a", "b"]', {}, ["expected a JSON object, got list", '{"prompt": "...", "response"']),
        ({"prompt": "Q?", "answer": "A"}, {},
         ["no field 'response'", "['answer', 'prompt']", "`source.response_field`"]),
        ({"prompt": 3, "response": "A"}, {},
         ["field 'prompt' is a int, not a string", "`source.prompt_field`"]),
        ({"prompt": "Q?", "response": None}, {}, ["field 'response' is null, not a string"]),
        ({"prompt": "Q?", "response": "  "}, {}, ["empty response", "delete that line"]),
        ({"prompt": "", "response": "A"}, {}, ["empty prompt"]),
        ({"messages": "hello"}, MESSAGES, ["field 'messages' must be a list of", "'hello'"]),
        ({"messages": [{"role": "user"}]}, MESSAGES, ["message 0 of 'messages'", "string values"]),
        (_msgs("user", "assistant", "user"), MESSAGES,
         ["last message of 'messages' must be 'assistant'", "['user', 'assistant', 'user']"]),
        (_msgs("system", "assistant"), MESSAGES,
         ["message before the assistant's must be 'user'", "['assistant']"]),
        (_msgs("user", "assistant", "user", "assistant"), MESSAGES,
         ["2 message(s) before the last user/assistant exchange", "not supported",
          "one record per exchange"]),
        ({"prompt": "Q?", "response": "A"}, CHOICES, ["no field 'choices'"]),
        ({"prompt": "Q?", "response": "A", "choices": "A, B"}, CHOICES,
         ["field 'choices' must be a list of strings", "'A, B'"]),
        ({"prompt": "Q?", "response": "A", "choices": ["A", 2]}, CHOICES,
         ["must be a list of strings"]),
        ({"prompt": "Q?", "response": "C", "choices": ["A", "B"]}, CHOICES,
         ["the response 'C' is not among the choices ['A', 'B']"]),
        ({"prompt": "Q?", "response": "A"}, {"id_field": "uid"},
         ["no id field 'uid'", "leave `source.id_field` out"]),
    ],
)  # fmt: skip
def test_jsonl_errors_name_the_line_and_the_fix(
    tmp_path: Path, line: Any, params: dict[str, Any], needles: list[str]
) -> None:
    good = {**_qa(1), "choices": ["word1"], "uid": "u1", **_msgs("user", "assistant")}
    path = _lines(tmp_path / "bad.jsonl", [good, good, line])
    with pytest.raises(DataError) as info:
        _pairs({"_target_": PAIRS_JSONL, "path": str(path), **params})
    message = str(info.value)
    assert message.startswith(f"{path}:3: "), message
    for needle in needles:
        assert needle in message, (needle, message)


def test_jsonl_empty_missing_and_directory(tmp_path: Path) -> None:
    empty = _lines(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(DataError, match=r"empty\.jsonl is empty; add one JSON object per line"):
        _pairs({"_target_": PAIRS_JSONL, "path": str(empty)})
    with pytest.raises(DataError, match=r"JSONL file not found: .*nowhere\.jsonl"):
        _pairs({"_target_": PAIRS_JSONL, "path": str(tmp_path / "nowhere.jsonl")})
    with pytest.raises(DataError, match=r"is a directory; `source.path` of the pairs_jsonl"):
        _pairs({"_target_": PAIRS_JSONL, "path": str(tmp_path)})


# --------------------------------------------------------------------------- read_pairs_hf


def _saved(tmp_path: Path, rows: list[dict[str, Any]], split: str | None = None) -> str:
    import datasets

    ds = datasets.Dataset.from_list(rows)
    saved = tmp_path / "saved"
    (datasets.DatasetDict({split: ds}) if split else ds).save_to_disk(str(saved))
    return str(saved)


def test_hf_save_to_disk_fields_choices_and_ids(tmp_path: Path) -> None:
    rows = [{"question": f"Is {i} even?", "label": "yes" if i % 2 == 0 else "no",
             "options": ["yes", "no"], "uid": f"q{i}", "n": i} for i in range(5)]  # fmt: skip
    params = {"path": _saved(tmp_path, rows), "prompt_field": "question", "response_field": "label"}
    got = _pairs({"_target_": PAIRS_HF, **params}, max_documents=3)
    assert got == [Example(f"train:{i}", f"Is {i} even?", rows[i]["label"]) for i in range(3)]
    got = _pairs({"_target_": PAIRS_HF, **params, "choices_field": "options", "id_field": "uid"})
    assert [(e.example_id, e.choices) for e in got] == [(f"q{i}", ("yes", "no")) for i in range(5)]

    missing = r"no column 'answer' \(columns: .*question.*`source.response_field`"
    with pytest.raises(DataError, match=missing):
        _pairs({"_target_": PAIRS_HF, **params, "response_field": "answer"})
    with pytest.raises(DataError, match=r"row 0: field 'n' is a int, not a string; fix that row"):
        _pairs({"_target_": PAIRS_HF, **params, "prompt_field": "n"})
    with pytest.raises(DataError, match=r"row 0: field 'label' must be a list of strings"):
        _pairs({"_target_": PAIRS_HF, **params, "choices_field": "label"})


def test_hf_bad_rows_and_splits(tmp_path: Path) -> None:
    two = ["red", "blue"]
    rows = [{"prompt": "Card A colour?", "response": "red", "choices": two, "uid": None},
            {"prompt": "Card B colour?", "response": "green", "choices": two, "uid": "b"},
            {"prompt": "Card C colour?", "response": "", "choices": two, "uid": "c"}]  # fmt: skip
    source = {"_target_": PAIRS_HF, "path": _saved(tmp_path, rows, split="test"), "split": "test"}
    with pytest.raises(DataError, match=r"row 1: the response 'green' is not among the choices"):
        _pairs({**source, "choices_field": "choices"})
    with pytest.raises(DataError, match=r"row 2: empty response; write the response or delete"):
        _pairs(source)
    assert _pairs(source, max_documents=1)[0].example_id == "test:0"
    with pytest.raises(DataError, match=r"row 0: id column 'uid' is null; fill it in or leave"):
        _pairs({**source, "id_field": "uid"})
    with pytest.raises(DataError, match=r"no split 'train' \(splits: \['test'\]\)"):
        _pairs({**source, "split": "train"})


def test_hf_offline_names_the_local_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'someone/fiqa' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        DataError, match=r"'someone/fiqa'.*internet.*save_to_disk.*read_pairs_jsonl"
    ):
        _pairs({"_target_": PAIRS_HF, "path": "someone/fiqa"})


# --------------------------------------------------------------------------- into a pairs domain


def test_pairs_jsonl_config_builds_a_domain(tmp_path: Path) -> None:
    from continual.data.pairs import build_pairs_domain
    from continual.models.loading import byte_tokenizer

    rows = [{**_qa(i), "choices": [f"word{i}", "none"]} for i in range(12)]
    path = _lines(tmp_path / "qa.jsonl", rows)
    cfg = compose_config([
        "+sequence=med_code", "domain@domains.med=pairs_jsonl", f"domains.med.source.path={path}",
        "domains.med.source.choices_field=choices", "domains.med.holdout_examples=3",
        "domains.med.answer=choice",
    ])  # fmt: skip
    domain = build_pairs_domain("med", cfg.domains.med, byte_tokenizer())
    assert (len(domain.train), len(domain.holdout), domain.renderer.name) == (9, 3, "plain")
    ids = {e.example_id for e in domain.train + domain.holdout}
    assert ids == {f"qa.jsonl:{n}" for n in range(1, 13)}
    assert all(e.choices == (e.response, "none") for e in domain.holdout)


# --------------------------------------------------------------------------- a run with bad pairs


def _pairs_run(tmp_path: Path, rows: list[Any], *overrides: str) -> Any:
    """med_code with ``med`` replaced by a pairs_jsonl domain of ``rows`` on the tiny model."""
    path = _lines(tmp_path / "pairs.jsonl", rows)
    return compose_config([
        "+sequence=med_code", *TINY, f"cache_dir={tmp_path / 'cache'}",
        "domain@domains.med=pairs_jsonl", f"domains.med.source.path={path}",
        "domains.med.holdout_examples=4", "domains.med.max_tokens=80", *overrides,
    ])  # fmt: skip


def test_run_fails_on_a_missing_field(tmp_path: Path) -> None:
    rows = [_qa(i) for i in range(12)]
    rows[4] = {"prompt": "Which code word?", "answer": "word4"}
    cfg = _pairs_run(tmp_path, rows)
    _run_fails(
        cfg, tmp_path, DataError, "pairs.jsonl:5: no field 'response'", "source.response_field"
    )


def test_run_fails_on_an_empty_response(tmp_path: Path) -> None:
    rows = [_qa(i) for i in range(12)]
    rows[1]["response"] = ""
    _run_fails(_pairs_run(tmp_path, rows), tmp_path, DataError, "pairs.jsonl:2: empty response")


def test_run_fails_on_an_example_longer_than_max_tokens(tmp_path: Path) -> None:
    rows = [_qa(i) for i in range(12)]
    rows[6]["prompt"] = "Which code word belongs to this long description? " + "detail " * 20
    _run_fails(
        _pairs_run(tmp_path, rows), tmp_path, DataError,
        "example 'pairs.jsonl:7'", "more than max_tokens=80", "shorten or drop that record",
        "domains.med.max_tokens",
    )  # fmt: skip


def test_run_fails_on_the_chat_template_without_one(tmp_path: Path) -> None:
    cfg = _pairs_run(tmp_path, [_qa(i) for i in range(12)], "domains.med.template=chat")
    _run_fails(cfg, tmp_path, ConfigError, "chat template", "domains.med.template=plain")


def test_run_fails_on_a_pairs_domain_in_lm_eval_holdout(tmp_path: Path) -> None:
    cfg = _pairs_run(tmp_path, [_qa(i) for i in range(12)], "eval.lm_eval_holdout=true")
    _run_fails(cfg, tmp_path, ConfigError, "eval.lm_eval_holdout=true", "['med']", "=false")


def test_run_fails_on_a_pairs_domain_as_general_domain(tmp_path: Path) -> None:
    path = _lines(tmp_path / "general.jsonl", [_qa(i) for i in range(12)])
    cfg = compose_config([
        "+sequence=med_code", *TINY, f"cache_dir={tmp_path / 'cache'}",
        "domain@domains.general=pairs_jsonl", f"domains.general.source.path={path}",
        "eval.general_domain=general",
    ])  # fmt: skip
    _run_fails(cfg, tmp_path, ConfigError, "eval.general_domain='general' is a pairs domain")
