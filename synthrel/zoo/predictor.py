"""`Segmenter`: one interface over mmseg and transformers models, returning 19-class logits at input size.

Images come in as RGB uint8 batches (B, H, W, 3) of one size. Each adapter applies its model's own test
pipeline (keep-ratio resize to the test scale, normalisation, whole or sliding-window inference through the
model's own code) and resizes the logits back to (H, W), so that numbers match the framework's own inference.
Everything stays on the device; nothing is synchronised with the host.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from synthrel.conventions import NUM_CLASSES, rgb_to_bgr
from synthrel.errors import ConfigError
from synthrel.zoo.registry import ZooEntry, load_mmseg_config

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class Segmenter(ABC):
    """A segmentation model of the zoo, ready for batched inference on `device`."""

    def __init__(self, entry: ZooEntry, device: torch.device, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ConfigError(f"`precision` is {precision!r}; valid: {', '.join(PRECISIONS)}")
        self.entry = entry
        self.device = torch.device(device)
        self.precision = precision

    @property
    def key(self) -> str:
        return self.entry.key

    def logits(self, images) -> torch.Tensor:
        """(B, 19, H, W) float32 logits at the input resolution."""
        return self.logits_and_features(images, with_features=False)[0]

    def features(self, images) -> torch.Tensor:
        """(B, C) last backbone stage, spatially summed, divided by its max (relis extract_features)."""
        return self.logits_and_features(images, with_features=True)[1]

    @abstractmethod
    def logits_and_features(self, images, with_features: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits as in `logits` and, when asked, features as in `features`, from one forward pass."""

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def _upload(self, images) -> torch.Tensor:
        """RGB uint8 (B, H, W, 3) -> float (B, 3, H, W) on the device."""
        x = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
            raise ValueError(f"expected a uint8 (B, H, W, 3) image batch, got {x.dtype} {tuple(x.shape)}")
        return x.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()


def keep_ratio_size(height: int, width: int, scale: tuple[int, int] | None) -> tuple[int, int]:
    """(h, w) after mmcv's keep-ratio rescale to `scale` = (long edge max, short edge max)."""
    if scale is None:
        return height, width
    from mmcv import rescale_size

    new_w, new_h = rescale_size((width, height), tuple(scale))
    return new_h, new_w


def resize_like_cv2(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a 0..255 float batch, rounded like cv2 on uint8 (half-pixel centres, no antialias)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False).round_().clamp_(0, 255)


def reduce_features(feat: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, C): spatial sum divided by its max, as relis' extract_features."""
    summed = feat.float().sum(dim=(2, 3))
    return summed / summed.max(dim=1, keepdim=True).values


class MMSegSegmenter(Segmenter):
    """An mmseg 1.x EncoderDecoder built from its config, with strictly checked weights."""

    def __init__(self, entry: ZooEntry, device, precision: str = "fp32", cache_dir=None, load_weights: bool = True):
        super().__init__(entry, device, precision)
        from synthrel.zoo.mmcv_shim import install

        install()
        from mmengine.model.utils import revert_sync_batchnorm
        from mmseg.apis import init_model

        from synthrel.zoo.weights import load_state_strict, read_checkpoint

        checkpoint = entry.require_checkpoint() if load_weights else None  # fail before the (slow) build
        try:
            cfg = load_mmseg_config(entry.config, import_custom_modules=True)
        except ImportError as e:
            raise ConfigError(f"model {entry.key!r}: its config {entry.config} needs a package that is not "
                              f"installed: {e}") from e
        model = revert_sync_batchnorm(init_model(cfg, checkpoint=None, device="cpu"))
        if load_weights:
            load_state_strict(model, read_checkpoint(checkpoint, entry.key, cache_dir), entry.key, checkpoint)
        self.model = model.to(self.device).eval()
        self.test_scale = self._resize_scale(cfg)
        if self.model.out_channels != NUM_CLASSES:
            raise ConfigError(f"model {entry.key!r} predicts {self.model.out_channels} classes; expected "
                              f"{NUM_CLASSES} Cityscapes classes")

    @staticmethod
    def _resize_scale(cfg) -> tuple[int, int] | None:
        """The keep-ratio Resize scale of the config's test pipeline (None: no resize)."""
        for step in cfg.get("test_pipeline", []):
            if step.get("type") == "Resize":
                if not step.get("keep_ratio", False):
                    raise ConfigError(f"test pipeline Resize without keep_ratio is not supported: {step}")
                return tuple(step["scale"])
        return None

    @torch.no_grad()
    def logits_and_features(self, images, with_features: bool = True):
        from mmseg.models.utils import resize

        # mmseg reads BGR with OpenCV and its data_preprocessor swaps to RGB when `bgr_to_rgb` is set:
        # feed BGR, as mmseg's own loader would.
        images = rgb_to_bgr(np.asarray(images))
        x = self._upload(images)
        height, width = x.shape[-2:]
        size = keep_ratio_size(height, width, self.test_scale)
        x = resize_like_cv2(x, size)
        data = self.model.data_preprocessor({"inputs": list(x), "data_samples": None}, False)
        inputs = data["inputs"]
        metas = [dict(ori_shape=(height, width), img_shape=size, pad_shape=size, padding_size=[0, 0, 0, 0])
                 for _ in range(len(inputs))]
        captured = []
        hook = None
        whole = self.model.test_cfg.get("mode", "whole") == "whole"
        if with_features and whole:  # the backbone sees the whole image once: reuse that pass
            hook = self.model.backbone.register_forward_hook(lambda m, i, out: captured.append(out[-1]))
        try:
            with self._autocast():
                seg = self.model.inference(inputs, metas)
                if with_features and not whole:  # slide mode: one extra backbone pass on the whole image
                    captured.append(self.model.backbone(inputs)[-1])
        finally:
            if hook is not None:
                hook.remove()
        logits = resize(seg.float(), size=(height, width), mode="bilinear",
                        align_corners=self.model.align_corners, warning=False)
        features = reduce_features(captured[-1]) if with_features else None
        return logits, features


