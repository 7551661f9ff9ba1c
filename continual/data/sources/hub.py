"""Any Hugging Face dataset: a Hub id, a builder with ``data_files``, or a ``save_to_disk`` dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from continual.data.documents import Document
from continual.errors import DataError


def read_hf(
    *,
    path: str,
    name: str | None = None,
    split: str = "train",
    text_field: str = "text",
    id_field: str | None = None,
    revision: str | None = None,
    data_files: str | list[str] | dict[str, Any] | None = None,
    streaming: bool = False,
    cache_dir: str | None = None,
) -> Iterator[Document]:
    """A Hugging Face dataset via ``datasets.load_dataset`` (or ``load_from_disk``).

    Params:
        path: a Hub dataset id (``user/name``), a builder name (``json``, ``csv``, ``parquet``
            with ``data_files``), a local dataset directory, or a directory written by
            ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (loaded with
            ``load_from_disk``).
        name: the dataset configuration. split: which split (default ``train``).
        text_field: column with the text. id_field: column with a unique id (default: the
            row index). revision: Hub revision (branch, tag or commit) to pin.
        data_files: passed to ``load_dataset``. streaming: stream instead of downloading
            everything (pairs well with ``max_documents``). cache_dir: datasets cache dir.

    Rows whose text is null are yielded as empty documents (dropped later by ``min_chars``).
    Without internet, a Hub dataset must already be in the local datasets cache.
    """
    ds = open_dataset(
        path,
        name=name,
        split=split,
        revision=revision,
        data_files=data_files,
        streaming=streaming,
        cache_dir=cache_dir,
        local_readers="read_jsonl or read_text",
    )
    yield from _iter_hf_rows(ds, path, text_field, id_field)


def open_dataset(
    path: str,
    *,
    name: str | None,
    split: str,
    revision: str | None,
    data_files: str | list[str] | dict[str, Any] | None = None,
    streaming: bool = False,
    cache_dir: str | None = None,
    local_readers: str,
) -> Any:
    """One split of a Hugging Face dataset: ``load_from_disk`` for a ``save_to_disk`` directory,
    else ``load_dataset``; every failure is a DataError with the fix (``local_readers`` names
    the readers of local files to suggest when the Hub cannot be reached)."""
    import datasets

    local = Path(path).expanduser()
    if (local / "state.json").is_file() or (local / "dataset_dict.json").is_file():
        return _load_from_disk(datasets, local, split)  # written by save_to_disk
    try:
        return datasets.load_dataset(
            path,
            name,
            split=split,
            revision=revision,
            data_files=data_files,
            streaming=streaming,
            cache_dir=cache_dir,
        )
    except ConnectionError as e:
        raise DataError(
            f"Hugging Face dataset {path!r} (config {name!r}) could not be fetched and is "
            f"not in the local datasets cache ({e}). It needs internet once (then it is "
            "cached), or set `source.path` to a local directory (save_to_disk output), or "
            f"point `source._target_` at {local_readers} with a local file."
        ) from e
    except FileNotFoundError as e:
        raise DataError(
            f"Hugging Face dataset {path!r} (config {name!r}, data_files {data_files!r}) "
            f"was not found: {e}. Check `source.path`/`source.data_files`."
        ) from e
    except Exception as e:  # datasets raises many types; keep the cause chained
        raise DataError(
            f"loading Hugging Face dataset {path!r} (config {name!r}, split {split!r}) "
            f"failed: {type(e).__name__}: {e}. Check the `source` params (path, name, split, "
            "data_files, revision)."
        ) from e


def _load_from_disk(datasets: Any, local: Path, split: str) -> Any:
    try:
        ds = datasets.load_from_disk(str(local))
    except Exception as e:
        raise DataError(
            f"cannot load the saved dataset in {local}: {type(e).__name__}: {e}; re-create it "
            "with `save_to_disk`."
        ) from e
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(
                f"saved dataset {local} has no split {split!r} (splits: {list(ds)}); set "
                "`source.split`."
            )
        ds = ds[split]
    return ds


def _iter_hf_rows(ds: Any, path: str, text_field: str, id_field: str | None) -> Iterator[Document]:
    columns = getattr(ds, "column_names", None)
    if columns is not None:
        for field, role in ((text_field, "text_field"), (id_field, "id_field")):
            if field is not None and field not in columns:
                raise DataError(
                    f"dataset {path!r} has no column {field!r} (columns: {columns}); set "
                    f"`source.{role}`."
                )
        ds = ds.select_columns([c for c in (text_field, id_field) if c is not None])
    index = 0
    for batch in ds.iter(batch_size=256):
        if text_field not in batch:
            raise DataError(
                f"dataset {path!r} has no column {text_field!r} (columns: {list(batch)}); set "
                "`source.text_field`."
            )
        ids = batch.get(id_field) if id_field is not None else None
        if id_field is not None and ids is None:
            raise DataError(
                f"dataset {path!r} has no column {id_field!r} (columns: {list(batch)}); set "
                "`source.id_field` or leave it out to use row numbers."
            )
        for j, text in enumerate(batch[text_field]):
            row = index + j
            if text is not None and not isinstance(text, str):
                raise DataError(
                    f"dataset {path!r} row {row}: field {text_field!r} is a "
                    f"{type(text).__name__}, not a string; set `source.text_field` to a text "
                    "column."
                )
            doc_id = str(ids[j]) if ids is not None else str(row)
            yield Document(doc_id=doc_id, text=text or "")
        index += len(batch[text_field])
