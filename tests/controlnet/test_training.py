"""ControlNet training on tiny SD1.5/SDXL models: learning, frozen base, exact resume, saved weights, config."""

import json

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from diffusers import ControlNetModel
from PIL import Image
from torch.utils.data import default_collate

from synthrel.controlnet.data import ControlNetTrainData, load_captions
from synthrel.controlnet.job import TrainControlNetJob
from synthrel.controlnet.module import ControlNetModule
from synthrel.data.cityscapes import CityscapesDataset
from synthrel.diffusion_loading import load_base_pipeline
from synthrel.errors import ConfigError
from synthrel.jobs import item_seed


def backbone(models, kind="sd15", **train):
    return {"name": kind, "pretrained": str(models[kind]), "resolution": 32, "guidance_scale": 7.5,
            "train": {"max_steps": 2, "batch_size": 2, "accumulate_grad_batches": 2, "lr": 1e-4, **train}}


def make_job(models, data, out, kind="sd15", **overrides):
    settings = dict(
        backbone=backbone(models, kind),
        dataset={"_target_": "synthrel.data.cityscapes.CityscapesDataset", "root": str(data["root"]),
                 "split": "train"},
        captions=str(data["captions"]), output_dir=str(out), run_dir=str(out / "run"), device="cpu",
        num_workers=0, checkpoint_every_n_steps=1, sample_every_n_steps=0,
    )
    return TrainControlNetJob(**{**settings, **overrides})


def make_module(models, data, kind="sd15", **kwargs):
    dataset = CityscapesDataset(data["root"], split="train")
    train_data = ControlNetTrainData(dataset, load_captions(data["captions"]), 32)
    torch.manual_seed(0)
    module = ControlNetModule(load_base_pipeline(str(models[kind])), train_data, conditioning_channels=1,
                              batch_size=2, **kwargs)
    return module, module.examples


def test_loss_falls_when_overfitting_one_batch(tiny_models, tiny_cityscapes):
    module, data = make_module(tiny_models, tiny_cityscapes, lr=1e-3)
    batch = default_collate([data[0], data[1]])  # same positions -> same noise, timesteps and latents
    optimizer = module.configure_optimizers()
    losses = []
    for _ in range(12):
        loss = module.diffusion_loss(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert module.diffusion_loss(batch).item() < 0.8 * losses[0], losses


def test_controlnet_starts_as_a_copy_of_the_unet_encoder(tiny_models, tiny_cityscapes):
    module, data = make_module(tiny_models, tiny_cityscapes, lr=1e-4)
    unet, net = module.unet.state_dict(), module.controlnet.state_dict()
    copied = [k for k in net if k.startswith(("conv_in.", "time_embedding.", "down_blocks.", "mid_block."))]
    assert len(copied) > 50
    for key in copied:
        assert torch.equal(net[key], unet[key]), key
    zero_convs = [k for k in net if k.startswith(("controlnet_down_blocks.", "controlnet_mid_block."))]
    assert zero_convs and all(not net[k].any() for k in zero_convs)
    assert net["controlnet_cond_embedding.conv_in.weight"].shape[1] == 1  # the one-channel label_id hint


def test_loss_is_the_epsilon_mse_of_the_official_schedule(tiny_models, tiny_cityscapes):
    """At init the zero convs make the ControlNet a no-op, so the loss is the plain SD1.5 loss, recomputed here
    by hand with the ldm "linear" schedule of the official config (linear_start 0.00085, linear_end 0.012)."""
    module, data = make_module(tiny_models, tiny_cityscapes, lr=1e-4)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    torch.testing.assert_close(module.noise_scheduler.alphas_cumprod.double(), alphas_cumprod, rtol=1e-6, atol=0)
    examples = [data[0], data[1]]
    squared_errors = []
    with torch.no_grad():
        for example in examples:
            g = torch.Generator().manual_seed(item_seed(0, example["position"], "diffusion"))
            posterior = module.vae.encode(example["pixel_values"][None]).latent_dist
            latent = (posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=g))
            latent = latent * module.vae.config.scaling_factor
            noise = torch.randn(latent.shape, generator=g)
            t = torch.randint(0, 1000, (1,), generator=g)
            a = alphas_cumprod[t].float()
            noisy = a.sqrt() * latent + (1 - a).sqrt() * noise
            ids = module.tokenizers[0]([example["caption"]], padding="max_length", max_length=77,
                                       truncation=True, return_tensors="pt").input_ids
            pred = module.unet(noisy, t, encoder_hidden_states=module.text_encoder(ids)[0]).sample
            squared_errors.append(((pred - noise) ** 2).mean())
        loss = module.diffusion_loss(default_collate(examples))
    torch.testing.assert_close(loss, torch.stack(squared_errors).mean(), rtol=1e-4, atol=1e-6)


