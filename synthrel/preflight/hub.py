"""Hugging Face hub items: are they in the local cache (complete), which files would a download fetch, how big.

The cache is read through huggingface_hub (`try_to_load_from_cache` finds the snapshot of the default branch,
`scan_cache_dir` gives what is on disk); nothing here touches the network unless `online` is asked for.
"""

from __future__ import annotations

import fnmatch
import functools
import json
from dataclasses import dataclass
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin")
CONFIG_SUFFIXES = (".json", ".txt", ".model", ".tiktoken")  # configs, tokenizer vocabularies
#: weights that `from_pretrained` never reads here: half-precision variants, EMA copies, other frameworks
SKIPPED_WEIGHTS = ("*.fp16.*", "*non_ema*", "*.ema.*", "*.ckpt", "*.msgpack", "*.h5", "*.onnx*", "*.pb",
                   "*.mlmodel*", "*openvino*", "safety_checker/*", "*.ot")


def is_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@dataclass
class CacheState:
    status: str  # "in HF cache" | "incomplete in HF cache" | "missing"
    detail: str = ""
    snapshot: Path | None = None


def _marker(library: str) -> str:
    return "model_index.json" if library == "diffusers" else "config.json"


def cached_snapshot(repo_id: str, cache_dir: str | None = None) -> Path | None:
    """The snapshot folder of `repo_id`'s default branch in the HF cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    for marker in ("model_index.json", "config.json"):
        found = try_to_load_from_cache(repo_id, marker, cache_dir=cache_dir)
        if isinstance(found, str):
            return Path(found).parent
    return None


#: pipeline components without weights, or whose weights synthrel never loads (no safety checker)
NO_WEIGHTS = ("scheduler", "tokenizer", "tokenizer_2", "feature_extractor", "safety_checker", "image_encoder")


def missing_weights(snapshot: Path) -> list[str]:
    """Model folders of a cached snapshot without a weights file (a broken cache link counts as absent):
    every model component of a diffusers pipeline (model_index.json), else the root."""
    def has_weights(folder: Path) -> bool:
        return any(p.suffix in WEIGHT_SUFFIXES and p.exists() for p in folder.glob("*"))

    index = snapshot / "model_index.json"
    if index.is_file():
        spec = json.loads(index.read_text())
        needed = [name for name, value in spec.items() if not name.startswith("_") and name not in NO_WEIGHTS
                  and isinstance(value, list) and len(value) == 2 and None not in value]
        return [f for f in needed if not has_weights(snapshot / f)]
    return [] if has_weights(snapshot) else ["(root)"]


def cache_state(repo_id: str, library: str, cache_dir: str | None = None) -> CacheState:
    snapshot = cached_snapshot(repo_id, cache_dir)
    if snapshot is None or not (snapshot / _marker(library)).exists():
        return CacheState("missing")
    absent = missing_weights(snapshot)
    if absent:
        return CacheState("incomplete in HF cache", f"no weights for {', '.join(absent)} in {snapshot}", snapshot)
    return CacheState("in HF cache", str(snapshot), snapshot)


def cached_bytes(repo_id: str, cache_dir: str | None = None) -> int | None:
    """Bytes on disk of `repo_id` in the HF cache (all revisions), from `scan_cache_dir` (one scan per cache)."""
    sizes = _cache_sizes(str(cache_dir) if cache_dir else None)
    return sizes.get(repo_id)


def forget_cache_scan() -> None:
    """Scan the cache again next time (after a download)."""
    _cache_sizes.cache_clear()


@functools.lru_cache(maxsize=4)
def _cache_sizes(cache_dir: str | None) -> dict[str, int]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir)
    except CacheNotFound:
        return {}
    return {r.repo_id: r.size_on_disk for r in info.repos if r.repo_type == "model"}


def select_files(files: list[str], library: str) -> list[str]:
    """The files of a hub repository that `from_pretrained` reads here: configs, tokenizers and, per folder, the
    full-precision safetensors (the .bin only where a folder has no safetensors). Weights at the root of a
    diffusers pipeline (single-file checkpoints) are left out."""
    kept = [f for f in files if not any(fnmatch.fnmatch(f, p) for p in SKIPPED_WEIGHTS)]
    chosen = []
    for name in kept:
        folder = name.rpartition("/")[0]
        if not name.endswith(WEIGHT_SUFFIXES):
            if name.endswith(CONFIG_SUFFIXES):
                chosen.append(name)
            continue
        if library == "diffusers" and not folder and any(f.endswith("model_index.json") for f in files):
            continue
        if name.endswith(".bin") and any(f.rpartition("/")[0] == folder and f.endswith(".safetensors")
                                         for f in kept):
            continue
        chosen.append(name)
    return chosen


def cli_command(repo_id: str, library: str) -> str:
    """An `hf download` line for the files `from_pretrained` reads. For a pipeline it fetches what `select_files`
    would; for a transformers model it also fetches the .bin beside a .safetensors (the CLI has no fallback)."""
    if library == "diffusers":
        include = ["*.json", "*.txt", "*.model", "*/*.safetensors"]
        exclude = ["*.fp16.*", "*non_ema*", "*.ema.*", "safety_checker/*"]
    else:
        include = ["*.json", "*.txt", "*.model", "*.safetensors", "*.bin"]
        exclude = []
    return " ".join([f"hf download {repo_id}", *(f"--include '{p}'" for p in include),
                     *(f"--exclude '{p}'" for p in exclude)])


def snapshot_kwargs(repo_id: str, files: list[str], library: str) -> dict:
    """Arguments of `huggingface_hub.snapshot_download` for a repository whose file list is `files`."""
    return {"repo_id": repo_id, "allow_patterns": select_files(files, library)}


def remote_files(repo_id: str) -> dict[str, int | None]:
    """File name -> size of `repo_id` on the hub (network)."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo_id, files_metadata=True)
    return {s.rfilename: s.size for s in info.siblings or []}


def download(repo_id: str, library: str, cache_dir: str | None = None) -> Path:
    """Fetch the files `from_pretrained` needs into the HF cache (resumable; huggingface_hub's progress bars)."""
    from huggingface_hub import snapshot_download

    files = list(remote_files(repo_id))
    return Path(snapshot_download(**snapshot_kwargs(repo_id, files, library), cache_dir=cache_dir))
