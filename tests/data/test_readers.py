"""Readers on layouts written here with PIL (not with synthrel's writers), and their error messages."""

import json

import numpy as np
import pytest
from PIL import Image

from synthrel.data.acdc import ACDCDataset
from synthrel.data.idd import IDDDataset
from synthrel.data.ood import FishyscapesLAFDataset, RoadAnomalyDataset, SMIYCDataset
from synthrel.data.synthetic import OODObjectsDataset, SyntheticDataset, write_item, write_ood_item
from synthrel.errors import ConfigError, DatasetError

W, H = 8, 4


def rgb(seed=0, size=(W, H)):
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def save(path, array, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path, format=fmt)
    return path


def label(values, size=(W, H)):
    """A label map whose columns cycle through `values`."""
    row = np.resize(np.asarray(values, np.uint8), size[0])
    return np.tile(row, (size[1], 1))


# ---------------------------------------------------------------- ACDC


def acdc_tree(root, plain=True, names=("GOPR0475_frame_000041", "GOPR0475_frame_000042")):
    rgb_dir = root / ("rgb_anon" if plain else "rgb_anon_trainvaltest/rgb_anon") / "fog" / "train" / "GOPR0475"
    gt_dir = root / ("gt" if plain else "gt_trainval/gt") / "fog" / "train" / "GOPR0475"
    for i, name in enumerate(names):
        save(rgb_dir / f"{name}_rgb_anon.png", rgb(i))
        save(gt_dir / f"{name}_gt_labelIds.png", label([7, 8, 26, 0, 33, 255]))
        save(gt_dir / f"{name}_gt_labelColor.png", rgb(9))  # other ACDC files are ignored
        save(gt_dir / f"{name}_gt_invIds.png", label([0]))
    return rgb_dir, gt_dir


@pytest.mark.parametrize("plain", [True, False], ids=["plain", "archive-nesting"])
def test_acdc_reads_and_maps_label_ids(tmp_path, plain):
    acdc_tree(tmp_path, plain)
    ds = ACDCDataset(tmp_path, "fog", "train")
    assert ds.name == "acdc_fog" and len(ds) == 2
    sample = ds[1]
    assert sample["id"] == "GOPR0475_frame_000042"
    np.testing.assert_array_equal(sample["image"], rgb(1))
    # road 0, sidewalk 1, car 13, unlabeled 255, bicycle 18, 255 stays ignore
    np.testing.assert_array_equal(sample["label"][0], [0, 1, 13, 255, 18, 255, 0, 1])
    assert sample["ood"] is None


def test_acdc_pairs_by_name_not_by_order(tmp_path):
    rgb_dir, gt_dir = acdc_tree(tmp_path, names=("GOPR0475_frame_000001",))
    save(rgb_dir / "GOPR0475_frame_000000_rgb_anon.png", rgb(5))
    save(gt_dir / "GOPR0475_frame_000009_gt_labelIds.png", label([7]))
    with pytest.raises(DatasetError, match="GOPR0475_frame_000000_rgb_anon.png has no label"):
        ACDCDataset(tmp_path, "fog", "train")
    (rgb_dir / "GOPR0475_frame_000000_rgb_anon.png").unlink()
    with pytest.raises(DatasetError, match="GOPR0475_frame_000009_gt_labelIds.png has no image"):
        ACDCDataset(tmp_path, "fog", "train")


def test_acdc_missing_root_names_the_key_and_layout(tmp_path):
    with pytest.raises(DatasetError) as err:
        ACDCDataset(tmp_path / "nowhere", "night", "train")
    assert "datasets.acdc_night.root" in str(err.value) and "rgb_anon/<condition>/<split>" in str(err.value)


def test_acdc_bad_condition_and_split(tmp_path):
    with pytest.raises(ConfigError, match="fog, night, rain, snow"):
        ACDCDataset(tmp_path, "hail", "train")
    with pytest.raises(ConfigError, match="train, val"):
        ACDCDataset(tmp_path, "fog", "test")


def test_acdc_label_ids_outside_cityscapes(tmp_path):
    _, gt_dir = acdc_tree(tmp_path)
    bad = save(gt_dir / "GOPR0475_frame_000041_gt_labelIds.png", label([7, 40]))
    with pytest.raises(DatasetError) as err:
        ACDCDataset(tmp_path, "fog", "train")[0]
    assert str(bad) in str(err.value) and "[40]" in str(err.value)


