"""Stage `train_controlnet`: fine-tune a ControlNet on Cityscapes train (label map, caption) pairs.

Output folder (`output_dir`, by default ${paths.artifacts_dir}/controlnet/<backbone>): `checkpoints/` (Lightning
checkpoints of the ControlNet + optimizer every `checkpoint_every_n_steps` optimizer steps, and `last.ckpt`),
`final/` (the ControlNet in diffusers format, `save_pretrained`, which the generate stage loads, plus
`training.json`), `train_config.json` (what defines the run, checked on resume) and `manifest.jsonl`.
A killed run resumes from `checkpoints/last.ckpt` (`resume: auto`) and ends with the same weights as an
uninterrupted one; a finished run is skipped unless `force` or a larger `max_steps`.
Before the first step the bytes these files will take at their peak (disk_need) are checked against the free space
of `output_dir`: a full disk stops the run before its training time is spent, not at the final save.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from synthrel.errors import ConfigError
from synthrel.generation.conditioning import Encoding, encoding_channels
from synthrel.jobs import (
    SETTINGS_KEY,
    DiskFullError,
    Manifest,
    SettingsChangedError,
    changed_settings,
    describe_changes,
    exclusive_output,
    path_identity,
    plain_settings,
    positive_int,
    read_json_artifact,
    write_json_atomic,
)
from synthrel.runstats import (
    SteadyRate,
    check_checkpointing,
    checkpointing_choice,
    checkpointing_cost,
    compile_choice,
    compile_cost,
    steady_rate_callback,
)
from synthrel.runtime import loader_workers
from synthrel.tracking import instantiate_loggers, one_wandb_run

log = logging.getLogger(__name__)
RETRAIN = "Train again with force=true (or remove the output folder)"

#: Lightning precisions (32: the official code); an integer 32 from the command line reads as "32"
Precision = Literal["32", "32-true", "16-mixed", "bf16-mixed"] | Literal[32]
KEY = "stages.train_controlnet"
#: The settings that define the data stream and the model; a resumed run must keep them.
RUN_IDENTITY = ("pretrained", "conditioning", "resolution", "batch_size", "accumulate_grad_batches", "world_size",
                "seed", "hflip", "num_images", "lr", "precision", "max_grad_norm")


#: Bytes a saved file takes beyond its tensors' data: per tensor (torch.save's zip record, 64-byte alignment and
#: pickle entry; safetensors' JSON header entry) and per file (Lightning's loop and callback states, config.json).
PER_TENSOR_BYTES = 1024
PER_FILE_BYTES = 256 * 1024


@dataclass(frozen=True)
class DiskNeed:
    """What train_controlnet writes under its output folder, estimated from the built ControlNet before the first
    step, so that a full disk stops the run before the training time is spent, not at the final save."""

    weights: int  # the ControlNet's state_dict as a checkpoint stores it
    moments: int  # AdamW's two moments of every trainable parameter
    tensors: int  # tensors stored in one checkpoint
    final: int  # final/: the ControlNet save_pretrained writes (its dtype)
    kept: int  # checkpoints left when training ends: the periodic ones kept and last.ckpt
    replaces: bool  # a checkpoint is written over one on disk: both exist until it is whole (Lightning's atomic save)
    on_disk: int  # bytes of the checkpoints already in checkpoints/ (a resumed run supersedes them)

    @property
    def checkpoint(self) -> int:
        return self.weights + self.moments + PER_TENSOR_BYTES * self.tensors + PER_FILE_BYTES

    @property
    def total(self) -> int:
        """The peak: while a checkpoint is written (Lightning writes it whole before the one it replaces goes),
        or while final/ is written beside the kept checkpoints; less what checkpoints/ already holds."""
        peak = max(self.at_once * self.checkpoint, self.kept * self.checkpoint + self.final)
        return max(0, peak - self.on_disk)

    @property
    def at_once(self) -> int:
        return self.kept + self.replaces

    def breakdown(self) -> str:
        return (f"{self.at_once} checkpoint(s) at once x {gb(self.checkpoint)} (ControlNet weights {gb(self.weights)} "
                f"+ AdamW moments {gb(self.moments)} + format), final ControlNet {gb(self.final)}"
                + (f", less {gb(self.on_disk)} of checkpoints already there" if self.on_disk else ""))


def gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.2f} MB"


def disk_need(controlnet, *, max_steps: int, checkpoint_every_n_steps: int, keep_checkpoints: int,
              checkpoint_dir: Path) -> DiskNeed:
    """Count the bytes from the built ControlNet (numel x element size, not a table of model sizes)."""
    state = controlnet.state_dict()
    trainable = [p for p in controlnet.parameters() if p.requires_grad]
    periodic = max_steps // checkpoint_every_n_steps
    kept = {0: 0, 1: min(1, periodic)}.get(keep_checkpoints, periodic)
    on_disk = sum(f.stat().st_size for f in checkpoint_dir.glob("*.ckpt") if f.is_file())
    weights = sum(t.numel() * t.element_size() for t in state.values())
    return DiskNeed(weights=weights,
                    moments=2 * sum(p.numel() * p.element_size() for p in trainable),
                    tensors=len(state) + 3 * len(trainable),  # AdamW: exp_avg, exp_avg_sq, step per parameter
                    final=weights + PER_TENSOR_BYTES * len(state) + PER_FILE_BYTES,
                    kept=kept + 1, replaces=bool(periodic) or (checkpoint_dir / "last.ckpt").exists(),
                    on_disk=on_disk)


def planned_disk_need(pretrained: str, *, conditioning: Encoding, max_steps: int, checkpoint_every_n_steps: int,
                      keep_checkpoints: int, checkpoint_dir: Path) -> DiskNeed | None:
    """The preflight's count before any weights load: the ControlNet built on `meta` from the base UNet's config
    (a diffusers folder or the HF cache, offline); None while that config is not on disk."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    try:
        config = UNet2DConditionModel.load_config(pretrained, subfolder="unet", local_files_only=True)
    except (OSError, ValueError):  # not downloaded or built yet; not a folder nor a valid hub id
        return None
    with torch.device("meta"):
        controlnet = ControlNetModel.from_unet(UNet2DConditionModel.from_config(config),
                                               conditioning_channels=encoding_channels(conditioning))
    return disk_need(controlnet, max_steps=max_steps, checkpoint_every_n_steps=checkpoint_every_n_steps,
                     keep_checkpoints=keep_checkpoints, checkpoint_dir=checkpoint_dir)


