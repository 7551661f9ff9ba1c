"""User data for ``pairs`` domains: input-output examples from a local JSONL file
(:func:`read_pairs_jsonl`) or a Hugging Face dataset (:func:`read_pairs_hf`).

Every record becomes an :class:`~continual.data.documents.Example`. A bad record is a DataError
that names the file and line (or the dataset row) and says how to fix it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from continual.data.documents import Example
from continual.data.sources.common import existing_path
from continual.data.sources.hub import open_dataset
from continual.data.sources.local_files import _numbered_lines
from continual.errors import DataError


def read_pairs_jsonl(
    *,
    path: str,
    prompt_field: str = "prompt",
    response_field: str = "response",
    messages_field: str | None = None,
    choices_field: str | None = None,
    id_field: str | None = None,
) -> Iterator[Example]:
    """A local JSON Lines file (``.jsonl`` or ``.jsonl.gz``) of examples, one JSON object a line.

    Params:
        path: the file. prompt_field / response_field: keys holding the prompt and the
            response (strings).
        messages_field: instead of prompt/response, a key holding a chat conversation: a list
            of ``{"role": ..., "content": ...}`` whose last message is ``assistant`` (the
            response) and the one before it ``user`` (the prompt). A leading ``system``
            message is ignored (the domain's ``system_prompt`` sets the system turn of every
            example); other earlier turns are an error (multi-turn is not supported yet).
        choices_field: key holding the allowed answers of a multiple-choice record (a list of
            strings that contains the response); null for free-text answers.
        id_field: key holding a unique id (default: ``<file name>:<line number>``, so that
            later errors about a record name its line).

    Blank lines are skipped. Errors name the file and line.
    """
    file = existing_path(path, "JSONL file")
    if file.is_dir():
        raise DataError(
            f"{file} is a directory; `source.path` of the pairs_jsonl reader must be a file."
        )
    fields = _Fields(prompt_field, response_field, choices_field, "line")
    example = (
        f'{{"{prompt_field}": "...", "{response_field}": "..."}}'
        if messages_field is None
        else f'{{"{messages_field}": [{{"role": "user", ...}}, {{"role": "assistant", ...}}]}}'
    )
    empty = True
    for number, line in _numbered_lines(file):
        if not line.strip():
            continue
        empty = False
        where = f"{file}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{where}: invalid JSON ({e.msg} at column {e.colno}); each line must be one "
                "JSON object. Fix or delete that line."
            ) from e
        if not isinstance(row, dict):
            raise DataError(
                f"{where}: expected a JSON object, got {type(row).__name__}; each line must "
                f"look like {example}."
            )
        if messages_field is None:
            prompt = fields.string(row, prompt_field, "prompt_field", where)
            response = fields.string(row, response_field, "response_field", where)
        else:
            messages = fields.get(row, messages_field, "messages_field", where)
            prompt, response = _from_messages(messages, messages_field, where)
        if id_field is None:
            example_id = f"{file.name}:{number}"
        elif row.get(id_field) is not None:
            example_id = str(row[id_field])
        else:
            raise DataError(
                f"{where}: no id field {id_field!r}; add it to that line or leave "
                "`source.id_field` out to use file name and line number."
            )
        yield fields.example(row, example_id, prompt, response, where)
    if empty:
        raise DataError(
            f"{file} is empty; add one JSON object per line (e.g. {example}) or fix `source.path`."
        )


def read_pairs_hf(
    *,
    path: str,
    name: str | None = None,
    split: str = "train",
    prompt_field: str = "prompt",
    response_field: str = "response",
    choices_field: str | None = None,
    id_field: str | None = None,
    revision: str | None = None,
) -> Iterator[Example]:
    """A Hugging Face dataset of examples via ``datasets.load_dataset`` (or ``load_from_disk``).

    Params:
        path: a Hub dataset id (``user/name``), a local dataset directory, or a directory
            written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``.
        name: the dataset configuration. split: which split (default ``train``).
        prompt_field / response_field: string columns with the prompt and the response.
        choices_field: a list-of-strings column with the allowed answers (it must contain the
            response); null for free-text answers.
        id_field: column with a unique id (default: ``<split>:<row index>``).
        revision: Hub revision (branch, tag or commit) to pin.

    Without internet, a Hub dataset must already be in the local datasets cache. Errors name
    the row (0-based).
    """
    ds = open_dataset(
        path, name=name, split=split, revision=revision, local_readers="read_pairs_jsonl"
    )
    roles = {"prompt_field": prompt_field, "response_field": response_field,
             "choices_field": choices_field, "id_field": id_field}  # fmt: skip
    wanted = {role: f for role, f in roles.items() if f is not None}
    columns = getattr(ds, "column_names", None)
    if columns is not None:
        for role, column in wanted.items():
            if column not in columns:
                raise DataError(
                    f"dataset {path!r} has no column {column!r} (columns: {columns}); set "
                    f"`source.{role}`."
                )
        ds = ds.select_columns(list(dict.fromkeys(wanted.values())))
    fields = _Fields(prompt_field, response_field, choices_field, "row")
    index = 0
    for batch in ds.iter(batch_size=256):
        size = len(next(iter(batch.values()), []))
        for j in range(size):
            row = {column: values[j] for column, values in batch.items()}
            where = f"dataset {path!r} row {index + j}"
            prompt = fields.string(row, prompt_field, "prompt_field", where)
            response = fields.string(row, response_field, "response_field", where)
            if id_field is None:
                example_id = f"{split}:{index + j}"
            elif row.get(id_field) is not None:
                example_id = str(row[id_field])
            else:
                raise DataError(
                    f"{where}: id column {id_field!r} is null; fill it in or leave "
                    "`source.id_field` out to use row numbers."
                )
            yield fields.example(row, example_id, prompt, response, where)
        index += size


class _Fields:
    """The checks that both readers make on one record (a dict), with errors naming
    ``where`` and telling to fix that ``record`` (``line`` or ``row``)."""

    def __init__(
        self, prompt_field: str, response_field: str, choices_field: str | None, record: str
    ) -> None:
        self.prompt_field = prompt_field
        self.response_field = response_field
        self.choices_field = choices_field
        self.record = record

    def get(self, row: Mapping[str, Any], field: str, role: str, where: str) -> Any:
        if field not in row:
            raise DataError(
                f"{where}: no field {field!r} (fields: {sorted(row)}); set `source.{role}` or "
                f"fix that {self.record}."
            )
        return row[field]

    def string(self, row: Mapping[str, Any], field: str, role: str, where: str) -> str:
        value = self.get(row, field, role, where)
        if not isinstance(value, str):
            kind = "null" if value is None else f"a {type(value).__name__}"
            raise DataError(
                f"{where}: field {field!r} is {kind}, not a string; fix that {self.record} or "
                f"set `source.{role}`."
            )
        return value

    def example(
        self, row: Mapping[str, Any], example_id: str, prompt: str, response: str, where: str
    ) -> Example:
        """The checked Example: non-empty prompt and response, valid choices."""
        for text, what in ((prompt, "prompt"), (response, "response")):
            if not text.strip():
                raise DataError(
                    f"{where}: empty {what}; write the {what} or delete that {self.record}."
                )
        choices = None
        if self.choices_field is not None:
            value = self.get(row, self.choices_field, "choices_field", where)
            if not isinstance(value, list | tuple) or not all(isinstance(c, str) for c in value):
                raise DataError(
                    f"{where}: field {self.choices_field!r} must be a list of strings (the "
                    f"allowed answers), got {value!r}; fix that {self.record} or set "
                    "`source.choices_field`."
                )
            choices = tuple(value)
            if response not in choices:
                raise DataError(
                    f"{where}: the response {response!r} is not among the choices "
                    f"{list(choices)}; add it to them or fix that {self.record}."
                )
        return Example(example_id, prompt, response, choices)


def _from_messages(messages: Any, field: str, where: str) -> tuple[str, str]:
    """``(prompt, response)`` of a one-exchange chat: [system?] user, assistant."""
    shape = 'a list of {"role": ..., "content": ...} objects with string values'
    if not isinstance(messages, list) or not messages:
        raise DataError(
            f"{where}: field {field!r} must be {shape}, got {messages!r}; fix that line."
        )
    for i, message in enumerate(messages):
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise DataError(
                f"{where}: message {i} of {field!r} is {message!r}; it must be {shape}. Fix "
                "that line."
            )
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    roles = [m["role"] for m in turns]
    if not roles or roles[-1] != "assistant":
        raise DataError(
            f"{where}: the last message of {field!r} must be 'assistant' (its content is the "
            f"response), got roles {roles}; fix that line or delete it."
        )
    if len(roles) < 2 or roles[-2] != "user":
        raise DataError(
            f"{where}: the message before the assistant's must be 'user' (its content is the "
            f"prompt), got roles {roles}; fix that line or delete it."
        )
    if len(roles) > 2:
        raise DataError(
            f"{where}: {len(roles) - 2} message(s) before the last user/assistant exchange "
            f"(roles {roles}); multi-turn conversations are not supported yet, only an optional "
            "leading system message and one user and one assistant message. Split the "
            "conversation into one record per exchange, or keep only its last exchange."
        )
    return turns[-2]["content"], turns[-1]["content"]