def test_size_mismatch_and_truncated_image(tmp_path):
    rgb_dir, gt_dir = acdc_tree(tmp_path)
    save(gt_dir / "GOPR0475_frame_000041_gt_labelIds.png", label([7], size=(W, H + 1)))
    with pytest.raises(DatasetError, match="size mismatch: label .*GOPR0475_frame_000041_gt_labelIds.png"):
        ACDCDataset(tmp_path, "fog", "train")[0]
    image = rgb_dir / "GOPR0475_frame_000042_rgb_anon.png"
    image.write_bytes(image.read_bytes()[:40])
    with pytest.raises(DatasetError, match="unreadable image .*GOPR0475_frame_000042_rgb_anon.png"):
        ACDCDataset(tmp_path, "fog", "train")[1]


def test_empty_dataset(tmp_path):
    (tmp_path / "rgb_anon" / "fog" / "train").mkdir(parents=True)
    (tmp_path / "gt" / "fog" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="'acdc_fog' under .* is empty"):
        ACDCDataset(tmp_path, "fog", "train")


# ---------------------------------------------------------------- IDD


def test_idd_reads_png_and_jpg_and_maps_level3(tmp_path):
    save(tmp_path / "leftImg8bit/val/7/000001_leftImg8bit.png", rgb(1))
    save(tmp_path / "leftImg8bit/val/9/000001_leftImg8bit.jpg", rgb(2), "JPEG")  # same name, other scene
    for scene in ("7", "9"):
        save(tmp_path / f"gtFine/val/{scene}/000001_gtFine_labellevel3Ids.png", label([0, 3, 8, 25, 7, 255]))
    ds = IDDDataset(tmp_path, "val")
    assert ds.ids() == ["7_000001", "9_000001"]
    assert ds.absent_classes == (9, 16)
    # road 0, non-drivable fallback 255, autorickshaw 255, sky 10, bicycle 18, void 255
    np.testing.assert_array_equal(ds[1]["label"][0, :6], [0, 255, 255, 10, 18, 255])
    assert ds[1]["image"].shape == (H, W, 3)


def test_idd_ids_outside_level3(tmp_path):
    save(tmp_path / "leftImg8bit/val/7/000001_leftImg8bit.png", rgb(1))
    bad = save(tmp_path / "gtFine/val/7/000001_gtFine_labellevel3Ids.png", label([0, 27]))
    with pytest.raises(DatasetError) as err:
        IDDDataset(tmp_path, "val")[0]
    assert str(bad) in str(err.value) and "[27]" in str(err.value)


def test_idd_polygons_only_points_to_create_labels(tmp_path):
    save(tmp_path / "leftImg8bit/val/7/000001_leftImg8bit.png", rgb(1))
    (tmp_path / "gtFine/val/7").mkdir(parents=True)
    (tmp_path / "gtFine/val/7/000001_gtFine_polygons.json").write_text("{}")
    with pytest.raises(DatasetError) as err:
        IDDDataset(tmp_path, "val")
    assert "createLabels" in str(err.value) and "000001_gtFine_labellevel3Ids.png" in str(err.value)


def test_idd_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=r"datasets\.idd\.root.*\n.*leftImg8bit/<split>/<scene>"):
        IDDDataset(tmp_path / "IDD_Segmentation", "val")


# ---------------------------------------------------------------- OOD sets


def test_road_anomaly_plain_layout(tmp_path):
    save(tmp_path / "frames/animals01_cow.jpg", rgb(1), "JPEG")
    save(tmp_path / "frames/animals01_cow.labels/labels_semantic.png", label([0, 1, 2, 2, 0]))
    ds = RoadAnomalyDataset(tmp_path)
    sample = ds[0]
    assert sample["label"] is None and sample["id"] == "animals01_cow"
    # RbA's convention: 2 is the anomaly, every other value in-distribution
    np.testing.assert_array_equal(sample["ood"][0, :5], [0, 0, 1, 1, 0])


