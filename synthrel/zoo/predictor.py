"""`Segmenter`: one interface over mmseg, transformers and user (Python) models, returning 19-class logits at
input size (models with another label set go through their entry's label mapping, synthrel.zoo.labels).

Images come in as RGB uint8 batches (B, H, W, 3) of one size (numpy, or torch tensors, e.g. pinned by a
DataLoader). Each adapter applies its model's own test pipeline (keep-ratio resize to the test scale,
normalisation, whole or sliding-window inference through the model's own code) and resizes the logits back to
(H, W), so that numbers match the framework's own inference. Everything stays on the device; nothing is
synchronised with the host.

mmseg's sliding-window inference runs one forward per window; `MMSegSegmenter` runs the same windows of all
images of a batch through `encode_decode` in chunks of `window_batch` crops and sums them in mmseg's window
order, which gives mmseg's `slide_inference` result with far fewer, larger forward calls.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from abc import ABC, abstractmethod
from typing import Literal, get_args

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from synthrel.conventions import NUM_CLASSES, rgb_to_bgr
from synthrel.errors import ConfigError
from synthrel.runtime import cudnn_benchmark
from synthrel.zoo.depthwise import reroute_dilated_depthwise
from synthrel.zoo.labels import LabelMap
from synthrel.zoo.pooling import reroute_adaptive_pooling
from synthrel.zoo.registry import ZooEntry, load_mmseg_config, mmseg_inference

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "bf16"]
PRECISIONS = dict(zip(get_args(Precision), (None, torch.float16, torch.bfloat16), strict=True))
ASPECT_TOLERANCE = 0.25  # a Python model's logits may differ from the input's aspect by stride rounding only

#: How per-image features (cluster temperature scaling) are taken from the last backbone stage, spatially
#: summed and divided by their max. "whole": relis' extract_features, the backbone on the whole test-scale
#: image; for a model in slide mode that is one extra backbone pass over the whole image. "windows": the sum
#: of the last-stage maps of the sliding windows the prediction already ran (overlaps counted once per window,
#: no extra pass). Both are the same for whole-mode models.
FeatureMode = Literal["whole", "windows"]
FEATURE_MODES = get_args(FeatureMode)


def check_feature_mode(features: str | None, key: str = "features") -> None:
    if features is not None and features not in FEATURE_MODES:
        raise ConfigError(f"`{key}` is {features!r}; expected null (no features) or one of {', '.join(FEATURE_MODES)}")


class Segmenter(ABC):
    """A segmentation model of the zoo, ready for batched inference on `device`."""

    def __init__(self, entry: ZooEntry, device: torch.device, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ConfigError(f"`precision` is {precision!r}; valid: {', '.join(PRECISIONS)}")
        self.entry = entry
        self.device = torch.device(device)
        self.precision = precision
        self.label_map = LabelMap.from_file(entry.label_map) if entry.label_map else None
        #: classes the network itself predicts (19, or the mapping file's num_classes)
        self.model_classes = self.label_map.num_classes if self.label_map else NUM_CLASSES

    @property
    def key(self) -> str:
        return self.entry.key

    def logits(self, images) -> torch.Tensor:
        """(B, 19, H, W) float32 logits at the input resolution."""
        return self.logits_and_features(images, features=None)[0]

    def features(self, images, mode: str = "whole") -> torch.Tensor:
        """(B, C) last backbone stage, spatially summed, divided by its max (relis extract_features)."""
        return self.logits_and_features(images, features=mode)[1]

    @abstractmethod
    def logits_and_features(self, images, features: str | None = "whole") -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits as in `logits` and, unless `features` is None, per-image features (see FEATURE_MODES)."""

    def _to_cityscapes(self, logits: torch.Tensor) -> torch.Tensor:
        """The model's logits over the 19 trainIds (through the label mapping, when the entry has one)."""
        return self.label_map.apply(logits) if self.label_map else logits

    def _class_count_error(self, n_classes: int, source: str) -> ConfigError:
        expected = f"the {self.model_classes} of {self.label_map.source}" if self.label_map else \
            f"{NUM_CLASSES} Cityscapes classes (trainIds); give a label mapping file (`label_map`) for another " \
            "label set"
        return ConfigError(f"model {self.key!r} ({source}) predicts {n_classes} classes; expected {expected}")

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def _upload(self, images) -> torch.Tensor:
        """RGB uint8 (B, H, W, 3) -> float (B, 3, H, W) on the device (non-blocking from pinned memory)."""
        x = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
        check_image_batch(x)
        return x.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()


