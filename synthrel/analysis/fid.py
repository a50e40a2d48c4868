"""FID between a synthetic set and its real counterpart (supplementary Table 4), with torchmetrics.

`feature_extractor: inception` is the standard FID (Inception-V3 pool3, 2048 features): torch-fidelity's
TF-compatible network where torch-fidelity imports (GPU images, with torchvision), else its rebuild in
synthrel.analysis.inception without torchvision (which cannot be installed beside the locked CPU torch; tested
equal: tests/analysis/test_fid_torch_fidelity.py), loaded from a local weights file (torch-fidelity's
weights-inception-2015-12-05-6726825d.pth); nothing downloads here.
`feature_extractor: tiny` is a fixed, seeded random conv net passed to torchmetrics as a custom module:
it runs offline and is deterministic, but its values are NOT comparable with published FIDs.
Images are resized to one fixed resolution before feature extraction; every setting is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from synthrel.analysis.inception import INCEPTION_WEIGHTS
from synthrel.errors import ConfigError, DatasetError, WeightsError
from synthrel.jobs import Manifest, atomic_path, exclusive_output, positive_int, write_json_atomic
from synthrel.runstats import SteadyRate

log = logging.getLogger(__name__)

Extractor = Literal["inception", "tiny"]
EXTRACTORS = get_args(Extractor)


class TinyFeatureExtractor(nn.Module):
    """Three strided convolutions + global average pooling with weights drawn from `seed` (never trained)."""

    def __init__(self, num_features: int = 64, seed: int = 0):
        super().__init__()
        self.num_features = num_features
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, num_features, 3, stride=2, padding=1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        generator = torch.Generator().manual_seed(seed)
        for module in self.net:
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels * 9
                module.weight.data = torch.randn(module.weight.shape, generator=generator) / fan_in**0.5
                module.bias.data.zero_()
        self.requires_grad_(False).eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> float (N, num_features)."""
        return self.net(images.float() / 255.0)


def build_fid(
    feature_extractor: str = "tiny",
    weights_path: str | None = None,
    num_features: int = 64,
    seed: int = 0,
):
    """A torchmetrics FrechetInceptionDistance on uint8 images with the chosen feature extractor."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if feature_extractor == "tiny":
        return FrechetInceptionDistance(feature=TinyFeatureExtractor(num_features, seed), normalize=False)
    if feature_extractor != "inception":
        raise ConfigError(f"feature_extractor={feature_extractor!r}; valid: {', '.join(EXTRACTORS)}")
    if not weights_path or not Path(weights_path).is_file():
        raise WeightsError(
            f"feature_extractor=inception needs the FID Inception-V3 weights ({INCEPTION_WEIGHTS}, from the "
            "torch-fidelity GitHub releases) on disk: set stages.fid.feature_extractor_weights_path=/path/to/"
            f"{INCEPTION_WEIGHTS} (got {weights_path!r}); `preflight=download` fetches it to the default path"
        )
    from synthrel.analysis.inception import FIDInceptionV3

    checked = FIDInceptionV3.from_file(weights_path)  # keys, shapes and sha256 checked, with a clear error
    maintained = torch_fidelity_inception()
    if maintained is None:
        return FrechetInceptionDistance(feature=checked, normalize=False)
    return FrechetInceptionDistance(feature=FidelityInception(maintained, checked), normalize=False)


def torch_fidelity_inception():
    """torch-fidelity's FeatureExtractorInceptionV3 where it imports (it needs torchvision, present on GPU
    images), else None: synthrel.analysis.inception is the fallback, tested equal to it."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except (ImportError, RuntimeError):  # absent, or a torchvision that does not match torch
        return None
    return FeatureExtractorInceptionV3


class FidelityInception(nn.Module):
    """torch-fidelity's FID Inception (pool3, 2048 features of uint8 images) loaded from the file `checked` was
    read from, carrying its weights path, sha256 and `official_weights` for the FID record."""

    def __init__(self, extractor_class, checked):
        super().__init__()
        self.net = extractor_class("inception-v3-compat", ["2048"], feature_extractor_weights_path=checked.weights_path)
        self.net.requires_grad_(False).eval()
        self.weights_path, self.weights_sha256 = checked.weights_path, checked.weights_sha256
        self.official_weights = checked.official_weights

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        (features,) = self.net(images)
        return features.reshape(len(images), -1)


