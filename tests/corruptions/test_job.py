"""The corrupt stage on a small Cityscapes layout: geometry, alignment, determinism, resume, shards, errors."""

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from synthrel.conventions import LABEL_TO_TRAIN
from synthrel.corruptions.job import CorruptJob
from synthrel.data.io import write_png
from synthrel.data.synthetic import SyntheticDataset
from synthrel.errors import ConfigError, DatasetError

RES = 64
SIZE = (96, 160)  # H, W: a wide frame, so the square crop has a free column offset
CITIES = {"aachen": 2, "bonn": 1}
CORRUPTIONS = ["fog", "contrast", "gaussian_noise"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Dataset config of a 3-image Cityscapes val layout: blocky random labelIds, smooth RGB images."""
    root = tmp_path_factory.mktemp("cityscapes")
    rng = np.random.default_rng(0)
    for city, n in CITIES.items():
        for k in range(n):
            id_ = f"{city}_{k:06d}_000019"
            blocks = rng.integers(0, 34, size=(SIZE[0] // 8, SIZE[1] // 8), dtype=np.uint8)
            write_png(root / "gtFine/val" / city / f"{id_}_gtFine_labelIds.png",
                      np.kron(blocks, np.ones((8, 8), np.uint8)))
            image = cv2.resize(rng.integers(0, 256, size=(12, 20, 3), dtype=np.uint8), SIZE[::-1])
            write_png(root / "leftImg8bit/val" / city / f"{id_}_leftImg8bit.png", image)
    return {"_target_": "synthrel.data.cityscapes.CityscapesDataset", "root": str(root), "split": "val"}


def make_job(source, out, **overrides):
    params = dict(source=source, output_dir=str(out), corruptions=CORRUPTIONS, severities=[1, 4],
                  num_samples=3, resolution=RES, seed=0)
    params.update(overrides)
    return CorruptJob(**params)


def manifest(folder):
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.png")}


def read(path):
    return np.asarray(Image.open(path))


def source_crop(source, rec):
    """Independent reference: the crop of the source image (area-resized) and labelIds (nearest: source pixel
    floor(i * side / RES))."""
    city = rec["source_id"].split("_")[0]
    left, top, right, bottom = rec["crop_box"]
    image = read(f"{source['root']}/leftImg8bit/val/{city}/{rec['source_id']}_leftImg8bit.png")
    label = read(f"{source['root']}/gtFine/val/{city}/{rec['source_id']}_gtFine_labelIds.png")
    idx = (np.arange(RES) * (right - left)) // RES
    clean = cv2.resize(image[top:bottom, left:right], (RES, RES), interpolation=cv2.INTER_AREA)
    return clean, label[top + idx][:, left + idx]


@pytest.fixture(scope="module")
def whole(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "corruptions"
    return out, make_job(source, out, write_original=True).run()


def test_one_aligned_set_per_corruption_and_severity(source, whole):
    out, summary = whole
    names = [f"{c}_s{s}" for c in CORRUPTIONS for s in (1, 4)]
    assert summary["output_dir"] == str(out)
    assert summary["sets"] == {n: str(out / n) for n in names}
    assert summary["written"] == 3 * len(names) and summary["skipped"] == 0
    crops = {}
    for name in names:
        records = manifest(out / name)
        assert len(records) == 3 and len({r["id"] for r in records}) == 3
        dataset = SyntheticDataset(out / name)
        assert len(dataset) == 3
        for rec in records:
            corruption, severity = name.rsplit("_s", 1)
            assert rec["corruption"] == corruption and rec["severity"] == int(severity)
            assert rec["library"] == "imagecorruptions-imaug==1.1.5" and rec["job_seed"] == 0
            left, top, right, bottom = rec["crop_box"]
            assert right - left == bottom - top == min(SIZE) and top == 0 and 0 <= left <= SIZE[1] - SIZE[0]
            crops.setdefault(rec["index"], set()).add((rec["source_id"], tuple(rec["crop_box"])))
            clean, label_ids = source_crop(source, rec)
            city = rec["city"]
            image = read(out / name / "leftImg8bit/val" / city / f"{rec['id']}_leftImg8bit.png")
            label = read(out / name / "gtFine/val" / city / f"{rec['id']}_gtFine_labelIds.png")
            np.testing.assert_array_equal(label, label_ids)
            np.testing.assert_array_equal(read(out / name / "original/val" / city / f"{rec['id']}_leftImg8bit.png"),
                                          clean)
            assert image.shape == (RES, RES, 3)
            assert np.abs(image.astype(int) - clean).mean() > 1.0  # the corruption changed the image
            if corruption == "contrast":  # hand formula on the independently cropped image
                c = {1: 0.4, 4: 0.1}[int(severity)]
                x = clean / 255.0
                means = x.reshape(-1, 3).mean(axis=0)
                np.testing.assert_allclose(image, ((x - means) * c + means) * 255, atol=1.0)
        sample = dataset[0]
        _, label_ids = source_crop(source, next(r for r in records if r["id"] == sample["id"]))
        np.testing.assert_array_equal(sample["label"], LABEL_TO_TRAIN[label_ids])
    assert all(len(v) == 1 for v in crops.values())  # sample j is the same crop in every set


def test_stronger_severity_lowers_contrast(whole):
    """The gain of the corrupted image on the clean crop (least squares) falls with severity for fog
    (max / (max + c0), c0 = 1.5 -> 2.5) and contrast (c = 0.4 -> 0.1); both severities share the noise seed."""
    out, _ = whole
    for corruption in ("fog", "contrast"):
        weak, strong = (manifest(out / f"{corruption}_s{s}") for s in (1, 4))
        for rec_weak, rec_strong in zip(weak, strong, strict=True):
            assert rec_weak["seed"] == rec_strong["seed"] and rec_weak["index"] == rec_strong["index"]
            gains = []
            for name, rec in ((f"{corruption}_s1", rec_weak), (f"{corruption}_s4", rec_strong)):
                folder = out / name
                image = read(folder / "leftImg8bit/val" / rec["city"] / f"{rec['id']}_leftImg8bit.png")
                clean = read(folder / "original/val" / rec["city"] / f"{rec['id']}_leftImg8bit.png")
                gains.append(np.polyfit(clean.ravel().astype(float), image.ravel().astype(float), 1)[0])
            assert gains[1] < gains[0] - 0.05, (corruption, gains)


def test_same_seed_same_bytes_other_seed_other_images(source, whole, tmp_path):
    out, _ = whole
    again = tmp_path / "again"
    make_job(source, again, write_original=True).run()
    assert files(again) == files(out)
    other = tmp_path / "other"
    make_job(source, other, seed=1, corruptions=["gaussian_noise"], severities=[1]).run()
    noise_a = SyntheticDataset(out / "gaussian_noise_s1")[0]["image"]
    noise_b = SyntheticDataset(other / "gaussian_noise_s1")[0]["image"]
    assert noise_a.tobytes() != noise_b.tobytes()


def test_resume_writes_only_the_missing_samples(source, tmp_path):
    out = tmp_path / "corruptions"
    first = make_job(source, out, num_samples=2).run()
    assert first["written"] == 2 * 6
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    second = make_job(source, out, num_samples=4).run()
    assert second["written"] == 2 * 6 and second["skipped"] == 2 * 6
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    for name in second["sets"]:
        ids = [r["id"] for r in manifest(out / name)]
        assert len(ids) == 4 == len(set(ids))
    assert make_job(source, out, num_samples=4).run()["written"] == 0
    assert make_job(source, out, num_samples=2, corruptions=["fog"], severities=[1], force=True).run()["written"] == 2


def test_union_of_shards_equals_the_unsharded_run(source, whole, tmp_path):
    out, _ = whole
    sharded = tmp_path / "sharded"
    counts = [make_job(source, sharded, write_original=True, shard=s).run()["written"] for s in ("0/2", "1/2")]
    assert counts == [9, 9]
    assert files(sharded) == files(out)
    for name in make_job(source, out).sets:
        assert sorted(r["id"] for r in manifest(sharded / name)) == sorted(r["id"] for r in manifest(out / name))


@pytest.mark.parametrize(("overrides", "message"), [
    ({"corruptions": ["fog", "haze"]}, r"unknown corruption 'haze' \(config key `stages.corrupt.corruptions`\); "
                                       r"valid names: .*brightness.*snow"),
    ({"corruptions": []}, "`stages.corrupt.corruptions` must be a non-empty list"),
    ({"corruptions": ["fog", "fog"]}, "lists a value twice"),
    ({"severities": [0]}, "`stages.corrupt.severities`: severity must be an integer in 1..5"),
    ({"severities": [6]}, "severity must be an integer in 1..5"),
    ({"num_samples": 0}, "`stages.corrupt.num_samples` must be a positive integer"),
    ({"resolution": 16}, "`stages.corrupt.resolution` must be >= 32"),
    ({"shard": "2/2"}, "out of range"),
])
def test_config_errors_name_the_key(source, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_job(source, tmp_path, **overrides)


def test_source_without_label_ids_is_refused(whole, tmp_path):
    out, _ = whole
    synthetic = {"_target_": "synthrel.data.synthetic.SyntheticDataset", "root": str(out / "fog_s1")}
    with pytest.raises(DatasetError, match="stages.corrupt.source"):
        make_job(synthetic, tmp_path / "x").run()


def test_stage_config_composes_into_the_job(compose_cfg):
    import hydra.utils

    cfg = compose_cfg("profile=tiny", "+stage=[corrupt]")
    job = hydra.utils.instantiate(cfg.stages.corrupt, _convert_="all")
    assert isinstance(job, CorruptJob) and isinstance(job.source, dict)
    assert job.source["_target_"] == "synthrel.data.cityscapes.CityscapesDataset"
    assert job.corruptions == ["fog", "snow", "brightness", "contrast", "gaussian_noise", "motion_blur"]
    assert job.severities == [3] and job.num_samples == 4 and job.resolution == cfg.backbone.resolution
    assert job.output_dir == f"{cfg.paths.artifacts_dir}/corruptions" and job.shard == "0/1"
