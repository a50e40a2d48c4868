"""Map a model's own label set onto the 19 Cityscapes trainIds, for models trained on other label sets.

A mapping file (YAML or JSON) names the model's class count and, for each of its classes that has a Cityscapes
counterpart, the trainId or class name:

    num_classes: 150          # what the model predicts
    classes:                  # model class index -> Cityscapes trainId (0..18) or name ("road", "car", ...)
      6: road
      11: sidewalk

Probabilities of the model's classes that map to one trainId are summed and renormalised over the mapped
classes (classes without a counterpart are dropped): the 19 logits are the log-sum-exp of the mapped logits.
A trainId no model class maps to gets MISSING_LOGIT (never predicted; finite, so every score stays defined).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from synthrel.conventions import CLASS_NAMES, NUM_CLASSES
from synthrel.errors import ConfigError

log = logging.getLogger(__name__)

MISSING_LOGIT = -1e4


@dataclass(frozen=True)
class LabelMap:
    num_classes: int
    train_ids: tuple[int | None, ...]  # per model class: its trainId, or None (dropped)
    source: str = "<dict>"

    @classmethod
    def from_file(cls, path: str | Path) -> LabelMap:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"label mapping file {path} not found (config key `model.label_map`)")
        text = path.read_text()
        try:
            spec = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"label mapping file {path} is not valid {path.suffix[1:] or 'YAML'}: {e}") from e
        return cls.from_dict(spec, str(path))

    @classmethod
    def from_dict(cls, spec, source: str = "<dict>") -> LabelMap:
        if not isinstance(spec, dict) or set(spec) != {"num_classes", "classes"}:
            raise ConfigError(f"label mapping {source}: expected the keys `num_classes` (int) and `classes` "
                              f"(model class index -> Cityscapes trainId or name), got {spec!r:.200}")
        n = spec["num_classes"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"label mapping {source}: `num_classes` must be a positive integer, got {n!r}")
        train_ids: list[int | None] = [None] * n
        for index, target in (spec["classes"] or {}).items():
            try:
                index = int(index)
            except (TypeError, ValueError):
                raise ConfigError(f"label mapping {source}: class index {index!r} is not an integer") from None
            if not 0 <= index < n:
                raise ConfigError(f"label mapping {source}: class index {index} is outside 0..{n - 1}")
            train_ids[index] = _train_id(target, source)
        mapped = {t for t in train_ids if t is not None}
        if not mapped:
            raise ConfigError(f"label mapping {source}: no class maps to a Cityscapes trainId")
        missing = [CLASS_NAMES[t] for t in range(NUM_CLASSES) if t not in mapped]
        if missing:
            log.warning("label mapping %s: no model class for Cityscapes %s (never predicted)", source, missing)
        return cls(n, tuple(train_ids), source)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, num_classes, H, W) -> (B, 19, H, W) log-sum-exp of the logits mapped to each trainId."""
        if logits.shape[1] != self.num_classes:
            raise ConfigError(f"label mapping {self.source} is for {self.num_classes} classes; the model "
                              f"predicts {logits.shape[1]}")
        out = logits.new_full((logits.shape[0], NUM_CLASSES, *logits.shape[2:]), MISSING_LOGIT)
        for train_id in range(NUM_CLASSES):
            sources = [k for k, t in enumerate(self.train_ids) if t == train_id]
            if sources:
                out[:, train_id] = torch.logsumexp(logits[:, sources], dim=1)
        return out


def _train_id(target, source: str) -> int:
    if isinstance(target, str):
        if target not in CLASS_NAMES:
            raise ConfigError(f"label mapping {source}: {target!r} is not a Cityscapes class; valid: "
                              f"{', '.join(CLASS_NAMES)}")
        return CLASS_NAMES.index(target)
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < NUM_CLASSES:
        raise ConfigError(f"label mapping {source}: target {target!r} is neither a trainId 0..18 nor a class name")
    return target
