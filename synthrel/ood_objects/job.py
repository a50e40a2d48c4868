"""The `inpaint` stage: synthetic OOD objects pasted into Cityscapes val images (supplementary A.3).

Per item: draw a source image and a box, inpaint "A photo of a/an <object>" in the box with its context,
refine the box (noise/denoise at strength 0.65), find the object in the zoomed box with Grounded-SAM,
and write the image, the labelIds with the OOD id on the object, the mask and a manifest record. Items
whose object is not found or fails the quality filter are written and recorded as rejected, with the
reason; only accepted items are read back by `OODObjectsDataset`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any, Literal

import numpy as np

from synthrel.data.synthetic import check_unique_keys, slugify, write_ood_item
from synthrel.diffusion_loading import Dtype
from synthrel.errors import ConfigError, WeightsError, unknown_name
from synthrel.jobs import (
    Shard,
    Verify,
    exclusive_output,
    item_rng,
    item_seed,
    path_identity,
    plan_resume,
    positive_int,
    writing,
)
from synthrel.ood_objects.grounded_sam import DetectorPrecision, check_precision
from synthrel.ood_objects.inpainting import (
    CompileMode,
    DiffusionSettings,
    accelerate_pipeline,
    inpaint_boxes,
    resize,
)
from synthrel.ood_objects.placement import Placement, format_prompt, sample_placement
from synthrel.runstats import SteadyRate

log = logging.getLogger(__name__)

INPAINT_PIPELINE = "StableDiffusionInpaintPipeline"


@dataclass(frozen=True)
class WorkItem:
    object_name: str
    k: int  # sample number within the object

    @property
    def id(self) -> str:
        return f"{slugify(self.object_name)}_{self.k:05d}"

    def seed(self, seed: int, stream: str) -> int:
        """Per-item seed keyed by (object, k), so it does not depend on the object subset or the shard."""
        return item_seed(seed, self.k, f"{slugify(self.object_name)}/{stream}")

    def rng(self, seed: int, stream: str) -> np.random.Generator:
        return item_rng(seed, self.k, f"{slugify(self.object_name)}/{stream}")


#: settings added after sets were made -> the value those sets were made with (so that they resume unchanged)
SETTINGS_ADDED_LATER = {"detector_precision": "fp32"}


@dataclass
class InpaintJob:
    """Config: synthrel/conf/stage/inpaint.yaml (`stages.inpaint`)."""

    source: Any  # a dataset with Cityscapes labelIds (CityscapesDataset) or its config
    out_dir: str
    all_objects: list[str]
    samples_per_object: int
    inpaint_model: str = "stable-diffusion-v1-5/stable-diffusion-inpainting"
    grounding_dino: str = "IDEA-Research/grounding-dino-tiny"
    sam: str = "facebook/sam-vit-huge"
    objects: list[str] | None = None
    patch_size: int = 512
    prompt: str = "A photo of {article} {object}"
    guidance_scale: float = 15.0
    num_inference_steps: int = 50
    refine: bool = True
    refine_prompt: str = "{object}"
    refine_strength: float = 0.65
    refine_guidance_scale: float = 7.5
    refine_steps: int = 50
    box_threshold: float = 0.25
    text_threshold: float = 0.25
    nms_iou: float = 0.8
    min_detection_score: float = 0.0
    min_mask_box_ratio: float = 0.01
    batch_size: int = 1
    seed: int = 0
    shard: str = "0/1"
    force: bool = False
    verify: Verify = "hash"  # what a re-run checks of the items it skips
    device: str = "auto"
    dtype: Dtype = "fp16"
    #: Grounded-SAM's forward passes: fp32 (the official numerics) or bf16 (autocast, the fast path on GPUs)
    detector_precision: DetectorPrecision = "fp32"
    #: torch.compile of the inpainting UNet on CUDA: a mode, null (eager) or auto (compile_mode)
    compile: CompileMode | Literal["auto"] | None = "auto"
    #: called with each finished record (tests use it to simulate a kill); not a config key.
    on_item: Callable[[dict], None] | None = field(default=None, repr=False)
    #: this run's steady rates of the three calls (SteadyRate: each call's time after its first batch)
    _rates: dict = field(default_factory=dict, init=False, repr=False)
    #: the compile mode this run chose and why (compile_mode), for the log, the summary and the stage table
    _compiled: tuple[str | None, str] = field(default=(None, ""), init=False, repr=False)

    def __post_init__(self):
        key = "stages.inpaint"
        if not self.all_objects:
            raise ConfigError("`ood_objects.objects` is empty; list the object names to inpaint")
        check_unique_keys(self.all_objects, "OOD object", "ood_objects.objects")
        if self.objects is not None:
            for name in self.objects:
                if name not in self.all_objects:
                    raise unknown_name("OOD object", name, self.all_objects, f"{key}.objects")
        positive_int(self.samples_per_object, "profile.ood_samples_per_object")
        positive_int(self.num_inference_steps, f"{key}.num_inference_steps")
        positive_int(self.refine_steps, f"{key}.refine_steps")
        positive_int(self.batch_size, f"{key}.batch_size")
        check_precision(self.detector_precision, f"{key}.detector_precision")
        if positive_int(self.patch_size, f"{key}.patch_size") % 8:
            raise ConfigError(f"`{key}.patch_size` must be a multiple of 8 (the VAE's factor), "
                              f"got {self.patch_size}")
        if not 0.0 < self.refine_strength <= 1.0:
            raise ConfigError(f"`{key}.refine_strength` must be in (0, 1], got {self.refine_strength}")
        if int(self.refine_steps * self.refine_strength) < 1:  # diffusers runs int(steps * strength) steps
            raise ConfigError(f"`{key}.refine_steps` x `{key}.refine_strength` = {self.refine_steps} x "
                              f"{self.refine_strength} leaves no denoising step; raise refine_steps")
        for name in ("nms_iou", "min_mask_box_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"`{key}.{name}` must be in [0, 1], got {getattr(self, name)}")
        for template in ("prompt", "refine_prompt"):
            try:
                format_prompt(getattr(self, template), "object")
            except (KeyError, IndexError) as e:
                raise ConfigError(f"`{key}.{template}` may only use the fields {{article}} and {{object}}, "
                                  f"got {getattr(self, template)!r} ({e})") from None
        self.shard_spec = Shard.parse(self.shard)

    @property
    def selected_objects(self) -> list[str]:
        return list(self.objects) if self.objects is not None else list(self.all_objects)

    def work_items(self) -> list[WorkItem]:
        """This shard's items: all (object, k) pairs in order, item j going to shard j mod n."""
        pairs = [(name, k) for name in self.selected_objects for k in range(self.samples_per_object)]
        return [WorkItem(*pairs[j]) for j in self.shard_spec.select(len(pairs))]

    def run(self) -> dict:
        # the jobs of a sweep over models (experiments/table2.sh) share the set: wait, then skip what is done
        with exclusive_output(self.out_dir, self.shard_spec, wait=True):
            return self._inpaint()

    def _inpaint(self) -> dict:

        from synthrel.data.synthetic import remove_items, verified_records

        out_dir = Path(self.out_dir)
        items = self.work_items()
        source = self._source()
        common = self.settings(source)
        inputs = {it.id: {"object": it.object_name} for it in items}
        planned = {WorkItem(name, k).id for name in self.selected_objects for k in range(self.samples_per_object)}
        plan = plan_resume("inpaint", f"OOD-object set {out_dir}",
                           verified_records(out_dir, inputs, self.verify, "inpaint"), common, inputs,
                           force=self.force, elsewhere="`stages.inpaint.out_dir`", planned=planned,
                           added_later=SETTINGS_ADDED_LATER)
        remove_items(out_dir, plan.obsolete)
        self._item_settings = {id: {**common, **own} for id, own in inputs.items()}
        todo = set(plan.todo)
        pending = [it for it in items if it.id in todo]
        summary = {"out_dir": str(out_dir), "shard": str(self.shard_spec), "items": len(items),
                   "skipped": len(items) - len(pending), "accepted": 0, "rejected": 0}
        if not pending:
            log.info("inpaint: all %d items of shard %s already in %s", len(items), self.shard_spec, out_dir)
            with writing(out_dir, self.shard_spec):  # clears the mark a kill after the last item left
                return summary
        models = self._load_models(len(pending))
        mode, summary["compile_reason"] = self._compiled
        summary["compile"] = mode
        note = f"batch {self.batch_size}, {self.patch_size}px patch, {self.dtype}, compile {mode}"
        compiled = mode is not None
        batch = {"batch_size": self.batch_size}
        self._rates = {"inpaint": SteadyRate("image", note=f"{note}, {self.num_inference_steps} steps",
                                             compiled=compiled, settings=batch),
                       "inpaint: refine": SteadyRate("image", note=f"{note}, {self.refine_steps} x "
                                                                   f"{self.refine_strength:g} steps",
                                                     compiled=compiled, settings=batch),
                       "inpaint: Grounded-SAM": SteadyRate("image", note=f"batch {self.batch_size}, "
                                                                          f"{self.patch_size}px zoom, "
                                                                          f"{self.detector_precision}",
                                                           settings={**batch,
                                                                     "detector_precision": self.detector_precision})}
        with writing(out_dir, self.shard_spec):  # readers refuse the set until this run has finished it
            self._inpaint_pending(pending, items, source, models, out_dir, summary)
        summary["steady_rates"] = {label: rate.result() for label, rate in self._rates.items()
                                   if label != "inpaint: refine" or self.refine}
        log.info("inpaint: %s", summary)
        return summary

    def _inpaint_pending(self, pending, items, source, models, out_dir: Path, summary: dict) -> None:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), initial=len(items) - len(pending),
                   desc=f"inpaint OOD objects ({out_dir.name})")
        for _, group in groupby(pending, key=lambda it: it.object_name):
            group = list(group)
            for start in range(0, len(group), self.batch_size):
                for record in self._process(group[start:start + self.batch_size], source, *models, out_dir):
                    summary[record["status"]] += 1
                    bar.update(1)
                    if self.on_item is not None:
                        self.on_item(record)
        bar.close()

    def settings(self, source) -> dict:
        """What every item depends on besides its object (recorded per item, compared on a re-run): the models,
        the source images, every diffusion, detection and filter setting, the seed."""
        fingerprint = getattr(source, "fingerprint", None)
        return {"inpaint_model": path_identity(self.inpaint_model), "grounding_dino": path_identity(self.grounding_dino),
                "sam": path_identity(self.sam), "source": fingerprint() if fingerprint else type(source).__name__,
                "patch_size": self.patch_size, "prompt": self.prompt, "guidance_scale": self.guidance_scale,
                "num_inference_steps": self.num_inference_steps, "refine": self.refine,
                "refine_prompt": self.refine_prompt, "refine_strength": self.refine_strength,
                "refine_guidance_scale": self.refine_guidance_scale, "refine_steps": self.refine_steps,
                "box_threshold": self.box_threshold, "text_threshold": self.text_threshold, "nms_iou": self.nms_iou,
                "min_detection_score": self.min_detection_score, "min_mask_box_ratio": self.min_mask_box_ratio,
                "dtype": self.dtype, "detector_precision": self.detector_precision, "seed": self.seed}

    def _source(self):
        if isinstance(self.source, dict):
            from synthrel.data.build import build_dataset

            return build_dataset(self.source)
        return self.source

    def compile_mode(self, cuda: bool, items: int) -> tuple[str | None, str]:
        """The inpainting UNet's torch.compile mode for a run of `items` items, and why: the mode as set (none
        off CUDA), or for `auto` the benchmark's reduce-overhead where synthrel.runstats.compile_choice finds that
        the items pay for the one-time compile at the measured trade of the budget's inpaint row (scaled by the
        patch's pixels); eager otherwise, and on the CPU."""
        from synthrel.runstats import compile_choice, compile_cost

        if self.compile is None:
            return None, "set to null: eager"
        if self.compile != "auto":
            if not cuda:
                return None, f"set to {self.compile}, but not on CUDA: eager"
            return self.compile, f"set to {self.compile}"
        on, why = compile_choice("auto", key="stages.inpaint", cuda=cuda, images_per_device=items,
                                 resolution=self.patch_size, measured=compile_cost(None, "inpaint"))
        return ("reduce-overhead" if on else None), why

    def _load_models(self, items: int):
        from synthrel.diffusion_loading import generation_dtype, pipeline_class_name
        from synthrel.ood_objects.grounded_sam import GroundedSam
        from synthrel.runtime import resolve_device

        device = resolve_device(self.device)
        key = "stages.inpaint.inpaint_model"
        class_name = pipeline_class_name(self.inpaint_model, key)
        if class_name != INPAINT_PIPELINE:
            raise WeightsError(f"`{key}` = {self.inpaint_model!r} is a {class_name}, not an inpainting model "
                               f"({INPAINT_PIPELINE}, UNet with 9 input channels), e.g. "
                               "stable-diffusion-v1-5/stable-diffusion-inpainting")
        pipe = self._load_inpaint_pipeline(generation_dtype(self.dtype, device)).to(device)
        cuda = device.type == "cuda"
        self._compiled = self.compile_mode(cuda, items)
        log.info("stages.inpaint.compile=%s: %s", self.compile, self._compiled[1])
        accelerate_pipeline(pipe, compile=self._compiled[0], channels_last=cuda)
        pipe.set_progress_bar_config(disable=True)
        detector = GroundedSam.from_pretrained(self.grounding_dino, self.sam, device,
                                               box_threshold=self.box_threshold,
                                               text_threshold=self.text_threshold, nms_iou=self.nms_iou,
                                               precision=self.detector_precision)
        return pipe, detector

    def _load_inpaint_pipeline(self, torch_dtype):
        from diffusers import StableDiffusionInpaintPipeline

        source = self.inpaint_model
        local = Path(source).expanduser()
        try:
            return StableDiffusionInpaintPipeline.from_pretrained(
                str(local) if local.is_dir() else source, dtype=torch_dtype,
                safety_checker=None, requires_safety_checker=False)
        except (OSError, ValueError) as e:
            raise WeightsError(f"cannot load the inpainting model {source!r} (config key "
                               f"`stages.inpaint.inpaint_model`): {e}") from None

    def _process(self, batch: list[WorkItem], source, pipe, detector, out_dir: Path) -> list[dict]:
        """Inpaint, refine, segment and write one batch of items of the same object."""
        name = batch[0].object_name
        images, label_ids, placements, metas = [], [], [], []
        for item in batch:
            rng = item.rng(self.seed, "placement")
            source_index = int(rng.integers(len(source)))
            image = source[source_index]["image"]
            placement = sample_placement(rng, *image.shape[:2])
            images.append(image)
            label_ids.append(source.load_label_ids(source_index))
            placements.append(placement)
            metas.append({
                "k": item.k, "source_index": source_index, "source_id": source.items[source_index].id,
                "box": placement.box.as_list(), "context_box": placement.context.as_list(),
                "patch_size": self.patch_size,
                "seeds": {"job": self.seed, **{stream: item.seed(self.seed, stream)
                                               for stream in ("placement", "inpaint", "refine")}},
                "prompt": format_prompt(self.prompt, name),
                "refine_prompt": format_prompt(self.refine_prompt, name) if self.refine else None,
            })
        inpaint = DiffusionSettings(1.0, self.guidance_scale, self.num_inference_steps)
        with self._rates["inpaint"].timed(len(batch)):
            composites = inpaint_boxes(pipe, images, placements, [m["prompt"] for m in metas],
                                       [m["seeds"]["inpaint"] for m in metas], inpaint, self.patch_size)
        if self.refine:
            settings = DiffusionSettings(self.refine_strength, self.refine_guidance_scale, self.refine_steps)
            with self._rates["inpaint: refine"].timed(len(batch)):
                composites = inpaint_boxes(pipe, composites, placements, [m["refine_prompt"] for m in metas],
                                           [m["seeds"]["refine"] for m in metas], settings, self.patch_size)
        with self._rates["inpaint: Grounded-SAM"].timed(len(batch)):
            masks, found = self._masks(detector, composites, placements, name)
        records = []
        for item, image, labels, mask, meta, placement, (detection, segmentation) in zip(
                batch, composites, label_ids, masks, metas, placements, found, strict=True):
            status, reason, stats = self._judge(name, mask, placement, detection, segmentation)
            meta = {**meta, **stats, "reason": reason, "settings": self._item_settings[item.id]}
            records.append(write_ood_item(out_dir, item.id, name, image, labels, mask, status, meta))
        return records

    def _masks(self, detector, composites: list[np.ndarray], placements: list[Placement], name: str):
        """Grounded-SAM on each box zoomed to patch_size; each mask is pasted back into a full-size mask."""
        zooms = [resize(image[placement.box.slices], self.patch_size, self.patch_size)
                 for image, placement in zip(composites, placements, strict=True)]
        detections = detector.detect(zooms, name)
        hits = [i for i, d in enumerate(detections) if d is not None]
        segmentations = [None] * len(zooms)
        if hits:
            found = detector.segment([zooms[i] for i in hits], [detections[i].box for i in hits])
            for i, segmentation in zip(hits, found, strict=True):
                segmentations[i] = segmentation
        masks = []
        for image, placement, seg in zip(composites, placements, segmentations, strict=True):
            mask = np.zeros(image.shape[:2], dtype=bool)
            if seg is not None:
                box = placement.box
                mask[box.slices] = resize(seg.mask.astype(np.uint8), box.width, box.height, nearest=True) > 0
            masks.append(mask)
        return masks, list(zip(detections, segmentations, strict=True))

    def _judge(self, name: str, mask: np.ndarray, placement: Placement, detection,
               segmentation) -> tuple[str, str | None, dict]:
        """Accept or reject an item by the quality filter; the stats go into its manifest record."""
        box = placement.box
        area = int(mask.sum())
        stats = {"detection_score": None, "detection_box": None, "num_detections": 0, "sam_score": None,
                 "mask_area": area, "mask_box_ratio": area / box.area}
        if detection is None:
            return "rejected", (f"no {name!r} found: no box above box_threshold {self.box_threshold} "
                                f"and text_threshold {self.text_threshold}"), stats
        scale_x, scale_y = box.width / self.patch_size, box.height / self.patch_size
        x0, y0, x1, y1 = detection.box
        stats.update(detection_score=detection.score, num_detections=detection.count,
                     sam_score=segmentation.score,
                     detection_box=[box.x0 + x0 * scale_x, box.y0 + y0 * scale_y,
                                    box.x0 + x1 * scale_x, box.y0 + y1 * scale_y])
        if detection.score < self.min_detection_score:
            return "rejected", (f"detection score {detection.score:.3f} < min_detection_score "
                                f"{self.min_detection_score}"), stats
        if stats["mask_box_ratio"] < self.min_mask_box_ratio:
            return "rejected", (f"mask/box area ratio {stats['mask_box_ratio']:.4f} < min_mask_box_ratio "
                                f"{self.min_mask_box_ratio}"), stats
        return "accepted", None, stats
