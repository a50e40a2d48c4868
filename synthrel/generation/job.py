"""The generate stage (S3): Cityscapes val label maps + captions -> ControlNet images "<caption>, in <domain>".

Each synthetic image keeps exactly the label map that conditioned it (same square crop, nearest-resized), so
the set comes with free ground truth. Every random draw of item j of domain d (source image, crop offset,
diffusion noise) is seeded from (seed, d, j) alone: results do not depend on the batch size, the shard, the
number of samples asked for or the order of the domains, and a re-run resumes where a killed one stopped.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from synthrel.captions.job import read_captions
from synthrel.data.build import build_dataset
from synthrel.diffusion_loading import Dtype
from synthrel.errors import ConfigError, DatasetError, WeightsError
from synthrel.generation.conditioning import (
    Encoding,
    crop_resize_image,
    crop_resize_label,
    encode_label_ids,
    square_crop_box,
)
from synthrel.jobs import (
    BackgroundWriter,
    Shard,
    Verify,
    exclusive_outputs,
    item_rng,
    item_seed,
    path_identity,
    plan_resume,
    positive_int,
    writing,
)
from synthrel.runstats import SteadyRate, check_compile

log = logging.getLogger(__name__)
KEY = "stages.generate"

Scheduler = Literal["ddim"]


@dataclass(frozen=True)
class GenerationItem:
    """One synthetic image to make: everything needed is drawn here, before any model is loaded."""

    id: str
    domain: str
    out_dir: str  # the set this item belongs to
    index: int  # j: the sample's number within its domain
    source_index: int
    source_id: str
    city: str
    crop_box: tuple[int, int, int, int]
    noise_seed: int


@dataclass
class GenerateJob:
    """Generate synthetic sets (Cityscapes layout + manifest) under `out_root`, one per domain word of `domains`
    (`num_samples` images each), or with `pooled` one set `set_name` of `samples_per_domain_all` per word."""

    source: dict  # dataset config of the label maps: ${datasets.cityscapes}
    captions: str  # JSONL of {"id", "caption"} for the source images (the caption stage's output)
    out_root: str
    set_name: str
    backbone: str
    pretrained: str
    controlnet: str | None
    trained_controlnet: str  # used when `controlnet` is null: this project's training output
    domains: list[str]
    num_samples: int
    samples_per_domain_all: int  # per domain word of a pooled set (the all-domains calibration sets)
    pooled: bool = False
    vae: str | None = None
    prompt_template: str = "<caption>, in <domain>"
    negative_prompt: str = ""
    resolution: int = 512
    num_inference_steps: int = 25
    scheduler: Scheduler = "ddim"
    eta: float = 0.0
    guidance_scale: float = 8.0
    controlnet_conditioning_scale: float = 1.0
    conditioning: Encoding = "label_id"
    dtype: Dtype = "fp16"
    batch_size: int = 8  # the benchmarks' batch; SDXL peaks at 59 GB eager (docs/benchmarks.md): lower it on smaller cards
    # fast: synthrel's ControlNetSampler (same DDIM sampler, batched guided pair, CUDA graphs, optional
    # torch.compile; docs/benchmarks.md); diffusers: the plain pipeline call
    sampler: Literal["fast", "diffusers"] = "fast"
    # torch.compile of UNet + ControlNet + VAE decoder: true | false | auto (synthrel.runstats.compile_choice: on
    # CUDA when this shard's images to make save more than the measured compile time)
    compile: bool | Literal["auto"] = "auto"
    write_original: bool = True
    seed: int = 0
    shard: str = "0/1"
    force: bool = False
    verify: Verify = "hash"  # what a re-run checks of the items it skips
    device: str = "auto"
    _shard: Shard = field(init=False, repr=False)

    def __post_init__(self):
        self._shard = Shard.parse(self.shard)
        for key in ("num_samples", "samples_per_domain_all", "resolution", "num_inference_steps", "batch_size"):
            positive_int(getattr(self, key), f"{KEY}.{key}")
        check_compile(self.compile, KEY)
        if self.resolution % 8:
            raise ConfigError(f"`backbone.resolution` must be a multiple of 8 (the VAE factor), got {self.resolution}")
        if not self.domains or not all(isinstance(d, str) and d.strip() for d in self.domains):
            raise ConfigError(f"`domain.domains` must be a non-empty list of words, got {self.domains!r}")
        from synthrel.data.synthetic import check_folder_name, check_unique_keys

        check_unique_keys(self.domains, "domain", "domain.domains")
        if self.pooled:
            check_folder_name(self.set_name, "domain.name")
        else:
            for domain in self.domains:
                check_folder_name(domain, "domain.domains")
        if "<caption>" not in self.prompt_template:
            raise ConfigError(
                f"`stages.generate.prompt_template` {self.prompt_template!r} lacks the <caption> placeholder"
            )

    @property
    def samples_per_domain(self) -> int:
        return self.samples_per_domain_all if self.pooled else self.num_samples

    def set_dir(self, domain: str) -> Path:
        """The folder of `domain`'s images: <out_root>/<word>, or <out_root>/<set_name> for a pooled set."""
        return Path(self.out_root) / (self.set_name if self.pooled else domain)

    def prompt(self, caption: str, domain: str) -> str:
        return self.prompt_template.replace("<caption>", caption).replace("<domain>", domain)

    def controlnet_source(self) -> str:
        if self.controlnet:
            return str(self.controlnet)
        if Path(self.trained_controlnet, "config.json").is_file():
            return str(self.trained_controlnet)
        raise WeightsError(
            f"no ControlNet for backbone {self.backbone!r}: `backbone.controlnet` is null and this project's "
            f"training output {self.trained_controlnet} does not exist. Train one (`+stage=[train_controlnet]`) "
            "or set `backbone.controlnet` to a diffusers folder or the released .ckpt/.safetensors file."
        )

    def plan(self, dataset) -> list[GenerationItem]:
        """All items of all domains (before sharding), drawn from per-item seeds."""
        from synthrel.data.synthetic import slugify

        items = []
        for domain in self.domains:
            stream = f"generate/{domain}"
            for j in range(self.samples_per_domain):
                source_index = int(item_rng(self.seed, j, stream + "/source").integers(len(dataset)))
                item = dataset.items[source_index]
                height, width = dataset.check_pair_size(source_index)
                box = square_crop_box(height, width, item_rng(self.seed, j, stream + "/crop"))
                items.append(GenerationItem(
                    id=f"{slugify(domain)}_{j:05d}_{item.id}",
                    domain=domain,
                    out_dir=str(self.set_dir(domain)),
                    index=j,
                    source_index=source_index,
                    source_id=item.id,
                    city=item.meta.get("city", "synthetic"),
                    crop_box=box,
                    noise_seed=item_seed(self.seed, j, stream + "/noise"),
                ))
        return items

    def run(self) -> dict:
        dataset = build_dataset(self.source)
        if not hasattr(dataset, "load_label_ids"):
            raise DatasetError(
                f"source dataset {type(dataset).__name__} (config key `stages.generate.source`) cannot give raw "
                "Cityscapes labelIds maps; ControlNet conditioning needs a Cityscapes-layout dataset"
            )
        everything = self.plan(dataset)
        mine = [everything[k] for k in self._shard.select(len(everything))]
        sets = sorted({it.out_dir for it in mine})
        with exclusive_outputs(sets, self._shard):
            return self._generate(dataset, everything, mine, sets)

    def settings(self) -> dict:
        """The settings every item's pixels depend on (recorded in each manifest record, compared on a re-run);
        not the speed options (batch_size, sampler, compile), which change pixels by float rounding only."""
        return {"backbone": self.backbone, "pretrained": path_identity(self.pretrained),
                "controlnet": path_identity(self.controlnet_source()), "vae": path_identity(self.vae),
                "negative_prompt": self.negative_prompt, "resolution": self.resolution,
                "num_inference_steps": self.num_inference_steps, "scheduler": self.scheduler, "eta": self.eta,
                "guidance_scale": self.guidance_scale,
                "controlnet_conditioning_scale": self.controlnet_conditioning_scale,
                "conditioning": self.conditioning, "dtype": self.dtype,
                "write_original": self.write_original, "seed": self.seed}

    def item_inputs(self, it: GenerationItem, dataset, captions: dict[str, str]) -> dict:
        """An item's own inputs: its prompt (template, caption and domain text), its label map (and source image
        when the original is written), crop and noise seed."""
        source = dataset.items[it.source_index]
        return {"prompt": self.prompt(captions[it.source_id], it.domain), "label_map": path_identity(source.label),
                "source_image": path_identity(source.image) if self.write_original else None,
                "crop_box": list(it.crop_box), "noise_seed": it.noise_seed}

    def _generate(self, dataset, everything: list, mine: list, sets: list[str]) -> dict:
        from synthrel.data.synthetic import remove_items, verified_records

        captions = read_captions(self.captions)
        missing = sorted({it.source_id for it in mine} - set(captions))
        if missing:
            raise DatasetError(
                f"captions file {self.captions} has no caption for {len(missing)} source image(s), e.g. "
                f"{missing[0]!r}: re-run the caption stage on the source split or set `stages.generate.captions`"
            )
        common = self.settings()
        self._item_settings = {}
        plans = {}
        for folder in sets:  # every set is checked before anything is written or removed
            inputs = {it.id: self.item_inputs(it, dataset, captions) for it in mine if it.out_dir == folder}
            plans[folder] = plan_resume(
                "generate", f"set {folder}", verified_records(folder, inputs, self.verify, "generate"), common,
                inputs, force=self.force,
                elsewhere="`stages.generate.out_root`, or `paths.artifacts_dir`",
                planned={it.id for it in everything if it.out_dir == folder})
            self._item_settings.update({id: {**common, **own} for id, own in inputs.items()})
        for folder, plan in plans.items():
            if plan.obsolete:
                remove_items(folder, plan.obsolete)
        todo_ids = {(folder, id) for folder, plan in plans.items() for id in plan.todo}
        todo = [it for it in mine if (it.out_dir, it.id) in todo_ids]
        summary = {"out_dir": str(self.set_dir(self.domains[0])), "set_dirs": sets, "shard": str(self._shard),
                   "generated": 0, "skipped": len(mine) - len(todo),
                   "removed": sum(len(plan.obsolete) for plan in plans.values())}
        generator = _Generator(self, len(todo)) if todo else None  # a model that fails to load leaves the sets as they were
        with contextlib.ExitStack() as marks:
            for folder in sets:  # readers refuse these sets until this run has finished them (a no-op run too)
                marks.enter_context(writing(folder, self._shard))
            if not todo:
                log.info("generate %s: all %d items of shard %s exist in %s with these settings", self.backbone,
                         len(mine), self._shard, ", ".join(sets))
                return summary
            summary.update(compile=generator.compile, compile_reason=generator.compile_reason)
            self._write_all(generator, todo, dataset, captions, summary, len(mine))
        return summary

    def _write_all(self, generator, todo: list, dataset, captions, summary: dict, total: int) -> None:
        desc = f"generate {self.backbone}/{self.set_name if self.pooled else ','.join(self.domains)}"
        # PNG encoding and writing run beside the next batch's sampling
        rate = SteadyRate("image", note=f"batch {self.batch_size}, {self.resolution}px, {self.num_inference_steps} "
                                        f"steps, {self.dtype}, sampler {generator.meta['sampler']}, compile "
                                        f"{self.compile} ({'on' if generator.compile else 'off'})",
                          compiled=generator.compile)
        with tqdm(total=total, initial=summary["skipped"], desc=desc) as bar, BackgroundWriter() as writer, \
                rate.loop():
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start:start + self.batch_size]
                writer.submit(_write_items, generator.generate_or_explain(batch, dataset, captions))
                summary["generated"] += len(batch)
                bar.update(len(batch))
                rate.tick(len(batch))
        summary["steady_rates"] = {"generate": rate.result()}


