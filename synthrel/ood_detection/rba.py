"""RbA ("Rejected by All", Nayal et al. ICCV'23) on a transformers Mask2Former, and its outlier-exposure
fine-tuning with synthetic OOD objects instead of COCO (spec S11, supplementary A.4).

Per-pixel class scores l_c = sum_q softmax(cls_q)[c] * sigmoid(mask_q) over the 19 classes (void column
dropped, as RbA's `semantic_inference`); anomaly score s = -sum_c tanh(l_c) (higher = more OOD).
Fine-tuning trains only the mask-embedding MLP and the class head (RbA's
FREEZE_TRANSFORMER_DECODER_EXCEPT_MLP), with the usual Mask2Former losses plus RbA's squared hinge
mean(relu(s_id - 0)^2) + mean(relu(5 - s_ood)^2), halved when the batch has OOD pixels.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from synthrel.conventions import IGNORE_INDEX, OOD_LABEL_ID
from synthrel.errors import ConfigError
from synthrel.metrics.ood import rba_score
from synthrel.tracking import log_step_losses

#: transformers names of the trainable parts (detectron2 RbA: predictor.mask_embed and predictor.class_embed).
TRAINABLE_PREFIXES = ("class_predictor.", "model.transformer_module.decoder.mask_predictor.mask_embedder.")
IMAGENET_MEAN = (123.675, 116.28, 103.53)  # Mask2Former's PIXEL_MEAN / PIXEL_STD (RGB, 0-255)
IMAGENET_STD = (58.395, 57.12, 57.375)


def load_mask2former(name_or_path, arch=None, allow_pickle: bool = False):
    """An RbA Mask2Former (Mask2FormerForUniversalSegmentation) from a hub id, a save_pretrained folder (tiny,
    converted or fine-tuned), or a detectron2 checkpoint file (.pth/.pkl, RbA's releases) converted in memory
    with its architecture `arch` (synthrel.ood_detection.convert.ARCHS or a JSON file). `name_or_path` may also be
    a mapping {checkpoint, arch, allow_pickle} (a `stages.ood_detection.rba.models` entry)."""
    from synthrel.errors import WeightsError
    from synthrel.ood_detection.convert import convert_checkpoint, is_checkpoint_file, rba_model_class

    if isinstance(name_or_path, dict):
        spec = dict(name_or_path)
        unknown = set(spec) - {"checkpoint", "arch", "allow_pickle"}
        if unknown or "checkpoint" not in spec:
            raise ConfigError(f"RbA model entry {spec}: expected keys checkpoint (required), arch, allow_pickle")
        name_or_path, arch = spec["checkpoint"], spec.get("arch", arch)
        allow_pickle = spec.get("allow_pickle", allow_pickle)
    name_or_path = str(name_or_path)
    if is_checkpoint_file(name_or_path):
        if arch is None:
            raise ConfigError(f"{name_or_path} is a detectron2 checkpoint: give its architecture "
                              "(stages.ood_detection.rba.models.<name>.arch: swin_b_1dl | swin_l_1dl | a JSON file)")
        model = convert_checkpoint(name_or_path, arch, allow_pickle)
    else:
        try:
            model = rba_model_class().from_pretrained(name_or_path)
        except OSError as err:
            raise WeightsError(f"cannot load Mask2Former {name_or_path!r} (a hub id, a save_pretrained folder or a "
                               f"detectron2 .pth/.pkl): {err}") from err
    if model.config.num_labels != 19:
        raise WeightsError(f"{name_or_path}: expected a Cityscapes model with 19 labels, got {model.config.num_labels}")
    return model


def to_pixel_values(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """RGB uint8 (B, H, W, 3) -> normalised float (B, 3, H, W), Mask2Former's pixel mean/std."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float()
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def model_batch(batch: dict) -> dict:
    """collate_outliers' uint8 batch -> the model's (normalised float pixel_values, int64 label and outlier_mask),
    on the device the batch is on; a batch that already has pixel_values is returned as it is."""
    if "pixel_values" in batch:
        return batch
    return {"pixel_values": to_pixel_values(batch["images"]), "label": batch["label"].long(),
            "outlier_mask": batch["outlier_mask"].long()}


def class_scores(class_queries_logits: torch.Tensor, masks_queries_logits: torch.Tensor, size) -> torch.Tensor:
    """l (B, 19, H, W) = sum_q softmax(cls_q)[:19] * sigmoid(mask_q), masks upsampled bilinearly to `size`."""
    probs = class_queries_logits.softmax(-1)[..., :-1]
    masks = F.interpolate(masks_queries_logits, size=tuple(size), mode="bilinear", align_corners=False).sigmoid()
    return torch.einsum("bqc,bqhw->bchw", probs, masks)


@torch.no_grad()
def rba_predict(model, images, device=None, autocast_dtype: torch.dtype | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(anomaly scores (B, H, W), class scores (B, 19, H, W)) for RGB uint8 images (B, H, W, 3), float32 either
    way. `autocast_dtype` runs the network under autocast (RbA scores in fp32); the class and anomaly scores are
    computed from the query logits in float32 all the same, so only the network's rounding changes."""
    model.eval()
    device = torch.device(device or next(model.parameters()).device)
    # uint8 to the device first: a quarter of the bytes of float pixels, normalised there (the same float32 math)
    pixel_values = to_pixel_values(torch.as_tensor(images).to(device, non_blocking=True))
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        out = model(pixel_values=pixel_values)
    scores = class_scores(out.class_queries_logits.float(), out.masks_queries_logits.float(),
                          pixel_values.shape[-2:])
    return rba_score(scores), scores


def outlier_hinge_loss(score: torch.Tensor, outlier_mask: torch.Tensor, inlier_upper: float = 0.0,
                       outlier_lower: float = 5.0) -> torch.Tensor:
    """RbA's squared hinge on the anomaly score: outlier_mask 0 ID, 1 OOD, anything else ignored."""
    inlier = score[outlier_mask == 0]
    outlier = score[outlier_mask == 1]
    loss = F.relu(inlier - inlier_upper).pow(2).mean() if inlier.numel() else score.sum() * 0
    if outlier.numel():
        loss = 0.5 * (loss + F.relu(outlier_lower - outlier).pow(2).mean())
    return loss


def semantic_targets(label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask2Former targets of a trainId map: one binary mask per present class (ignore and OOD excluded)."""
    classes = [c for c in torch.unique(label).tolist() if c not in (IGNORE_INDEX, OOD_LABEL_ID)]
    masks = torch.stack([(label == c) for c in classes]).float() if classes else label.new_zeros((0, *label.shape),
                                                                                                    dtype=torch.float)
    return masks, torch.tensor(classes, dtype=torch.long, device=label.device)


def freeze_except_mlp(model) -> list[str]:
    """Freeze everything but the mask-embedding MLP and the class head; return the trainable names."""
    names = []
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith(TRAINABLE_PREFIXES)
        if param.requires_grad:
            names.append(name)
    if not names:
        raise RuntimeError(f"no parameter starts with {TRAINABLE_PREFIXES}: has transformers renamed them?")
    return names


class RbAFineTuner(pl.LightningModule):
    """Outlier-exposure fine-tuning of RbA. Batches: dict(pixel_values (B,3,H,W), label (B,H,W) trainIds with
    254 on outliers, outlier_mask (B,H,W) 0 ID / 1 OOD / 255 ignore), or collate_outliers' uint8 form of it."""

    def __init__(self, model_path, lr: float = 1e-4, weight_decay: float = 0.05, max_steps: int = 2000,
                 poly_power: float = 0.9, warmup_iters: int = 0, warmup_factor: float = 1.0,
                 warmup_method: str = "linear", inlier_upper: float = 0.0, outlier_lower: float = 5.0,
                 outlier_weight: float = 1.0):
        super().__init__()
        self.save_hyperparameters()
        self.model = load_mask2former(model_path)
        self.trainable = freeze_except_mlp(self.model)

    def losses(self, batch) -> dict[str, torch.Tensor]:
        batch = model_batch(batch)
        targets = [semantic_targets(lab) for lab in batch["label"]]
        out = self.model(pixel_values=batch["pixel_values"], mask_labels=[m for m, _ in targets],
                         class_labels=[c for _, c in targets])
        scores = class_scores(out.class_queries_logits, out.masks_queries_logits, batch["label"].shape[-2:])
        hinge = outlier_hinge_loss(rba_score(scores), batch["outlier_mask"], self.hparams.inlier_upper,
                                   self.hparams.outlier_lower)
        outlier = self.hparams.outlier_weight * hinge
        return {"mask2former": out.loss, "outlier": outlier, "loss": out.loss + outlier}

    def training_step(self, batch, batch_idx):
        losses = self.losses(batch)
        log_step_losses(self, {f"train/{k}": v for k, v in losses.items()}, batch_idx, len(batch["label"]))
        return losses["loss"]

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        hp = self.hparams
        poly = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: warmup_poly_factor(
            it, hp.max_steps, hp.poly_power, hp.warmup_iters, hp.warmup_factor, hp.warmup_method))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": poly, "interval": "step"}}


def warmup_poly_factor(it: int, max_iters: int, power: float = 0.9, warmup_iters: int = 0,
                       warmup_factor: float = 1.0, warmup_method: str = "linear",
                       constant_ending: float = 0.0) -> float:
    """Mask2Former/detectron2 WarmupPolyLR as a multiplier of the base lr at iteration `it` (RbA: power 0.9,
    no warmup, constant ending 0)."""
    if it >= warmup_iters:
        warm = 1.0
    elif warmup_method == "constant":
        warm = warmup_factor
    elif warmup_method == "linear":
        alpha = it / warmup_iters
        warm = warmup_factor * (1 - alpha) + alpha
    else:
        raise ConfigError(f"warmup_method {warmup_method!r}: use linear or constant")
    poly = max(0.0, 1 - it / max_iters) ** power
    if constant_ending > 0 and warm == 1.0 and poly < constant_ending:
        return constant_ending
    return warm * poly
