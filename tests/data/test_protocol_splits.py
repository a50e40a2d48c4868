"""The relis / GenVal protocol splits (paper_spec 2.1) as named datasets, on the demo data and the paper config."""

import hydra
import pytest

from synthrel.data.cityscapes import CityscapesDataset
from synthrel.data.demo import DemoDataJob
from synthrel.data.idd import IDDDataset
from synthrel.errors import DatasetError

# Written out from the spec (relis launch_helpers/run_exps_helpers.py), not read from the config under test.
RELIS_IDD_TEST_SCENES = [
    "265", "431", "175", "528", "39", "137", "538", "499", "7", "376", "37", "209", "306", "413", "380", "374",
    "472", "523", "446", "121", "171", "488", "278", "411", "312", "453", "110", "285", "46", "158", "426",
    "544", "230", "41", "520", "322", "95",
]
CONDITIONS = ("fog", "night", "rain", "snow")


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    """The tiny profile's config with demo data written where it points (data_dir)."""
    from hydra import compose, initialize_config_dir

    from synthrel.run import CONF_DIR

    root = tmp_path_factory.mktemp("splits")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"paths.root_dir={root}", f"paths.output_dir={root}/run",
                                                       "profile=tiny"])
    DemoDataJob(root=cfg.paths.data_dir, seed=0, image_size=[64, 32], n_train=1, n_val=6, n_shift=6,
                n_ood=1).run()
    return cfg


def build(cfg, name):
    return hydra.utils.instantiate(cfg.datasets[name])


def folders(dataset, key):
    return {it.meta[key] for it in dataset.items}


def test_cityscapes_test_is_frankfurt_and_calibration_is_munster_and_lindau(tiny_cfg):
    whole, test, calib = (build(tiny_cfg, n) for n in ("cityscapes", "cityscapes_test", "cityscapes_calib"))
    assert folders(test, "city") == {"frankfurt"} and folders(calib, "city") == {"munster", "lindau"}
    assert set(test.ids()).isdisjoint(calib.ids())
    assert sorted(test.ids() + calib.ids()) == sorted(whole.ids())  # the val split, nothing else
    assert test.name == "cityscapes_test" and calib.name == "cityscapes_calib"


@pytest.mark.parametrize("condition", CONDITIONS)
def test_acdc_test_is_the_train_scenes_and_calibration_the_val_scenes(tiny_cfg, condition):
    test, calib = build(tiny_cfg, f"acdc_{condition}_test"), build(tiny_cfg, f"acdc_{condition}_calib")
    assert all("/train/" in it.image.as_posix() for it in test.items)
    assert all("/val/" in it.image.as_posix() for it in calib.items)
    assert len(test) == len(calib) == 6
    assert folders(test, "scene").isdisjoint(folders(calib, "scene"))
    assert set(test.ids()).isdisjoint(calib.ids())


def test_idd_test_keeps_only_the_37_relis_train_scenes_and_calibration_is_all_val(tiny_cfg):
    test, calib = build(tiny_cfg, "idd_test"), build(tiny_cfg, "idd_calib")
    train = IDDDataset(tiny_cfg.datasets.idd.root, split="train")
    assert folders(train, "scene") == {"265", "431", "1"}  # the demo holds one scene outside the 37
    assert folders(test, "scene") == folders(train, "scene") & set(RELIS_IDD_TEST_SCENES) == {"265", "431"}
    assert len(test) == 4 and all("/train/" in it.image.as_posix() for it in test.items)
    assert folders(calib, "scene") == {"100", "101"} and len(calib) == 6
    assert all("/val/" in it.image.as_posix() for it in calib.items)


def test_paper_config_lists_the_spec_splits(compose_cfg):
    ds = compose_cfg().datasets
    assert [str(s) for s in ds.idd_test.scenes] == RELIS_IDD_TEST_SCENES
    assert ds.idd_test.split == "train" and ds.idd_test.require_all_scenes is True
    assert ds.idd_calib.split == "val" and ds.idd_calib.get("scenes") is None
    assert list(ds.cityscapes_test.cities) == ["frankfurt"] and ds.cityscapes_test.split == "val"
    assert sorted(ds.cityscapes_calib.cities) == ["lindau", "munster"] and ds.cityscapes_calib.split == "val"
    for cond in CONDITIONS:
        assert (ds[f"acdc_{cond}_test"].split, ds[f"acdc_{cond}_calib"].split) == ("train", "val")
        assert ds[f"acdc_{cond}_test"].condition == ds[f"acdc_{cond}_calib"].condition == cond
    # one root per real set: moving it moves both splits
    moved = compose_cfg("datasets.idd.root=/elsewhere/IDD").datasets
    assert moved.idd_test.root == moved.idd_calib.root == "/elsewhere/IDD"


def test_a_listed_scene_or_city_that_is_missing_is_an_error(tiny_cfg):
    with pytest.raises(DatasetError, match=r"35 of the 37 scenes listed are missing.*incomplete download"):
        IDDDataset(tiny_cfg.datasets.idd.root, split="train", scenes=RELIS_IDD_TEST_SCENES)
    with pytest.raises(DatasetError, match=r"cities listed are missing.*\['bremen'\]"):
        CityscapesDataset(tiny_cfg.datasets.cityscapes.root, split="val", cities=["frankfurt", "bremen"])


