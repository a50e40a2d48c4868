"""The preflight on composed configs: the tiny demo passes with nothing on disk (every input is made by an earlier
stage of the run), a paper run on an empty machine lists what is missing with its fix and fails, datasets are
counted per city as the protocol splits need them, and a sweep reports every job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import constants
from preflight_utils import mmseg_name

from synthrel.preflight import PreflightError, collect, gate
from synthrel.run import STAGE_ORDER

REPO = Path(__file__).resolve().parents[2]
CITYSCAPES_VAL = {"frankfurt": 267, "lindau": 59, "munster": 174}


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty HF cache, offline."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def by_what(needs):
    return {n.what: n for n in needs}


def test_tiny_demo_passes_before_anything_exists(compose_cfg, tmp_path, empty_hub):
    cfg = compose_cfg("+experiment=demo")
    needs = collect(cfg, STAGE_ORDER)
    assert needs and not [n for n in needs if n.blocking], [(n.what, n.status) for n in needs if n.blocking]
    assert by_what(needs)["dataset cityscapes (val)"].status == "made by demo_data"
    assert by_what(needs)["trained ControlNet"].status == "made by train_controlnet"
    assert not (tmp_path / "outputs").exists()  # the check wrote nothing
    assert gate(cfg, STAGE_ORDER) is False  # auto: the run goes on


def test_paper_run_on_an_empty_machine_fails_with_fixes(compose_cfg, tmp_path, empty_hub, capsys):
    cfg = compose_cfg("+experiment=covariate_fog", "preflight=true")
    with pytest.raises(SystemExit) as stop:
        gate(cfg, STAGE_ORDER)
    assert stop.value.code == 1
    out = capsys.readouterr().out
    assert "missing              diffusion base model: stable-diffusion-v1-5/stable-diffusion-v1-5  [~4.3 GB" in out
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --include" in out
    assert "https://www.cityscapes-dataset.com/downloads/" in out and "acdc.vision.ee.ethz.ch" in out
    assert "skipped              zoo model segmenter" in out
    assert "offline (HF_HUB_OFFLINE=1): these need the network: stable-diffusion-v1-5/stable-diffusion-v1-5; " \
           "34 file(s) from download.openmmlab.com" in out
    assert "generate         ~10 GB (sd15, batch 8" in out and "lower stages.generate.batch_size" in out
    assert "train it (python -m synthrel.run +experiment=train_controlnet) or set backbone.controlnet=" in out


def test_auto_mode_stops_the_run_with_the_readers_message(compose_cfg, tmp_path, empty_hub):
    cfg = compose_cfg("profile=tiny", "+stage=[evaluate]", "stages.evaluate.datasets=[acdc_fog]",
                      f"datasets.acdc_fog.root={tmp_path}/nowhere")
    with pytest.raises(PreflightError, match=rf"(?s)nothing was run.*dataset root '{tmp_path}/nowhere' does not exist; "
                                             r"set `datasets.acdc_fog.root`"):
        gate(cfg, STAGE_ORDER)
    assert gate(compose_cfg("profile=tiny", "+stage=[evaluate]", f"datasets.acdc_fog.root={tmp_path}/nowhere",
                            "preflight=false"), STAGE_ORDER) is False


def test_tiny_profile_folders_are_made_by_tiny_models_or_name_it(compose_cfg, tmp_path, empty_hub):
    """The tiny profile's models are plain folders: within the demo they are made by its tiny_models stage; a run
    without that stage that lacks them is told to run it (the zoo, and the forecast's model)."""
    demo = by_what(collect(compose_cfg("+experiment=demo"), STAGE_ORDER))
    assert demo["zoo model pspnet_r18"].status == "made by tiny_models"
    assert demo["zoo model segformer_hf"].status == "made by tiny_models"  # transformers: the folder is the weights
    assert demo["forecast model ccnet_r18_untrained"].status == "made by tiny_models"
    alone = collect(compose_cfg("+experiment=forecast", "model=tiny_unseen", "profile=tiny",
                                "stages.forecast.evaluate.models=[pspnet_r18]"), STAGE_ORDER)
    missing = {n.what: n for n in alone if n.blocking}
    assert "forecast model ccnet_r18_untrained" in missing, [(n.what, n.status) for n in alone]
    assert all("+stage=[tiny_models]" in n.fix for n in missing.values() if "tiny/models" in n.source)


def test_retired_hub_id_is_named_with_its_replacement(compose_cfg, empty_hub):
    cfg = compose_cfg("+stage=[inpaint]", "stages.inpaint.inpaint_model=runwayml/stable-diffusion-inpainting")
    need = by_what(collect(cfg, STAGE_ORDER))["inpainting model"]
    assert need.blocking and need.status == "retired id"
    assert need.fix == "use `stages.inpaint.inpaint_model=stable-diffusion-v1-5/stable-diffusion-inpainting`"


def touch_cityscapes(root: Path, counts: dict[str, int], split: str = "val") -> None:
    for city, n in counts.items():
        for folder, suffix in (("leftImg8bit", "leftImg8bit"), ("gtFine", "gtFine_labelIds")):
            d = root / folder / split / city
            d.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                (d / f"{city}_{k:06d}_000019_{suffix}.png").touch()


@pytest.mark.parametrize("counts, status", [(CITYSCAPES_VAL, "present"),
                                            ({**CITYSCAPES_VAL, "lindau": 58}, "incomplete")])
def test_cityscapes_val_is_counted_per_city(compose_cfg, tmp_path, empty_hub, counts, status):
    """The whole val set and the protocol splits (test = frankfurt, calibration = munster + lindau)."""
    touch_cityscapes(tmp_path / "data" / "cityscapes", counts)
    cfg = compose_cfg("+stage=[evaluate]", "stages.evaluate.datasets=[cityscapes,cityscapes_test,cityscapes_calib]",
                      "stages.evaluate.models=[pspnet_r18]")
    needs = by_what(collect(cfg, STAGE_ORDER))
    whole, test, calib = (needs[f"dataset {n} (val)"] for n in ("cityscapes", "cityscapes_test", "cityscapes_calib"))
    assert (whole.status, test.status, calib.status) == (status, "present", status)
    assert test.detail == "267 images"
    if status == "incomplete":
        assert whole.detail == calib.detail == "lindau: 58 images, expected 59" and calib.blocking
    else:
        assert (whole.detail, calib.detail) == ("500 images in 3 scenes", "233 images in 2 scenes")


def test_idd_without_level3_labels_points_to_the_toolkit(compose_cfg, tmp_path, empty_hub):
    scene = tmp_path / "data" / "IDD_Segmentation"
    (scene / "leftImg8bit" / "val" / "119").mkdir(parents=True)
    (scene / "gtFine" / "val" / "119").mkdir(parents=True)
    (scene / "leftImg8bit" / "val" / "119" / "000001_leftImg8bit.png").touch()
    (scene / "gtFine" / "val" / "119" / "000001_gtFine_polygons.json").touch()
    cfg = compose_cfg("+stage=[evaluate]", "stages.evaluate.datasets=[idd]", "stages.evaluate.models=[pspnet_r18]")
    need = by_what(collect(cfg, STAGE_ORDER))["dataset idd (val)"]
    assert need.status == "missing" and "createLabels.py" in need.detail
    assert "--id-type level3Ids" in need.fix and "idd.insaan.iiit.ac.in" in need.fix


def test_zoo_checkpoint_in_the_cache_is_verified_by_its_name(compose_cfg, tmp_path, empty_hub):
    import hashlib

    from synthrel.zoo.registry import zoo_entries

    cfg = compose_cfg("+stage=[evaluate]", "stages.evaluate.datasets=[cityscapes]", "stages.evaluate.models=[pspnet_r18]",
                      f"paths.cache_dir={tmp_path}/cache")
    name = zoo_entries(cfg.zoo)["pspnet_r18"].checkpoint.rpartition("/")[2]
    path = tmp_path / "cache" / "checkpoints" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the checkpoint")
    need = by_what(collect(cfg, STAGE_ORDER))["zoo model pspnet_r18"]
    assert need.status == "corrupt" and "differs from the prefix 3deefc62" in need.detail
    assert need.downloadable and f"deletes {path}" in need.fix
    assert hashlib.sha256(path.read_bytes()).hexdigest()[:8] != "3deefc62"


def test_model_without_weights_is_skipped_not_blocking(compose_cfg, empty_hub):
    cfg = compose_cfg("+stage=[evaluate]", "stages.evaluate.datasets=[cityscapes]", "stages.evaluate.models=[segmenter]")
    need = by_what(collect(cfg, STAGE_ORDER))["zoo model segmenter"]
    assert need.status == "skipped" and not need.blocking and "docs/install.md#manual-weights" in need.detail


@pytest.mark.slow
def test_sweep_reports_every_job_and_fails(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf"),
           "TQDM_DISABLE": "1"}
    result = subprocess.run([sys.executable, "-m", "synthrel.run", "-m", "+experiment=covariate_fog,covariate_night",
                             "preflight=true", f"paths.root_dir={tmp_path}"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "synthrel preflight: covariate_fog" in result.stdout and "synthrel preflight: covariate_night" in result.stdout
    assert "dataset acdc_night_test (train)" in result.stdout  # the relis test split (real_split=test)
    assert "PreflightError" in result.stderr
    reports = sorted((tmp_path / "outputs" / "logs").rglob("preflight.txt"))
    assert len(reports) == 2 and "synthrel preflight: covariate_night" in reports[1].read_text()


@pytest.mark.parametrize("recorded", ["right", "wrong"])
def test_released_controlnet_file_is_checked_against_its_recorded_sha256(compose_cfg, tmp_path, empty_hub,
                                                                         recorded):
    import hashlib

    ckpt = tmp_path / "controlnet_cs.ckpt"
    ckpt.write_bytes(b"released weights")
    digest = hashlib.sha256(b"released weights").hexdigest() if recorded == "right" else "ab" * 32
    cfg = compose_cfg("+stage=[generate]", f"backbone.controlnet={ckpt}", f"backbone.controlnet_sha256={digest}")
    need = by_what(collect(cfg, STAGE_ORDER))["ControlNet"]
    assert need.status == ("present" if recorded == "right" else "corrupt")
    assert need.blocking == (recorded == "wrong")


def test_download_mode_fetches_verifies_and_then_reports_ready(compose_cfg, tmp_path, monkeypatch, server, capsys):
    """preflight=download on a run whose data is in place and whose one zoo checkpoint is on a server."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    payload = os.urandom(200_000)
    name = mmseg_name(payload)
    server.files[f"/{name}"] = payload
    touch_cityscapes(tmp_path / "data" / "cityscapes", CITYSCAPES_VAL)
    dest = tmp_path / "cache" / "checkpoints" / name
    dest.parent.mkdir(parents=True)
    dest.write_bytes(payload[:1000])  # an earlier download, cut short: corrupt
    overrides = ["+stage=[evaluate]", "stages.evaluate.datasets=[cityscapes]", "stages.evaluate.models=[pspnet_r18]",
                 f"zoo.models.pspnet_r18.checkpoint={server.url}/{name}", f"paths.cache_dir={tmp_path}/cache"]
    with pytest.raises(SystemExit) as stop:
        gate(compose_cfg(*overrides, "preflight=true"), STAGE_ORDER)
    assert stop.value.code == 1
    out = capsys.readouterr().out
    assert f"corrupt              zoo model pspnet_r18: {name}" in out
    assert "to download: 1 item(s), 200.0 kB" in out  # exact size from Content-Length
    assert gate(compose_cfg(*overrides, "preflight=download"), STAGE_ORDER) is True
    out = capsys.readouterr().out
    assert f"deleted the corrupt {dest}" in out and dest.read_bytes() == payload
    assert f"present              zoo model pspnet_r18: {name}" in out and "ready: everything" in out
    import synthrel.preflight.download as download

    def no_hashing(path):
        raise AssertionError(f"{path} hashed again although its stamp is valid")

    monkeypatch.setattr(download, "sha256_of", no_hashing)
    assert gate(compose_cfg(*overrides), STAGE_ORDER) is False  # auto: ready, trusting the stamp
    assert sorted(p.name for p in (tmp_path / "cache" / "checkpoints").iterdir()) == [name, f"{name}.sha256"]
