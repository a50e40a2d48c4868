"""The caption stage: one caption per image of a dataset split, written to a resumable JSONL file."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from synthrel.captions.blip import BlipCaptioner, ClipInterrogatorCaptioner, Mode
from synthrel.data.build import dataset_by_name
from synthrel.data.io import read_image
from synthrel.errors import ConfigError, DatasetError
from synthrel.jobs import Manifest, exclusive_output, path_identity, plan_resume, positive_int
from synthrel.runstats import SteadyRate

log = logging.getLogger(__name__)


def captions_path(captions_dir: str | Path, dataset: str, split: str) -> Path:
    """Where the captions of `dataset`/`split` live: <captions_dir>/<dataset>_<split>.jsonl."""
    return Path(captions_dir) / f"{dataset}_{split}.jsonl"


def read_captions(path: str | Path, key: str = "stages.generate.captions") -> dict[str, str]:
    """Captions keyed by image id, from a JSONL file of {"id", "caption"} records (the caption stage's output, or
    the user's own: a last line without its newline is read as well). A missing file, a line that is not such a
    record or a last line cut short stops with the file, the line and how to repair it."""
    path = Path(path)
    expected = f'a JSON object with string keys "id" and "caption" per line (config key `{key}`)'
    if not path.is_file():
        raise DatasetError(
            f"captions file {path} does not exist: run the caption stage first (`+stage=[caption]`) "
            f"or set `{key}` to a JSONL file of {{\"id\", \"caption\"}} records"
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except UnicodeDecodeError as error:
        raise DatasetError(f"captions file {path} is not UTF-8 text ({error}); expected {expected}") from None
    captions = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if not line.endswith("\n"):
                raise DatasetError(
                    f"captions file {path}: the last line ({number}) has no newline and is not a complete JSON "
                    "record: the file was cut short (e.g. a killed caption run). Re-run the caption stage (it "
                    "resumes) or complete the line") from None
            raise DatasetError(f"captions file {path}, line {number}: not JSON ({line.strip()[:80]!r}); "
                               f"expected {expected}") from None
        if not isinstance(record, dict) or not isinstance(record.get("id"), str) \
                or not isinstance(record.get("caption"), str):
            found = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise DatasetError(f"captions file {path}, line {number}: found {found}; expected {expected}")
        captions[record["id"]] = record["caption"]  # a forced re-run appends newer captions: the last one wins
    return captions


@dataclass
class CaptionJob:
    """Caption every image of `dataset` for each split in `splits` (BLIP by default, as the paper's captions)."""

    dataset: str
    datasets: dict
    output_dir: str
    splits: list[str] | None = None  # None: the dataset config's own split
    mode: Mode = "blip"
    model: str = "Salesforce/blip-image-captioning-large"
    clip_model_name: str = "ViT-L-14/openai"
    batch_size: int = 8
    num_beams: int = 8
    min_new_tokens: int = 5
    max_new_tokens: int = 32
    device: str = "auto"
    force: bool = False
    _captioner: object = field(default=None, init=False, repr=False)

    def __post_init__(self):
        for key in ("batch_size", "num_beams", "min_new_tokens", "max_new_tokens"):
            positive_int(getattr(self, key), f"stages.caption.{key}")
        if self.min_new_tokens > self.max_new_tokens:
            raise ConfigError("`stages.caption.min_new_tokens` must not exceed `stages.caption.max_new_tokens`")
        if self.dataset not in self.datasets:
            from synthrel.errors import unknown_name

            raise unknown_name("dataset", self.dataset, self.datasets, "stages.caption.dataset")

    def _get_captioner(self):
        if self._captioner is None:
            from synthrel.runtime import resolve_device

            device = resolve_device(self.device)
            if self.mode == "blip":
                self._captioner = BlipCaptioner(self.model, device, self.num_beams, self.min_new_tokens,
                                                self.max_new_tokens)
            else:
                self._captioner = ClipInterrogatorCaptioner(self.clip_model_name, device)
        return self._captioner

    def run(self) -> dict:
        splits = self.splits or [self.datasets[self.dataset].get("split")]
        summary = {"output_dir": str(self.output_dir), "files": {}, "captioned": 0, "skipped": 0}
        rate = SteadyRate("image", note=f"batch {self.batch_size}, {self.mode}, {self.num_beams} beams, "
                                        f"max {self.max_new_tokens} new tokens")
        with exclusive_output(self.output_dir):
            for split in splits:
                path, new, skipped = self._caption_split(split, rate)
                summary["files"][split] = str(path)
                summary["captioned"] += new
                summary["skipped"] += skipped
        summary["steady_rates"] = {"caption": rate.result()}
        return summary

    def settings(self) -> dict:
        """What a caption depends on besides its image (recorded per caption, compared on a re-run)."""
        if self.mode == "blip":
            return {"mode": self.mode, "model": path_identity(self.model), "num_beams": self.num_beams,
                    "min_new_tokens": self.min_new_tokens, "max_new_tokens": self.max_new_tokens}
        return {"mode": self.mode, "clip_model_name": self.clip_model_name}

    def _caption_split(self, split: str | None, rate: SteadyRate) -> tuple[Path, int, int]:
        dataset = dataset_by_name(self.datasets, self.dataset, split, key="stages.caption.dataset")
        split = split or "all"
        manifest = Manifest(captions_path(self.output_dir, self.dataset, split))
        common = self.settings()
        inputs = {item.id: {"image": path_identity(item.image)} for item in dataset.items}
        records = {r["id"]: r for r in manifest.read() if r["id"] in inputs}  # captions of other images: unused
        plan = plan_resume("caption", f"captions file {manifest.path}", records, common, inputs, force=self.force,
                           elsewhere="`stages.caption.output_dir`")
        todo_ids = set(plan.todo)
        todo = [item for item in dataset.items if item.id in todo_ids]
        skipped = len(dataset.items) - len(todo)
        if todo:
            captioner = self._get_captioner()
            batches = [todo[start:start + self.batch_size] for start in range(0, len(todo), self.batch_size)]
            # the next batch's PNGs decode in a thread while the GPU captions this one (the serial decode of
            # 2048x1024 images held the steady rate at 0.39x the benchmark's on an H100, docs/benchmarks.md)
            with ThreadPoolExecutor(1, thread_name_prefix="caption-read") as reader, \
                    tqdm(total=len(dataset.items), initial=skipped, desc=f"caption {self.dataset}/{split}") as bar, \
                    rate.loop():
                next_images = reader.submit(_read_images, batches[0])
                for k, batch in enumerate(batches):
                    images = next_images.result()
                    if k + 1 < len(batches):
                        next_images = reader.submit(_read_images, batches[k + 1])
                    captions = captioner(images)
                    for item, caption in zip(batch, captions, strict=True):
                        if not caption:
                            raise RuntimeError(f"the captioner returned an empty caption for {item.image}")
                        manifest.append({"id": item.id, "caption": caption, "image": str(item.image),
                                         "model": self.model if self.mode == "blip" else self.clip_model_name,
                                         "settings": {**common, **inputs[item.id]}})
                    bar.update(len(batch))
                    rate.tick(len(batch))
        log.info("captions of %s/%s: %d new, %d already done -> %s", self.dataset, split, len(todo), skipped,
                 manifest.path)
        return manifest.path, len(todo), skipped


def _read_images(items) -> list:
    return [read_image(item.image) for item in items]
