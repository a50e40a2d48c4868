"""`TrainZooJob`: train zoo models briefly from given initial weights, each to its own budget.

The demo uses it on the tiny profile: random-init tiny models all score near zero, so the demo's tables and
correlations would have no spread. Each entry to train names an initial-weights folder (`init`: an mmseg
`config.py` + `checkpoint.pth`, or a transformers `save_pretrained` folder; on profile=tiny the tiny_models
stage writes them) and a number of optimisation steps (`steps`, 0 keeps the init); every run starts from that
init, never from a checkpoint trained earlier, so a re-run after a kill gives the same weights. Images reach
the network exactly as at inference (the predictor's own channel order, resize to the test scale and
normalisation), flipped at random, and each model learns through its framework's own loss. The trained weights
replace the entry's files atomically, in the format the zoo loader reads, and a `train_zoo.json` beside them
records the settings: a model whose record matches is skipped unless `force`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from synthrel.config import to_plain
from synthrel.conventions import IGNORE_INDEX
from synthrel.data.build import build_dataset
from synthrel.errors import ConfigError, WeightsError, unknown_name
from synthrel.jobs import atomic_path, item_seed, positive_int, read_json_artifact, write_json_atomic
from synthrel.runtime import resolve_device
from synthrel.zoo.predictor import build_segmenter, keep_ratio_size, resize_like_cv2
from synthrel.zoo.registry import ZooEntry, inference, zoo_entries

log = logging.getLogger(__name__)

RECORD_FILE = "train_zoo.json"


def model_folder(entry: ZooEntry) -> Path:
    """The folder that holds a trained entry's files (and its training record)."""
    if entry.framework == "transformers":
        return Path(entry.config)
    return Path(entry.checkpoint).parent


def read_record(entry: ZooEntry) -> dict | None:
    """The training record of `entry` (None: never trained by train_zoo)."""
    path = model_folder(entry) / RECORD_FILE
    return read_json_artifact(path, "a train_zoo training record", "Train the model again with force=true") \
        if path.is_file() else None


def data_fingerprint(dataset) -> str:
    """sha1 over the ids and file contents of a dataset, so retraining follows regenerated data."""
    digest = hashlib.sha1()
    for item in dataset.items:
        digest.update(item.id.encode())
        for path in (item.image, item.label):
            digest.update(Path(path).read_bytes() if path is not None else b"-")
    return digest.hexdigest()