def resize_batch(images: Sequence[np.ndarray], resolution: Sequence[int]) -> torch.Tensor:
    """RGB uint8 (H, W, 3) images -> uint8 tensor (N, 3, h, w), bicubic resize with PIL to (h, w)."""
    height, width = resolution
    arrays = [np.asarray(Image.fromarray(img).convert("RGB").resize((width, height), Image.BICUBIC))
              for img in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _batches(images: Iterable[np.ndarray], size: int):
    batch = []
    for image in images:
        batch.append(image)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def compute_fid(
    real_images: Iterable[np.ndarray],
    synthetic_images: Iterable[np.ndarray],
    feature_extractor: str = "tiny",
    feature_extractor_weights_path: str | None = None,
    resolution: Sequence[int] = (64, 64),
    batch_size: int = 32,
    num_features: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
    rate: SteadyRate | None = None,
) -> dict:
    """FID of two image streams; returns the value, the image counts and the settings used. `rate` (the stage's
    SteadyRate) counts the images read, resized and featurised after the first batch."""
    rate = rate or SteadyRate()
    metric = build_fid(feature_extractor, feature_extractor_weights_path, num_features, seed).to(device)
    counts = {}
    with rate.loop():
        for name, images, real in (("n_real", real_images, True), ("n_synthetic", synthetic_images, False)):
            counts[name] = 0
            for batch in _batches(images, batch_size):
                metric.update(resize_batch(batch, resolution).to(device), real=real)
                counts[name] += len(batch)
                rate.tick(len(batch))
    if min(counts.values()) < 2:
        raise DatasetError(f"FID needs at least 2 images on each side (a covariance of features); got "
                           f"{counts['n_real']} real and {counts['n_synthetic']} synthetic: add images to the smaller "
                           "set or leave this pair out of stages.fid.pairs")
    value = float(metric.compute())
    inception = metric.inception if feature_extractor == "inception" else None
    settings = {"feature_extractor": feature_extractor, "resolution": list(resolution), "resize": "PIL bicubic",
                "num_features": 2048 if feature_extractor == "inception" else num_features,
                "feature_extractor_weights_path": feature_extractor_weights_path,
                "extractor_seed": seed if feature_extractor == "tiny" else None,
                "weights_sha256": getattr(inception, "weights_sha256", None),
                "official_weights": inception.official_weights if inception is not None else None}
    return {"fid": value, **counts, **settings}


def _dataset(spec, dataset_configs: Mapping):
    """A dataset from a name in `dataset_configs` (the `datasets` config), a config with _target_, or an object."""
    if isinstance(spec, str):
        if spec not in dataset_configs:
            raise ConfigError(f"stages.fid.pairs: unknown dataset {spec!r}; valid: {', '.join(sorted(dataset_configs))}")
        spec = dataset_configs[spec]
    if isinstance(spec, Mapping) and "_target_" in spec:
        from synthrel.data.build import build_dataset

        return build_dataset(spec)
    return spec


def _images(dataset, max_images: int | None, seed: int):
    """Images of a dataset, all of them or a seeded subset of `max_images` (recorded by the caller)."""
    indices = np.arange(len(dataset))
    if max_images is not None and max_images < len(indices):
        indices = np.sort(np.random.default_rng(seed).choice(indices, max_images, replace=False))
    for i in indices:
        yield dataset[int(i)]["image"]


@dataclass
class FIDJob:
    """FID for each (generator, domain) pair; results accumulate in output_dir so multirun jobs add up.

    Each pair: {generator, domain, real, synthetic}, where real/synthetic name a dataset of `dataset_configs`
    (e.g. acdc_fog, synthetic, cityscapes), or are a dataset config / dataset object.
    A pair already recorded in fid_manifest.jsonl is skipped unless `force`.
    """

    pairs: list[dict]
    output_dir: str
    dataset_configs: dict = field(default_factory=dict)
    feature_extractor: Extractor = "tiny"
    feature_extractor_weights_path: str | None = None
    resolution: list[int] = field(default_factory=lambda: [299, 299])
    num_features: int = 64
    max_images: int | None = None
    batch_size: int = 32
    seed: int = 0
    force: bool = False
    device: str = "auto"
    profile: str = "paper"

    def __post_init__(self):
        if len(self.resolution) != 2:
            raise ConfigError(f"stages.fid.resolution must be [height, width], got {self.resolution}")
        positive_int(self.batch_size, "stages.fid.batch_size")
        if self.max_images is not None:
            positive_int(self.max_images, "stages.fid.max_images")
        for pair in self.pairs:
            missing = {"generator", "domain", "real", "synthetic"} - set(pair)
            if missing:
                raise ConfigError(f"stages.fid.pairs: entry {sorted(pair)} lacks {sorted(missing)}")

    def run(self) -> dict:
        from synthrel.runtime import resolve_device

        out = Path(self.output_dir)
        manifest = Manifest(out / "fid_manifest.jsonl", key="pair")
        done = {} if self.force else {r["pair"]: r for r in manifest.read()}
        rate = SteadyRate("image", note=f"batch {self.batch_size}, {self.feature_extractor} features at "
                                        f"{self.resolution[0]}x{self.resolution[1]}, image reading included")
        for pair in self.pairs:
            key = f"{pair['generator']}/{pair['domain']}/{self.feature_extractor}"
            if key in done:
                log.info("FID %s already computed; skipped (force=true recomputes)", key)
                continue
            record = compute_fid(
                _images(_dataset(pair["real"], self.dataset_configs), self.max_images, self.seed),
                _images(_dataset(pair["synthetic"], self.dataset_configs), self.max_images, self.seed),
                self.feature_extractor, self.feature_extractor_weights_path, self.resolution, self.batch_size,
                self.num_features, self.seed, resolve_device(self.device), rate,
            )
            record.update(pair=key, generator=str(pair["generator"]), domain=str(pair["domain"]),
                          real=str(pair["real"]) if isinstance(pair["real"], str) else None,
                          synthetic=str(pair["synthetic"]) if isinstance(pair["synthetic"], str) else None,
                          max_images=self.max_images,
                          subset_seed=self.seed, profile=self.profile)
            manifest.append(record)
            log.info("FID %s = %.2f", key, record["fid"])
        with exclusive_output(out, wait=True):  # parallel jobs of a sweep add up: each table from every record
            return {**self.write_tables(out, manifest.read()), "steady_rates": {"fid": rate.result()}}

    def write_tables(self, out: Path, records: list[dict]) -> dict:
        from synthrel.analysis.correlation import order_domains, order_generators
        from synthrel.reporting import NOT_MEASURED_FOOTNOTE, save_table

        tidy = pd.DataFrame(records)
        tidy = tidy[tidy["feature_extractor"] == self.feature_extractor]
        with atomic_path(out / "fid.csv") as tmp:
            tidy.to_csv(tmp, index=False)
        layout = tidy.pivot_table(index="generator", columns="domain", values="fid", aggfunc="last")
        layout = layout.reindex(index=order_generators(layout.index), columns=order_domains(layout.columns))
        layout.columns.name = None
        title = f"Table 4 layout: FID (lower is better), {self.feature_extractor} features at " \
                f"{self.resolution[0]}x{self.resolution[1]}"
        if self.feature_extractor == "tiny":
            title += " (random tiny extractor: not comparable with published FIDs)"
        paths = save_table(layout, out, "table4_fid", digits=1, caption=title, na_footnote=NOT_MEASURED_FOOTNOTE)
        write_json_atomic(out / "fid_outputs.json", [
            {"kind": "table", "title": title, **paths},
            {"kind": "data", "title": "FID per pair (tidy, with settings)", "csv": str(out / "fid.csv")},
        ])
        return {"fid_dir": str(out), "n_pairs": len(tidy)}