# -- one protocol for every table and figure (#34 item 3) ------------------------------------------------------

# Written out from the spec (2.1): the real counterpart of each shift and its relis test split.
REAL_OF = {"fog": "acdc_fog", "night": "acdc_night", "rain": "acdc_rain", "snow": "acdc_snow", "india": "idd"}


def resolved(cfg, key):
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


@pytest.mark.parametrize("split, suffix", [([], "_test"), (["real_split=all"], "")])
def test_every_reported_result_reads_the_same_real_split(compose_cfg, split, suffix):
    """Table 1 / Fig. 3 / Table 5 (covariate_* evaluate + correlate), FID, calibration targets and the forecast
    all name <set>_test by default; real_split=all switches every one of them to the whole sets."""
    for domain, real in REAL_OF.items():
        cfg = compose_cfg(f"+experiment=covariate_{domain}", "+stage=[fid]", *split)
        assert resolved(cfg, "stages.evaluate.datasets") == ["synthetic", real + suffix, "cityscapes" + suffix]
        assert resolved(cfg, "stages.correlate.real_datasets") == {d: r + suffix for d, r in REAL_OF.items()}
        assert resolved(cfg, "stages.correlate.baseline_dataset") == "cityscapes" + suffix
        assert [p["real"] for p in resolved(cfg, "stages.fid.pairs")] == [real + suffix]
        cfg = compose_cfg("+experiment=calibration", f"domain={domain}", *split)
        assert resolved(cfg, "stages.calibrate.targets") == [real + suffix]
        evaluated = resolved(cfg, "stages.evaluate.datasets")
        assert real + suffix in evaluated and f"{real}_calib" in evaluated and "cityscapes_calib" in evaluated
        # temperatures are fitted on calibration splits and synthetic sets only
        fitted = [k for keys in resolved(cfg, "stages.calibrate.calibration_sets").values() for k in keys]
        assert not any(k.endswith("_test") or k in REAL_OF.values() or k == "cityscapes" for k in fitted)
    cfg = compose_cfg("+experiment=forecast", *split)
    assert resolved(cfg, "stages.forecast.real_datasets") == {**{d: r + suffix for d, r in REAL_OF.items()},
                                                             "ood_objects": "road_anomaly"}
    assert {r + suffix for r in REAL_OF.values()} <= set(resolved(cfg, "stages.forecast.evaluate.datasets"))
    cfg = compose_cfg("+stage=[evaluate,report]", *split)
    assert resolved(cfg, "stages.evaluate.datasets") == ["cityscapes" + suffix] + [
        REAL_OF[d] + suffix for d in ("fog", "night", "rain", "snow", "india")] + ["synthetic"]
    assert cfg.stages.report.real_split == ("all" if split else "test")


@pytest.mark.parametrize("split, suffix", [([], "_test"), (["real_split=all"], "")])
def test_the_demo_reads_the_same_real_split(compose_cfg, split, suffix):
    cfg = compose_cfg("+experiment=demo", *split)
    evaluated = resolved(cfg, "stages.evaluate.datasets")
    reals = [r + suffix for r in ("cityscapes", *REAL_OF.values())]
    assert evaluated[:6] == reals and "cityscapes_calib" in evaluated
    others = {r + s for r in ("cityscapes", *REAL_OF.values()) for s in ("", "_test")} - set(reals)
    assert not others & set(evaluated)  # no second copy of a real set in another split
    assert resolved(cfg, "stages.calibrate.targets") == reals[1:]
    pairs = resolved(cfg, "stages.fid.pairs")
    assert [p["real"] for p in pairs] == reals[1:] + [f"acdc_fog{suffix}"]
    assert pairs[-1]["synthetic"] == f"cityscapes{suffix}"


def test_a_real_split_other_than_test_or_all_is_refused(compose_cfg):
    from synthrel.config import check_domain, check_run_keys
    from synthrel.errors import ConfigError

    cfg = compose_cfg("+experiment=covariate_fog", "real_split=calib")
    with pytest.raises(ConfigError, match=r"`real_split` is 'calib'; expected test or all"):
        check_run_keys(cfg)
    with pytest.raises(ConfigError, match=r"`real_split` is 'calib'.*config key `stages.evaluate"):
        check_domain(cfg, "fog")


def test_demo_test_splits_hold_enough_images_for_every_table(tmp_path):
    """The demo data's default sizes (synthrel/conf/stage/demo_data.yaml) give every test split at least 4
    images, for mIoU/ECE (Table 1, 3, 5), FID (Table 4) and the forecast."""
    from hydra import compose, initialize_config_dir

    from synthrel.run import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"paths.root_dir={tmp_path}", "profile=tiny",
                                                       "+stage=[demo_data]", "stages.demo_data.image_size=[64,32]"])
    hydra.utils.instantiate(cfg.stages.demo_data).run()
    for name in ("cityscapes_test", *(f"{r}_test" for r in REAL_OF.values())):
        assert len(build(cfg, name)) >= 4, name