@contextlib.contextmanager
def _torch_threads(count: int | None):
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _Batches:
    """Training images at the model's test scale (as inference sees them) and their labels, with flips."""

    def __init__(self, images: list[torch.Tensor], labels: list[torch.Tensor], seed: int, batch_size: int):
        self.images, self.labels = images, labels
        self.rng = np.random.default_rng(seed)
        self.batch_size = min(batch_size, len(images))

    def next(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        picks = self.rng.choice(len(self.images), self.batch_size, replace=False)
        flips = self.rng.random(self.batch_size) < 0.5
        images = [self.images[i].flip(-1) if f else self.images[i] for i, f in zip(picks, flips, strict=True)]
        labels = [self.labels[i].flip(-1) if f else self.labels[i] for i, f in zip(picks, flips, strict=True)]
        return images, labels


def _label_at(label: np.ndarray, size: tuple[int, int], device) -> torch.Tensor:
    """Nearest-neighbour resize of a trainIds map to (h, w), as mmseg's Resize does for segmentation maps."""
    if label.shape != tuple(size):
        label = cv2.resize(label, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return torch.from_numpy(np.ascontiguousarray(label)).long().to(device)


class _MMSegLoss:
    """mmseg: the predictor's own test-time preprocessing, mmseg's batch padding, then `model.loss`."""

    def __init__(self, segmenter, samples: list[dict]):
        self.model = segmenter.model
        self.images, self.labels = [], []
        for sample in samples:
            x, _ = segmenter._preprocess(sample["image"][None])  # exactly what inference feeds the network
            self.images.append(x[0])
            self.labels.append(_label_at(sample["label"], x.shape[-2:], segmenter.device)[None])
        self.size = tuple(int(v) for v in np.max([x.shape[-2:] for x in self.images], 0))

    def __call__(self, images, labels) -> torch.Tensor:
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        from mmseg.utils import stack_batch

        samples = [SegDataSample(gt_sem_seg=PixelData(data=lab),
                                 metainfo=dict(img_shape=tuple(x.shape[-2:]), ori_shape=tuple(x.shape[-2:])))
                   for x, lab in zip(images, labels, strict=True)]
        pre = self.model.data_preprocessor  # its padding values; normalisation is already done
        inputs, samples = stack_batch(images, samples, size=self.size, pad_val=pre.pad_val,
                                      seg_pad_val=pre.seg_pad_val)
        loss, _ = self.model.parse_losses(self.model.loss(inputs, samples))
        return loss


class _TransformersLoss:
    """transformers SegFormer: normalised RGB pixel values and its own loss, ignoring label 255."""

    def __init__(self, segmenter, samples: list[dict]):
        self.model = segmenter.model
        self.model.config.semantic_loss_ignore_index = IGNORE_INDEX
        self.images, self.labels = [], []
        for sample in samples:
            x = segmenter._upload(sample["image"][None])
            size = keep_ratio_size(*x.shape[-2:], segmenter.entry.test_scale)
            self.images.append(((resize_like_cv2(x, size) - segmenter.mean) / segmenter.std)[0])
            self.labels.append(_label_at(sample["label"], size, segmenter.device))
        if len({tuple(x.shape) for x in self.images}) > 1:
            raise ConfigError("transformers models train on batches of one size: the training images must "
                              "have one size at the test scale")

    def __call__(self, images, labels) -> torch.Tensor:
        return self.model(pixel_values=torch.stack(images), labels=torch.stack(labels)).loss


def init_entry(entry: ZooEntry, init: str | Path) -> ZooEntry:
    """`entry` pointed at the initial weights in folder `init` (same framework, same test settings)."""
    init = Path(init)
    if entry.framework == "mmseg":
        return dataclasses.replace(entry, config=str(init / "config.py"), checkpoint=str(init / "checkpoint.pth"))
    return dataclasses.replace(entry, config=str(init), checkpoint=None)


def train_entry(entry: ZooEntry, init: str | Path, samples: list[dict], steps: int, *, batch_size: int, lr: float,
                weight_decay: float, seed: int, device, desc: str = "") -> dict:
    """Train `entry` from the weights in `init` for `steps` steps; write its files; return the losses.

    The data stream is keyed by the init folder's name: entries trained from one init (one architecture at
    two budgets) see the same batches, so a short budget is the start of the long run."""
    init = Path(init)
    folder = model_folder(entry)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.train"))
    try:
        segmenter = build_segmenter(init_entry(entry, init), device)  # the zoo's own loading path
        model = segmenter.model
        losses = []
        if steps:
            loss_fn = (_MMSegLoss if entry.framework == "mmseg" else _TransformersLoss)(segmenter, samples)
            stream = item_seed(seed, 0, f"train_zoo/{init.name}")
            batches = _Batches(loss_fn.images, loss_fn.labels, stream, batch_size)
            torch.manual_seed(stream)  # dropout / drop-path
            optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
            model.train()
            for _ in tqdm(range(steps), desc=desc or f"train {entry.key}", unit="step", leave=False):
                loss = loss_fn(*batches.next())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            model.eval()
        _write_model(entry, init, model, tmp / "trained")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"losses": losses}


def _write_model(entry: ZooEntry, init: Path, model: torch.nn.Module, scratch: Path) -> None:
    """Replace the entry's files one by one, each atomically, in the format the zoo loader reads."""
    if entry.framework == "mmseg":
        _copy_atomic(init / "config.py", Path(entry.config))
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        meta = torch.load(init / "checkpoint.pth", map_location="cpu", weights_only=False).get("meta") or {}
        with atomic_path(entry.checkpoint) as tmp:
            torch.save({"state_dict": state, "meta": meta}, tmp)  # the init's meta, as mmseg's own training keeps
        return
    model.save_pretrained(scratch)
    for path in sorted(init.iterdir()):  # the image processor config of the init, then the saved model
        if path.is_file() and not (scratch / path.name).exists():
            shutil.copy2(path, scratch / path.name)
    for path in sorted(scratch.iterdir()):
        _copy_atomic(path, Path(entry.config) / path.name)


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


@dataclass
class TrainZooJob:
    """Train the models of `zoo` named in `init`, each from its init folder for its budget in `steps`, on the
    `split` of `dataset`. Zoo models not named in `init` (the paper zoo) are left alone."""

    zoo: dict
    dataset: dict  # a dataset config (`_target_` ...), instantiated with `split`
    steps: dict[str, int] | None  # zoo key -> optimisation steps (0: the init itself); null: none
    init: dict[str, str] | None = dataclasses.field(default_factory=dict)  # zoo key -> folder of its initial weights
    split: str = "train"
    batch_size: int = 4
    lr: float = 2e-3
    weight_decay: float = 0.01
    cpu_threads: int | None = 1
    seed: int = 0
    device: str = "auto"
    force: bool = False

    def __post_init__(self):
        self.zoo = to_plain(self.zoo)
        self.dataset = to_plain(self.dataset)
        self.steps = to_plain(self.steps) or {}
        self.init = {k: str(v) for k, v in (to_plain(self.init) or {}).items()}
        entries = zoo_entries(self.zoo)
        zoo_name = self.zoo.get("name", "?")
        for key in self.init:
            if key not in entries:
                raise unknown_name("zoo model", key, entries, key=f"stages.train_zoo.init ({zoo_name})")
        self.entries = {k: e for k, e in entries.items() if k in self.init}
        self.others = [k for k in entries if k not in self.entries]
        positive_int(self.batch_size, "stages.train_zoo.batch_size")
        if self.cpu_threads is not None:
            positive_int(self.cpu_threads, "stages.train_zoo.cpu_threads")
        for key in ("lr", "weight_decay"):
            value = getattr(self, key)
            if value < 0:
                raise ConfigError(f"`stages.train_zoo.{key}` must be a number >= 0, got {value!r}")
        if not isinstance(self.dataset, dict) or "_target_" not in self.dataset:
            raise ConfigError("`stages.train_zoo.dataset` must be a dataset config with a `_target_` "
                              "(e.g. ${datasets.cityscapes})")
        for key, steps in self.steps.items():
            if key not in self.entries:
                raise ConfigError(f"`stages.train_zoo.steps.{key}`: {key!r} is not a model trained here (one with "
                                  f"`stages.train_zoo.init.{key}`); valid: {', '.join(self.entries) or 'none'}")
            if steps < 0:
                raise ConfigError(f"`stages.train_zoo.steps.{key}` must be an integer >= 0, got {steps!r}")
        missing = [k for k in self.entries if k not in self.steps]
        if missing:
            raise ConfigError(f"`stages.train_zoo.steps` gives no budget for model(s) {missing} of zoo "
                              f"{zoo_name!r} (its `train_steps`); add e.g. `zoo.train_steps.{missing[0]}=100` (0: the init)")
        for key, entry in self.entries.items():
            if entry.framework == "python":
                raise ConfigError(f"`stages.train_zoo.init.{key}`: train_zoo trains mmseg and transformers models; "
                                  f"{key!r} is framework python")
            if entry.framework == "mmseg" and not entry.checkpoint:
                raise ConfigError(f"`zoo.models.{key}.checkpoint` is empty; train_zoo writes the trained weights "
                                  "there")

    def check_inits(self) -> None:
        for key, folder in self.init.items():
            marker = Path(folder) / ("checkpoint.pth" if self.entries[key].framework == "mmseg" else "config.json")
            if not marker.is_file():
                raise WeightsError(f"`stages.train_zoo.init.{key}`: no initial weights at {folder} ({marker.name} "
                                   "missing); on profile=tiny the tiny_models stage writes them: "
                                   "python -m synthrel.run profile=tiny +stage=[tiny_models]")

    def params(self, entry: ZooEntry, data: dict) -> dict:
        """Everything the trained weights depend on; equal params mean an equal checkpoint. The images are trained
        on at the test scale of the init (an mmseg init's config holds it)."""
        scale = inference(init_entry(entry, self.init[entry.key])).scale
        return {"init": self.init[entry.key], "framework": entry.framework, "steps": self.steps[entry.key],
                "batch_size": self.batch_size, "lr": self.lr, "weight_decay": self.weight_decay,
                "seed": self.seed, "test_scale": list(scale) if scale else None, "data": data}

    def run(self) -> dict:
        for key in self.others:
            log.info("train_zoo: skipping %s (no `stages.train_zoo.init.%s`)", key, key)
        if not self.entries:
            log.info("train_zoo: no model of zoo %s is named in stages.train_zoo.init; nothing to train",
                     self.zoo.get("name"))
            return {"trained": [], "skipped": [], "not_trained": self.others}
        self.check_inits()
        start = time.perf_counter()
        dataset = build_dataset(self.dataset, self.split)
        data = {"split": self.split, "n_images": len(dataset), "sha1": data_fingerprint(dataset)}
        todo = [k for k, e in self.entries.items()
                if self.force or (read_record(e) or {}).get("params") != self.params(e, data)]
        done = [k for k in self.entries if k not in todo]
        for key in done:
            log.info("train_zoo: %s already trained with these settings; skipping", key)
        device = resolve_device(self.device)
        samples = [dataset[i] for i in range(len(dataset))] if todo else []
        if samples and any(s["label"] is None for s in samples):
            raise ConfigError(f"`stages.train_zoo.dataset` ({dataset.name}, split {self.split}) has no labels")
        with _torch_threads(self.cpu_threads if device.type == "cpu" else None), \
                tqdm(total=len(self.entries), initial=len(done), desc="train_zoo", unit="model") as bar:
            for key in todo:
                entry = self.entries[key]
                params = self.params(entry, data)
                model_start = time.perf_counter()
                result = train_entry(entry, self.init[key], samples, params["steps"], batch_size=self.batch_size,
                                     lr=self.lr, weight_decay=self.weight_decay, seed=self.seed, device=device,
                                     desc=f"train {key} ({Path(self.init[key]).name}, {params['steps']} steps)")
                losses = result["losses"]
                write_json_atomic(model_folder(entry) / RECORD_FILE, {
                    "params": params, "data_root": str(dataset.root), "first_loss": losses[0] if losses else None,
                    "final_loss": losses[-1] if losses else None,
                    "seconds": round(time.perf_counter() - model_start, 2), "device": str(device)})
                if losses:
                    log.info("train_zoo: %s trained %d steps, loss %.3f -> %.3f", key, len(losses), losses[0],
                             losses[-1])
                else:
                    log.info("train_zoo: %s kept at its init (0 steps)", key)
                bar.update()
        return {"trained": todo, "skipped": done, "not_trained": self.others,
                "seconds": round(time.perf_counter() - start, 1),
                "models_dir": str(Path(model_folder(next(iter(self.entries.values())))).parent)}