def test_road_anomaly_rba_layout_uses_frame_list(tmp_path):
    base = tmp_path / "RoadAnomaly_jpg"
    for name in ("a", "b"):
        save(base / f"frames/{name}.jpg", rgb(1), "JPEG")
        save(base / f"frames/{name}.labels/labels_semantic.png", np.stack([label([2, 0])] * 3, -1))  # RGB labels
    (base / "frame_list.json").write_text(json.dumps(["b.jpg"]))
    ds = RoadAnomalyDataset(tmp_path)
    assert ds.ids() == ["b"]
    np.testing.assert_array_equal(ds[0]["ood"][0, :2], [1, 0])
    (base / "frame_list.json").write_text(json.dumps(["b.jpg", "c.jpg"]))
    with pytest.raises(DatasetError, match="c.jpg"):
        RoadAnomalyDataset(tmp_path)


def test_road_anomaly_label_without_image(tmp_path):
    save(tmp_path / "frames/x.labels/labels_semantic.png", label([0]))
    (tmp_path / "frames/x.jpg").parent.mkdir(exist_ok=True)
    with pytest.raises(DatasetError, match="x.labels/labels_semantic.png has no image"):
        RoadAnomalyDataset(tmp_path)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp"])
def test_smiyc(tmp_path, ext):
    save(tmp_path / f"images/validation0001{ext}", rgb(1))
    save(tmp_path / "images/validation0002.png", rgb(2))
    save(tmp_path / "labels_masks/validation0001_labels_semantic.png", label([0, 1, 255]))
    save(tmp_path / "labels_masks/validation0001_labels_semantic_color.png", rgb(3))
    save(tmp_path / "labels_masks/validation0002_labels_semantic.png", label([1]))
    ds = SMIYCDataset(tmp_path, "obstacle")
    assert ds.name == "smiyc_ro21" and ds.ids() == ["validation0001", "validation0002"]
    np.testing.assert_array_equal(ds[0]["ood"][0, :3], [0, 1, 255])
    save(tmp_path / "labels_masks/validation0002_labels_semantic.png", label([2]))
    with pytest.raises(DatasetError, match=r"validation0002_labels_semantic.png holds ids \[2\]"):
        ds[1]


def test_smiyc_bad_track_and_missing_root(tmp_path):
    with pytest.raises(ConfigError, match="anomaly, obstacle"):
        SMIYCDataset(tmp_path, "obstacles")
    with pytest.raises(DatasetError, match=r"datasets\.smiyc_ra21\.root"):
        SMIYCDataset(tmp_path / "none", "anomaly")


def test_fishyscapes_laf(tmp_path):
    save(tmp_path / "images/04_Maurener_Weg_8_000000_000030.png", rgb(1))
    save(tmp_path / "labels/04_Maurener_Weg_8_000000_000030.png", label([0, 1, 255]))
    ds = FishyscapesLAFDataset(tmp_path)
    np.testing.assert_array_equal(ds[0]["ood"][0, :3], [0, 1, 255])
    save(tmp_path / "images/extra.png", rgb(2))
    with pytest.raises(DatasetError, match="extra.png has no label"):
        FishyscapesLAFDataset(tmp_path)


# ---------------------------------------------------------------- synthrel's own sets


def test_synthetic_reads_manifest_items_only(tmp_path):
    ids = label([7, 24, 23, 1], size=(W, H))
    write_item(tmp_path, "fog_0000", "frankfurt", rgb(1), ids, original=rgb(2), meta={"domain": "fog", "seed": 5})
    write_item(tmp_path, "fog_0001", "lindau", rgb(3), ids, meta={"domain": "fog", "seed": 6})
    # a file pair written by a killed job never reached the manifest: it is not listed
    save(tmp_path / "leftImg8bit/val/lindau/fog_0002_leftImg8bit.png", rgb(4))
    ds = SyntheticDataset(tmp_path)
    assert ds.ids() == ["fog_0000", "fog_0001"]
    assert ds.items[1].meta["seed"] == 6 and ds.items[1].meta["city"] == "lindau"
    sample = ds[0]
    np.testing.assert_array_equal(sample["image"], rgb(1))
    np.testing.assert_array_equal(sample["label"][0, :4], [0, 11, 10, 255])
    assert (tmp_path / "original/val/frankfurt/fog_0000_leftImg8bit.png").exists()
    train_ids = np.asarray(Image.open(tmp_path / "gtFine/val/frankfurt/fog_0000_gtFine_labelTrainIds.png"))
    np.testing.assert_array_equal(train_ids, sample["label"])
    (tmp_path / "gtFine/val/lindau/fog_0001_gtFine_labelIds.png").unlink()
    with pytest.raises(DatasetError, match="manifest.jsonl lists item 'fog_0001'.*fog_0001_gtFine_labelIds.png"):
        SyntheticDataset(tmp_path)


