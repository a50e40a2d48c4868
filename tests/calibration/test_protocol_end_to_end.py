"""Protocol splits through the real evaluate and calibrate stages on demo data: the image ids the engine
stores reach the calibration records, the splits share nothing, and the whole set overlaps its test split."""

import hydra
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from synthrel.calibration.job import CalibrateJob
from synthrel.data.demo import DemoDataJob
from synthrel.errors import ConfigError
from synthrel.evaluation.job import EvaluateJob
from synthrel.run import CONF_DIR
from synthrel.tiny.segmentation import ensure_tiny_segmenter

SETS = ["cityscapes", "cityscapes_calib", "cityscapes_test", "acdc_fog_calib", "acdc_fog_test"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"paths.root_dir={root}", f"paths.output_dir={root}/run",
                                                       "profile=tiny", "+stage=[evaluate]"])
    DemoDataJob(root=cfg.paths.data_dir, seed=0, image_size=[64, 32], n_train=1, n_val=6, n_shift=3,
                n_ood=1).run()
    folder = ensure_tiny_segmenter("pspnet_r18", root / "zoo" / "pspnet_r18")
    entry = {"family": "PSPNet", "framework": "mmseg", "config": str(folder / "config.py"),
             "checkpoint": str(folder / "checkpoint.pth")}
    EvaluateJob(zoo={"name": "tz", "models": {"psp": entry}},
                dataset_configs=OmegaConf.to_container(cfg.datasets, resolve=True), datasets=SETS,
                dataset_labels=OmegaConf.to_container(cfg.stages.evaluate.dataset_labels, resolve=True),
                output_dir=str(root / "res"), num_workers=0, calib_pixels_per_image=200, seed=0, device="cpu",
                profile="tiny").run()
    ids = {name: set(hydra.utils.instantiate(cfg.datasets[name]).ids()) for name in SETS}
    return root, ids


def test_calibration_splits_reach_the_records_disjoint_from_the_test_splits(evaluated):
    root, ids = evaluated
    CalibrateJob(results_root=str(root / "res" / "tz"), output_dir=str(root / "calib"),
                 calibration_sets={"cityscapes": ["cityscapes_calib"], "real": ["acdc_fog_calib"]},
                 targets=["acdc_fog_test", "cityscapes_test"], device="cpu").run()
    table = pd.read_parquet(root / "calib" / "calibration.parquet")
    assert set(table["n_shared_images"]) == {0} and len(table) == 2 * 2 * 3
    assert set(table[table.dataset == "acdc_fog_test"]["domain"]) == {"fog"}
    record = pd.read_json(root / "calib" / "cityscapes_calib" / "global" / "psp.json", typ="series")
    assert set(record["calib_image_ids"]) == ids["cityscapes_calib"]
    assert set(record["targets"]["cityscapes_test"]["image_ids"]) == ids["cityscapes_test"]


def test_the_whole_val_set_overlaps_its_test_split_and_is_refused(evaluated):
    root, ids = evaluated
    shared = len(ids["cityscapes"] & ids["cityscapes_test"])
    assert shared == 2  # frankfurt: images 0 and 3 of the six demo val images
    job = CalibrateJob(results_root=str(root / "res" / "tz"), output_dir=str(root / "calib_whole"),
                       calibration_sets={"cityscapes": ["cityscapes"]}, targets=["cityscapes_test"], device="cpu")
    with pytest.raises(ConfigError, match=f"share {shared} image"):
        job.run()