def _write_items(records: list[dict]) -> None:
    from synthrel.data.synthetic import write_item

    for record in records:
        write_item(**record)


class _Generator:
    """The loaded ControlNet pipeline of a GenerateJob and the per-batch generation."""

    def __init__(self, job: GenerateJob, images: int):
        """`images`: how many this job will make (its shard's items still to do), for `compile: auto`."""
        import torch

        from synthrel.diffusion_loading import generation_dtype, load_controlnet_pipeline, weights_digest
        from synthrel.runstats import compile_choice, compile_cost
        from synthrel.runtime import resolve_device

        self.job = job
        self.device = resolve_device(job.device)
        source = job.controlnet_source()
        self.pipe = load_controlnet_pipeline(job.pretrained, source, generation_dtype(job.dtype, self.device),
                                             vae=job.vae).to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.channels = self.pipe.controlnet.config.conditioning_channels
        self.meta = {
            "backbone": job.backbone, "pretrained": str(job.pretrained), "controlnet": source,
            "controlnet_sha256": weights_digest(source), "resolution": job.resolution,
            "num_inference_steps": job.num_inference_steps, "scheduler": job.scheduler, "eta": job.eta,
            "guidance_scale": job.guidance_scale, "controlnet_conditioning_scale": job.controlnet_conditioning_scale,
            "conditioning": job.conditioning, "negative_prompt": job.negative_prompt, "job_seed": job.seed,
        }
        self.torch = torch
        self._warned: set[str] = set()
        self.sampler = None
        self.meta["sampler"] = "diffusers"
        self.compile, self.compile_reason = False, "the diffusers pipeline is not compiled"
        if job.sampler == "fast" and job.scheduler == "ddim" and job.eta == 0 and job.guidance_scale > 1 \
                and job.negative_prompt == "":
            from synthrel.generation.sampler import ControlNetSampler

            cuda = self.device.type == "cuda"
            self.compile, self.compile_reason = compile_choice(
                job.compile, key=KEY, cuda=cuda, images_per_device=images, resolution=job.resolution,
                measured=compile_cost(job.backbone, "generate"))
            if self.compile and not cuda:  # compile=true on CPU: inductor is not used there
                self.compile, self.compile_reason = False, f"{self.compile_reason}, but not on CUDA: eager"
            self.sampler = ControlNetSampler.from_pipeline(
                self.pipe, compile="default" if self.compile else None, cuda_graphs=cuda, inplace=True)
            self.meta["sampler"] = "fast"
        elif job.sampler == "fast":
            log.info("generate: the fast sampler covers DDIM, eta 0, guidance > 1 and an empty negative prompt; "
                     "using the diffusers pipeline")
        self.meta["compile"] = self.compile
        log.info("%s.compile=%s: %s", KEY, job.compile, self.compile_reason)

    def fit_prompt(self, caption: str, domain: str) -> tuple[str, str | None]:
        """The prompt of (caption, domain) within the text encoder's token limit, and the caption it holds when
        that had to be shortened (else None). Words are cut from the caption's end, never from the template or
        the domain phrase: CLIP would otherwise truncate the prompt's end, which is the shift itself."""
        job, tokenizer = self.job, self.pipe.tokenizer
        limit = tokenizer.model_max_length

        def fits(text: str) -> bool:
            return len(tokenizer(job.prompt(text, domain)).input_ids) <= limit

        if fits(caption):
            return job.prompt(caption, domain), None
        words = caption.split()
        low, high = 0, len(words)  # words[:low] fits, words[:high] does not
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if fits(" ".join(words[:mid])) else (low, mid)
        if not fits(" ".join(words[:low])):
            raise ConfigError(f"the prompt template `stages.generate.prompt_template` (domain.prompt) with domain "
                              f"{domain!r} alone has more than {limit} tokens, the text encoder's limit: "
                              f"{job.prompt('', domain)!r}; shorten it")
        short = " ".join(words[:low])
        if caption not in self._warned:
            self._warned.add(caption)
            log.warning("caption shortened from %d to %d words so that the prompt keeps its domain phrase within "
                        "%d tokens (recorded as caption_shortened in the manifest): %r", len(words), low, limit,
                        job.prompt(short, domain))
        return job.prompt(short, domain), short

    def generate_or_explain(self, batch: list[GenerationItem], dataset, captions: dict[str, str]) -> list[dict]:
        """generate(), with a GPU out of memory turned into the key to lower (the images written so far stay: a
        re-run with a smaller batch resumes after them)."""
        try:
            return self.generate(batch, dataset, captions)
        except self.torch.cuda.OutOfMemoryError as e:
            raise ConfigError(
                f"generate {self.job.backbone} ran out of GPU memory at `{KEY}.batch_size`={self.job.batch_size} "
                f"({self.job.resolution}px, compile {self.compile}): lower `{KEY}.batch_size` (SDXL needs about 59 GB "
                f"at batch 8; docs/benchmarks.md); the images written so far are kept and a re-run resumes. "
                f"CUDA said: {str(e).splitlines()[0] if str(e) else e!r}") from e

    def generate(self, batch: list[GenerationItem], dataset, captions: dict[str, str]) -> list[dict]:
        """The batch's images with their label maps and manifest records: `write_item` arguments per item."""
        from synthrel.data.io import read_image

        job, torch = self.job, self.torch
        labels, hints, prompts, originals, shortened = [], [], [], [], []
        for it in batch:
            label = crop_resize_label(dataset.load_label_ids(it.source_index), it.crop_box, job.resolution)
            labels.append(label)
            hints.append(encode_label_ids(label, job.conditioning, self.channels))
            prompt, short = self.fit_prompt(captions[it.source_id], it.domain)
            prompts.append(prompt)
            shortened.append(short)
            if job.write_original:
                image = read_image(dataset.items[it.source_index].image)
                originals.append(crop_resize_image(image, it.crop_box, job.resolution))
        hint = torch.from_numpy(np.stack(hints)).to(self.device, self.pipe.controlnet.dtype)
        if self.sampler is not None:
            images = self.sampler(prompts, hint, [it.noise_seed for it in batch],
                                  num_inference_steps=job.num_inference_steps, guidance_scale=job.guidance_scale,
                                  controlnet_conditioning_scale=job.controlnet_conditioning_scale).numpy()
        else:
            images = self._pipeline_images(batch, prompts, hint)
        records = []
        for k, it in enumerate(batch):
            meta = {**self.meta, "source_id": it.source_id, "source_index": it.source_index,
                    "crop_box": list(it.crop_box), "caption": captions[it.source_id], "prompt": prompts[k],
                    "caption_shortened": shortened[k],
                    "domain": it.domain, "index": it.index, "seed": it.noise_seed,
                    "settings": job._item_settings[it.id]}
            records.append(dict(root=it.out_dir, id=it.id, city=it.city, image=images[k], label_ids=labels[k],
                                original=originals[k] if job.write_original else None, meta=meta))
        return records

    def _pipeline_images(self, batch: list[GenerationItem], prompts: list[str], hint) -> np.ndarray:
        """The plain diffusers pipeline call (other schedulers, eta > 0, negative prompts)."""
        job, torch = self.job, self.torch
        out = self.pipe(
            prompt=prompts,
            negative_prompt=[job.negative_prompt] * len(batch),
            image=hint,
            height=job.resolution,
            width=job.resolution,
            num_inference_steps=job.num_inference_steps,
            guidance_scale=job.guidance_scale,
            controlnet_conditioning_scale=job.controlnet_conditioning_scale,
            eta=job.eta,
            generator=[torch.Generator().manual_seed(it.noise_seed) for it in batch],
            output_type="np",
        )
        return (np.clip(out.images, 0.0, 1.0) * 255).round().astype(np.uint8)