def test_training_changes_only_the_controlnet(tiny_models, tiny_cityscapes, tmp_path, monkeypatch):
    from pytorch_lightning.loggers import WandbLogger

    logged = []
    log_image = WandbLogger.log_image
    monkeypatch.setattr(WandbLogger, "log_image", lambda self, **kw: logged.append(kw) or log_image(self, **kw))
    module, _ = make_module(tiny_models, tiny_cityscapes, lr=1e-2, sample_every_n_steps=2, num_sample_images=3,
                            sample_inference_steps=2, sample_dir=tmp_path / "samples")
    frozen = {name: {k: v.clone() for k, v in getattr(module, name).state_dict().items()}
              for name in ("unet", "vae", "text_encoder")}
    initial = {k: v.clone() for k, v in module.controlnet.state_dict().items()}
    wandb = WandbLogger(save_dir=tmp_path, offline=True)  # WANDB_MODE=disabled in tests
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=[wandb], enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
    trainer.fit(module)
    assert trainer.global_step == 2
    for name, before in frozen.items():
        after = getattr(module, name).state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), name
        assert not any(p.requires_grad for p in getattr(module, name).parameters())
        assert not getattr(module, name).training
    after = module.controlnet.state_dict()
    assert sum(not torch.equal(initial[k], after[k]) for k in initial) > 0.5 * len(initial)
    # The sample grid went to the logger that takes images (so no PNG fallback): 3 rows x 3 columns.
    assert [(kw["key"], kw["step"], kw["images"][0].shape) for kw in logged] == [("samples", 2, (96, 96, 3))]
    assert not (tmp_path / "samples").exists()


def test_job_saves_a_loadable_controlnet_checkpoints_and_samples(tiny_models, tiny_cityscapes, tmp_path):
    job = make_job(tiny_models, tiny_cityscapes, tmp_path / "out", sample_every_n_steps=1,
                   sample_inference_steps=2, num_sample_images=2)
    summary = job.run()
    assert summary["global_step"] == 2 and summary["effective_batch_size"] == 4
    saved = ControlNetModel.from_pretrained(summary["final_dir"])
    checkpoint = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 2
    assert all(k.startswith("controlnet.") for k in checkpoint["state_dict"])  # frozen base not duplicated
    for key, value in saved.state_dict().items():
        assert torch.equal(value, checkpoint["state_dict"][f"controlnet.{key}"]), key
    grids = sorted(p.name for p in (tmp_path / "out" / "run" / "samples").glob("step_*.png"))
    assert grids == ["step_000001.png", "step_000002.png"]
    assert np.asarray(Image.open(tmp_path / "out" / "run" / "samples" / grids[0])).shape == (2 * 32, 3 * 32, 3)
    record = json.loads((tmp_path / "out" / "final" / "training.json").read_text())
    assert record["effective_batch_size"] == 4 and record["seed"] == 0 and record["conditioning"] == "label_id"


