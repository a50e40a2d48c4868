"""Grounded-SAM with transformers: Grounding DINO finds the named object, SAM cuts its mask (S6).

transformers' `GroundingDinoForObjectDetection` and `SamModel` are used instead of the vendored
Grounded-Segment-Anything packages: those need torchvision (not installable beside torch 2.13 CPU) and
groundingdino-py needs transformers 4.x (feasibility.md, sections 4 and 5). Images are fed as RGB, which the
processors expect; the official script fed RGB to a BGR interface, so both models saw swapped channels.
Both run in float32 (the official numerics) or, with `precision="bf16"`, under bfloat16 autocast (the fast path on
GPUs); scores, boxes and masks come out in float32 either way.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch

from synthrel.diffusion_loading import looks_local
from synthrel.errors import ConfigError, WeightsError

log = logging.getLogger(__name__)

DetectorPrecision = Literal["fp32", "bf16"]
DETECTOR_PRECISIONS = get_args(DetectorPrecision)
PRECISION_KEY = "stages.inpaint.detector_precision"

#: bert-base-uncased ids of [CLS], [SEP], '.', '?': not part of an object's phrase.
SPECIAL_TOKEN_IDS = (101, 102, 1012, 1029)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))


@functools.cache
def torchvision_ops():
    """`torchvision.ops` where torchvision imports (GPU images), else None: beside the locked CPU torch pip can
    only take a torchvision build whose import fails (docs/install.md), so an installed but broken one counts
    as absent."""
    try:
        import torchvision.ops
    except (ImportError, RuntimeError):
        return None
    return torchvision.ops


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Non-maximum suppression: torchvision.ops.nms where torchvision imports, else `greedy_nms`."""
    ops = torchvision_ops()
    if ops is None:
        return greedy_nms(boxes, scores, iou_threshold)
    return ops.nms(boxes.float(), scores.float(), iou_threshold)


def greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression as torchvision.ops.nms, the fallback where torchvision is absent.

    Returns the indices of the kept boxes by decreasing score; a box is dropped when its IoU with a kept,
    higher-scoring box is above `iou_threshold`.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    iou = box_iou(boxes[order], boxes[order])
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i].double() > iou_threshold  # torchvision: the float IoU against the double threshold
    return order[torch.tensor(keep, dtype=torch.long)]


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # xyxy pixels in the image that was searched, clipped to it
    score: float
    count: int  # boxes left after NMS


@dataclass(frozen=True)
class Segmentation:
    mask: np.ndarray  # bool (H, W)
    score: float  # SAM's predicted IoU of the chosen mask


def check_precision(precision: str, key: str = PRECISION_KEY) -> str:
    if precision not in DETECTOR_PRECISIONS:
        raise ConfigError(f"`{key}` is {precision!r}; valid: {', '.join(DETECTOR_PRECISIONS)} (fp32: the official "
                          "numerics; bf16: Grounding DINO and SAM under bfloat16 autocast, the fast path on GPUs)")
    return precision


def keep_positional_encodings_fp32(sam, device_type: str) -> None:
    """Take SAM's random-Fourier positional encodings (of the box prompt and the image grid) out of autocast: they
    are sin/cos of a matmul whose outputs reach tens of radians, where bf16's 8-bit mantissa is off by up to a tenth
    of a radian. On the tiny SAM they were the main bf16 error: mask logits off by up to half their range and the
    chosen mask changed; with them in fp32, off by about 2%."""
    from transformers.models.sam.modeling_sam import SamPositionalEmbedding

    for module in sam.modules():
        if isinstance(module, SamPositionalEmbedding) and not hasattr(module.forward, "__wrapped__"):
            module.forward = torch.autocast(device_type, enabled=False)(module.forward)


def load_pretrained(cls, source: str, key: str, what: str):
    """`cls.from_pretrained(source)` from a hub id or a local folder, with errors that name the config key."""
    local = looks_local(source)
    if local and not Path(source).expanduser().is_dir():
        raise WeightsError(f"{what} folder {source!r} (config key `{key}`) does not exist; expected a folder "
                           f"written by save_pretrained, or a hub id")
    try:
        return cls.from_pretrained(str(Path(source).expanduser()) if local else source)
    except (OSError, ValueError) as e:
        raise WeightsError(f"cannot load {what} from {source!r} (config key `{key}`): {e}") from e


