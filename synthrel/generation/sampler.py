"""Fast ControlNet sampling that gives the images of diffusers' Stable Diffusion (XL) ControlNet pipelines.

`ControlNetSampler` runs exactly the sampler of `StableDiffusionControlNetPipeline` /
`StableDiffusionXLControlNetPipeline` as the generate stage uses it: DDIM with eta 0, classifier-free guidance
whose unconditional branch is the empty prompt *with* the control image (guess_mode off),
`controlnet_conditioning_scale`, and for SDXL the pooled embeddings and add_time_ids
(original = target = image size, crop (0, 0)). It is built from the pipeline's own modules and differs only in
how the work is scheduled:

- the guided pair (unconditional, conditional) goes through ControlNet + UNet as one batch of 2B, the
  negative ("" or SDXL's zeros) embedding is encoded once and cached;
- the ControlNet's conditioning embedding of the control image (eight convolutions at up to full image size),
  the same at every step and for both halves of the pair, runs once per call on B images instead of at every
  step on 2B;
- guidance and DDIM run in fp32 on device-resident tables (timesteps, sqrt(alpha) products), and the step
  index lives on the device, so a step needs no host value: one step can be captured as a CUDA graph and
  replayed `num_inference_steps` times (no per-kernel launch cost, no host syncs);
- ControlNet + UNet can be compiled together (torch.compile) so that inductor fuses the norms, activations
  and the residual additions between the two networks;
- channels_last weights and activations (convolutions skip layout transposes), cuDNN autotuning, optional
  fused QKV;
- the VAE decodes the whole batch and the uint8 conversion runs on the device, so only uint8 crosses to host.

Initial latents match diffusers' `randn_tensor` with a list of CPU generators: item i is drawn alone as
`torch.randn((1, 4, h, w), generator=generators[i], dtype=noise_dtype)` on the CPU, so an image does not depend
on the other items of its batch; the eager pipeline given the same generator list draws the same latents.
On the CPU (fp32, no compile, no graphs) the output equals the eager pipeline's to rounding (tests).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from synthrel.runtime import cudnn_benchmark

log = logging.getLogger(__name__)

#: Compile modes of `torch.compile` that leave CUDA graphs to this module (it captures its own).
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
#: Inductor options for ControlNet + UNet: 1x1 convolutions (SD1.5's attention projections, the ControlNet's
#: zero convolutions) as matrix products, so inductor fuses their bias and residual epilogues (diffusers'
#: recommendation for compiled SD).
DEFAULT_COMPILE_OPTIONS = {"conv_1x1_as_mm": True}


def _without_control_embedding(controlnet):
    """A view of `controlnet` (the same submodules and weights) whose forward takes the control image already
    embedded, so the sampler can embed it once per call; the ControlNet itself is left unchanged."""
    view = copy.copy(controlnet)
    view._modules = dict(controlnet._modules)  # copy.copy shares the dict: replace the entry in the view only
    view.controlnet_cond_embedding = torch.nn.Identity()
    return view


@dataclass
class _StepBuffers:
    """Device tensors one denoising step reads and writes; a CUDA graph is captured on these addresses."""

    latents: torch.Tensor  # (B, 4, h, w) fp32, updated in place
    embeds: torch.Tensor  # (2B, L, D): [negative; positive]
    control: torch.Tensor  # (2B, C, h, w): the control image's embedding (embed_control_once) or the image, twice
    text_embeds: torch.Tensor | None  # SDXL pooled (2B, P)
    time_ids: torch.Tensor | None  # SDXL (2B, 6)
    index: torch.Tensor  # (1,) int64 step counter, advanced by the step itself
    timesteps: torch.Tensor  # (max_steps,) int64
    coefficients: torch.Tensor  # (4, max_steps) fp32: sqrt(a_t), sqrt(1-a_t), sqrt(a_prev), sqrt(1-a_prev)
    guidance: torch.Tensor  # () fp32
    control_scale: torch.Tensor  # () fp32


class ControlNetSampler:
    """Batched DDIM + CFG ControlNet sampling from a diffusers ControlNet pipeline's modules.

    Build it with `from_pipeline`; call it with prompts (or embeddings), control images in [0, 1] and one seed or
    generator per image; it returns uint8 images (B, H, W, 3) on the CPU.
    """

    def __init__(self, *, unet, controlnet, vae, scheduler, tokenizers, text_encoders, sdxl: bool,
                 device: torch.device, dtype: torch.dtype, vae_dtype: torch.dtype, noise_dtype: torch.dtype,
                 negative_embeds: torch.Tensor, negative_pooled: torch.Tensor | None, compile: str | None,
                 compile_dynamic: bool | None, cuda_graphs: bool, channels_last: bool,
                 compile_backend: str = "inductor", compile_vae: bool = False,
                 compile_options: dict | None = None, cudnn_benchmark: bool | None = None,
                 embed_control_once: bool = True):
        from diffusers import DDIMScheduler

        if not isinstance(scheduler, DDIMScheduler):
            raise ValueError(f"ControlNetSampler implements DDIM only; the pipeline has {type(scheduler).__name__}")
        cfg = scheduler.config
        if cfg.prediction_type != "epsilon" or cfg.clip_sample or cfg.thresholding:
            raise ValueError("ControlNetSampler supports DDIM with prediction_type='epsilon', clip_sample=False and "
                             f"thresholding=False; got {cfg.prediction_type!r}, {cfg.clip_sample}, {cfg.thresholding}")
        if compile not in (None, *COMPILE_MODES):
            raise ValueError(f"compile must be None or one of {COMPILE_MODES}, got {compile!r}")
        if cuda_graphs and device.type != "cuda":
            raise ValueError("cuda_graphs=True needs a CUDA device")
        self.unet, self.controlnet, self.vae = unet, controlnet, vae
        self.control_channels = controlnet.config.conditioning_channels
        self.embed_control_once = embed_control_once
        if embed_control_once:
            self._control_embedding = controlnet.controlnet_cond_embedding
            self.controlnet = _without_control_embedding(controlnet)
        self.scheduler = DDIMScheduler.from_config(cfg)  # own copy: set_timesteps must not touch the pipeline's
        self.tokenizers, self.text_encoders = tokenizers, text_encoders
        self.sdxl, self.device, self.dtype = sdxl, device, dtype
        self.vae_dtype, self.noise_dtype = vae_dtype, noise_dtype
        self.negative_embeds = negative_embeds.to(device, dtype)
        self.negative_pooled = None if negative_pooled is None else negative_pooled.to(device, dtype)
        self.cuda_graphs, self.channels_last = cuda_graphs, channels_last
        self.compile_mode, self.compile_dynamic = compile, compile_dynamic
        self.cudnn_benchmark = device.type == "cuda" if cudnn_benchmark is None else cudnn_benchmark
        self.compile_options = {**DEFAULT_COMPILE_OPTIONS, **(compile_options or {})} if compile else {}
        self._predict = self._predict_noise
        self._mark_batch_dynamic = bool(compile) and compile_dynamic is True
        if compile:
            # dynamic=True would make every size symbolic; only the batch is marked (in _step) instead.
            # torch.compile takes a mode or options, not both: the mode's options are merged in
            from torch._inductor import list_mode_options

            options = {**list_mode_options(compile), **self.compile_options} if compile_backend == "inductor" else None
            self._predict = torch.compile(self._predict_noise, options=options,
                                          dynamic=False if compile_dynamic is False else None,
                                          backend=compile_backend)
        self.compile_vae = compile_vae
        if compile_vae:  # in place: the decoder's state_dict keys stay diffusers'
            self.vae.decoder.compile(backend=compile_backend)
        self._graphs: dict[tuple, tuple[_StepBuffers, torch.cuda.CUDAGraph | None]] = {}
        #: seconds spent in first calls per shape (compile, warm-up, graph capture), for benchmarks
        self.warmup_seconds: dict[tuple, float] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pipeline(cls, pipe, *, dtype: torch.dtype | None = None, device=None, compile: str | bool | None = None,
                      compile_dynamic: bool | None = None, cuda_graphs: bool = False,
                      channels_last: bool | None = None, fuse_qkv: bool = False, vae_dtype: torch.dtype | None = None,
                      noise_dtype: torch.dtype | None = None, negative_prompt_embeds: torch.Tensor | None = None,
                      negative_pooled_prompt_embeds: torch.Tensor | None = None, inplace: bool = False,
                      compile_backend: str = "inductor", compile_vae: bool | None = None,
                      compile_options: dict | None = None, cudnn_benchmark: bool | None = None,
                      embed_control_once: bool = True):
        """A sampler from a `StableDiffusion(XL)ControlNetPipeline`.

        dtype: compute dtype of ControlNet + UNet (default: the UNet's). vae_dtype: default `dtype`, except fp32
        for SDXL when `dtype` is fp16 and the VAE config says `force_upcast` (what the SDXL pipeline does).
        noise_dtype: dtype the initial noise is drawn in (default `dtype`, as the pipeline draws in its text
        encoder's dtype). compile: True/"default" or "max-autotune-no-cudagraphs" compiles ControlNet + UNet as one
        function, with inductor's `compile_options` (default `DEFAULT_COMPILE_OPTIONS`); compile_dynamic: True
        marks the batch dimension dynamic (one compile for all batch sizes), False compiles per batch size, None
        is torch's automatic choice. cuda_graphs: capture one denoising step per batch shape and replay it.
        channels_last, cudnn_benchmark (cuDNN autotuning inside the sampler's calls only): default on for CUDA.
        compile_vae: also compile the VAE decoder (default mode, outside the step graphs; default: when `compile`
        is set; eager, its channels_last GroupNorms copy layouts: compiling it saves 5 % of an SD1.5 batch).
        embed_control_once: the control image's embedding once per call instead of at every step (same operations).
        negative_*: the unconditional embeddings (default: SDXL's zeros when
        `force_zeros_for_empty_prompt`, else the text encoder(s) on ""). inplace: convert the pipeline's modules
        instead of copies (saves memory, but changes the pipeline).
        """
        from diffusers import ControlNetModel

        if not isinstance(pipe.controlnet, ControlNetModel):
            raise ValueError(f"one ControlNetModel expected, got {type(pipe.controlnet).__name__}")
        device = torch.device(device) if device is not None else pipe.unet.device
        dtype = dtype or pipe.unet.dtype
        channels_last = device.type == "cuda" if channels_last is None else channels_last
        compile = "default" if compile is True else (compile or None)
        compile_vae = compile is not None if compile_vae is None else compile_vae
        sdxl = hasattr(pipe, "text_encoder_2")
        if vae_dtype is None:  # only the SDXL pipelines honour force_upcast; SD1.5 decodes in the UNet's dtype
            vae_dtype = torch.float32 if sdxl and dtype == torch.float16 and pipe.vae.config.force_upcast else dtype
        fmt = torch.channels_last if channels_last else torch.preserve_format

        def prepare(module, module_dtype):
            module = module if inplace else copy.deepcopy(module)
            return module.to(device=device, dtype=module_dtype, memory_format=fmt).eval().requires_grad_(False)

        unet, controlnet = prepare(pipe.unet, dtype), prepare(pipe.controlnet, dtype)
        vae = prepare(pipe.vae, vae_dtype)
        if fuse_qkv:
            unet.fuse_qkv_projections()
            controlnet.fuse_qkv_projections()
        if sdxl:
            pairs = [(pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)]
        else:
            pairs = [(pipe.tokenizer, pipe.text_encoder)]
        pairs = [(t, e) for t, e in pairs if t is not None and e is not None]
        sampler = cls(
            unet=unet, controlnet=controlnet, vae=vae, scheduler=pipe.scheduler,
            tokenizers=[t for t, _ in pairs], text_encoders=[e for _, e in pairs], sdxl=sdxl, device=device,
            dtype=dtype, vae_dtype=vae_dtype, noise_dtype=noise_dtype or dtype,
            negative_embeds=torch.empty(0), negative_pooled=None, compile=compile, compile_dynamic=compile_dynamic,
            cuda_graphs=cuda_graphs, channels_last=channels_last, compile_backend=compile_backend,
            compile_vae=compile_vae, compile_options=compile_options, cudnn_benchmark=cudnn_benchmark,
            embed_control_once=embed_control_once,
        )
        if negative_prompt_embeds is None:
            if sdxl and pipe.config.force_zeros_for_empty_prompt:  # zeros shaped like "" encoded
                length = pipe.tokenizer_2.model_max_length if pipe.tokenizer_2 is not None else 77
                config = pipe.unet.config
                pooled_dim = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
                negative_prompt_embeds = torch.zeros(1, length, config.cross_attention_dim)
                negative_pooled_prompt_embeds = torch.zeros(1, pooled_dim)
            else:
                negative_prompt_embeds, negative_pooled_prompt_embeds = sampler.encode([""])
        if sdxl and negative_pooled_prompt_embeds is None:
            raise ValueError("SDXL needs negative_pooled_prompt_embeds together with negative_prompt_embeds")
        sampler.negative_embeds = negative_prompt_embeds[:1].to(device, dtype)
        if sdxl:
            sampler.negative_pooled = negative_pooled_prompt_embeds[:1].to(device, dtype)
        return sampler

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Prompt embeddings (and SDXL pooled embeddings) as the pipelines' `encode_prompt` (no clip_skip/LoRA).

        SD1.5: the text encoder's last hidden state. SDXL: both encoders' penultimate hidden states
        concatenated, pooled from the projection encoder.
        """
        if not self.text_encoders:
            raise ValueError("this pipeline has no tokenizer/text encoder: pass prompt embeddings instead of prompts")
        hidden, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.text_encoders, strict=True):
            ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids.to(encoder.device)
            if not self.sdxl:
                return encoder(ids)[0].to(self.device, self.dtype), None
            out = encoder(ids, output_hidden_states=True)
            if pooled is None and out[0].ndim == 2:
                pooled = out[0]
            hidden.append(out.hidden_states[-2])
        return torch.cat(hidden, dim=-1).to(self.device, self.dtype), pooled.to(self.device, self.dtype)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(self, prompts, control_images: torch.Tensor, seeds: Sequence[int | torch.Generator], *,
                 pooled_prompt_embeds: torch.Tensor | None = None, num_inference_steps: int = 25,
                 guidance_scale: float = 7.5, controlnet_conditioning_scale: float = 1.0,
                 eta: float = 0.0) -> torch.Tensor:
        """uint8 images (B, H, W, 3) on the CPU.

        prompts: B strings, or prompt embeddings (B, L, D) (SDXL: with `pooled_prompt_embeds` (B, P)).
        control_images: (B, C, H, W) float in [0, 1] (C: the ControlNet's conditioning channels), H and W
        multiples of 8. seeds: B ints (a CPU `torch.Generator` is seeded with each) or B CPU generators, one per
        image.
        """
        if eta != 0:
            raise ValueError(f"ControlNetSampler implements DDIM with eta=0 only, got eta={eta}")
        if guidance_scale <= 1:
            raise ValueError(f"classifier-free guidance needs guidance_scale > 1, got {guidance_scale}")
        batch, _, height, width = control_images.shape
        if len(seeds) != batch:
            raise ValueError(f"{len(seeds)} seeds for {batch} control images")
        if height % 8 or width % 8:
            raise ValueError(f"control images must be multiples of 8 in size, got {height}x{width}")
        if isinstance(prompts, torch.Tensor):
            embeds, pooled = prompts.to(self.device, self.dtype), pooled_prompt_embeds
            if self.sdxl and pooled is None:
                raise ValueError("SDXL prompt embeddings need pooled_prompt_embeds")
        else:
            if len(prompts) != batch:
                raise ValueError(f"{len(prompts)} prompts for {batch} control images")
            embeds, pooled = self.encode(prompts)

        noise = self._initial_noise(seeds, (4, height // 8, width // 8))
        with cudnn_benchmark(self.cudnn_benchmark):
            return self._sample(noise, embeds, pooled, control_images, num_inference_steps, guidance_scale,
                                controlnet_conditioning_scale)

    def _sample(self, noise, embeds, pooled, control_images, num_steps, guidance, control_scale) -> torch.Tensor:
        """Fill the batch's static buffers, run the steps (captured on the first call of a shape), decode."""
        batch, _, height, width = control_images.shape
        bufs, graph = self._buffers(batch, height, width, embeds.shape[1:],
                                    None if pooled is None else pooled.shape[1:])
        self._fill(bufs, noise, embeds, pooled, control_images, num_steps, guidance, control_scale)
        key = (batch, height, width)
        start = time.perf_counter() if key not in self.warmup_seconds else None
        if self.cuda_graphs and graph is None:
            graph = self._capture(bufs)
            self._graphs[key] = (bufs, graph)
            # warm-up and capture ran steps on these buffers
            self._fill(bufs, noise, embeds, pooled, control_images, num_steps, guidance, control_scale)
        for _ in range(num_steps):
            if graph is not None:
                graph.replay()
            else:
                self._step(bufs)
        images = self._decode(bufs.latents)
        if start is not None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.warmup_seconds[key] = time.perf_counter() - start
        return images

    def release_graphs(self) -> None:
        """Free the captured graphs and their memory pools (e.g. before another batch size)."""
        self._graphs.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _initial_noise(self, seeds, shape) -> torch.Tensor:
        generators = [s if isinstance(s, torch.Generator) else torch.Generator().manual_seed(int(s)) for s in seeds]
        if any(g.device.type != "cpu" for g in generators):
            raise ValueError("seeds must be ints or CPU torch.Generators (the noise is drawn on the CPU)")
        noise = [torch.randn((1, *shape), generator=g, dtype=self.noise_dtype) for g in generators]
        return torch.cat(noise).to(torch.float32)

    def _buffers(self, batch, height, width, embed_shape, pooled_shape) -> tuple[_StepBuffers, object]:
        key = (batch, height, width)
        cached = self._graphs.get(key)
        if cached is not None and cached[0].embeds.shape[1:] == embed_shape:
            return cached
        dev, dt = self.device, self.dtype
        max_steps = self.scheduler.config.num_train_timesteps
        bufs = _StepBuffers(
            latents=torch.empty(batch, 4, height // 8, width // 8, device=dev, dtype=torch.float32),
            embeds=torch.empty(2 * batch, *embed_shape, device=dev, dtype=dt),
            control=torch.empty(2 * batch, *self._control_shape(height, width), device=dev, dtype=dt),
            text_embeds=None if pooled_shape is None else torch.empty(2 * batch, *pooled_shape, device=dev, dtype=dt),
            time_ids=torch.empty(2 * batch, 6, device=dev, dtype=dt) if self.sdxl else None,
            index=torch.zeros(1, device=dev, dtype=torch.int64),
            timesteps=torch.zeros(max_steps, device=dev, dtype=torch.int64),
            coefficients=torch.zeros(4, max_steps, device=dev, dtype=torch.float32),
            guidance=torch.zeros((), device=dev, dtype=torch.float32),
            control_scale=torch.zeros((), device=dev, dtype=torch.float32),
        )
        if self.channels_last:
            bufs.control = bufs.control.contiguous(memory_format=torch.channels_last)
        if not self.cuda_graphs:
            self._graphs.clear()  # eager: keep only the latest buffers
        self._graphs[key] = (bufs, None)
        return bufs, None

    def _ddim_tables(self, num_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps and the four DDIM (eta 0) coefficients per step, computed as DDIMScheduler.step does."""
        sched = self.scheduler
        sched.set_timesteps(num_steps)
        stride = sched.config.num_train_timesteps // sched.num_inference_steps
        rows = []
        for t in sched.timesteps.tolist():
            alpha = sched.alphas_cumprod[t]
            alpha_prev = sched.alphas_cumprod[t - stride] if t - stride >= 0 else sched.final_alpha_cumprod
            rows.append(torch.stack([alpha ** 0.5, (1 - alpha) ** 0.5, alpha_prev ** 0.5, (1 - alpha_prev) ** 0.5]))
        return sched.timesteps.to(torch.int64), torch.stack(rows, dim=1).to(torch.float32)

    def _fill(self, bufs: _StepBuffers, noise, embeds, pooled, control_images, num_steps, guidance, control_scale):
        """Write one batch's inputs into the static buffers (host-to-device copies only, no syncs)."""
        from diffusers.image_processor import VaeImageProcessor

        batch = noise.shape[0]
        if num_steps > bufs.timesteps.numel():
            raise ValueError(f"num_inference_steps={num_steps} exceeds the {bufs.timesteps.numel()} training steps")
        timesteps, coefficients = self._ddim_tables(num_steps)
        bufs.timesteps[:num_steps].copy_(timesteps)
        bufs.coefficients[:, :num_steps].copy_(coefficients)
        bufs.index.zero_()
        bufs.guidance.fill_(float(guidance))
        bufs.control_scale.fill_(float(control_scale))
        bufs.latents.copy_(noise)  # init_noise_sigma is 1 for DDIM
        bufs.embeds[:batch].copy_(self.negative_embeds.expand(batch, -1, -1))
        bufs.embeds[batch:].copy_(embeds)
        # the pipelines' control preprocessing: [0, 1] tensors pass through (no resize at the same size)
        height, width = control_images.shape[-2:]
        control = VaeImageProcessor(do_convert_rgb=True, do_normalize=False).preprocess(
            control_images, height=height, width=width).to(torch.float32)
        if self.embed_control_once:
            control = self._embed_control(control)
        bufs.control[:batch].copy_(control)
        bufs.control[batch:].copy_(control)
        if self.sdxl:
            bufs.text_embeds[:batch].copy_(self.negative_pooled.expand(batch, -1))
            bufs.text_embeds[batch:].copy_(pooled)
            # add_time_ids: original size = target size = the image size, crop top-left (0, 0)
            bufs.time_ids.copy_(torch.tensor([height, width, 0, 0, height, width], dtype=bufs.time_ids.dtype)
                                .expand(2 * batch, -1))

    def _control_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Per-item shape of the control buffer: the embedding, which the ControlNet adds to its latent-sized
        first features, or the control image itself."""
        if self.embed_control_once:
            return self.controlnet.config.block_out_channels[0], height // 8, width // 8
        return self.control_channels, height, width

    def _embed_control(self, control: torch.Tensor) -> torch.Tensor:
        """The ControlNet's conditioning embedding of the control images, as its forward computes it per step."""
        bgr = self.controlnet.config.controlnet_conditioning_channel_order == "bgr"
        control = control.to(self.device, self.dtype)
        if self.channels_last:
            control = control.contiguous(memory_format=torch.channels_last)
        embedding = self._control_embedding(control.flip(1) if bgr else control)
        return embedding.flip(1) if bgr else embedding  # the forward flips its input for "bgr": undone here

    def _predict_noise(self, sample, timestep, embeds, control, control_scale, text_embeds, time_ids):
        """ControlNet + UNet on the guided pair (batch 2B): one function, so torch.compile fuses across both."""
        added = None if text_embeds is None else {"text_embeds": text_embeds, "time_ids": time_ids}
        down, mid = self.controlnet(sample, timestep, encoder_hidden_states=embeds, controlnet_cond=control,
                                    conditioning_scale=control_scale, added_cond_kwargs=added, return_dict=False)
        return self.unet(sample, timestep, encoder_hidden_states=embeds, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid, added_cond_kwargs=added, return_dict=False)[0]

    def _step(self, bufs: _StepBuffers) -> None:
        """One DDIM step (eta 0) with guidance, all from device tensors: capturable as a CUDA graph."""
        latents = bufs.latents
        timestep = bufs.timesteps.index_select(0, bufs.index)
        sqrt_a, sqrt_1ma, sqrt_a_prev, sqrt_1ma_prev = bufs.coefficients.index_select(1, bufs.index)
        sample = torch.cat([latents, latents]).to(self.dtype)
        if self.channels_last:
            sample = sample.contiguous(memory_format=torch.channels_last)
        batched = [t for t in (sample, bufs.embeds, bufs.control, bufs.text_embeds, bufs.time_ids) if t is not None]
        if self._mark_batch_dynamic:
            for tensor in batched:
                torch._dynamo.mark_dynamic(tensor, 0)
        noise = self._predict(sample, timestep, bufs.embeds, bufs.control, bufs.control_scale,
                              bufs.text_embeds, bufs.time_ids).float()
        uncond, cond = noise.chunk(2)
        noise = uncond + bufs.guidance * (cond - uncond)
        original = (latents - sqrt_1ma * noise) / sqrt_a
        latents.copy_(sqrt_a_prev * original + sqrt_1ma_prev * noise)
        bufs.index.add_(1)

    def _capture(self, bufs: _StepBuffers) -> torch.cuda.CUDAGraph:
        """Warm up (compiles, selects kernels) on a side stream, then capture one step."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._step(bufs)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step(bufs)
        return graph

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE decode of the batch, then the pipelines' postprocessing to uint8 on the device."""
        config = self.vae.config
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            mean = torch.tensor(mean, device=latents.device).view(1, 4, 1, 1)
            std = torch.tensor(std, device=latents.device).view(1, 4, 1, 1)
            latents = latents * std / config.scaling_factor + mean
        else:
            latents = latents / config.scaling_factor
        latents = latents.to(self.vae_dtype)
        if self.channels_last:
            latents = latents.contiguous(memory_format=torch.channels_last)
        image = self.vae.decode(latents, return_dict=False)[0]
        image = (image * 0.5 + 0.5).clamp(0, 1)  # VaeImageProcessor.denormalize, in the VAE dtype as diffusers
        image = (image.float() * 255).round().to(torch.uint8).permute(0, 2, 3, 1)  # numpy_to_pil's rounding
        return image.cpu()

    def describe(self) -> dict:
        """Settings and attention processors, for logs and benchmark reports."""
        processors = sorted({type(p).__name__ for p in self.unet.attn_processors.values()})
        return dict(sdxl=self.sdxl, dtype=str(self.dtype).removeprefix("torch."),
                    vae_dtype=str(self.vae_dtype).removeprefix("torch."), compile=self.compile_mode,
                    compile_dynamic=self.compile_dynamic, compile_options=self.compile_options,
                    compile_vae=self.compile_vae, cuda_graphs=self.cuda_graphs, channels_last=self.channels_last,
                    cudnn_benchmark=self.cudnn_benchmark, embed_control_once=self.embed_control_once,
                    attention=processors)