def test_resume_continues_the_same_run(tiny_models, tiny_cityscapes, tmp_path):
    straight = make_job(tiny_models, tiny_cityscapes, tmp_path / "straight", max_steps=4).run()
    make_job(tiny_models, tiny_cityscapes, tmp_path / "split", max_steps=2).run()
    resumed = make_job(tiny_models, tiny_cityscapes, tmp_path / "split", max_steps=4).run()
    assert resumed["resumed_from"] == str(tmp_path / "split" / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == straight["global_step"] == 4
    a = ControlNetModel.from_pretrained(straight["final_dir"]).state_dict()
    b = ControlNetModel.from_pretrained(resumed["final_dir"]).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    # Finished runs are skipped; changing what defines the stream refuses to resume.
    assert make_job(tiny_models, tiny_cityscapes, tmp_path / "split", max_steps=4).run()["skipped"]
    with pytest.raises(ConfigError, match="`batch_size` was 2 and is now 1"):
        make_job(tiny_models, tiny_cityscapes, tmp_path / "split", max_steps=5, batch_size=1).run()


def test_sdxl_trains_one_step(tiny_models, tiny_cityscapes, tmp_path):
    summary = make_job(tiny_models, tiny_cityscapes, tmp_path / "xl", kind="sdxl", max_steps=1,
                       accumulate_grad_batches=1, conditioning="palette").run()
    saved = ControlNetModel.from_pretrained(summary["final_dir"])
    assert summary["global_step"] == 1
    assert saved.config.addition_embed_type == "text_time"
    assert saved.config.conditioning_channels == 3


def test_micro_batches_of_one_step_give_the_same_gradient(tiny_models, tiny_cityscapes):
    """A step's gradient depends on batch_size x accumulate_grad_batches only: every draw (crop, VAE sample, noise,
    timestep) is seeded by stream position, so one batch of 4 and two accumulated batches of 2 give the same
    gradient (the SDXL default splits the paper's batch 8 x 4 as 4 x 8 this way)."""
    module, data = make_module(tiny_models, tiny_cityscapes, lr=1e-4)
    module.float()
    module.diffusion_loss(default_collate([data[p] for p in range(4)])).backward()
    whole = {n: p.grad.clone() for n, p in module.controlnet.named_parameters()}
    module.controlnet.zero_grad()
    for positions in ((0, 1), (2, 3)):  # Lightning divides each micro-batch's loss by accumulate_grad_batches
        (module.diffusion_loss(default_collate([data[p] for p in positions])) / 2).backward()
    zero_convs = [n for n in whole if n.startswith(("controlnet_down_blocks.", "controlnet_mid_block."))]
    assert all(whole[n].any() for n in zero_convs)  # at init only the zero convolutions get a gradient
    for name, param in module.controlnet.named_parameters():
        torch.testing.assert_close(param.grad, whole[name], rtol=1e-4, atol=1e-7, msg=name)
    module.controlnet.zero_grad()
    (module.diffusion_loss(default_collate([data[p] for p in (0, 1, 2, 2)]))).backward()  # another draw: differs
    assert any(not torch.allclose(p.grad, whole[n], rtol=1e-2, atol=1e-6) for n, p in module.controlnet.named_parameters())


def test_compiled_training_traces_the_three_networks_and_keeps_the_weights(tiny_models, tiny_cityscapes,
                                                                            tmp_path, monkeypatch):
    """compile=true: dynamo traces the UNet and the ControlNet through forward and backward, and the frozen VAE
    encoder (aot_eager, as inductor needs a compiler on CPU); the weights match the eager run's and save under their
    plain names."""
    eager = make_job(tiny_models, tiny_cityscapes, tmp_path / "eager").run()
    compiled_calls = []
    real_compile = torch.compile

    def aot_eager(fn, **kwargs):
        compiled_calls.append(getattr(fn, "__self__", fn).__class__.__name__)
        return real_compile(fn, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", aot_eager)
    compiled = make_job(tiny_models, tiny_cityscapes, tmp_path / "compiled", compile=True).run()
    assert sorted(compiled_calls) == ["ControlNetModel", "Encoder", "UNet2DConditionModel"]
    a = ControlNetModel.from_pretrained(eager["final_dir"]).state_dict()
    b = ControlNetModel.from_pretrained(compiled["final_dir"]).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"max_steps": 0}, "max_steps"),
        ({"batch_size": -2}, "batch_size"),
        ({"accumulate_grad_batches": 1.5}, "accumulate_grad_batches"),
        ({"resolution": 30}, "resolution"),
        ({"lr": 0}, "lr"),
        ({"checkpoint_every_n_steps": 0}, "checkpoint_every_n_steps"),
        ({"resume": "/no/such.ckpt"}, "resume"),
    ],
)
def test_bad_config_values_name_the_key(tiny_models, tiny_cityscapes, tmp_path, override, key):
    with pytest.raises(ConfigError, match=rf"stages\.train_controlnet\.{key}\b"):
        make_job(tiny_models, tiny_cityscapes, tmp_path, **override)


def test_stage_config_composes_with_overrides(compose_cfg, write_cityscapes, tmp_path):
    from synthrel.stages import build_job

    write_cityscapes(tmp_path / "data")
    cfg = compose_cfg("+stage=[train_controlnet]", "profile=tiny", f"paths.data_dir={tmp_path}/data",
                      f"paths.artifacts_dir={tmp_path}/data", "stages.train_controlnet.max_steps=3", "seed=7")
    job = build_job(cfg, "train_controlnet")  # as the run builds it: the run's seed inherited
    assert isinstance(job, TrainControlNetJob)
    assert (job.max_steps, job.batch_size, job.lr) == (3, cfg.backbone.train.batch_size, cfg.backbone.train.lr)
    assert job.resolution == cfg.backbone.resolution and job.conditioning == "label_id"
    assert job.output_dir == f"{tmp_path}/data/controlnet/sd15"
    dataset = job._dataset()  # the job builds its dataset (and loggers) itself: `_recursive_: false`
    assert isinstance(dataset, CityscapesDataset) and dataset.items[0].image.parts[-3] == "train"
    assert job.captions == f"{tmp_path}/data/captions/cityscapes_train.jsonl"
    assert job.backbone["pretrained"].endswith("tiny/models/sd15") and job.seed == cfg.seed == 7


