"""A disk cache of prepared domains, so that a rerun, a resumed run or another job of a sweep
does not read and tokenize its corpora again.

An entry, ``<cache_dir>/data/<key>/``, holds what :func:`~continual.data.domain.build_domain`
or :func:`~continual.data.pairs.build_pairs_domain` returned: token ids in
``tensors.safetensors``, the documents or examples in ``records.json``, and ``entry.json``
(the key material, the stats and a sha256 of each file). No pickle. The key is a hash of
everything the result depends on (:mod:`.cache_key`), so a changed input is another key. An
entry is written in a temporary directory and renamed into place, so a killed run never
leaves half of one; an entry that fails its checks is rebuilt with a warning.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from continual.data.cache_key import (
    code_version,
    digest,
    file_sha256,
    runtime_versions,
    source_version,
    tokenizer_identity,
)
from continual.data.documents import Document, Example
from continual.data.domain import DomainData
from continual.data.pairs import EncodedPairs, PairsDomain, assemble_pairs_domain
from continual.data.sources import to_plain

log = logging.getLogger(__name__)

# Bump when the layout of an entry or the meaning of its files changes.
CACHE_FORMAT = 1
KEY_CHARS = 24
TENSORS, RECORDS, ENTRY = "tensors.safetensors", "records.json", "entry.json"
STALE_TMP_SECONDS = 24 * 3600  # temporary directories older than this are a killed writer's

Domain = DomainData | PairsDomain


class DataCache:
    """Prepared domains under ``<root>/data/``, for one tokenizer."""

    def __init__(self, root: Path, tokenizer: Any) -> None:
        self.dir = Path(root).expanduser() / "data"
        self.tokenizer = tokenizer
        self._shared: dict[str, Any] | None = None

    def key_material(
        self, name: str, domain_cfg: Mapping[str, Any], settings: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Everything the domain's data depends on; ``None`` when its source has no version."""
        cfg = to_plain(domain_cfg)
        source = cfg.get("source") if isinstance(cfg, Mapping) else None
        try:
            version = source_version(source) if isinstance(source, Mapping) else None
        except OSError:
            version = None  # an unreadable source: the reader reports it
        if version is None:
            return None
        if self._shared is None:
            self._shared = {
                "format": CACHE_FORMAT,
                "tokenizer": tokenizer_identity(self.tokenizer),
                "code": code_version(),
                "runtime": runtime_versions(),
            }
        return {**self._shared, "domain": name, "config": cfg, "settings": dict(settings),
                "source": version}  # fmt: skip

    def domain(
        self, name: str, domain_cfg: Mapping[str, Any], settings: Mapping[str, Any],
        build: Callable[[], Domain],
    ) -> Domain:  # fmt: skip
        """The cached domain for these inputs, or ``build()``'s result, then cached."""
        material = self.key_material(name, domain_cfg, settings)
        if material is None:
            log.info(
                "data cache off for domain %s: its source has no version to key on (a reader "
                "the cache does not know, or a Hugging Face dataset without a commit "
                "`source.revision`)", name,
            )  # fmt: skip
            return build()
        key = digest(material)[:KEY_CHARS]
        entry = self.dir / key
        if entry.is_dir():
            try:
                data = _load(entry, key, name, domain_cfg, self.tokenizer)
            except Exception as exc:  # any fault of the entry means: build it again
                log.warning(
                    "data cache entry %s is unreadable (%s: %s); rebuilding it",
                    entry, type(exc).__name__, exc,
                )  # fmt: skip
                shutil.rmtree(entry, ignore_errors=True)
            else:
                log.info("data cache hit for domain %s (key %s)", name, key)
                return data
        log.info("data cache miss for domain %s (key %s): preparing it", name, key)
        data = build()
        try:
            _save(entry, key, material, data)
        except OSError as exc:
            log.warning("could not write the data cache entry %s (%s); going on without it",
                        entry, exc)  # fmt: skip
        return data


