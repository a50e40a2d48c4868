"""The supplementary's qualitative figures: the forecast's (the user's model beside zoo models) and the
`qualitative` stage's (chosen zoo models on real and synthetic images, experiments/fig15_16.sh).

Fig. 15: per row an image | its label map | each model's prediction.
Fig. 16: OOD images | their mask | each model's confidence (max softmax) map, where a model that spots the
object is unsure on it.
"""

from __future__ import annotations

import logging
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from synthrel.analysis.figures import save_figure
from synthrel.config import to_plain
from synthrel.conventions import IGNORE_INDEX, PALETTE
from synthrel.errors import ConfigError, unknown_name
from synthrel.jobs import positive_int, write_json_atomic
from synthrel.zoo.predictor import Precision

log = logging.getLogger(__name__)


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


def predictions_figure(samples: dict[str, dict], segmenters: dict, out_stem: str | Path,
                       title: str = "Generated images, the labels that drew them, and predictions") -> list[str]:
    """Fig. 15: one row per (row name -> sample with image and label), columns image | labels | models."""
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
    axes[0][0].set_title("image", fontsize=8)
    axes[0][1].set_title("label map", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_stem)


def ood_confidence_figure(samples: list[dict], segmenters: dict, out_stem: str | Path,
                          title: str = "OOD confidence maps on inpainted objects (low confidence on the object = "
                                       "detected)") -> list[str]:
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
    axes[0][0].set_title("OOD image", fontsize=8)
    axes[0][1].set_title("OOD mask", fontsize=8)
    fig.colorbar(image, ax=axes[:, 2:].ravel().tolist(), shrink=0.8, label="max softmax confidence")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_stem)


SECTION = "Qualitative: Fig. 15 and Fig. 16"


@dataclass
class QualitativeJob:
    """Fig. 15 and Fig. 16 for chosen zoo models (the `qualitative` stage): their predictions on the real set and
    the synthetic set of each shift domain (one row each), and their max-softmax confidence maps on OOD images
    of the synthetic OOD-object set and of a real OOD set. Writes the figures and qualitative_outputs.json (the
    report's index) under `output_dir`."""

    models: list[str]
    zoo: dict
    dataset_configs: dict
    output_dir: str
    # domain -> its real set (as real_split reports it); the synthetic set is <synthetic_root>/<domain>
    domains: dict[str, str] = field(default_factory=dict)
    synthetic_root: str | None = None
    generator: str = "sd15"
    ood_datasets: list[str] = field(default_factory=lambda: ["ood_objects", "road_anomaly"])
    images: int = 2  # per OOD set in Fig. 16
    device: str = "auto"
    precision: Precision = "fp32"
    cache_dir: str | None = None
    profile: str = "paper"

    def __post_init__(self):
        from synthrel.zoo.registry import zoo_entries

        self.models, self.zoo = list(to_plain(self.models) or []), to_plain(self.zoo)
        self.dataset_configs, self.domains = to_plain(self.dataset_configs), dict(to_plain(self.domains) or {})
        self.ood_datasets = list(to_plain(self.ood_datasets) or [])
        if not self.models:
            raise ConfigError("stages.qualitative.models is empty; name the zoo models of Fig. 15 / 16, e.g. "
                              "stages.qualitative.models=[segformer_b0,pspnet_r18]")
        self.entries = zoo_entries(self.zoo)
        for key in self.models:
            if key not in self.entries:
                raise unknown_name("zoo model", key, self.entries, key="stages.qualitative.models")
        for name in [*self.domains.values(), *self.ood_datasets]:
            if name not in self.dataset_configs:
                raise unknown_name("dataset", name, self.dataset_configs, key="stages.qualitative")
        if self.domains and not self.synthetic_root:
            raise ConfigError("stages.qualitative.synthetic_root is not set (the folder of <domain> synthetic sets)")
        if not self.domains and not self.ood_datasets:
            raise ConfigError("stages.qualitative: no `domains` and no `ood_datasets`, so no figure to draw")
        positive_int(self.images, "stages.qualitative.images")

    def run(self) -> dict:
        from synthrel.data.build import build_dataset
        from synthrel.data.synthetic import SyntheticDataset
        from synthrel.runtime import resolve_device
        from synthrel.zoo.predictor import build_segmenter

        device = resolve_device(self.device)
        segmenters = {self.entries[k].display_name: build_segmenter(self.entries[k], device, self.precision,
                                                                    self.cache_dir) for k in self.models}
        out = Path(self.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        names = ", ".join(segmenters)
        index = []
        rows = {}
        for domain, real in self.domains.items():
            rows[f"{domain}: {real}"] = build_dataset(self.dataset_configs[real])[0]
            synthetic = SyntheticDataset(Path(self.synthetic_root) / domain, name=f"synthetic_{domain}",
                                         root_key="stages.qualitative.synthetic_root")
            rows[f"{domain}: {self.generator}"] = synthetic[0]
        if rows:
            paths = predictions_figure(rows, segmenters, out / "fig15_predictions",
                                       title="Fig. 15: real and synthetic images of each shift, their labels, and "
                                             "the predictions of the chosen models")
            index.append({"kind": "figure", "section": SECTION, "files": paths,
                          "title": f"Fig. 15: predictions of {names} on the real set ({', '.join(self.domains.values())}) "
                                   f"and the {self.generator} synthetic set of each shift"})
        ood = []
        for name in self.ood_datasets:
            dataset = build_dataset(self.dataset_configs[name])
            ood += [dataset[i] for i in range(min(self.images, len(dataset)))]
        if ood:
            paths = ood_confidence_figure(ood, segmenters, out / "fig16_ood_confidence",
                                          title="Fig. 16: OOD confidence maps (max softmax; low on the object = "
                                                "detected)")
            index.append({"kind": "figure", "section": SECTION, "files": paths,
                          "title": f"Fig. 16: max-softmax confidence of {names} on OOD images of "
                                   f"{', '.join(self.ood_datasets)}"})
        write_json_atomic(out / "qualitative_outputs.json", index)
        write_json_atomic(out / "qualitative_settings.json",
                          {"profile": self.profile, "models": self.models, "domains": self.domains,
                           "generator": self.generator, "ood_datasets": self.ood_datasets, "images": self.images})
        log.info("qualitative: %d figure(s) in %s", len(index), out)
        return {"analysis_dir": str(out), "n_figures": len(index)}