def test_sdxl_trains_with_gradient_checkpointing_auto_by_default(compose_cfg):
    """The paper's SDXL batch of 8 at 1024 px needs checkpointing on an 80 GB card (measured: out of memory without
    it); `auto` decides between both networks and the ControlNet only (synthrel.runstats.checkpointing_choice)."""
    key = "stages.train_controlnet.gradient_checkpointing"
    assert compose_cfg("+stage=[train_controlnet]").stages.train_controlnet.gradient_checkpointing is False
    assert compose_cfg("+stage=[train_controlnet]", "backbone=sdxl").stages.train_controlnet[
        "gradient_checkpointing"] == "auto"
    for value, expected in (("false", False), ("controlnet", "controlnet")):
        assert compose_cfg("+stage=[train_controlnet]", "backbone=sdxl", f"{key}={value}").stages.train_controlnet[
            "gradient_checkpointing"] == expected


def test_no_gradient_clipping_by_default_as_the_paper(compose_cfg, write_cityscapes, tiny_models, tiny_cityscapes,
                                                      tmp_path):
    """Spec S2: the paper's train.py builds its Trainer without gradient_clip_val; clipping stays an option."""
    from hydra.utils import instantiate

    write_cityscapes(tmp_path / "data")
    cfg = compose_cfg("+stage=[train_controlnet]", "profile=tiny", f"paths.data_dir={tmp_path}/data",
                      f"paths.artifacts_dir={tmp_path}/data")
    assert cfg.stages.train_controlnet.max_grad_norm is None
    job = instantiate(cfg.stages.train_controlnet, _convert_="all")
    assert job.max_grad_norm is None
    trainer = job._trainer(pl, tmp_path / "run")
    assert trainer.gradient_clip_val is None and trainer.gradient_clip_algorithm is None
    assert TrainControlNetJob.max_grad_norm is None  # the dataclass default, for jobs built without Hydra
    clipped = make_job(tiny_models, tiny_cityscapes, tmp_path / "clip", max_grad_norm=0.5)
    trainer = clipped._trainer(pl, tmp_path / "clip_run")
    assert trainer.gradient_clip_val == 0.5 and trainer.gradient_clip_algorithm == "norm"


def test_a_finished_run_is_not_reused_when_its_settings_changed(tiny_models, tiny_cityscapes, tmp_path):
    """A trained ControlNet is skipped only while what trained it is unchanged; else the run stops naming the
    changed settings (lr, captions...) and force=true trains again with them."""
    from synthrel.jobs import SettingsChangedError, exclusive_output

    out = tmp_path / "out"
    make_job(tiny_models, tiny_cityscapes, out).run()
    assert make_job(tiny_models, tiny_cityscapes, out).run()["skipped"]
    with pytest.raises(SettingsChangedError, match=r"lr 0\.0001 -> 0\.001.*force=true"):
        make_job(tiny_models, tiny_cityscapes, out, lr=1e-3).run()
    captions = tmp_path / "captions.jsonl"
    captions.write_text(tiny_cityscapes["captions"].read_text().replace('"caption": "', '"caption": "foggy '))
    with pytest.raises(SettingsChangedError, match=r"captions '.*' -> '.*captions\.jsonl:"):
        make_job(tiny_models, tiny_cityscapes, out, captions=str(captions)).run()
    before = json.loads((out / "final" / "training.json").read_text())
    with exclusive_output(out):  # another run (rank 0 of another job) holds the folder
        with pytest.raises(Exception, match=f"another synthrel run is writing {out}"):
            make_job(tiny_models, tiny_cityscapes, out, lr=1e-3, force=True).run()
    retrained = make_job(tiny_models, tiny_cityscapes, out, lr=1e-3, force=True).run()
    assert not retrained["skipped"]
    after = json.loads((out / "final" / "training.json").read_text())
    assert before["lr"] == 1e-4 and after["lr"] == after["settings"]["lr"] == 1e-3
    assert make_job(tiny_models, tiny_cityscapes, out, lr=1e-3).run()["skipped"]