def _save(entry: Path, key: str, material: dict[str, Any], data: Domain) -> None:
    """Write the entry in a temporary directory, then rename it into place (a concurrent
    writer that got there first wins; its entry is the same)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(entry.parent)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".tmp-{key}-"))
    try:
        tensors, records, extra = _encode(data)
        save_file(tensors, str(tmp / TENSORS))
        (tmp / RECORDS).write_bytes(_json_bytes(records))
        meta = {
            "format": CACHE_FORMAT, "key": key, "kind": data.kind, "domain": data.name,
            "inputs": material, "stats": data.stats, "extra": extra,
            "files": {n: file_sha256(tmp / n) for n in (TENSORS, RECORDS)},
        }  # fmt: skip
        (tmp / ENTRY).write_bytes(_json_bytes(meta))
        try:
            tmp.rename(entry)
        except OSError:
            if not entry.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load(
    entry: Path, key: str, name: str, domain_cfg: Mapping[str, Any], tokenizer: Any
) -> Domain:
    meta = json.loads((entry / ENTRY).read_bytes().decode("utf-8", "surrogatepass"))
    if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
        raise ValueError(f"format {meta.get('format')} / key {meta.get('key')} do not match")
    for file, expected in meta["files"].items():
        if file_sha256(entry / file) != expected:
            raise ValueError(f"{file} does not match its checksum")
    tensors = load_file(str(entry / TENSORS))
    records = json.loads((entry / RECORDS).read_bytes().decode("utf-8", "surrogatepass"))
    stats = meta["stats"]
    if meta["kind"] == "text":
        train, held = ([Document(*r) for r in records[part]] for part in ("train", "holdout"))
        return DomainData(name, train, held, tensors["train_blocks"], tensors["holdout_blocks"],
                          stats)  # fmt: skip
    train_ex, held_ex = (
        [Example(i, p, r, None if c is None else tuple(c)) for i, p, r, c in records[part]]
        for part in ("train", "holdout")
    )
    pad_id = int(meta["extra"]["pad_id"])
    encoded = [
        EncodedPairs(
            _split_ids(tensors, f"{p}_prompts"), _split_ids(tensors, f"{p}_responses"), pad_id
        )
        for p in ("train", "holdout")
    ]
    return assemble_pairs_domain(name, domain_cfg, tokenizer, (train_ex, held_ex), encoded, stats)


def _encode(data: Domain) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """``(tensors, records, extra)`` of a prepared domain."""
    if isinstance(data, DomainData):
        tensors = {
            "train_blocks": data.train_blocks.contiguous(),
            "holdout_blocks": data.holdout_blocks.contiguous(),
        }
        records = {
            part: [[d.doc_id, d.text] for d in docs]
            for part, docs in (("train", data.train_docs), ("holdout", data.holdout_docs))
        }
        return tensors, records, {}
    tensors = {}
    for part, encoded in (("train", data.train_encoded), ("holdout", data.holdout_encoded)):
        tensors.update(_joined_ids(f"{part}_prompts", encoded.prompts))
        tensors.update(_joined_ids(f"{part}_responses", encoded.responses))
    records = {
        part: [[e.example_id, e.prompt, e.response, None if e.choices is None else list(e.choices)]
               for e in examples]
        for part, examples in (("train", data.train), ("holdout", data.holdout))
    }  # fmt: skip
    return tensors, records, {"pad_id": data.train_encoded.pad_id}


def _joined_ids(name: str, lists: list[list[int]]) -> dict[str, torch.Tensor]:
    flat = [t for ids in lists for t in ids]
    return {
        f"{name}_ids": torch.tensor(flat, dtype=torch.long),
        f"{name}_lengths": torch.tensor([len(ids) for ids in lists], dtype=torch.long),
    }


def _split_ids(tensors: Mapping[str, torch.Tensor], name: str) -> list[list[int]]:
    flat, lengths = tensors[f"{name}_ids"].tolist(), tensors[f"{name}_lengths"].tolist()
    if sum(lengths) != len(flat):
        raise ValueError(f"{name}: lengths do not add up to the token count")
    out, start = [], 0
    for n in lengths:
        out.append(flat[start : start + n])
        start += n
    return out


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _remove_stale_tmp(directory: Path) -> None:
    """Remove temporary entries that a killed writer left behind long ago."""
    now = time.time()
    for tmp in directory.glob(".tmp-*"):
        try:
            if now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            continue
