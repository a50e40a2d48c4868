"""profile=tiny through the real Hydra config: tiny models -> caption stage -> generate stage -> synthetic set."""

import hydra.utils
from diffusers import ControlNetModel, UNet2DConditionModel

from synthrel.run import run_stages
from synthrel.tiny.job import ensure_tiny_models


def test_tiny_caption_then_generate(compose_cfg, cityscapes_writer, tmp_path):
    overrides = ("+stage=[caption,generate]", "profile=tiny", "device=cpu", "stages.caption.splits=[val]",
                 "stages.caption.num_beams=1", "stages.caption.max_new_tokens=8", "backbone.resolution=64",
                 "backbone.num_inference_steps=2", "profile.num_samples=2")
    cfg = compose_cfg(*overrides)
    models = ensure_tiny_models(cfg.profile.models_dir)
    assert set(models) == {"sd15", "sdxl", "sd15_inpaint", "blip"}
    assert cfg.backbone.pretrained == str(models["sd15"])
    trained = cfg.stages.generate.trained_controlnet  # where the training stage saves its ControlNet
    unet = UNet2DConditionModel.from_pretrained(models["sd15"], subfolder="unet")
    ControlNetModel.from_unet(unet, conditioning_channels=1).save_pretrained(trained)
    cityscapes_writer(tmp_path / "outputs" / "tiny" / "data" / "cityscapes")
    cfg = compose_cfg(*overrides)
    assert cfg.stages.caption.model == str(models["blip"])
    summaries = run_stages(cfg)
    assert summaries["caption"]["captioned"] == 3
    assert summaries["generate"]["generated"] == 2
    synthetic = hydra.utils.instantiate(cfg.datasets.synthetic)
    assert len(synthetic) == 2
    sample = synthetic[0]
    assert sample["image"].shape == (64, 64, 3) and sample["label"].shape == (64, 64)
    assert synthetic.items[0].meta["prompt"].endswith(", in fog")