def test_progress_bar_advances_once_per_optimizer_step(tiny_models, tiny_cityscapes, tmp_path):
    """The bar advances per optimizer step, not per micro-batch; the loader pins host memory only where batches go
    to a GPU."""
    from pytorch_lightning.callbacks import TQDMProgressBar

    job = make_job(tiny_models, tiny_cityscapes, tmp_path, accumulate_grad_batches=3)
    bars = [c for c in job._trainer(pl, tmp_path / "run").callbacks if isinstance(c, TQDMProgressBar)]
    assert [bar.refresh_rate for bar in bars] == [3]
    module, _ = make_module(tiny_models, tiny_cityscapes, lr=1e-3)
    module.trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    assert module.train_dataloader().pin_memory is False


def fit_logging(module, tmp_path, device="cpu", max_steps=6, accumulate=2, every=3, callbacks=()):
    """A few optimizer steps of `module` through Lightning with a CSV logger: (trainer, the logged rows or None)."""
    import pandas as pd

    logger = pl.loggers.CSVLogger(tmp_path / "logs", name="", version="")
    trainer = pl.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_steps=max_steps,
                         accumulate_grad_batches=accumulate, log_every_n_steps=every, logger=logger,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=list(callbacks))
    trainer.fit(module)
    logged = tmp_path / "logs" / "metrics.csv"
    return trainer, pd.read_csv(logged) if logged.exists() else None


