"""The procedural demo data: determinism, strength of the simulated shifts, label alignment, config round trip."""

import filecmp
import json

import hydra
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from synthrel.data.acdc import ACDCDataset
from synthrel.data.cityscapes import CityscapesDataset
from synthrel.data.demo import DemoDataJob
from synthrel.data.idd import IDDDataset
from synthrel.data.ood import RoadAnomalyDataset
from synthrel.data.weather import koschmieder
from synthrel.errors import ConfigError

SMALL = {"n_train": 2, "n_val": 4, "n_shift": 5, "n_ood": 3}
ONE_EACH = {"n_train": 1, "n_val": 1, "n_shift": 1, "n_ood": 1}
CONDITIONS = ("fog", "night", "rain", "snow")


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "data"
    DemoDataJob(root=str(root), seed=0, **SMALL).run()
    return root


def files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    first, again, other = tmp_path / "first", tmp_path / "again", tmp_path / "other"
    for root, seed in ((first, 3), (again, 3), (other, 4)):
        DemoDataJob(root=str(root), seed=seed, **ONE_EACH).run()
    assert files(again) == files(first) == files(other)
    _, mismatch, errors = filecmp.cmpfiles(first, again, [str(p) for p in files(first)], shallow=False)
    assert mismatch == [] and errors == []
    images = [p for p in files(first) if p.suffix in (".png", ".jpg")
              and not set(p.parts) & {"gt", "gtFine", "disparity"} and ".labels" not in p.parent.name]
    assert len(images) == 1 + 1 + 4 * 2 + 2 + 1
    stereo = [p for p in files(first) if set(p.parts) & {"disparity", "camera"}]
    assert len(stereo) == 2 * 2  # a disparity map and a camera file per Cityscapes image (train + val)
    assert all((first / p).read_bytes() != (other / p).read_bytes() for p in images)


def test_layout_counts_and_label_content(demo_root):
    assert len(CityscapesDataset(demo_root / "cityscapes", "train")) == 2
    val = CityscapesDataset(demo_root / "cityscapes", "val")
    assert len(val) == 4 and {it.meta["city"] for it in val.items} == {"frankfurt", "lindau", "munster"}
    raw = np.concatenate([val.load_label_ids(i).ravel() for i in range(len(val))])
    assert {1, 7, 8, 11, 17, 23, 26}.issubset(set(raw.tolist()))  # ego vehicle, road, sidewalk, building...
    for cond in CONDITIONS:
        for split in ("train", "val"):
            assert len(ACDCDataset(demo_root / "ACDC", cond, split)) == 5
    idd = IDDDataset(demo_root / "IDD_Segmentation", "val")
    labels = np.concatenate([idd[i]["label"].ravel() for i in range(len(idd))])
    assert not np.isin(labels, [9, 16]).any()  # IDD has no terrain and no train
    assert {0, 2, 10, 11, 17}.issubset(set(labels.tolist()))  # road, building, sky, person, motorcycle
    ood = RoadAnomalyDataset(demo_root / "RoadAnomaly")
    assert len(ood) == 3 and all((s["ood"] == 1).any() and (s["ood"] == 0).any() for s in ood)
    # the IDD set has its own palette: it is not the clean set under another name
    idd_mean = np.mean([s["image"].reshape(-1, 3).mean(0) for s in idd], 0)
    clean_mean = np.mean([s["image"].reshape(-1, 3).mean(0) for s in val], 0)
    assert np.abs(idd_mean - clean_mean).max() > 5


def grey(sample):
    return sample["image"].astype(np.float64).mean(-1)


def edge_ratio(samples, shift_rows=0):
    """Mean image gradient on (dilated) label boundaries over the gradient elsewhere, pooled over a set."""
    on, off = [], []
    for s in samples:
        lab = np.roll(s["label"], shift_rows, 0)
        g = grey(s)
        grad = np.hypot(ndimage.sobel(g, 0), ndimage.sobel(g, 1))
        boundary = ndimage.binary_dilation((lab != np.roll(lab, 1, 0)) | (lab != np.roll(lab, 1, 1)))
        boundary[:2] = boundary[-2:] = False
        boundary[:, :2] = boundary[:, -2:] = False
        on.append(grad[boundary])
        off.append(grad[~boundary])
    return np.concatenate(on).mean() / np.concatenate(off).mean()


