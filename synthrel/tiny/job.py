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
from synthrel.tiny.diffusion import Kind
from synthrel.tiny.real_configs import Size

log = logging.getLogger(__name__)


def ensure_tiny_models(models_dir: str | Path, seed: int = 0, size: str = "tiny", device=None,
                       kinds=None) -> dict[str, Path]:
    """The generators and captioner the profile points to: models_dir/{sd15, sdxl, sd15_inpaint, blip}
    (`kinds`: a subset of the diffusion models; default all)."""
    from synthrel.tiny.blip import build_tiny_blip
    from synthrel.tiny.diffusion import KINDS, build_tiny_sd

    models_dir = Path(models_dir)
    paths = {kind: build_tiny_sd(models_dir / kind, kind, seed, size, device) for kind in kinds or KINDS}
    paths["blip"] = build_tiny_blip(models_dir / "blip", seed, size, device)
    return paths


@dataclass
class TinyModelsJob:
    models_dir: str
    seed: int = 0
    #: segmentation models: folder under `models_dir` -> architecture (synthrel.tiny.segmentation SPECS, REAL_SPECS)
    segmenters: dict[str, str] = field(default_factory=dict)
    #: the same for size real (REAL_SPECS)
    real_segmenters: dict[str, str] = field(default_factory=dict)
    #: tiny, or real: the paper's architectures at their real size (synthrel/tiny/real_configs.py, smoke profile)
    size: Size = "tiny"
    #: where random weights are drawn: cpu, or the run's GPU (seconds instead of minutes for real sizes)
    build_device: str = "cpu"
    #: diffusion models to build (null: sd15, sdxl, sd15_inpaint)
    diffusion: list[Kind] | None = None

    def __post_init__(self):
        from synthrel.config import to_plain
        from synthrel.tiny.diffusion import KINDS
        from synthrel.tiny.segmentation import REAL_SPECS, SPECS

        key, valid = ("real_segmenters", REAL_SPECS) if self.size == "real" else ("segmenters", SPECS)
        self.segmenters = dict(to_plain(getattr(self, key)) or {})
        for folder, spec in self.segmenters.items():
            if spec not in valid:
                raise ConfigError(f"`stages.tiny_models.{key}.{folder}` is {spec!r}; valid: {', '.join(valid)}")
        self.diffusion = list(to_plain(self.diffusion) or KINDS)

    def run(self) -> dict:
        from synthrel.runtime import resolve_device
        from synthrel.tiny.grounded_sam import build_tiny_grounded_sam
        from synthrel.tiny.mask2former import build_tiny_mask2former, build_tiny_rba
        from synthrel.tiny.segmentation import ensure_tiny_segmenter

        models = Path(self.models_dir)
        device = resolve_device(self.build_device)
        size, seed = self.size, self.seed
        built = ensure_tiny_models(models, seed, size, device, self.diffusion)
        built.update(build_tiny_grounded_sam(models, seed, size, device))
        built["mask2former"] = build_tiny_mask2former(models / "mask2former", seed, size, device)
        built["rba_1dl"] = build_tiny_rba(models / "rba_1dl", seed, size, device)
        for folder, spec in self.segmenters.items():
            built[folder] = ensure_tiny_segmenter(spec, models / folder, seed, device)
        log.info("%s models in %s: %s", size, self.models_dir, ", ".join(sorted(built)))
        return {"models_dir": str(self.models_dir), "size": size, "segmenters": sorted(self.segmenters)}
