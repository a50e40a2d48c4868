"""Training pairs for ControlNet: (Cityscapes image, labelIds conditioning, caption), as a seeded stream.

The training data is one endless stream of draws. Draw `position` p belongs to epoch p // N (N items) and
shows item perm_epoch[p % N], where perm_epoch is a permutation seeded by (seed, epoch); its square crop and
flip are seeded by (seed, p), and so are the training step's own draws (DiffusionDraws: the VAE posterior's sample,
the noise, the timestep). Every draw is therefore a pure function of (seed, p). Each rank reads positions
rank, rank + world, ... from `start` on, and the trainer derives `start` from its optimizer step, so a run
resumed from a checkpoint sees exactly the draws that an uninterrupted run would have seen (Lightning itself
replays an interrupted epoch from its first batch).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from synthrel.captions.job import read_captions
from synthrel.data.io import read_image
from synthrel.errors import DatasetError
from synthrel.generation.conditioning import (
    check_encoding,
    crop_resize_image,
    crop_resize_label,
    encode_label_ids,
    square_crop_box,
)
from synthrel.jobs import item_rng, item_seed

log = logging.getLogger(__name__)


def load_captions(path: str | Path) -> dict[str, str]:
    """Read a captions JSONL file ({"id", "caption"} per line) written by the caption stage."""
    return read_captions(path, "stages.train_controlnet.captions")


class ControlNetTrainData(Dataset):
    """Map a stream position to one training example (see the module docstring).

    Items: `pixel_values` (3, R, R) float in [-1, 1]; `conditioning` (C, R, R) float (the `conditioning`
    encoding); `label_ids` (R, R) uint8 (for sample grids); `caption`; `id`; `position`; `crop_box`
    (left, top, right, bottom) in the source frame; `flip`.
    """

    def __init__(
        self,
        dataset,
        captions: Mapping[str, str],
        resolution: int,
        conditioning: str = "label_id",
        seed: int = 0,
        hflip: bool = False,
        conditioning_channels: int | None = None,
        captions_source: str = "captions",
    ):
        self.dataset = dataset
        self.resolution = int(resolution)
        self.conditioning = check_encoding(conditioning)
        self.seed = int(seed)
        self.hflip = bool(hflip)
        self.conditioning_channels = conditioning_channels
        missing = [i for i in dataset.ids() if i not in captions]
        if missing:
            raise DatasetError(
                f"{captions_source} has no caption for {len(missing)} of {len(dataset)} images of "
                f"{dataset.name!r} (first: {missing[0]!r}); re-run the caption stage for this dataset and split"
            )
        self.captions = {i: captions[i] for i in dataset.ids()}
        self._epoch_order: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        """Items per epoch; positions beyond it belong to later epochs."""
        return len(self.dataset)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._epoch_order:
            self._epoch_order = {epoch: item_rng(self.seed, epoch, "shuffle").permutation(len(self.dataset))}
        return self._epoch_order[epoch]

    def locate(self, position: int) -> tuple[int, int]:
        """(epoch, item index) of a stream position."""
        epoch, offset = divmod(int(position), len(self.dataset))
        return epoch, int(self._permutation(epoch)[offset])

    def __getitem__(self, position: int) -> dict:
        epoch, index = self.locate(position)
        item = self.dataset.items[index]
        image = read_image(item.image)
        label_ids = self.dataset.load_label_ids(index)
        if image.shape[:2] != label_ids.shape:
            raise DatasetError(f"size mismatch: image {item.image} is {image.shape[:2]} (H, W) but its labelIds "
                               f"map {item.label} is {label_ids.shape}; expected the same size")
        rng = item_rng(self.seed, position, "crop")
        box = square_crop_box(*label_ids.shape, rng)
        flip = self.hflip and bool(rng.integers(0, 2))
        image = crop_resize_image(image, box, self.resolution)
        label_ids = crop_resize_label(label_ids, box, self.resolution)
        if flip:
            image, label_ids = image[:, ::-1], label_ids[:, ::-1]
        hint = encode_label_ids(np.ascontiguousarray(label_ids), self.conditioning, self.conditioning_channels)
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1.0
        return {
            "pixel_values": pixels,
            "conditioning": torch.from_numpy(hint),
            "label_ids": torch.from_numpy(np.ascontiguousarray(label_ids)),
            "caption": self.captions[item.id],
            "id": item.id,
            "position": int(position),
            "epoch": epoch,
            "crop_box": torch.tensor(box),
            "flip": flip,
        }

    def draw_record(self, position: int) -> dict:
        """What draw `position` shows and how it was seeded, without reading the image (for logs)."""
        epoch, index = self.locate(position)
        return {"position": int(position), "epoch": epoch, "id": self.dataset.items[index].id,
                "crop_seed": item_seed(self.seed, position, "crop")}


class StreamSampler(Sampler[int]):
    """Endless positions start * world + rank, advancing by `world`: this rank's share of the stream."""

    def __init__(self, start: int = 0, rank: int = 0, world_size: int = 1):
        self.first = int(start) * int(world_size) + int(rank)
        self.stride = int(world_size)

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.first, self.stride)


class DiffusionDraws(Dataset):
    """The training examples with the step's random draws added: `posterior_draw` and `noise`, float32 standard
    normals of the latent's shape, and `timestep`, drawn in that order from one CPU generator seeded by
    (seed, position, "diffusion"). These are the values of diffusers' `randn_tensor` with a list of per-sample
    generators, the pipelines' protocol; cast to bfloat16 or float16 they equal draws made in that dtype where the
    latent has a multiple of 16 elements (resolutions that are multiples of 16, as the paper's 512 and 1024).

    Drawn where the example is read, in the loader's workers: the training process then only queues GPU work. Made
    in the training process instead, on an H100 host with the loader's workers busy, these few megabytes of draws
    held about a fifth of the SDXL step's host time (docs/benchmarks.md#host-draws)."""

    def __init__(self, examples: ControlNetTrainData, seed: int, latent_shape: tuple[int, ...],
                 num_train_timesteps: int):
        self.examples = examples
        self.seed = int(seed)
        self.latent_shape = tuple(int(n) for n in latent_shape)
        self.num_train_timesteps = int(num_train_timesteps)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, position: int) -> dict:
        generator = torch.Generator().manual_seed(item_seed(self.seed, position, "diffusion"))
        return {**self.examples[position],
                "posterior_draw": torch.randn(self.latent_shape, generator=generator),
                "noise": torch.randn(self.latent_shape, generator=generator),
                "timestep": torch.randint(0, self.num_train_timesteps, (1,), generator=generator)[0]}