def test_the_bar_shows_the_loss_the_loggers_got_at_their_steps(tiny_models, tiny_cityscapes, tmp_path):
    """Loggers get the loss every `log_every_n_steps` optimizer steps; the bar shows the last of those values as a
    number, without reading the GPU at the other micro-batches (test_a_fit_waits_for_the_gpu_only_at_logging_steps)."""
    module, _ = make_module(tiny_models, tiny_cityscapes, lr=1e-3)
    trainer, rows = fit_logging(module, tmp_path)
    logged = rows.dropna(subset=["train/loss"])
    assert list(logged["step"]) == [2, 5]  # optimizer steps 3 and 6 of 6, 0-based
    assert isinstance(trainer.progress_bar_metrics["loss"], float)
    assert trainer.progress_bar_metrics["loss"] == pytest.approx(logged["train/loss"].iloc[-1], rel=1e-6)
    assert "loss" not in rows and "train/loss" not in trainer.progress_bar_metrics
    module, _ = make_module(tiny_models, tiny_cityscapes, lr=1e-3)
    trainer, _ = fit_logging(module, tmp_path / "never", max_steps=2, every=0)  # Lightning's "never log"
    assert "loss" not in trainer.progress_bar_metrics


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_fit_waits_for_the_gpu_only_at_logging_steps(tiny_models, tiny_cityscapes, tmp_path):
    """After the first optimizer step (one-time moves), a synchronising call happens only at the logging steps (the
    loggers' and the bar's reads of the loss). Two syncs per micro-batch came before: Lightning turned the
    progress-bar loss into a number, and the step read the seeding positions from the batch Lightning had moved
    to the GPU; each left the GPU idle while the host prepared the next micro-batch."""
    import traceback
    import warnings

    where = {"step": None}

    class WarnFromStep1(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            where["step"] = (trainer.global_step, batch_idx)
            if trainer.global_step == 1 and torch.cuda.get_sync_debug_mode() == 0:
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("warn")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            where["step"] = (trainer.global_step, batch_idx, "after the batch")

        def on_train_end(self, trainer, pl_module):  # before the teardown moves the metrics to the host
            torch.cuda.set_sync_debug_mode("default")

    syncs = []

    def record(message, category, filename, lineno, file=None, line=None):
        if "synchronizing" in str(message):  # where, and the frames that called it (for a failure's message)
            frames = [f"{f.filename.rsplit('site-packages/', 1)[-1]}:{f.lineno} {f.name}"
                      for f in traceback.extract_stack()[-10:-2]]  # not warnings.py and this
            syncs.append((where["step"], str(message), frames))

    module, _ = make_module(tiny_models, tiny_cityscapes, kind="sdxl", lr=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        try:
            fit_logging(module, tmp_path, device="cuda", max_steps=7, accumulate=3, every=3,
                        callbacks=[WarnFromStep1()])
        finally:
            torch.cuda.set_sync_debug_mode("default")
    # steps 1-6 hold 18 micro-batches and 2 logging steps (3 and 6, 1-based): the loggers' read, the bar's copy
    assert len(syncs) <= 2 * 2, syncs


def test_the_trainer_leaves_the_batch_on_the_host(tiny_models, tiny_cityscapes):
    """Lightning's batch move is skipped: the step moves only the tensors it reads, without waiting for the GPU
    (test_a_fit_waits_for_the_gpu_only_at_logging_steps on a GPU)."""
    module, data = make_module(tiny_models, tiny_cityscapes, lr=1e-3)
    batch = default_collate([data[0], data[1]])
    moved = module.transfer_batch_to_device(batch, torch.device("cuda"), 0)  # no GPU needed: nothing is moved
    assert moved is batch and moved["position"].device.type == "cpu"


@pytest.mark.parametrize("latent_shape", [(4, 4, 4), (4, 128, 128)])  # the tiny models' latent; SDXL's at 1024²
def test_draws_are_those_of_diffusers_randn_tensor(tiny_models, tiny_cityscapes, latent_shape):
    """Each example's draws are diffusers' `randn_tensor` values with one CPU generator per sample (the VAE
    posterior's sample, then the noise, then the timestep), bitwise, in float32 and, cast, in bfloat16 and
    float16: the draws of the step when it made them itself in the frozen networks' dtype."""
    from diffusers.utils.torch_utils import randn_tensor

    from synthrel.controlnet.data import DiffusionDraws

    module, _ = make_module(tiny_models, tiny_cityscapes, lr=1e-4)
    assert module.examples.latent_shape == (4, 4, 4)  # 32 px through the tiny VAE's 4x downsampling
    examples = DiffusionDraws(module.train_data, seed=0, latent_shape=latent_shape, num_train_timesteps=1000)
    batch = default_collate([examples[p] for p in (2, 0, 3)])
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        generators = [torch.Generator().manual_seed(item_seed(0, p, "diffusion")) for p in (2, 0, 3)]
        posterior = randn_tensor((3, *latent_shape), generator=generators, device=torch.device("cpu"), dtype=dtype)
        noise = randn_tensor((3, *latent_shape), generator=generators, device=torch.device("cpu"), dtype=dtype)
        timesteps = torch.cat([torch.randint(0, 1000, (1,), generator=g) for g in generators])
        assert torch.equal(batch["posterior_draw"].to(dtype), posterior)
        assert torch.equal(batch["noise"].to(dtype), noise)
        assert torch.equal(batch["timestep"], timesteps)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: CUDA's synchronisation debug mode")
def test_a_training_step_never_waits_for_the_gpu(tiny_models, tiny_cityscapes):
    """No copy from pageable memory or other synchronising call in the step: the host stays ahead of the GPU."""
    module, data = make_module(tiny_models, tiny_cityscapes, kind="sdxl", lr=1e-4)
    module.to("cuda")
    batch = default_collate([data[0], data[1]])
    batch = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}  # as the loader
    module.diffusion_loss(batch).backward()  # the first step's one-time work (the scheduler's table moves)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        module.diffusion_loss(batch).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_loader_workers_default_to_auto_and_bad_counts_name_the_key(tiny_models, tiny_cityscapes, tmp_path,
                                                                     monkeypatch):
    """`stages.train_controlnet.num_workers: auto` (the default) is the evaluate and RbA stages' rule, the usable
    cores but one, at most 8: the workers read, crop and draw each example, so the training process only queues
    GPU work (docs/benchmarks.md#host-draws)."""
    import os

    from omegaconf import OmegaConf

    from synthrel.run import CONF_DIR
    from synthrel.schemas import check_settings

    assert OmegaConf.load(CONF_DIR / "stage" / "train_controlnet.yaml").num_workers == "auto"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert make_job(tiny_models, tiny_cityscapes, tmp_path, num_workers="auto").num_workers == 8
    assert make_job(tiny_models, tiny_cityscapes, tmp_path, num_workers=3).num_workers == 3
    with pytest.raises(ConfigError, match=r"`stages.train_controlnet.num_workers` must be an integer >= 0 or auto"):
        make_job(tiny_models, tiny_cityscapes, tmp_path, num_workers=-1)
    problems = check_settings(TrainControlNetJob, {"num_workers": "many"}, "stages.train_controlnet")
    assert any("stages.train_controlnet.num_workers" in p and "auto" in p for p in problems), problems
