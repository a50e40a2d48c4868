import json
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from synthrel.conventions import OOD_LABEL_ID
from synthrel.data.cityscapes import CityscapesDataset
from synthrel.data.io import read_image, read_label
from synthrel.data.synthetic import OODObjectsDataset
from synthrel.errors import ConfigError, DatasetError, WeightsError
from synthrel.jobs import SettingsChangedError
from synthrel.ood_objects.grounded_sam import Detection, Segmentation
from synthrel.ood_objects.job import InpaintJob
from synthrel.ood_objects.placement import Box, Placement

OBJECTS = ["lion", "polar bear", "elephant"]


class Killed(Exception):
    pass


def make_job(tiny_models, cityscapes_root, out_dir, **overrides) -> InpaintJob:
    settings = dict(
        source=CityscapesDataset(cityscapes_root), out_dir=str(out_dir), all_objects=OBJECTS,
        objects=OBJECTS[:2],
        samples_per_object=2, inpaint_model=tiny_models["sd15_inpaint"],
        grounding_dino=tiny_models["grounding_dino"], sam=tiny_models["sam"], patch_size=64,
        num_inference_steps=2, refine_steps=2, box_threshold=0.0, text_threshold=0.0, device="cpu",
    )
    return InpaintJob(**{**settings, **overrides})


def records(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "manifest.jsonl").read_text().splitlines()]


def files(out_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out_dir)): p.read_bytes() for p in sorted(out_dir.rglob("*.png"))}


def by_id(recs: list[dict]) -> dict[str, dict]:
    return {r["id"]: r for r in recs}


@pytest.fixture(scope="module")
def reference(tiny_models, cityscapes_root, tmp_path_factory):
    """One uninterrupted, unsharded run: 2 objects x 2 samples."""
    out = tmp_path_factory.mktemp("reference")
    summary = make_job(tiny_models, cityscapes_root, out).run()
    return out, summary


def test_outputs_keep_the_source_outside_the_box_and_label_the_mask(reference, cityscapes_root):
    out, summary = reference
    assert summary["accepted"] == 4 and summary["rejected"] == 0
    source = CityscapesDataset(cityscapes_root)
    index_of = {it.id: i for i, it in enumerate(source.items)}
    recs = records(out)
    assert sorted(r["id"] for r in recs) == [f"{s}_{k:05d}" for s in ("lion", "polar_bear") for k in range(2)]
    for rec in recs:
        slug, id = rec["object_slug"], rec["id"]
        original = read_image(source.items[index_of[rec["source_id"]]].image)
        original_ids = source.load_label_ids(index_of[rec["source_id"]])
        image = read_image(out / "images" / slug / f"{id}.png")
        labels = read_label(out / "labels" / slug / f"{id}_labelIds.png")
        mask = read_label(out / "masks" / slug / f"{id}_mask.png")
        x0, y0, x1, y1 = rec["box"]
        in_box = np.zeros(mask.shape, dtype=bool)
        in_box[y0:y1, x0:x1] = True
        assert x1 - x0 == y1 - y0 and y0 >= 64 / 4
        cx0, cy0, cx1, cy1 = rec["context_box"]
        in_context = np.zeros(mask.shape, dtype=bool)
        in_context[cy0:cy1, cx0:cx1] = True
        assert np.array_equal(image[~in_box], original[~in_box])
        assert np.array_equal(image[~in_context], original[~in_context])
        assert not np.array_equal(image[in_box], original[in_box])
        assert set(np.unique(mask)) <= {0, 255} and not mask[~in_box].any()
        assert rec["mask_area"] == int((mask == 255).sum()) > 0
        assert rec["mask_box_ratio"] == pytest.approx(rec["mask_area"] / in_box.sum())
        assert np.array_equal(labels == OOD_LABEL_ID, mask == 255)
        assert np.array_equal(labels[mask == 0], original_ids[mask == 0])
        assert rec["prompt"] == {"lion": "A photo of a lion", "polar_bear": "A photo of a polar bear"}[slug]
        assert set(rec["seeds"]) == {"job", "placement", "inpaint", "refine"} and rec["status"] == "accepted"
    dataset = OODObjectsDataset(out)
    assert len(dataset) == 4
    sample = dataset[0]
    assert sample["ood"].shape == sample["image"].shape[:2] and (sample["ood"] == 1).any()


def test_rerun_skips_everything(reference, tiny_models, cityscapes_root):
    out, _ = reference
    before = (out / "manifest.jsonl").read_bytes()
    summary = make_job(tiny_models, cityscapes_root, out).run()
    assert summary["skipped"] == 4 and summary["accepted"] == summary["rejected"] == 0
    assert (out / "manifest.jsonl").read_bytes() == before


