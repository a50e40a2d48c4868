"""Checkpoint loading for zoo models: URL (with a cache folder), file:// URL or local path, checked strictly.

mmengine's `load_checkpoint(strict=False)` only warns on missing or mis-shaped parameters, which would let a
wrong checkpoint evaluate as a random model; here any mismatch is a WeightsError naming the model key and the
first offending parameter.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch

from synthrel.errors import WeightsError

log = logging.getLogger(__name__)


def read_checkpoint(checkpoint: str, key: str, cache_dir: str | Path | None = None) -> dict:
    """The state dict of `checkpoint`: an http(s) URL (downloaded once into cache_dir), file:// URL or path."""
    from mmengine.runner.checkpoint import _load_checkpoint, load_from_http

    try:
        if checkpoint.startswith(("http://", "https://")):
            model_dir = str(Path(cache_dir) / "checkpoints") if cache_dir else None
            ckpt = load_from_http(checkpoint, map_location="cpu", model_dir=model_dir)
        else:
            path = unquote(urlparse(checkpoint).path) if checkpoint.startswith("file://") else checkpoint
            if "://" not in path and not Path(path).expanduser().is_file():
                raise WeightsError(f"checkpoint of model {key!r} not found: {path} (config key "
                                   f"`zoo.models.{key}.checkpoint`)")
            ckpt = _load_checkpoint(str(Path(path).expanduser()) if "://" not in path else path,
                                    map_location="cpu")
    except WeightsError:
        raise
    except Exception as e:  # network, unpickling, truncated file
        raise WeightsError(f"cannot read the checkpoint of model {key!r} from {checkpoint}: {e}") from e
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise WeightsError(f"checkpoint of model {key!r} ({checkpoint}) holds no state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_state_strict(model: torch.nn.Module, state: dict, key: str, source: str) -> None:
    """Load `state` into `model`, raising on the first missing, unexpected or mis-shaped parameter."""
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            if name.endswith("num_batches_tracked"):  # old checkpoints omit this BatchNorm counter
                state[name] = tensor
                continue
            raise WeightsError(f"checkpoint {source} does not match model {key!r}: parameter {name!r} is missing "
                               f"({_count_missing(expected, state)} missing in all)")
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise WeightsError(f"checkpoint {source} does not match model {key!r}: parameter {name!r} has shape "
                               f"{tuple(state[name].shape)} in the checkpoint but {tuple(tensor.shape)} in the model")
    unexpected = [name for name in state if name not in expected]
    if unexpected:
        raise WeightsError(f"checkpoint {source} does not match model {key!r}: unexpected parameter "
                           f"{unexpected[0]!r} ({len(unexpected)} unexpected in all)")
    model.load_state_dict(state, strict=True)


def _count_missing(expected: dict, state: dict) -> int:
    return sum(1 for n in expected if n not in state and not n.endswith("num_batches_tracked"))
