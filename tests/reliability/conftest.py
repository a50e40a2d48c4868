"""The tiny world every reliability test runs on, built once per test session (shared by pytest-xdist workers).

`<world>/outputs/tiny/models`: the tiny profile's models (TinyModelsJob) and two tiny zoo models;
`<world>/outputs/tiny/data`: a small demo data set (DemoDataJob); `<world>/controlnet_sd15`: a ControlNet made
from the tiny SD1.5 UNet (and `controlnet_sdxl` from SDXL's); `<world>/captions_{train,val}.jsonl`: captions of the demo Cityscapes splits.
Tests write only under their own artifacts folder (`paths.artifacts_dir`), so they never touch each other.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from hydra import compose, initialize_config_dir
from reliability_utils import ZOO_MODELS, stage_overrides

from synthrel.run import CONF_DIR

DEMO_SIZES = {"n_train": 4, "n_val": 4, "n_shift": 2, "n_ood": 2}


def _build_world(root: Path) -> None:
    from diffusers import ControlNetModel, UNet2DConditionModel

    from synthrel.data.cityscapes import CityscapesDataset
    from synthrel.data.demo import DemoDataJob
    from synthrel.tiny.job import TinyModelsJob

    models = root / "outputs" / "tiny" / "models"
    data = root / "outputs" / "tiny" / "data"
    TinyModelsJob(models_dir=str(models), segmenters={f"zoo/{key}": spec for key, spec in ZOO_MODELS.items()}).run()
    DemoDataJob(root=str(data), **DEMO_SIZES).run()
    for backbone in ("sd15", "sdxl"):
        unet = UNet2DConditionModel.from_pretrained(models / backbone, subfolder="unet")
        ControlNetModel.from_unet(unet, conditioning_channels=1).save_pretrained(root / f"controlnet_{backbone}")
    for split in ("train", "val"):
        items = CityscapesDataset(data / "cityscapes", split=split).items
        (root / f"captions_{split}.jsonl").write_text(
            "".join(json.dumps({"id": it.id, "caption": f"a city street number {k}"}) + "\n"
                    for k, it in enumerate(items)))
    (root / "WORLD_COMPLETE").write_text("ok\n")


@pytest.fixture(scope="session")
def world(tmp_path_factory, xdist_worker) -> Path:
    """Root folder of the tiny world (paths.root_dir); one build per session, locked across xdist workers."""
    shared = tmp_path_factory.getbasetemp()
    if xdist_worker != "master":
        shared = shared.parent
    root = shared / "reliability_world"
    with FileLock(str(shared / "reliability_world.lock")):
        if not (root / "WORLD_COMPLETE").exists():
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                _build_world(root)
            finally:
                torch.set_num_threads(threads)
    return root


@pytest.fixture(scope="session")
def xdist_worker(request) -> str:
    """pytest-xdist's worker name, or "master" without xdist."""
    return getattr(request.config, "workerinput", {}).get("workerid", "master")


@pytest.fixture
def compose_world(world):
    """Compose the real config on the world: `compose_world(artifacts_dir, *overrides)`."""

    def _compose(artifacts: Path, *overrides: str):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=[*stage_overrides(world, artifacts, list(overrides)),
                                                            f"paths.output_dir={artifacts}/run"])

    return _compose


@pytest.fixture
def demo_copy(world, tmp_path):
    """A writable copy of the demo Cityscapes val split, evaluated as dataset `demo` (datasets.demo.root)."""
    source = world / "outputs" / "tiny" / "data" / "cityscapes"
    root = tmp_path / "cs"
    for sub in ("leftImg8bit", "gtFine"):
        shutil.copytree(source / sub / "val", root / sub / "val")
    return root