class GroundedSam:
    """Text -> box (Grounding DINO) -> mask (SAM) on batches of same-size RGB uint8 images."""

    def __init__(self, dino, dino_processor, sam, sam_processor, device: torch.device | str = "cpu",
                 box_threshold: float = 0.25, text_threshold: float = 0.25, nms_iou: float = 0.8,
                 precision: DetectorPrecision = "fp32"):
        self.device = torch.device(device)
        self.precision = check_precision(precision)
        self.dino = dino.to(self.device).eval()
        self.dino_processor = dino_processor
        self.sam = sam.to(self.device).eval()
        if self.precision == "bf16":
            keep_positional_encodings_fp32(self.sam, self.device.type)
        self.sam_processor = sam_processor
        self.box_threshold = box_threshold
        self.text_threshold = text_threshold
        self.nms_iou = nms_iou

    @classmethod
    def from_pretrained(cls, grounding_dino: str, sam: str, device: torch.device | str = "cpu",
                        key_prefix: str = "stages.inpaint", precision: DetectorPrecision = "fp32",
                        **thresholds) -> GroundedSam:
        check_precision(precision, f"{key_prefix}.detector_precision")  # before the weights load
        from transformers import (
            GroundingDinoForObjectDetection,
            GroundingDinoProcessor,
            SamModel,
            SamProcessor,
        )

        dino_key, sam_key = f"{key_prefix}.grounding_dino", f"{key_prefix}.sam"
        return cls(
            load_pretrained(GroundingDinoForObjectDetection, grounding_dino, dino_key, "Grounding DINO"),
            load_pretrained(GroundingDinoProcessor, grounding_dino, dino_key, "Grounding DINO processor"),
            load_pretrained(SamModel, sam, sam_key, "SAM model"),
            load_pretrained(SamProcessor, sam, sam_key, "SAM processor"),
            device, precision=precision, **thresholds,
        )

    def autocast(self):
        """The forward passes' precision. bf16 autocasts rather than casting the weights: matmuls and convolutions
        run in bf16 while softmax, norms and the deformable attention's grid_sample stay fp32, and so do Grounding
        DINO's reference points, which a bf16 cast would round to 8 bits before they become the boxes, and SAM's
        positional encodings (keep_positional_encodings_fp32)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @staticmethod
    def caption(name: str) -> str:
        """Grounding DINO's caption form: lowercase, ending with '.' (as the official demos normalise it)."""
        text = name.strip().lower()
        return text if text.endswith(".") else text + "."

    @torch.no_grad()
    def detect(self, images: list[np.ndarray], name: str) -> list[Detection | None]:
        """The highest-scoring box for `name` in each image, or None when no box passes the thresholds.

        A box passes when its best token score exceeds `box_threshold` (as transformers' post-processing and
        the official `predict`) and one of the object's own tokens exceeds `text_threshold` (the official code
        kept boxes whose phrase was empty, with no class; here they count as "not found").
        """
        caption = self.caption(name)
        inputs = self.dino_processor(images=list(images), text=[caption] * len(images), return_tensors="pt")
        inputs = inputs.to(self.device)
        with self.autocast():
            outputs = self.dino(**inputs)
        probs = outputs.logits.float().sigmoid().cpu()  # (B, queries, max_text_len)
        boxes_cxcywh = outputs.pred_boxes.float().cpu()
        input_ids = inputs["input_ids"].cpu()
        is_object_token = (inputs["attention_mask"].cpu() > 0) & ~torch.isin(
            input_ids, torch.tensor(SPECIAL_TOKEN_IDS))
        detections = []
        for b, image in enumerate(images):
            height, width = image.shape[:2]
            scores = probs[b].max(dim=-1).values
            object_probs = probs[b, :, : input_ids.shape[1]][:, is_object_token[b]]
            passes = (scores > self.box_threshold) & (object_probs > self.text_threshold).any(dim=-1)
            if not passes.any():
                detections.append(None)
                continue
            cx, cy, w, h = boxes_cxcywh[b, passes].unbind(-1)
            xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
            size = torch.tensor([width, height, width, height], dtype=xyxy.dtype)
            xyxy = torch.minimum((xyxy * size).clamp(min=0), size)  # a box may overhang: SAM wants it inside
            keep = nms(xyxy, scores[passes], self.nms_iou)
            best = keep[0]  # NMS never drops the top box: it only thins the recorded count
            detections.append(Detection(tuple(xyxy[best].tolist()), float(scores[passes][best]), len(keep)))
        return detections

    @torch.no_grad()
    def segment(self, images: list[np.ndarray], boxes: list[tuple[float, ...]]) -> list[Segmentation]:
        """SAM with one box prompt per image, multimask output, the mask with the best predicted IoU."""
        inputs = self.sam_processor(images=list(images), input_boxes=[[list(b)] for b in boxes],
                                    return_tensors="pt").to(self.device)
        with self.autocast():
            outputs = self.sam(**inputs, multimask_output=True)
        masks = self.sam_processor.image_processor.post_process_masks(
            outputs.pred_masks.float().cpu(), inputs["original_sizes"].cpu(),
            inputs["reshaped_input_sizes"].cpu())
        iou_scores = outputs.iou_scores.float().cpu()  # (B, 1 box, 3 masks)
        results = []
        for b in range(len(images)):
            best = int(iou_scores[b, 0].argmax())
            mask = masks[b][0, best].numpy().astype(bool)
            results.append(Segmentation(mask, float(iou_scores[b, 0, best])))
        return results