def test_shifts_are_strong_and_labels_stay_aligned(demo_root):
    clean = list(CityscapesDataset(demo_root / "cityscapes", "val"))
    shifted = {c: list(ACDCDataset(demo_root / "ACDC", c, "train")) for c in CONDITIONS}
    mean = {k: np.mean([grey(s).mean() for s in v]) for k, v in {"clean": clean, **shifted}.items()}
    contrast = {k: np.mean([grey(s).std() / grey(s).mean() for s in v]) for k, v in {"clean": clean, **shifted}.items()}
    assert contrast["fog"] < 0.6 * contrast["clean"] and mean["fog"] > mean["clean"]
    assert mean["night"] < 0.25 * mean["clean"]
    assert mean["rain"] < mean["clean"] and contrast["rain"] < 0.85 * contrast["clean"]
    assert mean["snow"] > 1.4 * mean["clean"]
    # fog: the sky (infinite depth) is the airlight; the ego hood (1 m away) keeps its dark paint
    sky = np.concatenate([grey(s)[s["label"] == 10] for s in shifted["fog"]])
    ego = np.concatenate([grey(s)[-3:][s["label"][-3:] == 255] for s in shifted["fog"]])
    assert sky.mean() > 170 and sky.std() < 12 and ego.mean() < sky.mean() - 60
    # snow covers the ground: road pixels are brighter than in the clean set
    road = {k: np.concatenate([grey(s)[s["label"] == 0] for s in v]).mean() for k, v in
            (("clean", clean), ("snow", shifted["snow"]))}
    assert road["snow"] > road["clean"] + 60
    # alignment: image edges sit on the label boundaries, not on boundaries shifted by a few rows
    for cond, samples in shifted.items():
        margin = 1.05 if cond == "night" else 1.3
        assert edge_ratio(samples) > margin * edge_ratio(samples, shift_rows=7), cond


def test_koschmieder_by_hand():
    image = np.full((1, 3, 3), 0.2, np.float32)
    depth = np.array([[0.0, 10.0, np.inf]], np.float32)
    out = koschmieder(image, depth, beta=0.1, airlight=0.8)
    t = np.exp(-1.0)
    np.testing.assert_allclose(out[0, :, 0], [0.2, 0.2 * t + 0.8 * (1 - t), 0.8], rtol=1e-6)


def test_skip_force_and_refusing_foreign_data(tmp_path):
    small = ONE_EACH
    root = tmp_path / "data"
    assert DemoDataJob(root=str(root), **small).run()["skipped"] is False
    marker = json.loads((root / DemoDataJob.MARKER).read_text())
    assert marker["status"] == "complete" and marker["params"]["seed"] == 0
    assert DemoDataJob(root=str(root), **small).run()["skipped"] is True
    stray = root / "cityscapes" / "stray.txt"
    stray.write_text("x")
    assert DemoDataJob(root=str(root), force=True, **small).run()["skipped"] is False
    assert not stray.exists()
    real = tmp_path / "real"
    (real / "cityscapes" / "leftImg8bit").mkdir(parents=True)
    with pytest.raises(ConfigError, match="not written by demo_data"):
        DemoDataJob(root=str(real), **small).run()
    assert (real / "cityscapes" / "leftImg8bit").is_dir()


def test_bad_job_config():
    with pytest.raises(ConfigError, match="stages.demo_data.n_val"):
        DemoDataJob(root="x", n_val=0)
    with pytest.raises(ConfigError, match="stages.demo_data.image_size"):
        DemoDataJob(root="x", image_size=[256])


def test_tiny_profile_configs_read_the_generated_data(compose_cfg, monkeypatch, tmp_path):
    monkeypatch.delenv("SYNTHREL_OUTPUTS", raising=False)
    cfg = compose_cfg("profile=tiny", "+stage=demo_data", "stages.demo_data.n_train=2", "stages.demo_data.n_val=3",
                      "stages.demo_data.n_shift=2", "stages.demo_data.n_ood=2")
    summary = hydra.utils.instantiate(cfg.stages.demo_data, _convert_="all").run()
    assert summary["data_dir"] == str(tmp_path / "outputs" / "tiny" / "data")
    expected = {"cityscapes": 3, "demo": 3, "acdc_fog": 2, "acdc_night": 2, "acdc_rain": 2, "acdc_snow": 2, "idd": 2,
                "road_anomaly": 2}
    for name, count in expected.items():
        ds = hydra.utils.instantiate(cfg.datasets[name])
        assert len(ds) == count, name
        sample = ds[0]
        assert sample["image"].shape == (128, 256, 3)
        assert (sample["label"] is None) == (name == "road_anomaly")
    image = Image.open(next((tmp_path / "outputs/tiny/data/cityscapes/leftImg8bit/val").rglob("*.png")))
    assert image.size == (256, 128)