def check_image_batch(images) -> None:
    """Raise unless `images` (numpy or torch) is a uint8 (B, H, W, 3) batch."""
    dtype = str(images.dtype).removeprefix("torch.")
    if images.ndim != 4 or images.shape[-1] != 3 or dtype != "uint8":
        raise ValueError(f"expected a uint8 (B, H, W, 3) image batch, got {dtype} {tuple(images.shape)}")


def slide_windows(height: int, width: int, crop: tuple[int, int], stride: tuple[int, int]) -> list[tuple]:
    """(y1, y2, x1, x2) of mmseg's slide_inference windows, in its loop order, clamped to the image."""
    (h_crop, w_crop), (h_stride, w_stride) = crop, stride
    h_grids = max(height - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(width - w_crop + w_stride - 1, 0) // w_stride + 1
    windows = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2 = min(h_idx * h_stride + h_crop, height)
            x2 = min(w_idx * w_stride + w_crop, width)
            windows.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return windows


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
    """An mmseg 1.x EncoderDecoder built from its config, with strictly checked weights.

    Speed options (results unchanged up to floating-point rounding): `window_batch`, the most sliding-window
    crops per forward call; `channels_last` and `cudnn_benchmark` (default: on for CUDA at reduced precision,
    where cuDNN's NHWC tensor-core kernels are fastest and timing them per shape picks faster ones than its
    heuristics, e.g. for dilated convolutions; off at fp32 to keep mmseg's kernels); `compile`, torch.compile
    of the backbone and decode-head forwards with inductor's freezing (weights become constants, so eval-mode
    BatchNorm folds into the convolution before it; compiled on first use, again per new input shape);
    `host_resize` (default: at fp32, the exact path) resizes to the test scale with cv2 on the host, as mmseg's
    pipeline does, instead of on the device; `reroute_depthwise` (default as channels_last) keeps dilated
    depthwise convolutions away from cuDNN's slow channels-last kernel for them: NCHW in eager mode, fused
    shifted sums when compiled (synthrel.zoo.depthwise); `reroute_pooling` (default as channels_last) pools
    channels-last maps adaptively by window means instead of ATen's kernel, which runs them on a few thread
    blocks (synthrel.zoo.pooling: PSPNet's pyramid pooling).
    """

    def __init__(self, entry: ZooEntry, device, precision: str = "fp32", cache_dir=None, load_weights: bool = True,
                 *, window_batch: int = 16, channels_last: bool | None = None, cudnn_benchmark: bool | None = None,
                 reroute_depthwise: bool | None = None, host_resize: bool | None = None, compile: bool = False,
                 reroute_pooling: bool | None = None):
        super().__init__(entry, device, precision)
        if isinstance(window_batch, bool) or not isinstance(window_batch, int) or window_batch < 1:
            raise ConfigError(f"`window_batch` must be a positive integer, got {window_batch!r}")
        self.window_batch = window_batch
        fast_default = self.device.type == "cuda" and precision != "fp32"
        self.channels_last = fast_default if channels_last is None else bool(channels_last)
        self.cudnn_benchmark = fast_default if cudnn_benchmark is None else bool(cudnn_benchmark)
        self.reroute_depthwise = fast_default if reroute_depthwise is None else bool(reroute_depthwise)
        self.reroute_pooling = self.channels_last if reroute_pooling is None else bool(reroute_pooling)
        self.host_resize = precision == "fp32" if host_resize is None else bool(host_resize)
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
        self.model = model.to(self.device, memory_format=self._memory_format()).eval()
        if self.reroute_depthwise:
            reroute_dilated_depthwise(self.model)
        if self.reroute_pooling:
            reroute_adaptive_pooling(self.model)
        if compile:  # forward attributes, not wrapped modules: state_dict keys stay those of the checkpoint
            # mmseg's resize() warns in align_corners heads (the 769 configs): dynamo breaks the graph at a warn
            # call and recompiled the resume function on every call until its limit, then ran the head eager;
            # reorderable (while these forwards trace), the warning is issued after the graph instead
            reorder_warnings = torch._dynamo.config.patch(
                reorderable_logging_functions=torch._dynamo.config.reorderable_logging_functions | {warnings.warn})
            for module in (self.model.backbone, self.model.decode_head):
                module.forward = reorder_warnings(torch.compile(module.forward, options={"freezing": True}))
        self._count_maps: dict[tuple, torch.Tensor] = {}
        self._captured: list[torch.Tensor] | None = None  # window features while a forward hook records them
        self.test_scale = mmseg_inference(cfg).scale
        if self.model.out_channels != self.model_classes:
            raise self._class_count_error(self.model.out_channels, entry.config)

    @torch.no_grad()
    def logits_and_features(self, images, features: str | None = "whole"):
        from mmseg.models.utils import resize

        check_feature_mode(features)
        inputs, (height, width) = self._preprocess(images)
        size = tuple(inputs.shape[-2:])
        metas = [dict(ori_shape=(height, width), img_shape=size, pad_shape=size, padding_size=[0, 0, 0, 0])
                 for _ in range(len(inputs))]
        whole = self.model.test_cfg.get("mode", "whole") == "whole"
        # the backbone's passes that the prediction runs anyway: the whole image, or the windows
        self._captured = captured = []
        hook = None
        if features == "windows" or (features and whole):
            hook = self.model.backbone.register_forward_hook(
                lambda m, i, out: captured.append(out[-1].float().sum(dim=(2, 3))))
        try:
            with self._autocast(), cudnn_benchmark(self.cudnn_benchmark):
                if whole:
                    seg = self.model.inference(inputs, metas)
                else:
                    seg, crop_images = self._slide_inference(inputs)
                if features == "whole" and not whole:  # relis: one extra backbone pass on the whole image
                    captured.append(self.model.backbone(inputs)[-1].float().sum(dim=(2, 3)))
        finally:
            self._captured = None
            if hook is not None:
                hook.remove()
        logits = resize(seg.float(), size=(height, width), mode="bilinear",
                        align_corners=self.model.align_corners, warning=False)
        logits = self._to_cityscapes(logits)
        if features is None:
            return logits, None
        if features == "windows" and not whole:  # one summed row per crop, crops in `crop_images` order
            summed = torch.zeros(len(inputs), captured[0].shape[1], device=captured[0].device)
            summed.index_add_(0, crop_images, torch.cat(captured))
        else:
            summed = captured[-1]
        return logits, summed / summed.max(dim=1, keepdim=True).values

    def _preprocess(self, images) -> tuple[torch.Tensor, tuple[int, int]]:
        """The data_preprocessor's result for mmseg's BGR loader input, computed batched on the device.

        The test-scale resize runs on the device (bilinear, rounded: within one grey level of cv2) unless
        `host_resize`, which runs cv2 on the host exactly as mmseg's pipeline does.

        mmseg's loader reads BGR and its preprocessor swaps to RGB when `bgr_to_rgb` is set: then the network
        sees our RGB input unchanged (the per-channel resize and normalisation commute with the swap, so the
        values are identical); otherwise it is fed BGR, as mmseg's own loader would.
        """
        pre = self.model.data_preprocessor
        check_image_batch(images)
        height, width = images.shape[1:3]
        size = keep_ratio_size(height, width, self.test_scale)
        if not pre.channel_conversion or (self.host_resize and size != (height, width)):
            images = np.asarray(images.cpu() if torch.is_tensor(images) else images)
        if self.host_resize and size != (height, width):  # mmcv.imresize: cv2's fixed-point bilinear on uint8
            images = np.stack([cv2.resize(image, size[::-1], interpolation=cv2.INTER_LINEAR) for image in images])
        if not pre.channel_conversion:
            images = rgb_to_bgr(images)
        x = resize_like_cv2(self._upload(images), size)
        if pre.test_cfg:
            raise ConfigError(f"model {self.key!r}: test-time padding (data_preprocessor.test_cfg) is not supported")
        if pre._enable_normalize:
            x = (x - pre.mean) / pre.std
        return x.contiguous(memory_format=self._memory_format()), (height, width)

    def _slide_inference(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mmseg's `slide_inference` with the crops of all images batched, `window_batch` crops per forward.

        Crops run window-major (window 0 of every image, then window 1, ...) and each window's logits are added
        to the sum in mmseg's window order, so every pixel sees the same sequence of additions as in mmseg.
        Also returns the image index of each crop, in the order the backbone saw them.
        """
        batch, _, height, width = inputs.shape
        crop, stride = tuple(self.model.test_cfg.crop_size), tuple(self.model.test_cfg.stride)
        windows = slide_windows(height, width, crop, stride)
        preds = inputs.new_zeros((batch, self.model.out_channels, height, width), dtype=torch.float32)
        jobs = [(w, b) for w in range(len(windows)) for b in range(batch)]
        for start in range(0, len(jobs), self.window_batch):
            chunk = jobs[start:start + self.window_batch]
            runs = _runs_per_window(chunk)  # (window, first image, last image + 1) within this chunk
            crops = torch.cat([inputs[b0:b1, :, windows[w][0]:windows[w][1], windows[w][2]:windows[w][3]]
                               for w, b0, b1 in runs])
            seg = self._encode_decode(crops.contiguous(memory_format=self._memory_format()))
            offset = 0
            for w, b0, b1 in runs:
                y1, y2, x1, x2 = windows[w]
                preds[b0:b1, :, y1:y2, x1:x2] += seg[offset:offset + b1 - b0]
                offset += b1 - b0
        crop_images = torch.tensor([b for _, b in jobs], device=inputs.device)
        return preds / self._count_map(height, width, crop, stride, inputs.device), crop_images

    def _encode_decode(self, crops: torch.Tensor) -> torch.Tensor:
        """`encode_decode` of a crop batch, split in halves when a kernel cannot take it whole.

        Heavy decoders on large windows overflow some kernels at high window batches (SETR-PUP upsamples 16
        crops of 768 to 256 x 768 x 768 channels-last, over upsample_bilinear2d_nhwc's INT_MAX elements) or run
        out of memory; crops are independent, so halving the batch gives the same logits.
        """
        metas = [dict(img_shape=crops.shape[2:])] * len(crops)  # a torch.Size, as mmseg sets it
        n_captured = len(self._captured or ())
        try:
            return self.model.encode_decode(crops, metas)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
            if len(crops) == 1 or not ("INT_MAX" in str(e) or isinstance(e, torch.cuda.OutOfMemoryError)):
                raise
        if self._captured:
            del self._captured[n_captured:]  # features of the failed call: its halves capture them again
        half = len(crops) // 2
        log.info("%s: window batch %d too large for a kernel; splitting", self.key, len(crops))
        return torch.cat([self._encode_decode(crops[:half]), self._encode_decode(crops[half:])])

    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def _count_map(self, height, width, crop, stride, device) -> torch.Tensor:
        """How many windows cover each pixel (mmseg's count_mat), built once per image size."""
        key = (height, width, crop, stride, str(device))
        if key not in self._count_maps:
            count = torch.zeros((1, 1, height, width), device=device)
            for y1, y2, x1, x2 in slide_windows(height, width, crop, stride):
                count[:, :, y1:y2, x1:x2] += 1
            self._count_maps[key] = count
        return self._count_maps[key]


def _runs_per_window(chunk: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Group consecutive (window, image) jobs into (window, first image, end image) runs."""
    runs = []
    for w, b in chunk:
        if runs and runs[-1][0] == w and runs[-1][2] == b:
            runs[-1] = (w, runs[-1][1], b + 1)
        else:
            runs.append((w, b, b + 1))
    return runs


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
        if config.num_labels != self.model_classes:
            raise self._class_count_error(config.num_labels, source)
        mean, std = _processor_mean_std(source, cache_dir)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255

    @torch.no_grad()
    def logits_and_features(self, images, features: str | None = "whole"):
        check_feature_mode(features)
        with_features = features is not None  # whole mode: both feature modes are the same
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
        return self._to_cityscapes(logits), (reduce_features(feat) if with_features else None)


class PythonSegmenter(Segmenter):
    """A user's model built by `entry.builder` (Hydra `_target_` + arguments; `checkpoint=` is passed too when
    the entry has one).

    Contract: the built callable (a torch module or any callable) takes an RGB float batch (B, 3, h, w) with
    values in [0, 1], at the keep-ratio `test_scale` when set, and returns logits (B, C, h', w') with C = 19
    trainIds (or the mapping file's classes): a tensor, a dict with "out" (torchvision) or an object with
    `logits` (transformers). The output is resized to the input size here. Such models have no backbone
    features (`features` is None), which only the feature-based calibration methods need.
    """

    def __init__(self, entry: ZooEntry, device, precision: str = "fp32"):
        super().__init__(entry, device, precision)
        import hydra

        target = entry.builder["_target_"]
        kwargs = {"checkpoint": entry.checkpoint} if entry.checkpoint else {}
        try:
            model = hydra.utils.instantiate(entry.builder, **kwargs)
        except Exception as e:  # import error, bad arguments, the builder's own failure
            raise ConfigError(f"model {entry.key!r}: building it with `{target}` failed: {e}") from e
        if not callable(model):
            raise ConfigError(f"model {entry.key!r}: `{target}` returned a {type(model).__name__}, not a callable "
                              "model")
        self.model = model.to(self.device).eval() if isinstance(model, torch.nn.Module) else model

    @torch.no_grad()
    def logits_and_features(self, images, features: str | None = "whole"):
        """Logits only: a Python model exposes no backbone, so cluster TS (which needs features) cannot use it."""
        check_feature_mode(features)
        x = self._upload(images)
        height, width = x.shape[-2:]
        x = resize_like_cv2(x, keep_ratio_size(height, width, self.entry.test_scale)) / 255
        with self._autocast():
            out = self.model(x)
        seg = out["out"] if isinstance(out, dict) else getattr(out, "logits", out)
        if not torch.is_tensor(seg) or seg.ndim != 4 or seg.shape[0] != x.shape[0]:
            what = tuple(seg.shape) if torch.is_tensor(seg) else type(seg).__name__
            raise ConfigError(f"model {self.key!r} ({self.entry.config}) returned {what} for an input of shape "
                              f"{tuple(x.shape)}; expected logits (B, C, h, w) with B = {x.shape[0]}")
        if seg.shape[1] != self.model_classes:
            raise self._class_count_error(seg.shape[1], self.entry.config)
        (h_in, w_in), (h_out, w_out) = x.shape[-2:], seg.shape[-2:]
        if min(h_out, w_out) < 2 or abs((h_out / w_out) / (h_in / w_in) - 1) > ASPECT_TOLERANCE:
            raise ConfigError(f"model {self.key!r} ({self.entry.config}) returned logits of size {h_out}x{w_out} for "
                              f"an input of {h_in}x{w_in}; expected a dense map of the input's aspect ratio "
                              "(channels first: (B, C, h, w))")
        logits = F.interpolate(seg.float(), size=(height, width), mode="bilinear", align_corners=False)
        return self._to_cityscapes(logits), None


def check_on_batch(segmenter: Segmenter, images) -> None:
    """Run `segmenter` on one real batch and raise a ConfigError naming the model unless it gives finite
    (B, 19, H, W) logits, so that a model that cannot run fails before a sweep, not hours into it."""
    batch, height, width = images.shape[:3]
    try:
        logits, _ = segmenter.logits_and_features(images, features=None)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"model {segmenter.key!r} failed on a test batch of {batch} image(s) of {height}x{width}: "
                          f"{type(e).__name__}: {e}") from e
    expected = (batch, NUM_CLASSES, height, width)
    if tuple(logits.shape) != expected:
        raise ConfigError(f"model {segmenter.key!r} gave logits of shape {tuple(logits.shape)} on a test batch; "
                          f"expected {expected}")
    if not torch.isfinite(logits).all():
        raise ConfigError(f"model {segmenter.key!r} gave non-finite logits (NaN or inf) on a test batch")


def _processor_mean_std(source: str, cache_dir) -> tuple[list[float], list[float]]:
    imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    try:
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(source, cache_dir=cache_dir)
        return list(proc.image_mean), list(proc.image_std)
    except (OSError, ValueError, AttributeError) as e:
        log.warning("no image processor for %s (%s); using ImageNet mean/std", source, e)
        return imagenet


def build_segmenter(entry: ZooEntry, device="cpu", precision: str = "fp32", cache_dir=None,
                    **speed_options) -> Segmenter:
    """The adapter of `entry`.

    `speed_options` (window_batch, channels_last, cudnn_benchmark, reroute_depthwise, reroute_pooling,
    host_resize, compile) go to the mmseg adapter; transformers models
    ignore them."""
    if entry.framework == "transformers":
        return TransformersSegmenter(entry, device, precision, cache_dir)
    if entry.framework == "python":
        return PythonSegmenter(entry, device, precision)
    return MMSegSegmenter(entry, device, precision, cache_dir, **speed_options)
