"""The supplementary's qualitative figures with the user's model beside zoo models.

Fig. 15: per shift domain, a generated image | the label map that drew it | each model's prediction.
Fig. 16: inpainted OOD objects | their mask | each model's confidence (max softmax) map, where a model that
spots the object is unsure on it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from synthrel.analysis.figures import save_figure
from synthrel.conventions import IGNORE_INDEX, PALETTE


def colourise(train_ids: np.ndarray) -> np.ndarray:
    """Cityscapes colours for a trainId map; ignore is black."""
    out = np.zeros((*train_ids.shape, 3), dtype=np.uint8)
    valid = train_ids != IGNORE_INDEX
    out[valid] = PALETTE[train_ids[valid]]
    return out


def _predict(segmenters: dict, image: np.ndarray) -> dict[str, torch.Tensor]:
    """name -> (19, H, W) softmax probabilities of each model on one RGB image."""
    return {name: seg.logits(image[None])[0].float().softmax(0).cpu() for name, seg in segmenters.items()}


def _panel_grid(rows: int, cols: int, image_shape: tuple[int, int]):
    height, width = image_shape
    scale = 2.6 / max(width, 1)
    fig = Figure(figsize=(cols * width * scale, rows * height * scale + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def predictions_figure(samples: dict[str, dict], segmenters: dict, out_stem: str | Path) -> list[str]:
    """Fig. 15: one row per (domain -> sample with image and label), columns image | labels | models."""
    first = next(iter(samples.values()))["image"]
    fig, axes = _panel_grid(len(samples), 2 + len(segmenters), first.shape[:2])
    for r, (domain, sample) in enumerate(samples.items()):
        axes[r, 0].imshow(sample["image"])
        axes[r, 0].set_ylabel(domain)
        axes[r, 1].imshow(colourise(sample["label"]))
        for ax, (name, probs) in zip(axes[r, 2:], _predict(segmenters, sample["image"]).items(), strict=True):
            ax.imshow(colourise(probs.argmax(0).numpy().astype(np.uint8)))
            if r == 0:
                ax.set_title(textwrap.fill(name, 28), fontsize=8)  # long model names: wrapped, not over the next
    axes[0][0].set_title("generated image", fontsize=8)
    axes[0][1].set_title("its label map", fontsize=8)
    fig.suptitle("Generated images, the labels that drew them, and predictions", fontsize=10)
    return save_figure(fig, out_stem)


def ood_confidence_figure(samples: list[dict], segmenters: dict, out_stem: str | Path) -> list[str]:
    """Fig. 16: one row per inpainted image, columns image | OOD mask | each model's max-softmax confidence."""
    fig, axes = _panel_grid(len(samples), 2 + len(segmenters), samples[0]["image"].shape[:2])
    image = None
    for r, sample in enumerate(samples):
        axes[r, 0].imshow(sample["image"])
        axes[r, 0].set_ylabel(sample["id"], fontsize=6)
        axes[r, 1].imshow(np.where(sample["ood"] == IGNORE_INDEX, 0.5, sample["ood"]), cmap="gray", vmin=0, vmax=1)
        for ax, (name, probs) in zip(axes[r, 2:], _predict(segmenters, sample["image"]).items(), strict=True):
            image = ax.imshow(probs.max(0).values.numpy(), cmap="viridis", vmin=0, vmax=1)
            if r == 0:
                ax.set_title(textwrap.fill(name, 28), fontsize=8)  # long model names: wrapped, not over the next
    axes[0][0].set_title("inpainted object", fontsize=8)
    axes[0][1].set_title("OOD mask", fontsize=8)
    fig.colorbar(image, ax=axes[:, 2:].ravel().tolist(), shrink=0.8, label="max softmax confidence")
    fig.suptitle("OOD confidence maps on inpainted objects (low confidence on the object = detected)", fontsize=10)
    return save_figure(fig, out_stem)
