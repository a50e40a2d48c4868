"""profile=smoke (#33): the paper's architectures at real size with random weights, at the real resolutions.

The real-size recipes (synthrel/tiny/real_configs.py) are checked against the published parameter counts of the
hub models (independent references), built on the `meta` device (no memory, no init: milliseconds). The
composed `+experiment=gpu_check profile=smoke` is checked for the paper's settings where the demo has tiny ones.
The GPU run itself: docs/benchmarks.md#gpu-check (make gpu-check).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


def _millions(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def _unet(kind):
    from diffusers import UNet2DConditionModel

    from synthrel.tiny.real_configs import UNETS

    with torch.device("meta"):
        return UNet2DConditionModel(**UNETS[kind])


# Published sizes: SD1.5 UNet 859.52 M, SD1.5 ControlNet 361.28 M, SDXL base UNet 2567.46 M (diffusers model cards,
# `num_parameters()`), CLIP ViT-L/14 text 123.06 M, OpenCLIP bigG text (with projection) 694.66 M, SD VAE 83.65 M,
# SAM ViT-H 641.09 M, BLIP-large captioning 469.73 M (LM head stored untied).
@pytest.mark.parametrize(("build", "expected"), [
    (lambda: _unet("sd15"), 859.52),
    (lambda: _unet("sd15_inpaint"), 859.54),  # 5 more input channels x 320 x 3 x 3
    (lambda: _unet("sdxl"), 2567.46),
])
def test_real_unets_have_the_published_parameter_counts(build, expected):
    assert _millions(build()) == pytest.approx(expected, abs=0.01)


def test_real_controlnet_and_vae_have_the_published_parameter_counts():
    from diffusers import AutoencoderKL, ControlNetModel

    from synthrel.tiny.real_configs import SD_VAE

    unet = _unet("sd15")
    with torch.device("meta"):
        controlnet = ControlNetModel.from_unet(unet)
        vae = AutoencoderKL(**SD_VAE)
    assert _millions(controlnet) == pytest.approx(361.28, abs=0.01)
    assert _millions(vae) == pytest.approx(83.65, abs=0.01)


def test_real_text_encoders_have_the_published_parameter_counts():
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from synthrel.tiny.diffusion import _text_config
    from synthrel.tiny.real_configs import CLIP_G_TEXT, CLIP_L_TEXT, CLIP_VOCAB

    with torch.device("meta"):
        clip_l = CLIPTextModel(_text_config(600, real=CLIP_L_TEXT))
        clip_g = CLIPTextModelWithProjection(_text_config(600, real=CLIP_G_TEXT))
    assert clip_l.config.vocab_size == CLIP_VOCAB == 49408
    assert _millions(clip_l) == pytest.approx(123.06, abs=0.01)
    assert _millions(clip_g) == pytest.approx(694.66, abs=0.01)
    assert clip_l.config.eos_token_id == 599  # the local tokenizer's ids, not CLIP's 49407


def test_real_sam_and_blip_have_the_published_parameter_counts():
    from transformers import BlipConfig, BlipForConditionalGeneration, SamConfig, SamModel, SamVisionConfig

    from synthrel.tiny.real_configs import BLIP_LARGE, BLIP_VOCAB, SAM_VIT_H

    with torch.device("meta"):
        sam = SamModel(SamConfig(vision_config=SamVisionConfig(**SAM_VIT_H)))
        blip = BlipForConditionalGeneration(BlipConfig(**{
            **BLIP_LARGE, "text_config": {**BLIP_LARGE["text_config"], "vocab_size": BLIP_VOCAB}}))
    assert _millions(sam) == pytest.approx(641.09, abs=0.01)
    # the hub file stores the decoder's LM head apart (469.73 M); transformers ties it to the word embeddings
    assert _millions(blip) + BLIP_VOCAB * 768 / 1e6 == pytest.approx(469.73, abs=0.01)
    # timm's vit_large_patch16_384: 304.72 M with its 1000-class head (1024 x 1000 + 1000)
    assert _millions(blip.vision_model) == pytest.approx(304.72 - 1.025, abs=0.01)


def test_tiny_models_rejects_tiny_specs_at_real_size(tmp_path):
    from synthrel.errors import ConfigError
    from synthrel.tiny.job import TinyModelsJob

    with pytest.raises(ConfigError, match=r"stages.tiny_models.real_segmenters.zoo/x.*real:segformer_b5"):
        TinyModelsJob(models_dir=str(tmp_path), size="real", real_segmenters={"zoo/x": "segformer_b0"})


def test_gpu_check_on_the_smoke_profile_has_the_paper_settings_at_real_size(compose_cfg):
    from omegaconf import OmegaConf

    cfg = compose_cfg("+experiment=gpu_check", "profile=smoke")
    OmegaConf.resolve(cfg)
    stages = cfg.stages
    assert stages.tiny_models.size == "real" and stages.tiny_models.build_device == "cuda"
    assert stages.demo_data.sizes == {"cityscapes": [2048, 1024], "acdc": [1920, 1080], "idd": [1920, 1080],
                                      "road_anomaly": [1280, 720]}
    assert stages.generate.resolution == stages.train_controlnet.resolution == stages.corrupt.resolution == 512
    assert compose_cfg("+experiment=gpu_check", "profile=smoke", "backbone=sdxl").stages.generate.resolution == 1024
    assert stages.generate.num_samples == 2 and stages.inpaint.patch_size == 512
    assert list(stages.fid.resolution) == [299, 299]
    paper = compose_cfg("profile=paper", "+stage=[caption,train_controlnet,generate,evaluate,inpaint]")
    for stage, key in [("caption", "num_beams"), ("caption", "max_new_tokens"), ("caption", "batch_size"),
                       ("train_controlnet", "batch_size"), ("train_controlnet", "accumulate_grad_batches"),
                       ("train_controlnet", "num_workers"), ("train_controlnet", "precision"),
                       ("generate", "batch_size"), ("generate", "compile"), ("evaluate", "batch_size"),
                       ("evaluate", "num_workers"), ("evaluate", "precision"), ("evaluate", "compile"),
                       ("inpaint", "num_inference_steps"), ("inpaint", "dtype")]:
        assert stages[stage][key] == paper.stages[stage][key], (stage, key)  # the stages' defaults, as the paper runs
    assert list(cfg.zoo.models) == ["segformer_b5", "pspnet_r18", "dlv3p_r101"]
    assert dict(stages.train_zoo.init) == {"pspnet_r18": f"{cfg.profile.models_dir}/init/pspnet_r18"}
    assert cfg.backbone.pretrained == f"{cfg.profile.models_dir}/sd15"


def test_demo_data_writes_each_dataset_at_its_size(tmp_path):
    from PIL import Image

    from synthrel.data.demo import DemoDataJob

    DemoDataJob(root=str(tmp_path), image_size=[64, 32], sizes={"acdc": [96, 54]}, n_train=1, n_val=1,
                n_shift=1, n_ood=1).run()
    [acdc] = (tmp_path / "ACDC" / "rgb_anon" / "fog" / "train").rglob("*.png")
    [city] = (tmp_path / "cityscapes" / "leftImg8bit" / "train").rglob("*.png")
    assert Image.open(acdc).size == (96, 54) and Image.open(city).size == (64, 32)


def test_demo_data_rejects_an_unknown_dataset_size(tmp_path):
    from synthrel.data.demo import DemoDataJob
    from synthrel.errors import ConfigError

    with pytest.raises(ConfigError, match=r"stages.demo_data.sizes.kitti.*cityscapes, acdc, idd, road_anomaly"):
        DemoDataJob(root=str(tmp_path), sizes={"kitti": [64, 32]})


def test_a_real_size_zoo_model_is_written_as_the_zoo_loads_it(tmp_path):
    """real:pspnet_r18 (the cheapest of the smoke zoo): the shipped config standalone, its random weights loaded
    by the zoo's own checkpoint path, unchanged; the paper's test scale kept."""
    from synthrel.tiny.segmentation import ensure_tiny_segmenter
    from synthrel.zoo.predictor import build_segmenter
    from synthrel.zoo.registry import ZooEntry

    folder = ensure_tiny_segmenter("real:pspnet_r18", tmp_path / "pspnet_r18")
    entry = ZooEntry(key="pspnet_r18", family="PSPNet", config=str(folder / "config.py"),
                     checkpoint=str(folder / "checkpoint.pth"))
    model = build_segmenter(entry).model
    saved = torch.load(folder / "checkpoint.pth", map_location="cpu", weights_only=False)["state_dict"]
    loaded = model.state_dict()
    assert set(saved) == set(loaded)
    assert all(torch.equal(saved[k].cpu(), loaded[k].cpu()) for k in saved)
    assert saved["backbone.layer4.1.conv2.weight"].shape == (512, 512, 3, 3)  # ResNet-18's last block, full width
    from mmengine.config import Config

    cfg = Config.fromfile(str(folder / "config.py"))
    assert [tuple(s["scale"]) for s in cfg.test_pipeline if s["type"] == "Resize"] == [(2049, 1025)]
    assert cfg.model.test_cfg.mode == "slide" and tuple(cfg.model.test_cfg.crop_size) == (769, 769)


def test_demo_data_files_do_not_depend_on_the_number_of_workers(tmp_path):
    from synthrel.data.demo import DemoDataJob

    kwargs = dict(image_size=[64, 32], sizes={"idd": [48, 40]}, n_train=2, n_val=1, n_shift=1, n_ood=1)
    DemoDataJob(root=str(tmp_path / "one"), **kwargs).run()
    DemoDataJob(root=str(tmp_path / "two"), workers=2, **kwargs).run()
    one = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert one == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    assert all((tmp_path / "one" / p).read_bytes() == (tmp_path / "two" / p).read_bytes() for p in one)


def test_reports_on_random_models_say_so_on_their_first_line():
    from synthrel.analysis.report import SMOKE_NOTICE, TINY_NOTICE, profile_notice

    assert profile_notice("smoke", "smoke") == SMOKE_NOTICE and "random weights" in SMOKE_NOTICE
    assert profile_notice("tiny", None) == TINY_NOTICE
    assert profile_notice("paper", "paper") is None


def test_preflight_gives_real_size_gpu_estimates_on_the_smoke_profile(compose_cfg):
    from synthrel.preflight.report import gpu_estimates

    smoke = gpu_estimates(compose_cfg("+experiment=gpu_check", "profile=smoke"), ["generate"])
    assert "all stages" not in smoke and "generate" in smoke
    tiny = gpu_estimates(compose_cfg("+experiment=gpu_check"), ["generate"])
    assert tiny == {"all stages": "tiny models: run on CPU, < 1 GB"}


def test_preflight_quotes_the_peaks_sdxls_checkpointing_auto_decides_with(compose_cfg):
    """The SDXL training line names the shipped measured peaks (synthrel/measured_rates.json) and the margin the
    stage's `gradient_checkpointing: auto` uses, so it cannot drift from the rule."""
    from synthrel.preflight.report import gpu_estimates

    rates = json.loads((Path(__file__).resolve().parents[2] / "synthrel" / "measured_rates.json").read_text())
    peaks = rates["rows"]["train_controlnet SDXL"]["checkpointing"]
    line = gpu_estimates(compose_cfg("+experiment=gpu_check", "profile=smoke", "backbone=sdxl"),
                         ["train_controlnet"])["train_controlnet"]
    assert f"holds {peaks['compiled_off']['peak_gib']:.1f} x 1.1" in line
    assert f"holds {peaks['peak_gib']:.1f} x 1.1" in line
