"""Stage `tiny_models`: write every tiny model of the tiny profile into `models_dir`.

Each builder saves a randomly initialised model of the real architecture with `save_pretrained` (or an
mmseg config + checkpoint) and skips a folder that is already complete, so the stages then load them through
the same code path as real weights: the profile (synthrel/conf/profile/tiny.yaml), the demo zoo (synthrel/conf/zoo/tiny.yaml)
and the forecast's model (synthrel/conf/model/tiny_unseen.yaml) only name the folders written here. Nothing outside
synthrel/tiny imports this package (tests/core/test_layering.py checks it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from synthrel.errors import ConfigError

log = logging.getLogger(__name__)


def ensure_tiny_models(models_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """The tiny generators and captioner the profile points to: models_dir/{sd15, sdxl, sd15_inpaint, blip}."""
    from synthrel.tiny.blip import build_tiny_blip
    from synthrel.tiny.diffusion import KINDS, build_tiny_sd

    models_dir = Path(models_dir)
    paths = {kind: build_tiny_sd(models_dir / kind, kind, seed) for kind in KINDS}
    paths["blip"] = build_tiny_blip(models_dir / "blip", seed)
    return paths


@dataclass
class TinyModelsJob:
    models_dir: str
    seed: int = 0
    #: tiny segmentation models: folder under `models_dir` -> architecture (synthrel.tiny.segmentation.SPECS)
    segmenters: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        from synthrel.config import to_plain
        from synthrel.tiny.segmentation import SPECS

        self.segmenters = dict(to_plain(self.segmenters) or {})
        for folder, spec in self.segmenters.items():
            if spec not in SPECS:
                raise ConfigError(f"`stages.tiny_models.segmenters.{folder}` is {spec!r}; valid: {', '.join(SPECS)}")

    def run(self) -> dict:
        from synthrel.tiny.grounded_sam import build_tiny_grounded_sam
        from synthrel.tiny.mask2former import build_tiny_mask2former, build_tiny_rba
        from synthrel.tiny.segmentation import ensure_tiny_segmenter

        models = Path(self.models_dir)
        built = ensure_tiny_models(models, seed=self.seed)
        built.update(build_tiny_grounded_sam(models, seed=self.seed))
        built["mask2former"] = build_tiny_mask2former(models / "mask2former", seed=self.seed)
        built["rba_1dl"] = build_tiny_rba(models / "rba_1dl", seed=self.seed)
        for folder, spec in self.segmenters.items():
            built[folder] = ensure_tiny_segmenter(spec, models / folder, seed=self.seed)
        log.info("tiny models in %s: %s", self.models_dir, ", ".join(sorted(built)))
        return {"models_dir": str(self.models_dir), "segmenters": sorted(self.segmenters)}
