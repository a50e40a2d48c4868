"""ControlNet fine-tuning as a LightningModule, following diffusers' examples/controlnet/train_controlnet.py
(SD1.5) and train_controlnet_sdxl.py (SDXL): frozen UNet, VAE and text encoder(s); a ControlNet initialised
from the UNet encoder (`ControlNetModel.from_unet`); epsilon (or v) prediction MSE on noised latents with
the base model's DDPM noise schedule and uniform timesteps; AdamW over the ControlNet parameters only.

Randomness is drawn per sample from generators seeded by (seed, stream position): the VAE posterior sample,
the noise and the timestep (data.DiffusionDraws, in the loader's workers). Training is then a pure function of the
seed and the data stream, which makes a resumed run identical to an uninterrupted one (Lightning checkpoints do not
carry the global RNG state).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from synthrel.controlnet.data import ControlNetTrainData, DiffusionDraws, StreamSampler
from synthrel.conventions import LABEL_ID_COLORS
from synthrel.errors import ConfigError, WeightsError
from synthrel.jobs import item_seed
from synthrel.tracking import log_step_losses

log = logging.getLogger(__name__)

#: Trainer precision -> dtype of the frozen networks (diffusers' `weight_dtype`); the ControlNet stays fp32.
FROZEN_DTYPES = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def vae_precision_choice(setting: bool | None, *, sdxl: bool, fixed_vae: bool, precision: str) -> tuple[bool, str]:
    """`vae_fp32` of train_controlnet: whether the frozen VAE encodes in float32 (outside autocast) or in the
    frozen networks' dtype. null: float32 only where it is needed, SDXL's own VAE in float16 (it overflows there);
    bfloat16 has float32's range. diffusers' train_controlnet_sdxl.py upcasts SDXL's VAE whatever the precision:
    `vae_fp32: true` is that. Returns (the choice, the reason, for the log and the stage's record)."""
    if setting is not None:
        return bool(setting), f"set to {str(bool(setting)).lower()}"
    if precision not in FROZEN_DTYPES:
        return True, f"null: float32, precision {precision}"
    if sdxl and not fixed_vae and precision == "16-mixed":
        return True, "null: float32, SDXL's VAE overflows in float16 (no backbone.vae given)"
    dtype = str(FROZEN_DTYPES[precision]).removeprefix("torch.")
    return False, (f"null: {dtype}, the frozen networks' dtype" +
                   (" (float32's range: no overflow; diffusers' SDXL script upcasts: vae_fp32=true)"
                    if sdxl and dtype == "bfloat16" else ""))


def diffusion_examples(train_data: ControlNetTrainData, base, seed: int) -> DiffusionDraws:
    """`train_data` with the step's draws for `base`'s latent (the VAE's channels at resolution / the pipeline's
    `vae_scale_factor`) and noise schedule."""
    side = train_data.resolution // base.vae_scale_factor
    return DiffusionDraws(train_data, seed, (base.vae.config.latent_channels, side, side),
                          base.scheduler.config.num_train_timesteps)


class ControlNetModule(pl.LightningModule):
    """Train a ControlNet on top of a frozen Stable Diffusion (1.5 or XL) base pipeline.

    `base` is the base text-to-image pipeline (synthrel.diffusion_loading.load_base_pipeline); its UNet,
    VAE, text encoder(s), tokenizer(s) and scheduler config are used, never trained. `controlnet` defaults
    to `ControlNetModel.from_unet(base.unet, conditioning_channels=...)`.
    """

    def __init__(
        self,
        base,
        train_data: ControlNetTrainData,
        *,
        conditioning_channels: int,
        lr: float,
        batch_size: int,
        seed: int = 0,
        controlnet=None,
        gradient_checkpointing: bool | str = False,
        vae_fp32: bool = False,
        compile: bool = False,
        channels_last: bool = False,
        num_workers: int = 0,
        sample_every_n_steps: int = 0,
        num_sample_images: int = 4,
        sample_inference_steps: int = 20,
        guidance_scale: float = 7.5,
        controlnet_conditioning_scale: float = 1.0,
        sample_dir: str | Path | None = None,
    ):
        super().__init__()
        from diffusers import ControlNetModel, DDPMScheduler

        components = dict(base.components)
        self.unet = components["unet"]
        self.vae = components["vae"]
        self.text_encoder = components["text_encoder"]
        self.text_encoder_2 = components.get("text_encoder_2")
        self.tokenizers = [components["tokenizer"]] + ([components["tokenizer_2"]] if self.is_sdxl else [])
        self.scheduler_config = dict(components["scheduler"].config)
        self.noise_scheduler = DDPMScheduler.from_config(self.scheduler_config)
        self._base_components = components
        for frozen in self.frozen_modules():
            frozen.requires_grad_(False)
            frozen.eval()
        self.controlnet = controlnet if controlnet is not None else ControlNetModel.from_unet(
            self.unet, conditioning_channels=conditioning_channels
        )
        if self.controlnet.dtype != torch.float32:
            raise WeightsError(f"the ControlNet to train is {self.controlnet.dtype}; trainable weights must be fp32 "
                               "(mixed precision comes from the trainer's `precision`)")
        self.controlnet.train()
        if gradient_checkpointing not in (True, False, "controlnet"):
            raise ConfigError(f"gradient_checkpointing must be true, false or controlnet, got {gradient_checkpointing!r}")
        if gradient_checkpointing:
            self.controlnet.enable_gradient_checkpointing()
        if gradient_checkpointing is True:
            # The UNet too: gradients flow through it into the ControlNet residuals (as the diffusers examples).
            # `controlnet` leaves it out: its decoder would recompute its forward for an input-only backward.
            self.unet.enable_gradient_checkpointing()
        self.train_data = train_data
        self.lr = float(lr)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.examples = diffusion_examples(train_data, base, self.seed)
        self.vae_fp32 = bool(vae_fp32)
        self.compile_networks = bool(compile)
        self.channels_last = bool(channels_last)
        self.num_workers = int(num_workers)
        self.sample_every_n_steps = int(sample_every_n_steps)
        self.num_sample_images = int(num_sample_images)
        self.sample_inference_steps = int(sample_inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.controlnet_conditioning_scale = float(controlnet_conditioning_scale)
        self.sample_dir = Path(sample_dir) if sample_dir else None
        self._last_sampled_step = -1
        self.strict_loading = False  # checkpoints hold only the ControlNet (see on_save_checkpoint)

    @property
    def is_sdxl(self) -> bool:
        return self.text_encoder_2 is not None

    def frozen_modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.unet, self.vae, self.text_encoder, self.text_encoder_2) if m is not None]

    def train(self, mode: bool = True):
        """Lightning switches the whole module to train mode; the frozen networks stay in eval mode."""
        super().train(mode)
        for frozen in self.frozen_modules():
            frozen.eval()
        return self

    # ----------------------------------------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        self.prepare(str(self.trainer.precision))

    def prepare(self, precision: str) -> None:
        """What runs before the first step: the frozen networks cast to `precision`'s dtype, the memory format, the
        compile. Apart from `setup` so that benchmarks/train_levers.py runs the same step without a Trainer."""
        weight_dtype = FROZEN_DTYPES.get(precision, torch.float32)
        self.unet.to(dtype=weight_dtype)
        self.text_encoder.to(dtype=weight_dtype)
        if self.text_encoder_2 is not None:
            self.text_encoder_2.to(dtype=weight_dtype)
        self.vae.to(dtype=torch.float32 if self.vae_fp32 else weight_dtype)
        if self.channels_last:  # NHWC convolutions (the same math; cuDNN picks other kernels)
            for net in (self.unet, self.controlnet, self.vae):
                net.to(memory_format=torch.channels_last)
        if self.compile_networks:
            # In place (nn.Module.compile): state_dict keys, checkpoints and save_pretrained stay unchanged.
            self.unet.compile()
            self.controlnet.compile()
            # The frozen encoder is a fifth of SDXL's training FLOPs at 1024² (docs/benchmarks.md#training-levers).
            self.vae.encoder.compile()

    def configure_optimizers(self):
        # diffusers' defaults: betas (0.9, 0.999), weight decay 1e-2, eps 1e-8 (also torch's AdamW defaults).
        return torch.optim.AdamW(self.controlnet.parameters(), lr=self.lr, betas=(0.9, 0.999),
                                 weight_decay=1e-2, eps=1e-8)

    def train_dataloader(self) -> DataLoader:
        """This rank's share of the seeded stream, from the first draw not yet used by an optimizer step."""
        start = self.trainer.global_step * self.trainer.accumulate_grad_batches * self.batch_size
        sampler = StreamSampler(start, rank=self.trainer.global_rank, world_size=self.trainer.world_size)
        if start:
            log.info("resuming the data stream at draw %d (optimizer step %d)", start, self.trainer.global_step)
        # Pinned host memory makes the ~130 MB of every SDXL micro-batch an asynchronous copy (to_device), so the
        # host does not stall on it while the GPU trains.
        return DataLoader(self.examples, batch_size=self.batch_size, sampler=sampler,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=self.device.type == "cuda")

    def effective_batch_size(self) -> int:
        return self.batch_size * self.trainer.accumulate_grad_batches * self.trainer.world_size

    def on_fit_start(self) -> None:
        effective = self.effective_batch_size()
        max_steps = self.trainer.max_steps
        readout = {
            "batch_size": self.batch_size,
            "accumulate_grad_batches": self.trainer.accumulate_grad_batches,
            "devices": self.trainer.world_size,
            "effective_batch_size": effective,
            "optimizer_steps": max_steps,
            "start_step": self.trainer.global_step,
            "epochs": round(max_steps * effective / len(self.train_data), 3),
        }
        log.info(
            "ControlNet training: effective batch = batch_size %d x accumulate_grad_batches %d x devices %d = %d; "
            "%d optimizer steps (starting at %d) = %.2f epochs of %d images",
            self.batch_size, readout["accumulate_grad_batches"], readout["devices"], effective, max_steps,
            readout["start_step"], readout["epochs"], len(self.train_data),
        )
        for logger in self.loggers:
            logger.log_hyperparams(readout)

    # ------------------------------------------------------------------------------------------- training
    def encode_prompts(self, captions: list[str]) -> tuple[torch.Tensor, dict | None]:
        """Text conditioning as the diffusers examples: last hidden state (SD1.5); for SDXL the penultimate
        hidden states of both encoders concatenated, the second encoder's pooled projection and the time ids."""
        with torch.no_grad():
            if not self.is_sdxl:
                ids = self._tokenize(self.tokenizers[0], captions)
                return self.text_encoder(ids, return_dict=False)[0], None
            hidden = []
            for tokenizer, encoder in zip(self.tokenizers, (self.text_encoder, self.text_encoder_2), strict=True):
                out = encoder(self._tokenize(tokenizer, captions), output_hidden_states=True)
                pooled = out[0]
                hidden.append(out.hidden_states[-2])
            prompt_embeds = torch.cat(hidden, dim=-1)
            size = self.train_data.resolution
            # original size, crop top-left, target size: fixed, as train_controlnet_sdxl.py and the pipeline default
            time_ids = self.to_device(torch.tensor([[size, size, 0, 0, size, size]], dtype=prompt_embeds.dtype))
            added = {"text_embeds": pooled, "time_ids": time_ids.repeat(len(captions), 1)}
            return prompt_embeds, added

    def _tokenize(self, tokenizer, captions: list[str]) -> torch.Tensor:
        return self.to_device(tokenizer(list(captions), max_length=tokenizer.model_max_length, padding="max_length",
                                        truncation=True, return_tensors="pt").input_ids)

    def transfer_batch_to_device(self, batch: dict, device: torch.device, dataloader_idx: int) -> dict:
        """The batch stays on the host: diffusion_loss moves only what the networks read (to_device, from the
        loader's pinned memory). Lightning would move every tensor of the examples, the label maps, positions and
        crop boxes the step never reads included."""
        return batch

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` on the module's device without waiting for the GPU: CUDA synchronises the stream for a copy
        from pageable host memory, which would leave the GPU idle while the host launches the next kernels; a
        copy from pinned memory is queued like a kernel."""
        if self.device.type != "cuda" or tensor.device == self.device:
            return tensor.to(self.device)
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def diffusion_loss(self, batch: dict) -> torch.Tensor:
        """The step's loss on a collated batch of `examples` (their draws included), kept on the host."""
        with torch.no_grad():
            pixels = self.to_device(batch["pixel_values"]).to(self.vae.dtype)
            # A float32 VAE must also leave the trainer's autocast, which would run its convolutions in 16 bits.
            with torch.autocast(self.device.type, enabled=False) if self.vae_fp32 else nullcontext():
                posterior = self.vae.encode(pixels).latent_dist  # its sample(), with the example's draws
                draw = self.to_device(batch["posterior_draw"]).to(posterior.parameters.dtype)
                latents = posterior.mean + posterior.std * draw
            latents = (latents * self.vae.config.scaling_factor).to(self.unet.dtype)
            prompt_embeds, added = self.encode_prompts(batch["caption"])
        noise = self.to_device(batch["noise"]).to(latents.dtype)
        timesteps = self.to_device(batch["timestep"])
        noisy_latents = self.noise_scheduler.add_noise(latents, noise, timesteps)
        down_residuals, mid_residual = self.controlnet(
            noisy_latents,
            timesteps,
            encoder_hidden_states=prompt_embeds,
            added_cond_kwargs=added,
            controlnet_cond=self.to_device(batch["conditioning"]).to(self.controlnet.dtype),
            return_dict=False,
        )
        model_pred = self.unet(
            noisy_latents,
            timesteps,
            encoder_hidden_states=prompt_embeds,
            added_cond_kwargs=added,
            down_block_additional_residuals=[r.to(self.unet.dtype) for r in down_residuals],
            mid_block_additional_residual=mid_residual.to(self.unet.dtype),
            return_dict=False,
        )[0]
        prediction_type = self.noise_scheduler.config.prediction_type
        if prediction_type == "epsilon":
            target = noise
        elif prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            raise WeightsError(f"unsupported scheduler prediction_type {prediction_type!r} in the base model")
        return F.mse_loss(model_pred.float(), target.float(), reduction="mean")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.diffusion_loss(batch)
        log_step_losses(self, {"train/loss": loss}, batch_idx, len(batch["position"]))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        step = self.trainer.global_step
        due = self.sample_every_n_steps > 0 and step > 0 and step % self.sample_every_n_steps == 0
        if due and step != self._last_sampled_step:
            self._last_sampled_step = step
            if self.trainer.is_global_zero:
                self.log_samples(step)

    # ------------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep only the ControlNet: the frozen base is reloaded from `backbone.pretrained`."""
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("controlnet.")}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        expected = {f"controlnet.{k}" for k in self.controlnet.state_dict()}
        missing = sorted(expected - set(checkpoint["state_dict"]))
        if missing:
            raise WeightsError(f"checkpoint lacks {len(missing)} ControlNet weights (first: {missing[0]}); it was "
                               "written for another backbone or conditioning; delete it or set `resume: never`")

    # ------------------------------------------------------------------------------------------- samples
    def sample_pipeline(self):
        """A ControlNet pipeline over the current weights, with a DDIM scheduler from the base's config."""
        from diffusers import (
            DDIMScheduler,
            StableDiffusionControlNetPipeline,
            StableDiffusionXLControlNetPipeline,
        )

        components = dict(self._base_components)
        components["scheduler"] = DDIMScheduler.from_config(self.scheduler_config)
        if self.is_sdxl:
            components.pop("image_encoder", None)
            components.pop("feature_extractor", None)
            pipe = StableDiffusionXLControlNetPipeline(**components, controlnet=self.controlnet)
        else:
            pipe = StableDiffusionControlNetPipeline(**components, controlnet=self.controlnet,
                                                     requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @torch.no_grad()
    def sample_grid(self, examples: list[dict]) -> np.ndarray:
        """Rows of conditioning (label colours) | real crop | generated image, as one uint8 RGB array."""
        was_training = self.controlnet.training
        self.controlnet.eval()
        try:
            conditioning = torch.stack([e["conditioning"] for e in examples]).to(self.device)
            size = self.train_data.resolution
            context = self.trainer.precision_plugin.forward_context() if self._trainer else nullcontext()
            with context:
                generated = self.sample_pipeline()(
                    prompt=[e["caption"] for e in examples],
                    image=conditioning,
                    height=size,
                    width=size,
                    num_inference_steps=self.sample_inference_steps,
                    guidance_scale=self.guidance_scale,
                    controlnet_conditioning_scale=self.controlnet_conditioning_scale,
                    generator=torch.Generator().manual_seed(item_seed(self.seed, 0, "samples")),
                    output_type="np",
                ).images
        finally:
            self.controlnet.train(was_training)
        rows = []
        for example, image in zip(examples, generated, strict=True):
            real = ((example["pixel_values"].permute(1, 2, 0).numpy() + 1.0) * 127.5).round().clip(0, 255)
            fake = (np.asarray(image) * 255.0).round().clip(0, 255)
            rows.append(np.concatenate(
                [LABEL_ID_COLORS[example["label_ids"].numpy()], real.astype(np.uint8), fake.astype(np.uint8)], axis=1
            ))
        return np.concatenate(rows, axis=0)

    def log_samples(self, step: int) -> Path | None:
        """Log a sample grid to every logger that takes images; else save it as a PNG under `sample_dir`."""
        count = min(self.num_sample_images, len(self.train_data))
        examples = [self.train_data[p] for p in range(count)]
        grid = self.sample_grid(examples)
        caption = " | ".join(f"{e['id']}: {e['caption']}" for e in examples)
        image_loggers = [lg for lg in self.loggers if callable(getattr(lg, "log_image", None))]
        for logger in image_loggers:
            logger.log_image(key="samples", images=[grid], step=step, caption=[caption])
        if image_loggers or self.sample_dir is None:
            return None
        from synthrel.data.io import write_png

        path = self.sample_dir / f"step_{step:06d}.png"
        write_png(path, grid)
        log.info("sample grid (conditioning | real | generated) at step %d: %s", step, path)
        return path