def test_a_set_made_before_detector_precision_resumes_as_fp32(reference, tiny_models, cityscapes_root, tmp_path):
    """Items recorded before `detector_precision` existed were made in fp32: an fp32 rerun skips them all, a bf16
    one refuses to mix them with its own (SettingsChangedError names the change)."""
    import shutil

    out = tmp_path / "set"
    shutil.copytree(reference[0], out)
    older = records(out)
    for rec in older:
        del rec["settings"]["detector_precision"]
    (out / "manifest.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in older))
    assert make_job(tiny_models, cityscapes_root, out).run()["skipped"] == 4
    with pytest.raises(SettingsChangedError, match="4 item.*detector_precision 'fp32' -> 'bf16'"):
        make_job(tiny_models, cityscapes_root, out, detector_precision="bf16").run()


def test_resume_after_a_kill_gives_the_uninterrupted_outputs(reference, tiny_models, cityscapes_root,
                                                              tmp_path):
    def kill_after_two(record, seen=[]):  # noqa: B006 - counts across calls on purpose
        seen.append(record["id"])
        if len(seen) == 2:
            raise Killed

    with pytest.raises(Killed):
        make_job(tiny_models, cityscapes_root, tmp_path, on_item=kill_after_two).run()
    assert len(records(tmp_path)) == 2
    summary = make_job(tiny_models, cityscapes_root, tmp_path).run()
    assert summary["skipped"] == 2 and summary["accepted"] == 2
    recs = records(tmp_path)
    assert len(recs) == len({r["id"] for r in recs}) == 4
    assert by_id(recs) == by_id(records(reference[0]))
    assert files(tmp_path) == files(reference[0])


def test_shards_together_equal_the_unsharded_run(reference, tiny_models, cityscapes_root, tmp_path):
    counts = [make_job(tiny_models, cityscapes_root, tmp_path, shard=f"{i}/2").run()["items"]
              for i in range(2)]
    assert counts == [2, 2]
    assert by_id(records(tmp_path)) == by_id(records(reference[0]))
    assert files(tmp_path) == files(reference[0])


def test_seed_changes_the_outputs(reference, tiny_models, cityscapes_root, tmp_path):
    make_job(tiny_models, cityscapes_root, tmp_path, objects=["lion"], samples_per_object=2, seed=1).run()
    other = by_id(records(tmp_path))
    ref = by_id(records(reference[0]))
    assert [other[i]["box"] for i in other] != [ref[i]["box"] for i in other]


def test_rejects_are_recorded_with_their_reason(tiny_models, cityscapes_root, tmp_path):
    summary = make_job(tiny_models, cityscapes_root, tmp_path, objects=["lion"], samples_per_object=2,
                       box_threshold=1.01).run()
    assert summary["rejected"] == 2 and summary["accepted"] == 0
    for rec in records(tmp_path):
        assert rec["status"] == "rejected" and "no 'lion' found" in rec["reason"]
        assert rec["detection_score"] is None and rec["mask_area"] == 0
        assert (tmp_path / "images" / "lion" / f"{rec['id']}.png").exists()  # kept for inspection
    with pytest.raises(DatasetError, match="empty"):
        OODObjectsDataset(tmp_path)  # rejected items are never read back
    summary = make_job(tiny_models, cityscapes_root, tmp_path, objects=["lion"], samples_per_object=2,
                       box_threshold=1.01).run()
    assert summary["skipped"] == 2  # a rejected item counts as done
    with pytest.raises(SettingsChangedError, match="2 item.*box_threshold 1.01 -> 0.0"):  # not while thresholds change
        make_job(tiny_models, cityscapes_root, tmp_path, objects=["lion"], samples_per_object=2).run()


@pytest.mark.parametrize("score,area,expected", [
    (0.5, 50, "accepted"), (0.2, 50, "detection score 0.200 < min_detection_score 0.3"),
    (0.5, 9, "mask/box area ratio 0.0900 < min_mask_box_ratio 0.1"),
])
def test_quality_filter(tiny_models, cityscapes_root, tmp_path, score, area, expected):
    job = make_job(tiny_models, cityscapes_root, tmp_path, min_detection_score=0.3, min_mask_box_ratio=0.1)
    placement = Placement(Box(10, 20, 20, 30), Box(8, 18, 23, 33))
    mask = np.zeros((64, 128), dtype=bool)
    mask[20:30, 10:20].flat[:area] = True
    status, reason, stats = job._judge("lion", mask, placement, Detection((0.0, 0.0, 32.0, 64.0), score, 3),
                                       Segmentation(mask[20:30, 10:20], 0.9))
    assert (status if status == "accepted" else reason) == expected
    assert stats["mask_area"] == area and stats["mask_box_ratio"] == area / 100
    assert stats["detection_box"] == [10.0, 20.0, 15.0, 30.0]  # patch (64 px) coordinates scaled to the box


def test_unknown_object_lists_the_valid_names(tiny_models, cityscapes_root, tmp_path):
    with pytest.raises(ConfigError, match=r"stages.inpaint.objects.*valid names: elephant, lion, polar bear"):
        make_job(tiny_models, cityscapes_root, tmp_path, objects=["lion", "unicorn"])


@pytest.mark.parametrize("overrides,key", [
    ({"refine_steps": 1}, "refine_steps"), ({"patch_size": 60}, "patch_size"),
    ({"prompt": "{name}"}, "prompt"),
    ({"shard": "2/2"}, "shard"), ({"samples_per_object": 0}, "ood_samples_per_object"),
])
def test_invalid_settings_name_their_key(tiny_models, cityscapes_root, tmp_path, overrides, key):
    with pytest.raises(ConfigError, match=key):
        make_job(tiny_models, cityscapes_root, tmp_path, **overrides)


def test_stage_config_composes_and_runs(compose_cfg, tiny_models, cityscapes_root):
    cfg = compose_cfg(
        "+stage=inpaint", "profile=tiny", f"datasets.cityscapes.root={cityscapes_root}",
        "stages.inpaint.objects=[polar bear]", f"stages.inpaint.inpaint_model={tiny_models['sd15_inpaint']}",
        f"stages.inpaint.grounding_dino={tiny_models['grounding_dino']}",
        f"stages.inpaint.sam={tiny_models['sam']}", "stages.inpaint.patch_size=64",
        "stages.inpaint.num_inference_steps=1", "stages.inpaint.refine_steps=2",
        "stages.inpaint.box_threshold=0.0", "stages.inpaint.text_threshold=0.0", "device=cpu",
    )
    job = instantiate(cfg.stages.inpaint, _convert_="all")
    summary = job.run()
    assert summary["out_dir"] == cfg.datasets.ood_objects.root
    assert summary["items"] == cfg.profile.ood_samples_per_object == 1
    assert len(OODObjectsDataset(summary["out_dir"], objects=["polar bear"])) == 1


def test_missing_inpainting_weights_name_the_config_key(tiny_models, cityscapes_root, tmp_path):
    job = make_job(tiny_models, cityscapes_root, tmp_path, inpaint_model=str(tmp_path / "absent"))
    with pytest.raises(WeightsError, match="stages.inpaint.inpaint_model"):
        job.run()


def test_batched_run_matches_the_item_by_item_run(reference, tiny_models, cityscapes_root, tmp_path):
    """Batching changes float rounding only: same draws and seeds, images equal to a level or two."""
    make_job(tiny_models, cityscapes_root, tmp_path, batch_size=2).run()
    batched, ref = by_id(records(tmp_path)), by_id(records(reference[0]))
    assert batched.keys() == ref.keys()
    for id, rec in batched.items():
        for key in ("source_id", "box", "context_box", "seeds", "prompt"):
            assert rec[key] == ref[id][key]
        path = Path("images") / rec["object_slug"] / f"{id}.png"
        diff = np.abs(read_image(tmp_path / path).astype(int) - read_image(reference[0] / path).astype(int))
        assert diff.max() <= 2


def test_a_rerun_redoes_exactly_the_items_whose_files_were_deleted_or_changed(reference, tiny_models,
                                                                              cityscapes_root, tmp_path, caplog):
    """Issue #35 item 1: each record carries its files' sizes and SHA-256; a re-run redoes a damaged item only."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(reference[0], out)
    recs = by_id(records(out))
    deleted, changed = sorted(recs)[:2]
    mask = out / "masks" / recs[deleted]["object_slug"] / f"{deleted}_mask.png"
    mask.unlink()
    image = out / "images" / recs[changed]["object_slug"] / f"{changed}.png"
    data = bytearray(image.read_bytes())
    data[-20] ^= 0xFF  # same size, other bytes
    image.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        summary = make_job(tiny_models, cityscapes_root, out).run()
    assert summary["skipped"] == 2 and summary["accepted"] == 2
    assert f"redoing {deleted}: masks/" in caplog.text and f"redoing {changed}: images/" in caplog.text
    assert "SHA-256 differs" in caplog.text
    assert files(out) == files(reference[0])
    assert len(records(out)) == 6 and len(OODObjectsDataset(out)) == 4