def free_bytes(folder: Path) -> int:
    """Free bytes on the disk of `folder` (its nearest existing parent while it does not exist yet)."""
    return shutil.disk_usage(next(p for p in (folder, *folder.parents) if p.exists())).free


def check_disk_space(need: DiskNeed, folder: Path) -> None:
    """Raise DiskFullError, naming the folder, the bytes needed and free and what reduces them, when `need` does
    not fit on the disk of `folder`."""
    free = free_bytes(folder)
    log.info("train_controlnet will write up to %s under %s (%s); %s free", gb(need.total), folder,
             need.breakdown(), gb(free))
    if need.total > free:
        raise DiskFullError(errno.ENOSPC, (
            f"train_controlnet: not enough space on the device of output folder {folder} (checked before training): "
            f"needs {gb(need.total)} ({need.total} bytes: {need.breakdown()}), free {gb(free)} ({free} bytes). "
            f"Free space, point `{KEY}.output_dir` at a larger disk, or keep fewer checkpoints: "
            f"`{KEY}.keep_checkpoints=0` (only last.ckpt), or a `{KEY}.checkpoint_every_n_steps` above max_steps "
            f"({KEY}.keep_checkpoints=-1 keeps one per checkpoint_every_n_steps)"))


@dataclass
class TrainControlNetJob:
    """Train a ControlNet (backbone SD1.5 or SDXL) and save it to `output_dir/final`.

    `resolution`, `max_steps`, `batch_size`, `accumulate_grad_batches` and `lr` default to
    `backbone.resolution` and `backbone.train.*`; set them on the stage to override (tiny runs).
    """

    backbone: dict
    dataset: Any  # a Cityscapes-layout dataset (train split) or its `_target_` config
    captions: str
    output_dir: str
    run_dir: str | None = None
    conditioning: Encoding = "label_id"
    resolution: int | None = None
    max_steps: int | None = None
    batch_size: int | None = None
    accumulate_grad_batches: int | None = None
    lr: float | None = None
    precision: Precision = "32"
    gradient_checkpointing: bool | Literal["controlnet", "auto"] = False  # synthrel.runstats.checkpointing_choice()
    vae_fp32: bool | None = None
    compile: bool | Literal["auto"] = "auto"  # true | false | auto: synthrel.runstats.compile_choice()
    channels_last: bool = False
    hflip: bool = False
    max_grad_norm: float | None = None  # no clipping, as the paper (S2); a number clips the grad norm
    device: str = "auto"
    devices: int | Literal["auto"] = 1
    strategy: Literal["auto", "ddp", "ddp_find_unused_parameters_true"] = "auto"
    num_workers: int | Literal["auto"] = "auto"  # loader workers reading, cropping and drawing each example
    checkpoint_every_n_steps: int = 100
    keep_checkpoints: Literal[-1, 0, 1] = 1  # besides last.ckpt: all, none, the latest
    sample_every_n_steps: int = 200
    num_sample_images: int = 4
    sample_inference_steps: int = 20
    resume: str = "auto"
    seed: int = 0
    force: bool = False
    logger: dict = field(default_factory=dict)

    def __post_init__(self):
        train = dict(self.backbone.get("train") or {})
        for name in ("max_steps", "batch_size", "accumulate_grad_batches", "lr"):
            if getattr(self, name) is None:
                setattr(self, name, train.get(name))
        if self.resolution is None:
            self.resolution = self.backbone.get("resolution")
        for name in ("resolution", "max_steps", "batch_size", "accumulate_grad_batches", "checkpoint_every_n_steps",
                     "num_sample_images", "sample_inference_steps"):
            positive_int(getattr(self, name), f"{KEY}.{name}")
        if self.resolution % 8:
            raise ConfigError(f"`{KEY}.resolution` must be a multiple of 8 (the VAE and the ControlNet "
                              f"conditioning encoder downsample 8x), got {self.resolution}")
        value = self.sample_every_n_steps
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"`{KEY}.sample_every_n_steps` must be an integer >= 0 (0 disables), got {value!r}")
        self.num_workers = loader_workers(self.num_workers, f"{KEY}.num_workers")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ConfigError(f"`{KEY}.lr` must be a positive number, got {self.lr!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ConfigError(f"`{KEY}.max_grad_norm` must be a positive number or null, got {self.max_grad_norm!r}")
        self.precision = str(self.precision)
        check_checkpointing(self.gradient_checkpointing, KEY)
        if self.devices != "auto":
            positive_int(self.devices, f"{KEY}.devices")
        if self.resume not in ("auto", "never") and not Path(self.resume).is_file():
            raise ConfigError(f"`{KEY}.resume` must be auto, never or an existing checkpoint file, got {self.resume!r}")
        if not self.backbone.get("pretrained"):
            raise ConfigError("`backbone.pretrained` is empty: set it to a hub id or a diffusers folder")

    # ------------------------------------------------------------------------------------------------ paths
    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.output_dir) / "checkpoints"

    @property
    def final_dir(self) -> Path:
        return Path(self.output_dir) / "final"

    def _finished_steps(self) -> int:
        record = self.final_dir / "training.json"
        return read_json_artifact(record, "a ControlNet training record", RETRAIN,
                                  keys=("global_step",))["global_step"] if record.is_file() else 0

    def _resume_checkpoint(self) -> str | None:
        if self.force or self.resume == "never":
            return None
        if self.resume != "auto":
            return self.resume
        last = self.checkpoint_dir / "last.ckpt"
        return str(last) if last.is_file() else None

    # ------------------------------------------------------------------------------------------------ run
    def run(self) -> dict:
        with one_wandb_run():  # the Trainer's WandbLogger would leave it open for the next stage to join
            return self._run()

    def _run(self) -> dict:
        summary = {"output_dir": str(self.output_dir), "final_dir": str(self.final_dir),
                   "checkpoint_dir": str(self.checkpoint_dir)}
        done = self._finished_steps()
        if done >= self.max_steps and not self.force:
            self._check_finished_settings()
            log.info("ControlNet in %s already trained for %d steps (>= max_steps %d) with these settings: skipped; "
                     "force=true retrains", self.final_dir, done, self.max_steps)
            return {**summary, "global_step": done, "skipped": True}

        import pytorch_lightning as pl

        from synthrel.controlnet.data import ControlNetTrainData, load_captions

        dataset = self._dataset()
        train_data = ControlNetTrainData(
            dataset, load_captions(self.captions), self.resolution, self.conditioning, self.seed, self.hflip,
            captions_source=f"captions file {self.captions}",
        )
        pretrained = str(self.backbone["pretrained"])
        run_dir = Path(self.run_dir or self.output_dir)
        trainer = self._trainer(pl, run_dir)
        identity = {"pretrained": pretrained, "conditioning": self.conditioning, "resolution": self.resolution,
                    "batch_size": self.batch_size, "accumulate_grad_batches": self.accumulate_grad_batches,
                    "world_size": trainer.world_size, "seed": self.seed, "hflip": self.hflip,
                    "num_images": len(train_data)}
        identity.update(lr=self.lr, precision=self.precision, max_grad_norm=self.max_grad_norm)
        with contextlib.ExitStack() as lock:
            if trainer.is_global_zero:  # the other DDP ranks write nothing here: no lock, no deadlock
                lock.enter_context(exclusive_output(self.output_dir))
            return self._train(pl, trainer, train_data, dataset, identity, pretrained, run_dir, summary)

    def _train(self, pl, trainer, train_data, dataset, identity: dict, pretrained: str, run_dir: Path,
               summary: dict) -> dict:
        from synthrel.controlnet.module import ControlNetModule, vae_precision_choice
        from synthrel.diffusion_loading import is_sdxl, load_base_pipeline

        ckpt_path = self._resume_checkpoint()
        self._check_identity(identity, resuming=ckpt_path is not None, is_zero=trainer.is_global_zero)
        sdxl = is_sdxl(pretrained)
        vae_fp32, vae_why = vae_precision_choice(self.vae_fp32, sdxl=sdxl, fixed_vae=bool(self.backbone.get("vae")),
                                                 precision=self.precision)
        log.info("%s.vae_fp32=%s: %s", KEY, self.vae_fp32, vae_why)
        base = load_base_pipeline(pretrained, vae=self.backbone.get("vae"))
        import torch

        device = trainer.strategy.root_device
        compile_on, why = compile_choice(
            self.compile, key=KEY, cuda=device.type == "cuda",
            images_per_device=self.max_steps * self.batch_size * self.accumulate_grad_batches,
            resolution=self.resolution, measured=compile_cost(str(self.backbone.get("name"))))
        log.info("%s.compile=%s: %s", KEY, self.compile, why)
        checkpointing, checkpointing_why = checkpointing_choice(
            self.gradient_checkpointing, key=KEY, batch=self.batch_size, resolution=self.resolution,
            card_gib=torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else None,
            measured=checkpointing_cost(str(self.backbone.get("name"))), compiled=compile_on)
        log.info("%s.gradient_checkpointing=%s: %s", KEY, self.gradient_checkpointing, checkpointing_why)
        summary.update(compile=compile_on, compile_reason=why, gradient_checkpointing=checkpointing,
                       gradient_checkpointing_reason=checkpointing_why, vae_fp32=vae_fp32, vae_fp32_reason=vae_why)
        pl.seed_everything(self.seed, workers=True)  # the ControlNet's new layers are randomly initialised
        module = ControlNetModule(
            base, train_data,
            conditioning_channels=encoding_channels(self.conditioning),
            lr=self.lr, batch_size=self.batch_size, seed=self.seed,
            gradient_checkpointing=checkpointing, vae_fp32=vae_fp32, compile=compile_on,
            channels_last=self.channels_last,
            num_workers=self.num_workers,
            sample_every_n_steps=self.sample_every_n_steps, num_sample_images=self.num_sample_images,
            sample_inference_steps=self.sample_inference_steps,
            guidance_scale=float(self.backbone.get("guidance_scale", 7.5)),
            controlnet_conditioning_scale=float(self.backbone.get("controlnet_conditioning_scale", 1.0)),
            sample_dir=run_dir / "samples",
        )
        check_disk_space(disk_need(module.controlnet, max_steps=self.max_steps,
                                   checkpoint_every_n_steps=self.checkpoint_every_n_steps,
                                   keep_checkpoints=self.keep_checkpoints, checkpoint_dir=self.checkpoint_dir),
                         Path(self.output_dir))
        if ckpt_path:
            log.info("resuming ControlNet training from %s", ckpt_path)
        per_batch = self.batch_size * trainer.world_size
        rate = SteadyRate("image", warmup=self.accumulate_grad_batches,
                          note=f"{self.resolution}px, batch {self.batch_size} x accumulate "
                               f"{self.accumulate_grad_batches} x {trainer.world_size} device(s), precision {self.precision}, "
                               f"compile {self.compile} ({'on' if compile_on else 'off'}), gradient checkpointing "
                               f"{self.gradient_checkpointing} ({str(checkpointing).lower()}); after the first "
                               "optimiser step", compiled=compile_on)
        trainer.callbacks.insert(0, steady_rate_callback(rate, per_batch))  # before the checkpoint's saving
        trainer.fit(module, ckpt_path=ckpt_path)
        trainer.save_checkpoint(self.checkpoint_dir / "last.ckpt")  # the exact end state, for a longer re-run
        summary.update(global_step=trainer.global_step, effective_batch_size=module.effective_batch_size(),
                       resumed_from=ckpt_path, skipped=False, run_dir=str(run_dir))
        if trainer.is_global_zero:
            self._save_final(module.controlnet, {**identity, **summary, "max_steps": self.max_steps, "lr": self.lr,
                                                 SETTINGS_KEY: plain_settings(self.settings()),
                                                 "dataset": dataset.name, "captions": str(self.captions),
                                                 "precision": self.precision, "max_grad_norm": self.max_grad_norm,
                                                 "crop_seed": "synthrel.jobs.item_seed(seed, position, 'crop')",
                                                 "shuffle_seed": "synthrel.jobs.item_seed(seed, epoch, 'shuffle')",
                                                 "noise_seed": "synthrel.jobs.item_seed(seed, position, 'diffusion')"})
        summary["steady_rates"] = steady_rates(rate, per_batch * self.accumulate_grad_batches)  # not in training.json
        return summary

    def settings(self) -> dict:
        """What the trained weights depend on (recorded in final/training.json; a finished run is reused only while
        they are unchanged): the global batch (devices x batch x accumulation) and how it is split included.
        Not max_steps: a larger one continues the run, a smaller one keeps the longer run."""
        return {"pretrained": path_identity(self.backbone["pretrained"]), "vae": path_identity(self.backbone.get("vae")),
                "conditioning": self.conditioning, "resolution": self.resolution, "batch_size": self.batch_size,
                "accumulate_grad_batches": self.accumulate_grad_batches, "lr": self.lr, "precision": self.precision,
                "max_grad_norm": self.max_grad_norm, "hflip": self.hflip, "seed": self.seed,
                "captions": path_identity(self.captions), "world_size": self.world_size(), "strategy": self.strategy,
                "effective_batch_size": self.batch_size * self.accumulate_grad_batches * self.world_size()}

    def world_size(self) -> int:
        """Processes the Trainer will train on (`devices`, "auto": every visible GPU, or 1 on CPU), before it
        exists: the global batch, so the weights, depend on it."""
        accelerator, devices = self._accelerator()
        if isinstance(devices, list):
            return len(devices)
        if devices != "auto":
            return int(devices)
        import torch

        return 1 if accelerator == "cpu" else torch.cuda.device_count() or 1

    def _check_finished_settings(self) -> None:
        record = read_json_artifact(self.final_dir / "training.json", "a ControlNet training record", RETRAIN)
        changed = changed_settings(record.get(SETTINGS_KEY), self.settings())
        if changed:
            raise SettingsChangedError(
                f"train_controlnet: the ControlNet in {self.final_dir} was trained with other settings than this "
                f"run's: {describe_changes(changed)}. It is not reused; set force=true to train again with the new "
                f"settings (replaces it), or use another `{KEY}.output_dir`")

    def _dataset(self):
        from synthrel.data.build import build_dataset

        dataset = self.dataset
        if isinstance(dataset, Mapping):
            dataset = build_dataset(dict(dataset))
        if not hasattr(dataset, "load_label_ids"):
            raise ConfigError(f"`{KEY}.dataset` must be a Cityscapes-layout dataset with labelIds maps "
                              f"(synthrel.data.cityscapes.CityscapesDataset), got {type(dataset).__name__}")
        return dataset

    def _loggers(self) -> list:
        return instantiate_loggers(self.logger, job_type="train_controlnet", key=f"{KEY}.logger")

    def _trainer(self, pl, run_dir: Path):
        from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar

        checkpoint = ModelCheckpoint(
            dirpath=self.checkpoint_dir, filename="{step:07d}", every_n_train_steps=self.checkpoint_every_n_steps,
            save_last=True, save_top_k=self.keep_checkpoints,
        )
        accelerator, devices = self._accelerator()
        return pl.Trainer(
            accelerator=accelerator,
            devices=devices,
            strategy=self.strategy,
            precision=self.precision,
            max_steps=self.max_steps,
            accumulate_grad_batches=self.accumulate_grad_batches,
            gradient_clip_val=self.max_grad_norm,  # None (default): no clipping, as the paper
            gradient_clip_algorithm="norm" if self.max_grad_norm is not None else None,
            # The bar advances per optimizer step; its loss is a host copy made at the logging steps
            # (tracking.log_step_losses), so that it never waits for the GPU.
            callbacks=[checkpoint, TQDMProgressBar(refresh_rate=self.accumulate_grad_batches)],
            logger=self._loggers() or False,
            default_root_dir=run_dir,
            use_distributed_sampler=False,  # the data stream shards itself by rank (synthrel.controlnet.data)
            log_every_n_steps=min(50, self.max_steps),
            num_sanity_val_steps=0,
        )

    def _accelerator(self) -> tuple[str, int | str | list[int]]:
        device = str(self.device)
        if device == "auto":
            return "auto", self.devices
        if device == "cpu":
            return "cpu", self.devices
        if device == "cuda":
            return "gpu", self.devices
        if device.startswith("cuda:") and device[5:].isdigit():
            return "gpu", [int(device[5:])]
        raise ConfigError(f"`device={device}` (config key `device`): expected auto, cpu, cuda or cuda:N")

    def _check_identity(self, identity: dict, resuming: bool, is_zero: bool) -> None:
        """A resumed run must keep what defines the data stream and the model, or it is not the same run."""
        path = Path(self.output_dir) / "train_config.json"
        if resuming and path.is_file():
            recorded = read_json_artifact(path, "a ControlNet run identity", RETRAIN)
            changed = [k for k in RUN_IDENTITY if recorded.get(k) != identity[k]]
            if changed:
                k = changed[0]
                raise ConfigError(
                    f"cannot resume from {self.checkpoint_dir}: `{k}` was {recorded.get(k)!r} and is now "
                    f"{identity[k]!r} (changed: {', '.join(changed)}); restore it, set `{KEY}.resume=never` "
                    f"or use another `{KEY}.output_dir`"
                )
        elif is_zero:
            write_json_atomic(path, identity)

    def _save_final(self, controlnet, record: dict) -> None:
        """Write the ControlNet beside `final` and rename it into place: a kill never leaves half a model."""
        self.final_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.final_dir.parent, prefix=".final.tmp"))
        try:
            controlnet.save_pretrained(tmp / "final", safe_serialization=True)
            write_json_atomic(tmp / "final" / "training.json", record)
            if self.final_dir.exists():
                shutil.rmtree(self.final_dir)
            (tmp / "final").rename(self.final_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        Manifest(Path(self.output_dir) / "manifest.jsonl", key="global_step").append(
            {"global_step": record["global_step"], "final_dir": str(self.final_dir),
             "resumed_from": record["resumed_from"], "seed": self.seed}
        )
        log.info("ControlNet saved to %s (step %d)", self.final_dir, record["global_step"])


def steady_rates(rate, samples_per_step: int) -> dict:
    """The training loop's samples/s and optimiser steps/s after its first step."""
    samples = rate.result()
    steps = {**samples, "unit": "step", "units": samples["units"] // samples_per_step,
             "warmup_units": samples["warmup_units"] // samples_per_step,
             "per_s": None if samples["per_s"] is None else round(samples["per_s"] / samples_per_step, 6)}
    return {"train_controlnet": samples, "train_controlnet: optimiser steps": steps}
