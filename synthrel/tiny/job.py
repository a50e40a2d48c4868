"""Stage `tiny_models`: write every tiny model of the tiny profile into `models_dir`.

Each builder saves a randomly initialised model of the real architecture with `save_pretrained` (or an
mmseg config + checkpoint) and skips a folder that is already complete, so the stages then load them through
the same code path as real weights. The segmentation zoo builds its tiny models on first use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class TinyModelsJob:
    models_dir: str
    seed: int = 0

    def run(self) -> dict:
        from synthrel.tiny.diffusion import ensure_tiny_models
        from synthrel.tiny.grounded_sam import build_tiny_grounded_sam
        from synthrel.tiny.mask2former import build_tiny_mask2former, build_tiny_rba

        built = ensure_tiny_models(self.models_dir, seed=self.seed)
        built.update(build_tiny_grounded_sam(self.models_dir, seed=self.seed))
        built["mask2former"] = build_tiny_mask2former(Path(self.models_dir) / "mask2former", seed=self.seed)
        built["rba_1dl"] = build_tiny_rba(Path(self.models_dir) / "rba_1dl", seed=self.seed)
        log.info("tiny models in %s: %s", self.models_dir, ", ".join(sorted(built)))
        return {"models_dir": str(self.models_dir)}