def test_synthetic_without_manifest_pairs_by_name(tmp_path):
    save(tmp_path / "leftImg8bit/val/x/a_leftImg8bit.png", rgb(1))
    save(tmp_path / "gtFine/val/x/a_gtFine_labelIds.png", label([7]))
    assert SyntheticDataset(tmp_path).ids() == ["a"]
    with pytest.raises(DatasetError, match=r"datasets\.synthetic\.root"):
        SyntheticDataset(tmp_path / "missing")


def test_ood_objects_sample_and_status(tmp_path):
    label_ids = label([7, 0, 26, 7], size=(W, H))  # road, unlabeled (void), car, road
    mask = np.zeros((H, W), np.uint8)
    mask[:, 3] = 1  # the object covers column 3
    write_ood_item(tmp_path, "giraffe_0000", "giraffe", rgb(1), label_ids, mask, meta={"seed": 1})
    write_ood_item(tmp_path, "polar_bear_0000", "polar bear", rgb(2), label_ids, mask, status="rejected")
    ds = OODObjectsDataset(tmp_path)
    assert ds.ids() == ["giraffe_0000"]
    sample = ds[0]
    np.testing.assert_array_equal(sample["label"][0, :4], [0, 255, 13, 255])  # the object is ignored
    np.testing.assert_array_equal(sample["ood"][0, :4], [0, 255, 0, 1])
    stored = np.asarray(Image.open(tmp_path / "labels/giraffe/giraffe_0000_labelIds.png"))
    assert stored[0, 3] == 254 and (tmp_path / "images/polar_bear/polar_bear_0000.png").exists()
    save(tmp_path / "masks/giraffe/giraffe_0000_mask.png", mask * 7)
    with pytest.raises(DatasetError, match=r"giraffe_0000_mask.png holds ids \[7\]"):
        ds[0]


def test_ood_objects_need_a_manifest(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match="no manifest.jsonl.*inpaint stage"):
        OODObjectsDataset(tmp_path)


def test_ood_objects_item_list_keeps_the_listed_accepted_items(tmp_path):
    """Table 2's curated set: the accepted items a list names (comments and blanks ignored); a listed id that is
    not an accepted item (here a rejected one) and a missing list are errors naming the list."""
    label_ids, mask = label([7, 7, 7, 7], size=(W, H)), np.zeros((H, W), np.uint8)
    mask[:, 0] = 1
    for k, status in enumerate(("accepted", "accepted", "accepted", "rejected")):
        write_ood_item(tmp_path, f"zebra_{k:04d}", "zebra", rgb(k), label_ids, mask, status=status)
    listed = tmp_path / "curated.txt"
    listed.write_text("# curated\nzebra_0002  # zebra\n\nzebra_0000\n")
    ds = OODObjectsDataset(tmp_path, item_list=str(listed), name="ood_objects_curated")
    assert ds.ids() == ["zebra_0000", "zebra_0002"] and ds.name == "ood_objects_curated"
    assert OODObjectsDataset(tmp_path).ids() == ["zebra_0000", "zebra_0001", "zebra_0002"]  # automatic: all accepted
    listed.write_text("zebra_0000\nzebra_0003\n")
    with pytest.raises(DatasetError, match=r"curated.txt: 1 id\(s\) are not accepted items .*zebra_0003"):
        OODObjectsDataset(tmp_path, item_list=str(listed))
    with pytest.raises(DatasetError, match=r"item list .*absent.txt does not exist.*datasets.ood_objects_curated"):
        OODObjectsDataset(tmp_path, item_list=str(tmp_path / "absent.txt"), name="ood_objects_curated")