class TransformersSegmenter(Segmenter):
    """A transformers semantic-segmentation model (SegFormer-like) or Mask2Former, from a folder or hub id."""

    def __init__(self, entry: ZooEntry, device, precision: str = "fp32", cache_dir=None):
        super().__init__(entry, device, precision)
        from transformers import AutoConfig

        source = entry.checkpoint or entry.config
        config = AutoConfig.from_pretrained(source, cache_dir=cache_dir)
        self.is_mask2former = config.model_type == "mask2former"
        if self.is_mask2former:
            from transformers import Mask2FormerForUniversalSegmentation as cls
        else:
            from transformers import AutoModelForSemanticSegmentation as cls
        self.model = cls.from_pretrained(source, cache_dir=cache_dir).to(self.device).eval()
        n_classes = config.num_labels
        if n_classes != NUM_CLASSES:
            raise ConfigError(f"model {entry.key!r} ({source}) predicts {n_classes} classes; expected {NUM_CLASSES}")
        if entry.test_mode != "whole":
            raise ConfigError(f"`zoo.models.{entry.key}.test_mode`: transformers models run in whole mode only")
        mean, std = _processor_mean_std(source, cache_dir)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255

    @torch.no_grad()
    def logits_and_features(self, images, with_features: bool = True):
        x = self._upload(images)  # transformers models take RGB
        height, width = x.shape[-2:]
        x = resize_like_cv2(x, keep_ratio_size(height, width, self.entry.test_scale))
        x = (x - self.mean) / self.std
        with self._autocast():
            out = self.model(pixel_values=x, output_hidden_states=with_features)
        if self.is_mask2former:
            # semantic map as transformers' post-processing: class probabilities (no null) x mask probabilities;
            # its log is returned so that softmax gives the normalised scores.
            classes = out.class_queries_logits.float().softmax(-1)[..., :-1]
            masks = out.masks_queries_logits.float().sigmoid()
            scores = torch.einsum("bqc,bqhw->bchw", classes, masks)
            seg = scores.clamp_min(1e-8).log()
            feat = out.encoder_last_hidden_state if with_features else None
        else:
            seg = out.logits.float()
            feat = out.hidden_states[-1] if with_features else None
        logits = F.interpolate(seg, size=(height, width), mode="bilinear", align_corners=False)
        return logits, (reduce_features(feat) if with_features else None)


def _processor_mean_std(source: str, cache_dir) -> tuple[list[float], list[float]]:
    imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    try:
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(source, cache_dir=cache_dir)
        return list(proc.image_mean), list(proc.image_std)
    except (OSError, ValueError, AttributeError) as e:
        log.warning("no image processor for %s (%s); using ImageNet mean/std", source, e)
        return imagenet


def build_segmenter(entry: ZooEntry, device="cpu", precision: str = "fp32", cache_dir=None) -> Segmenter:
    """The adapter of `entry`; tiny entries are built on first use into their folder."""
    if entry.tiny:
        from synthrel.tiny.segmentation import ensure_tiny_segmenter

        ensure_tiny_segmenter(entry.tiny, Path(entry.config).parent if entry.framework == "mmseg"
                              else Path(entry.config))
    if entry.framework == "transformers":
        return TransformersSegmenter(entry, device, precision, cache_dir)
    return MMSegSegmenter(entry, device, precision, cache_dir)
