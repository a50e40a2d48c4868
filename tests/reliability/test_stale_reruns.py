"""A re-run skips an item only when everything that produced it is unchanged (issue #24 item 1).

Each item stage records its result-affecting settings and the identity of each item's inputs in the item's
manifest record; a re-run into the same output folder with any of them changed stops before writing anything,
naming the changed keys and how to proceed (force=true or another output folder). With force=true the items are
redone with the new settings, and old items the new run does not make are removed. Evaluate and calibrate (whole
results, cheap) recompute instead and log what changed; train_controlnet refuses like the item stages.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from reliability_utils import GENERATE, run_cli, stage_overrides

from synthrel.data.synthetic import SyntheticDataset
from synthrel.jobs import SettingsChangedError
from synthrel.run import run_stages

GENERATE_TWO = [*GENERATE, "profile.num_samples=2"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every output file's bytes (logs, run folders and locks aside: they say who ran last)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not {"logs", "run"} & set(p.relative_to(folder).parts[:1])
            and not p.name.startswith(".synthrel.lock")}


def latest(manifest: Path) -> dict[str, dict]:
    records = {}
    for line in manifest.read_text().splitlines():
        record = json.loads(line)
        records[record["id"]] = record
    return {id: r for id, r in records.items() if not r.get("removed")}


def refused(error: BaseException) -> SettingsChangedError:
    while error is not None and not isinstance(error, SettingsChangedError):
        error = error.__cause__
    assert error is not None
    return error


@pytest.fixture(scope="module")
def generated(world, tmp_path_factory):
    """Artifacts holding a finished 2-item fog set (the baseline every generate test re-runs on)."""
    from hydra import compose, initialize_config_dir

    from synthrel.run import CONF_DIR

    artifacts = tmp_path_factory.mktemp("generated")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*stage_overrides(world, artifacts, GENERATE_TWO),
                                                       f"paths.output_dir={artifacts}/run"])
    assert run_stages(cfg)["generate"]["generated"] == 2
    return artifacts


@pytest.fixture
def copy_of(generated, tmp_path):
    folder = tmp_path / "artifacts"
    shutil.copytree(generated, folder)
    return folder


def _copy_dir(source: Path, target: Path) -> str:
    shutil.copytree(source, target)
    return str(target)


# (override(s) given on the re-run, or a function of (world, tmp_path) giving them; key the error must name)
GENERATE_CHANGES = {
    "guidance_scale": (["backbone.guidance_scale=5.0"], "guidance_scale 8.0 -> 5.0"),
    "num_inference_steps": (["backbone.num_inference_steps=3"], "num_inference_steps 2 -> 3"),
    "resolution": (["backbone.resolution=128"], "resolution 64 -> 128"),
    "eta": (["backbone.eta=0.5"], "eta 0.0 -> 0.5"),
    "controlnet_conditioning_scale": (["backbone.controlnet_conditioning_scale=0.5"],
                                      "controlnet_conditioning_scale 1.0 -> 0.5"),
    "negative_prompt": (["stages.generate.negative_prompt=blurry"], "negative_prompt '' -> 'blurry'"),
    "prompt_template": (["domain.prompt='<caption>, at fog'"], r"prompt '.*, in fog' -> '.*, at fog'"),
    "domain_text": (["domain.prompt='<caption>, in thick fog'"], r"prompt '.*, in fog' -> '.*, in thick fog'"),
    "seed": (["seed=1"], "seed 0 -> 1"),
    "precision": (["backbone.dtype=fp32"], "dtype 'fp16' -> 'fp32'"),
    "write_original": (["stages.generate.write_original=false"], "write_original True -> False"),
    "controlnet_weights": (lambda world, tmp: [f"backbone.controlnet={_copy_dir(world / 'controlnet_sd15', tmp / 'cn')}"],
                           r"controlnet '.*controlnet_sd15:dir:\w+' -> '.*/cn:dir:\w+'"),
    "base_weights": (lambda world, tmp: [
        f"backbone.pretrained={_copy_dir(world / 'outputs' / 'tiny' / 'models' / 'sd15', tmp / 'sd15')}"],
                     r"pretrained '.*/sd15:dir:\w+' -> '.*/sd15:dir:\w+'"),
    "captions": (lambda world, tmp: [f"stages.generate.captions={_other_captions(world, tmp)}"],
                 r"prompt 'a city street number \d+, in fog' -> 'a foggy avenue \d+, in fog'"),
    "label_maps": (lambda world, tmp: [f"datasets.cityscapes.root={_copy_dir(world / 'outputs' / 'tiny' / 'data' / 'cityscapes', tmp / 'cs')}"],
                   r"label_map '.*/cityscapes/gtFine/.*' -> '.*/cs/gtFine/.*'"),
}


def _other_captions(world: Path, tmp: Path) -> Path:
    path = tmp / "captions.jsonl"
    records = [json.loads(line) for line in (world / "captions_val.jsonl").read_text().splitlines()]
    path.write_text("".join(json.dumps({**r, "caption": r["caption"].replace("a city street number", "a foggy avenue")})
                            + "\n" for r in records))
    return path


@pytest.mark.parametrize("setting", sorted(GENERATE_CHANGES))
def test_generate_refuses_a_rerun_with_any_result_affecting_setting_changed(world, compose_world, copy_of, tmp_path,
                                                                           setting):
    import re

    overrides, expected = GENERATE_CHANGES[setting]
    if callable(overrides):
        overrides = overrides(world, tmp_path)
    before = snapshot(copy_of)
    cfg = compose_world(copy_of, *GENERATE_TWO, *overrides)
    with pytest.raises(Exception) as caught:
        run_stages(cfg)
    message = str(refused(caught.value))
    assert re.search(expected, message), f"{expected!r} not in: {message}"
    assert "holds 2 item(s) made with other settings" in message
    assert "force=true" in message and "`stages.generate.out_root`" in message
    assert snapshot(copy_of) == before, "a refused run changed the set"


def test_generate_reruns_skip_unchanged_items_and_force_redoes_them_through_the_cli(world, copy_of, tmp_path):
    """Through `python -m synthrel.run`: the same settings skip (and say so), a changed setting stops naming it,
    force=true redoes every item with it, and items an older seed made are removed, not left in the set."""
    fog = copy_of / "synthetic" / "sd15" / "fog"
    before = snapshot(copy_of)
    base = stage_overrides(world, copy_of, GENERATE_TWO)

    same = run_cli(base, cwd=tmp_path)
    assert same.returncode == 0, same.stderr[-2000:]
    assert "2 item(s) skipped in set" in same.stdout + same.stderr
    assert snapshot(copy_of) == before

    changed = run_cli([*base, "backbone.guidance_scale=3.0"], cwd=tmp_path)
    assert changed.returncode != 0
    assert "guidance_scale 8.0 -> 3.0" in changed.stderr and "force=true" in changed.stderr
    assert snapshot(copy_of) == before, "a refused run changed the set"

    forced = run_cli([*base, "backbone.guidance_scale=3.0", "force=true"], cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr[-2000:]
    records = latest(fog / "manifest.jsonl")
    assert len(records) == 2 and {r["guidance_scale"] for r in records.values()} == {3.0}
    after = snapshot(copy_of)
    images = [k for k in before if k.startswith("synthetic/sd15/fog/leftImg8bit/")]
    assert len(images) == 2 and all(after[k] != before[k] for k in images), "force=true did not redo the images"

    reseeded = run_cli([*base, "backbone.guidance_scale=3.0", "seed=5", "force=true"], cwd=tmp_path)
    assert reseeded.returncode == 0, reseeded.stderr[-2000:]
    records = latest(fog / "manifest.jsonl")
    assert {r["job_seed"] for r in records.values()} == {5}
    dataset = SyntheticDataset(fog)
    assert len(dataset) == 2 and {it.id for it in dataset.items} == set(records)
    listed = {p.name.removesuffix("_leftImg8bit.png") for p in (fog / "leftImg8bit").rglob("*.png")}
    assert listed == set(records), "images of the old seed were left in the set"


def test_generate_redoes_nothing_when_a_label_file_is_only_read(world, compose_world, tmp_path):
    """A rewritten label map (same path, new content) is a changed input; an untouched one is not."""
    data = Path(_copy_dir(world / "outputs" / "tiny" / "data" / "cityscapes", tmp_path / "cs"))
    artifacts = tmp_path / "artifacts"
    args = [*GENERATE_TWO, f"datasets.cityscapes.root={data}"]
    run_stages(compose_world(artifacts, *args))
    fog = artifacts / "synthetic" / "sd15" / "fog"
    again = run_stages(compose_world(artifacts, *args))["generate"]
    assert again["generated"] == 0 and again["skipped"] == 2
    used = {r["source_id"] for r in latest(fog / "manifest.jsonl").values()}
    label = next(p for p in data.rglob("*_gtFine_labelIds.png") if p.name.removesuffix("_gtFine_labelIds.png") in used)
    stat = label.stat()
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # rewritten, as a label fix would
    with pytest.raises(Exception) as caught:
        run_stages(compose_world(artifacts, *args))
    assert f"label_map '{label.resolve()}:" in str(refused(caught.value))


# ------------------------------------------------------------------------------------------------ calibrate
def _calib_sample(path: Path, seed: int, temperature: float, n: int = 1200) -> None:
    """Logits whose labels are drawn from softmax(z / temperature): TS should learn `temperature`."""
    import numpy as np

    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(n, 19)) * 4).astype(np.float32)
    p = np.exp(z / temperature - (z / temperature).max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = (p.cumsum(1) > rng.random((n, 1))).argmax(1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, logits=z, labels=y, image_index=np.repeat(np.arange(4), n // 4).astype(np.int32),
             features=rng.random((4, 8)).astype(np.float32),
             image_ids=np.array([f"{path.parent.name}_{seed}_{i}" for i in range(4)]))


def test_calibrate_refits_when_its_samples_or_settings_change(tmp_path, caplog):
    """Calibrate recomputes like evaluate (cheap, whole records): a re-evaluated calibration set or target, or a
    changed seed, is fitted / measured again, and the log says which changed; an unchanged re-run fits nothing."""
    import logging

    from synthrel.calibration.job import CalibrateJob

    root = tmp_path / "results" / "tiny"
    _calib_sample(root / "m" / "synth" / "calib_sample.npz", 0, 2.0)
    _calib_sample(root / "m" / "real" / "calib_sample.npz", 1, 2.0)

    def job(**kw):
        return CalibrateJob(results_root=str(root), output_dir=str(tmp_path / "calib"),
                            calibration_sets={"s": ["synth"]}, targets=["real"], objective="nll", **kw)

    assert job().run()["fitted"] == 1
    assert job().run()["fitted"] == 0
    record = json.loads(next((tmp_path / "calib").rglob("m.json")).read_text())
    temperature = record["scaler"]
    _calib_sample(root / "m" / "synth" / "calib_sample.npz", 2, 0.5)  # evaluated again: another sample
    caplog.set_level(logging.INFO, logger="synthrel.calibration.job")
    assert job().run()["fitted"] == 1
    assert "fitting again, changed since the last run: calib_samples" in caplog.text
    record = json.loads(next((tmp_path / "calib").rglob("m.json")).read_text())
    assert record["scaler"] != temperature  # fitted on the new sample, not reused
    ece_before = record["targets"]["real"]["ece_raw"]
    _calib_sample(root / "m" / "real" / "calib_sample.npz", 3, 1.0)  # the target evaluated again
    caplog.clear()
    assert job().run()["fitted"] == 0
    assert "target real evaluated again since its ECE was measured" in caplog.text
    record = json.loads(next((tmp_path / "calib").rglob("m.json")).read_text())
    assert record["targets"]["real"]["ece_raw"] != ece_before
    caplog.clear()
    assert job(seed=3).run()["fitted"] == 1
    assert "seed 0 -> 3" in caplog.text


# ------------------------------------------------------------------------------------ corrupt and caption
CORRUPT = ["+stage=[corrupt]", "stages.corrupt.corruptions=[fog,gaussian_noise]", "stages.corrupt.severities=[2]",
           "profile.num_samples=2", "stages.corrupt.resolution=64"]


@pytest.mark.parametrize(("override", "expected"), [
    ("seed=3", "seed 0 -> 3"),
    ("stages.corrupt.resolution=96", "resolution 64 -> 96"),
    ("stages.corrupt.write_original=true", "write_original False -> True"),
])
def test_corrupt_refuses_a_rerun_with_changed_settings_and_force_redoes(compose_world, tmp_path, override, expected):
    """Type and severity name the set folder (fog_s2); the seed, the crop size and the written files are checked
    per item. force=true redoes the items, and those of the old seed are removed from the set."""
    artifacts = tmp_path / "artifacts"
    assert run_stages(compose_world(artifacts, *CORRUPT))["corrupt"]["written"] == 4
    assert run_stages(compose_world(artifacts, *CORRUPT))["corrupt"]["skipped"] == 4
    before = snapshot(artifacts)
    with pytest.raises(Exception) as caught:
        run_stages(compose_world(artifacts, *CORRUPT, override))
    message = str(refused(caught.value))
    assert expected in message and "corrupt: set " in message and "`stages.corrupt.output_dir`" in message
    assert snapshot(artifacts) == before
    assert run_stages(compose_world(artifacts, *CORRUPT, override, "force=true"))["corrupt"]["written"] == 4
    for name in ("fog_s2", "gaussian_noise_s2"):
        folder = artifacts / "corruptions" / name
        records = latest(folder / "manifest.jsonl")
        assert len(SyntheticDataset(folder)) == len(records) == 2
        assert len(list((folder / "leftImg8bit").rglob("*.png"))) == 2  # no image of the old settings left


def test_caption_refuses_a_rerun_with_another_captioner_setting(compose_world, tmp_path):
    artifacts = tmp_path / "artifacts"
    caption = ["+stage=[caption]", "stages.caption.splits=[val]", "stages.caption.num_beams=1",
               "stages.caption.max_new_tokens=6"]
    first = run_stages(compose_world(artifacts, *caption))["caption"]
    assert first["captioned"] == 4 and run_stages(compose_world(artifacts, *caption))["caption"]["skipped"] == 4
    before = snapshot(artifacts)
    with pytest.raises(Exception) as caught:
        run_stages(compose_world(artifacts, *caption, "stages.caption.num_beams=2"))
    message = str(refused(caught.value))
    assert "caption: captions file" in message and "num_beams 1 -> 2" in message and "4 item(s)" in message
    assert snapshot(artifacts) == before
