"""Multi-GPU benchmark (issues #11, #20): DDP ControlNet training, sharded generation and the sharded zoo
evaluation sweep, 2 GPUs against 1.

    python -m benchmarks.multigpu all                  # 2 GPUs: train + generate (estimated 5-8 min on 2x H100)
    python -m benchmarks.multigpu train --steps 200    # DDP training only
    python -m benchmarks.multigpu generate --images 64 # sharded generation only
    python -m benchmarks.multigpu generate --shard-devices 0,0   # both shards on one GPU
    python -m benchmarks.multigpu evaluate             # 2 GPUs: zoo sweep, shard 0/1 vs 0/2 + 1/2 (est. 3-5 min)
    python -m benchmarks.multigpu all --tiny --cpu     # tiny models, 2 CPU processes over gloo (about 1 min)
    python -m benchmarks.multigpu evaluate --tiny --cpu    # tiny zoo sweep on 2 CPU processes (about 20 s)

`all` is train + generate (one device call); `evaluate` runs on its own.

train and generate: the models are the real SD1.5 architectures (UNet, ControlNet, VAE of
benchmarks/gen_bench.py's CASES, a CLIP ViT-L text encoder) with random weights, saved once as diffusers folders
under --workdir and loaded through synthrel's own loaders; the data is a random 512x512 Cityscapes-layout
folder with captions.

train: `synthrel.controlnet.module.ControlNetModule` under Lightning, N optimizer steps with the same global
batch on 1 GPU (batch b x accumulate 2) and on 2 GPUs (DDP, batch b per GPU): steps/s and images/s over the
steps after warm-up, and their ratio. Then a short fp32 run (TF32 off) of both layouts from the same init
(1 GPU batch 2p, 2 GPUs batch p each) whose ControlNet weights are compared: max |difference| and the
difference relative to the weight update, against stated tolerances.
generate: `synthrel.generation.job.GenerateJob` (shard 0/1 on GPU 0; shards 0/2 and 1/2 as two processes
with CUDA_VISIBLE_DEVICES=0 and 1, or as --shard-devices says, writing into one folder and its shared
manifest, starting together once both have loaded the model): images/s of each and their ratio, and whether
the union of the shards equals the one-GPU run (ids, manifest records, labels, max pixel difference).
evaluate (#20 item 4): the evaluate stage as `python -m synthrel.run +stage=[evaluate] shard=i/n` runs it
(benchmarks/stage_bench.py's composition, through `synthrel.run.run_stages`) over a zoo of paper40 mmseg
architectures with random weights read from checkpoint files (tiny: the tiny architectures) on stage_bench's
PNG data (Cityscapes-layout val and the inpainted OOD-object set), kept under --workdir while its settings
hold: shard 0/1 in one process on GPU 0, then shards 0/2 and 1/2 in two processes (CUDA_VISIBLE_DEVICES as
--shard-devices says) into one results folder, starting the stage together once both have imported and
composed. Images/s and pairs/s over the stage (first
start to last end) and over the processes' whole life, their ratios, each shard's pairs, model builds and
time, and whether the union of the shards equals the one-GPU run (the same (model, dataset) folders and
manifest jobs, the same DONE settings, confusion matrices and metric rows within the stated tolerance: exact
for fp32 on CPU).

Every measured run is its own process: Lightning's DDP launcher re-runs the same worker command for rank 1.
JSON goes to $OUT/multigpu.json when OUT is set (or to --json).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks import write_result
from synthrel.tiny.real_configs import CLIP_L_TEXT  # SD1.5's text encoder (CLIP ViT-L/14 text tower)

REPO = Path(__file__).resolve().parents[1]
CITY = "benchcity"
DOMAIN = "fog"
EVAL_DATASETS = ("cityscapes", "ood_objects")
#: Settings per mode. Real: SD1.5 sizes and paper40 zoo models at Cityscapes size on GPUs; tiny: the tiny test
#: architectures on CPU processes. max_flip_fraction / max_metric_diff: the evaluate union's tolerance (bf16 on
#: GPUs: cuDNN autotuning may pick other kernels per process; fp32 on CPU: exact).
MODES = {
    "real": dict(resolution=512, train_images=64, val_images=16, steps=200, warmup=10, batch=8, parity_steps=20,
                 parity_batch=2, lr=1e-5, precision="bf16-mixed", images=64, gen_batch=8, gen_steps=25,
                 num_workers=4, train_budget_s=120, timeout_s=420,
                 eval_models=["segformer_b0", "pspnet_r18", "dlv3p_r18", "bisenetv2_fcn", "semfpn_r50", "icnet_r18"],
                 eval_images=64, eval_size=[1024, 2048], eval_precision="bf16", eval_batch=4, window_batch=16,
                 max_flip_fraction=1e-3, max_metric_diff=1e-3),
    "tiny": dict(resolution=32, train_images=8, val_images=4, steps=4, warmup=1, batch=2, parity_steps=4,
                 parity_batch=2, lr=1e-4, precision="32", images=4, gen_batch=2, gen_steps=2, num_workers=0,
                 train_budget_s=None, timeout_s=180,
                 eval_models=["segformer_b0", "dlv3p_r18", "pspnet_r18"], eval_images=4, eval_size=[64, 128],
                 eval_precision="fp32", eval_batch=2, window_batch=16, max_flip_fraction=0.0, max_metric_diff=0.0),
}


# ---------------------------------------------------------------------------------------------- preparation
def write_cityscapes_layout(root: Path, split: str, count: int, size: int, seed: int) -> list[str]:
    """`count` random size x size frames with blocky random labelIds maps in the Cityscapes layout."""
    import numpy as np

    from synthrel.conventions import LABEL_ID_COLORS
    from synthrel.data.io import write_png

    rng = np.random.default_rng(seed)
    block = max(size // 16, 1)
    ids = []
    for k in range(count):
        name = f"{CITY}_{seed:03d}_{k:06d}"
        label = np.kron(rng.integers(0, 34, (size // block, size // block)), np.ones((block, block))).astype(np.uint8)
        noise = rng.integers(-40, 40, (size, size, 3))
        image = np.clip(LABEL_ID_COLORS[label].astype(int) + noise, 0, 255).astype(np.uint8)
        write_png(root / "leftImg8bit" / split / CITY / f"{name}_leftImg8bit.png", image)
        write_png(root / "gtFine" / split / CITY / f"{name}_gtFine_labelIds.png", label)
        ids.append(name)
    return ids


def write_captions(path: Path, ids: list[str], seed: int) -> Path:
    import numpy as np

    from synthrel.tiny.diffusion import TINY_WORDS

    rng = np.random.default_rng(seed)
    lines = [json.dumps({"id": i, "caption": " ".join(rng.choice(TINY_WORDS, 8))}) for i in ids]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def build_real_sd15(out_dir: Path) -> Path:
    """SD1.5 with random weights: gen_bench's UNet and VAE, a CLIP ViT-L text tower, the tiny tokenizer."""
    import tempfile

    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from benchmarks.gen_bench import CASES
    from synthrel.tiny.diffusion import SD_SCHEDULER, _clip_tokenizer

    case = CASES[("sd15", False)]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _clip_tokenizer(Path(tmp))
    vocab = len(tokenizer)
    text_config = CLIPTextConfig(vocab_size=vocab, bos_token_id=vocab - 2, eos_token_id=vocab - 1,
                                 pad_token_id=vocab - 1, **CLIP_L_TEXT)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**case["vae"]), text_encoder=CLIPTextModel(text_config), tokenizer=tokenizer,
        unet=UNet2DConditionModel(**case["unet"]), scheduler=DDIMScheduler(**SD_SCHEDULER), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def build_controlnet(sd_dir: Path, out_dir: Path) -> Path:
    """A ControlNet from the UNet, with small random "zero" convolutions so that the control changes images."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    from synthrel.tiny.diffusion import open_control_path

    torch.manual_seed(1)
    controlnet = ControlNetModel.from_unet(UNet2DConditionModel.from_pretrained(sd_dir, subfolder="unet"),
                                           conditioning_channels=1)
    open_control_path(controlnet, zero_conv_std=0.02)
    controlnet.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def prepare(workdir: Path, settings: dict, tiny: bool) -> dict:
    """Models and data under `workdir` (kept between invocations; a `.done` marker makes a step complete)."""
    import shutil

    from synthrel.tiny.diffusion import build_tiny_sd

    start = time.perf_counter()
    root = workdir / ("tiny" if tiny else "real")
    paths = {"sd15": root / "models" / "sd15", "controlnet": root / "models" / "controlnet",
             "data": root / "data" / "cityscapes", "train_captions": root / "data" / "captions_train.jsonl",
             "val_captions": root / "data" / "captions_val.jsonl"}
    steps = (
        ("sd15", lambda p: build_tiny_sd(p, "sd15") if tiny else build_real_sd15(p)),
        ("controlnet", lambda p: build_controlnet(paths["sd15"], p)),
    )
    for key, build in steps:
        if not (paths[key] / ".done").is_file():
            shutil.rmtree(paths[key], ignore_errors=True)
            build(paths[key])
            (paths[key] / ".done").touch()
    marker = paths["data"] / ".done"
    if not marker.is_file():
        shutil.rmtree(paths["data"], ignore_errors=True)
        size = settings["resolution"] * (2 if tiny else 1)
        train = write_cityscapes_layout(paths["data"], "train", settings["train_images"], size, seed=0)
        val = write_cityscapes_layout(paths["data"], "val", settings["val_images"], size, seed=1)
        write_captions(paths["train_captions"], train, seed=0)
        write_captions(paths["val_captions"], val, seed=1)
        marker.touch()
    print(f"[prepare] models and data in {root} ({time.perf_counter() - start:.1f} s)", flush=True)
    return {k: str(v) for k, v in paths.items()}


# ---------------------------------------------------------------------------------------------- workers
def train_worker(spec: dict) -> None:
    """One Lightning fit of ControlNetModule (Lightning re-runs this process as rank 1 under DDP)."""
    import pytorch_lightning as pl

    from synthrel.controlnet.data import ControlNetTrainData, load_captions
    from synthrel.controlnet.module import ControlNetModule
    from synthrel.data.cityscapes import CityscapesDataset
    from synthrel.diffusion_loading import load_base_pipeline

    started = time.perf_counter()
    cuda = spec["accelerator"] == "gpu"
    if cuda:  # fp32 runs compare weights: no TF32 (convolutions use it by default)
        torch.backends.cuda.matmul.allow_tf32 = spec["tf32"]
        torch.backends.cudnn.allow_tf32 = spec["tf32"]
    dataset = CityscapesDataset(spec["data"], split="train")
    data = ControlNetTrainData(dataset, load_captions(spec["captions"]), spec["resolution"], "label_id", spec["seed"])
    base = load_base_pipeline(spec["sd15"])
    pl.seed_everything(spec["seed"], workers=True)
    module = ControlNetModule(base, data, conditioning_channels=1, lr=spec["lr"], batch_size=spec["batch"],
                              seed=spec["seed"], gradient_checkpointing=spec["gradient_checkpointing"],
                              num_workers=spec["num_workers"])
    initial = {k: v.clone() for k, v in module.controlnet.state_dict().items()} if spec.get("initial") else None
    timer = step_timer(cuda)
    trainer = pl.Trainer(
        accelerator=spec["accelerator"], devices=spec["devices"], strategy="ddp" if spec["devices"] > 1 else "auto",
        precision=spec["precision"], max_steps=spec["steps"], accumulate_grad_batches=spec["accumulate"],
        gradient_clip_val=1.0, callbacks=[timer], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
        num_sanity_val_steps=0, max_time={"seconds": spec["budget_s"]} if spec.get("budget_s") else None,
    )
    trainer.fit(module)
    if not trainer.is_global_zero:
        return
    if spec.get("weights"):
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in module.controlnet.state_dict().items()},
                  spec["weights"])
        if initial is not None:
            save_file({k: v.contiguous() for k, v in initial.items()}, spec["initial"])
    global_batch = spec["batch"] * spec["accumulate"] * trainer.world_size
    result = dict(devices=trainer.world_size, batch=spec["batch"], accumulate=spec["accumulate"],
                  global_batch=global_batch, precision=spec["precision"], steps=trainer.global_step,
                  worker_s=round(time.perf_counter() - started, 1), **timer.rates(spec["warmup"], global_batch))
    if cuda:
        result["peak_gb_rank0"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    loss = trainer.callback_metrics.get("train/loss")
    result["last_loss_rank0"] = None if loss is None else round(float(loss), 5)
    Path(spec["result"]).write_text(json.dumps(result))


def step_timer(cuda: bool):
    """A Lightning callback that notes the wall time at the end of every optimizer step (CUDA synchronised)."""
    import pytorch_lightning as pl

    class StepTimer(pl.Callback):
        def __init__(self):
            self.marks: list[tuple[int, float]] = []
            self.fit_start = time.perf_counter()

        def on_train_start(self, trainer, pl_module):
            self.fit_start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step = trainer.global_step
            if not self.marks or self.marks[-1][0] != step:
                if cuda:
                    torch.cuda.synchronize()
                self.marks.append((step, time.perf_counter()))

        def rates(self, warmup: int, global_batch: int, last: int | None = None) -> dict:
            """steps/s and images/s between the end of step `warmup` (or the first step) and the last step (or
            step `last`: the steps after it were profiled)."""
            out = {"steps_per_s": None, "images_per_s": None}
            if not self.marks:
                return out
            first = next((m for m in self.marks if m[0] >= warmup), self.marks[0])
            last = next((m for m in self.marks if last is not None and m[0] >= last), self.marks[-1])
            out.update(first_step_s=round(self.marks[0][1] - self.fit_start, 2), timed_steps=last[0] - first[0])
            if last[0] > first[0]:
                steps_per_s = (last[0] - first[0]) / (last[1] - first[1])
                out.update(steps_per_s=round(steps_per_s, 4), images_per_s=round(steps_per_s * global_batch, 2))
            return out

    return StepTimer()


def generate_worker(spec: dict) -> None:
    """One GenerateJob run (one shard). Shards start generating together (a file barrier after the model is
    loaded), and each generated batch is timed on the wall clock, comparable across processes."""
    from synthrel.generation import job as generation

    batches = []
    generate = generation._Generator.generate

    def timed_generate(self, batch, dataset, captions):
        if not batches:
            barrier(Path(spec["barrier"]), spec["shard"], spec["parties"])
        begin = time.time()
        records = generate(self, batch, dataset, captions)  # the images on the host; written in the background
        batches.append((begin, time.time(), len(batch)))
        return records

    generation._Generator.generate = timed_generate
    started = time.time()
    job = generation.GenerateJob(
        source={"_target_": "synthrel.data.cityscapes.CityscapesDataset", "root": spec["data"], "split": "val"},
        captions=spec["captions"], out_root=spec["out_root"], set_name=DOMAIN, backbone="sd15",
        pretrained=spec["sd15"], controlnet=spec["controlnet"], trained_controlnet=spec["controlnet"],
        domains=[DOMAIN], num_samples=spec["images"], samples_per_domain_all=1, resolution=spec["resolution"],
        num_inference_steps=spec["steps"], batch_size=spec["batch"], shard=spec["shard"], device=spec["device"],
        dtype="fp16", seed=0,
    )
    summary = job.run()
    Path(spec["result"]).write_text(json.dumps(dict(shard=spec["shard"], summary=summary, process_start=started,
                                                    end=time.time(), batches=batches)))


def evaluate_worker(spec: dict) -> None:
    """One evaluate stage run (one shard) through `run_stages` on the config the CLI composes. Shards start the
    stage together (a file barrier after imports and composition); the job's model builds and dataset passes
    are timed by stage_bench's StageClock."""
    from benchmarks.stage_bench import StageClock, compose_stage
    from synthrel.run import run_stages
    from synthrel.stages import inherited

    cfg = compose_stage(Path(spec["world"]), spec["roots"], Path(spec["artifacts"]), spec["zoo"], spec["datasets"],
                        spec["settings"], spec["device"], spec["tiny"], spec["shard"])
    device = torch.device(spec["device"])
    clock = StageClock(device)
    barrier(Path(spec["barrier"]), spec["shard"], spec["parties"])
    with clock.installed():
        begin = time.time()
        summary = run_stages(cfg)["evaluate"]
        end = time.time()
    results_dir = Path(summary["results_dir"])
    stage = {**cfg.stages.evaluate, **inherited(cfg, "evaluate")}  # the settings the job ran with (seed: the run's)
    Path(spec["result"]).write_text(json.dumps(dict(
        shard=spec["shard"], card=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        stage_settings={k: stage[k] for k in ("device", "precision", "batch_size", "window_batch", "num_workers",
                                              "compile", "calib_pixels_per_image", "features", "seed", "force")},
        stage_start=begin, stage_end=end, results_dir=str(results_dir), evaluated=summary["evaluated"],
        pairs=[str(Path(d).relative_to(results_dir)) for d in summary["result_dirs"]],
        model_builds=sum(e[0] == "build_segmenter" for e in clock.events),
        model_build_s=round(clock.seconds("build_segmenter"), 2),
        evaluate_dataset_s=round(clock.seconds("evaluate_dataset"), 2), write_job_s=round(clock.seconds("write_job"), 2),
        peak_gib=round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None)))


def barrier(directory: Path, name: str, parties: int, poll_s: float = 0.05) -> None:
    """Wait until `parties` processes have arrived (one file each in `directory`)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name.replace("/", "_of_")).touch()
    while len(list(directory.iterdir())) < parties:
        time.sleep(poll_s)


def worker_main(spec_path: str) -> None:
    from synthrel.runtime import setup_runtime

    spec = json.loads(Path(spec_path).read_text())
    setup_runtime()
    if spec.get("threads"):
        import torch

        torch.set_num_threads(spec["threads"])
    {"train": train_worker, "generate": generate_worker, "evaluate": evaluate_worker}[spec["kind"]](spec)


# ---------------------------------------------------------------------------------------------- launching
def launch(spec: dict, env: dict | None = None) -> subprocess.Popen:
    """Start a worker process in its own session (so a hung DDP pair can be killed as one group)."""
    spec_path = Path(spec["result"]).with_suffix(".spec.json")
    Path(spec_path).write_text(json.dumps(spec))
    return subprocess.Popen([sys.executable, "-m", "benchmarks.multigpu", "worker", str(spec_path)], cwd=REPO,
                            env={**os.environ, **(env or {})}, start_new_session=True)


def wait(procs: list[subprocess.Popen], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)  # the worker and the DDP rank it launched
            raise RuntimeError(f"{what}: no result within {timeout_s:.0f} s (killed)") from None
        if code:
            raise RuntimeError(f"{what}: worker exited with status {code}")


def run_one(spec: dict, env: dict, timeout_s: float, what: str) -> dict:
    print(f"[{what}] starting", flush=True)
    start = time.perf_counter()
    wait([launch(spec, env)], timeout_s, what)
    result = json.loads(Path(spec["result"]).read_text())
    result["process_wall_s"] = round(time.perf_counter() - start, 1)
    print(f"[{what}] {json.dumps(result)}", flush=True)
    return result


def device_env(cpu: bool, visible: str, threads: int) -> dict:
    if cpu:
        return {"OMP_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": ""}
    return {"CUDA_VISIBLE_DEVICES": visible}


# ---------------------------------------------------------------------------------------------- train
def compare_weights(a_path: str, b_path: str, initial_path: str | None) -> dict:
    """Max |a - b| over all ControlNet tensors and, given the initial weights, the difference relative to the
    weight update: ||a - b|| / ||a - initial|| (L2 over all tensors)."""
    from safetensors.torch import load_file

    a, b = load_file(a_path), load_file(b_path)
    initial = load_file(initial_path) if initial_path else None
    max_abs, diff_sq, update_sq, max_update = 0.0, 0.0, 0.0, 0.0
    for key in a:
        diff = (a[key].double() - b[key].double())
        max_abs = max(max_abs, float(diff.abs().max()))
        diff_sq += float(diff.square().sum())
        if initial is not None:
            update = a[key].double() - initial[key].double()
            update_sq += float(update.square().sum())
            max_update = max(max_update, float(update.abs().max()))
    out = {"tensors": len(a), "max_abs_diff": max_abs}
    if initial is not None:
        out.update(max_abs_update=max_update, relative_l2_diff=(diff_sq / update_sq) ** 0.5 if update_sq else None)
    return out


def bench_train(args, paths: dict, run_dir: Path) -> dict:
    """Throughput of 1 vs 2 devices at the same global batch, then the fp32 parity of the two layouts."""
    cpu, world = args.cpu, 2
    base = dict(kind="train", sd15=paths["sd15"], data=paths["data"], captions=paths["train_captions"],
                resolution=args.resolution, lr=args.lr, seed=0, gradient_checkpointing=args.gradient_checkpointing,
                num_workers=args.num_workers, accelerator="cpu" if cpu else "gpu", threads=1 if cpu else None,
                tf32=True)
    report = {"phases_s": {}}
    parity_in_throughput_runs = args.precision in ("32", "32-true")
    layouts = {
        "one_device": dict(devices=1, batch=args.batch * (world // args.single_accumulate),
                           accumulate=args.single_accumulate),
        "two_devices": dict(devices=world, batch=args.batch, accumulate=1),
    }
    for name, layout in layouts.items():
        start = time.perf_counter()
        spec = dict(base, **layout, precision=args.precision, steps=args.steps, warmup=args.warmup,
                    budget_s=args.train_budget_s, result=str(run_dir / f"train_{name}.json"))
        if parity_in_throughput_runs:
            spec.update(tf32=False, weights=str(run_dir / f"weights_{name}.safetensors"),
                        initial=str(run_dir / "weights_initial.safetensors") if name == "one_device" else None)
        env = device_env(cpu, "0" if layout["devices"] == 1 else "0,1", 1)
        report[name] = run_one(spec, env, args.timeout_s, f"train {name}")
        report["phases_s"][f"train_{name}"] = round(time.perf_counter() - start, 1)
    one, two = report["one_device"], report["two_devices"]
    if one.get("images_per_s") and two.get("images_per_s"):
        report["scaling"] = round(two["images_per_s"] / one["images_per_s"], 3)

    prefix = "weights" if parity_in_throughput_runs else "parity"
    steps = args.steps if parity_in_throughput_runs else args.parity_steps
    if not parity_in_throughput_runs:
        parity_layouts = {"one_device": dict(devices=1, batch=world * args.parity_batch, accumulate=1),
                          "two_devices": dict(devices=world, batch=args.parity_batch, accumulate=1)}
        for name, layout in parity_layouts.items():
            start = time.perf_counter()
            spec = dict(base, **layout, precision="32", tf32=False, steps=steps, warmup=1, budget_s=None,
                        result=str(run_dir / f"parity_{name}.json"),
                        weights=str(run_dir / f"parity_{name}.safetensors"),
                        initial=str(run_dir / "parity_initial.safetensors") if name == "one_device" else None)
            env = device_env(cpu, "0" if layout["devices"] == 1 else "0,1", 1)
            report[f"parity_{name}"] = run_one(spec, env, args.timeout_s, f"parity {name}")
            report["phases_s"][f"parity_{name}"] = round(time.perf_counter() - start, 1)
    parity = compare_weights(str(run_dir / f"{prefix}_one_device.safetensors"),
                             str(run_dir / f"{prefix}_two_devices.safetensors"),
                             str(run_dir / f"{prefix}_initial.safetensors"))
    atol = args.parity_atol if args.parity_atol is not None else 0.1 * args.lr * steps
    parity.update(steps=steps, precision="32 (TF32 off)", atol=atol, rtol=args.parity_rtol,
                  ok=parity["max_abs_diff"] <= atol and (parity["relative_l2_diff"] or 0.0) <= args.parity_rtol,
                  tolerance=f"max |W_1dev - W_2dev| <= {atol:.3g} (0.1 x lr x steps, a tenth of Adam's largest "
                            f"possible move) and ||W_1dev - W_2dev|| / ||W_1dev - W_init|| <= {args.parity_rtol:g}")
    report["parity"] = parity
    print(f"[train] scaling {report.get('scaling')}; parity {json.dumps(parity)}", flush=True)
    return report


# ---------------------------------------------------------------------------------------------- generate
def read_set(folder: Path) -> dict:
    """Manifest records (checked line by line) and image/label arrays of a generated set."""
    import numpy as np
    from PIL import Image

    lines = (folder / "manifest.jsonl").read_text().splitlines()
    records, bad = {}, 0
    for line in lines:
        try:
            rec = json.loads(line)
            records.setdefault(rec["id"], []).append(rec)
        except (json.JSONDecodeError, KeyError):
            bad += 1
    images, labels = {}, {}
    for id_, recs in records.items():
        city = recs[0]["city"]
        images[id_] = np.asarray(Image.open(folder / "leftImg8bit" / "val" / city / f"{id_}_leftImg8bit.png"))
        labels[id_] = (folder / "gtFine" / "val" / city / f"{id_}_gtFine_labelIds.png").read_bytes()
    return dict(lines=len(lines), bad_lines=bad, records=records, images=images, labels=labels)


def compare_sets(single: Path, sharded: Path) -> dict:
    import numpy as np

    a, b = read_set(single), read_set(sharded)
    same_ids = sorted(a["records"]) == sorted(b["records"])
    common = sorted(set(a["records"]) & set(b["records"]))
    pixel = [int(np.abs(a["images"][i].astype(int) - b["images"][i].astype(int)).max()) for i in common]
    return dict(ids=len(a["records"]), same_ids=same_ids, manifest_lines=b["lines"], bad_manifest_lines=b["bad_lines"],
                duplicate_ids=sum(len(r) > 1 for r in b["records"].values()),
                same_records=all(a["records"][i] == b["records"][i] for i in common),
                same_labels=all(a["labels"][i] == b["labels"][i] for i in common),
                max_pixel_diff=max(pixel, default=None),
                identical_images=sum(p == 0 for p in pixel))


def throughput(results: list[dict], images: int) -> dict:
    """Images/s from the first batch start to the last batch end over all shards (they start together)."""
    batches = [b for r in results for b in r["batches"]]
    begin, end = min(b[0] for b in batches), max(b[1] for b in batches)
    return {"images": images, "generation_s": round(end - begin, 2), "images_per_s": round(images / (end - begin), 3),
            "per_shard_s": [round(r["batches"][-1][1] - r["batches"][0][0], 2) for r in results]}


def bench_generate(args, paths: dict, run_dir: Path) -> dict:
    import shutil

    cpu = args.cpu
    base = dict(kind="generate", sd15=paths["sd15"], controlnet=paths["controlnet"], data=paths["data"],
                captions=paths["val_captions"], images=args.images, resolution=args.resolution, steps=args.gen_steps,
                batch=args.gen_batch, device="cpu" if cpu else "cuda", threads=1 if cpu else None)
    report = {"phases_s": {}}
    outputs = {"one_device": run_dir / "gen_one_device", "two_devices": run_dir / "gen_two_devices"}
    for name, shards in (("one_device", ["0/1"]), ("two_devices", ["0/2", "1/2"])):
        for stale in (outputs[name], run_dir / f"barrier_{name}"):
            shutil.rmtree(stale, ignore_errors=True)
        start = time.perf_counter()
        specs = [dict(base, shard=s, out_root=str(outputs[name]), result=str(run_dir / f"gen_{name}_{k}.json"),
                      barrier=str(run_dir / f"barrier_{name}"), parties=len(shards)) for k, s in enumerate(shards)]
        print(f"[generate {name}] starting", flush=True)
        devices = ["0"] if len(shards) == 1 else args.shard_devices.split(",")
        procs = [launch(spec, device_env(cpu, device, 1)) for spec, device in zip(specs, devices, strict=True)]
        wait(procs, args.timeout_s, f"generate {name}")
        results = [json.loads(Path(s["result"]).read_text()) for s in specs]
        report[name] = dict(throughput(results, args.images), process_wall_s=round(time.perf_counter() - start, 1),
                            shards=[dict(shard=r["shard"], generated=r["summary"]["generated"],
                                         start_to_first_batch_s=round(r["batches"][0][0] - r["process_start"], 1))
                                    for r in results])
        report["phases_s"][f"generate_{name}"] = report[name]["process_wall_s"]
        print(f"[generate {name}] {json.dumps(report[name])}", flush=True)
    one, two = report["one_device"], report["two_devices"]
    report["ratio"] = round(two["images_per_s"] / one["images_per_s"], 3)
    report["ratio_wall_with_loading"] = round(one["process_wall_s"] / two["process_wall_s"], 3)
    union = compare_sets(outputs["one_device"] / DOMAIN, outputs["two_devices"] / DOMAIN)
    union["ok"] = (union["same_ids"] and union["ids"] == args.images and union["bad_manifest_lines"] == 0
                   and union["duplicate_ids"] == 0 and union["same_records"] and union["same_labels"]
                   and union["max_pixel_diff"] is not None and union["max_pixel_diff"] <= args.max_pixel_diff)
    report["union"] = union
    report["shard_devices"] = "cpu" if cpu else args.shard_devices
    print(f"[generate] ratio {report['ratio']}; union {json.dumps(union)}", flush=True)
    return report


# ---------------------------------------------------------------------------------------------- evaluate
def prepare_world(workdir: Path, args) -> dict:
    """stage_bench's world for the sweep: its PNG data (Cityscapes-layout val and the OOD-object set, no warm-up
    sets) and every zoo model with random weights (seed 0) as a checkpoint file. Kept between invocations while
    its settings are the same (recorded in `.done` with the zoo and the data roots)."""
    import shutil

    from benchmarks.stage_bench import entry_config, random_zoo_model, write_world

    world = workdir / "evaluate" / ("tiny" if args.tiny else "real")
    settings = dict(models=list(args.eval_models), images=args.eval_images, size=list(args.eval_size), seed=0)
    marker = world / ".done"
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done["settings"] == settings:
            return done
    shutil.rmtree(world, ignore_errors=True)
    roots = write_world(world, args.eval_images, args.eval_images, 0, tuple(args.eval_size), seed=0)
    models = {}
    for key in args.eval_models:
        _, models[key] = random_zoo_model(key, args.tiny, entry_config(key, args.tiny, world / "configs"),
                                          world / "checkpoints" / f"{key}.pth", torch.device("cpu"), seed=0)
    done = dict(settings=settings, world=str(world), roots={k: str(v) for k, v in roots.items()},
                zoo={"name": "multigpu", "models": models})
    marker.write_text(json.dumps(done))
    return done


def compare_results(single: Path, sharded: Path) -> dict:
    """The sharded run's results folder against the one-device run's: the same (model, dataset) folders with
    DONE and manifest jobs, the same DONE records (timing aside), the same metric rows, and the differences of
    the confusion matrices (changed pixels: half the summed |difference|) and of the metric values."""
    import numpy as np
    import pandas as pd

    def pairs(root: Path) -> list[str]:
        return sorted(str(p.parent.relative_to(root)) for p in root.glob("*/*/DONE"))

    def manifest(root: Path) -> tuple[list[str], int]:
        jobs, bad = [], 0
        for line in (root / "manifest.jsonl").read_text().splitlines():
            try:
                jobs.append(json.loads(line)["job"])
            except (json.JSONDecodeError, KeyError):
                bad += 1
        return jobs, bad

    def done(folder: Path) -> dict:
        return {k: v for k, v in json.loads((folder / "DONE").read_text()).items() if k != "seconds"}

    a, b = pairs(single), pairs(sharded)
    common = sorted(set(a) & set(b))
    (jobs_a, _), (jobs_b, bad) = manifest(single), manifest(sharded)
    cm_diff, pixels, metric_diff, images = 0, 0, 0.0, 0
    same_done, same_rows, identical = True, True, 0
    for pair in common:
        ca, cb = (np.load(root / pair / "confusion.npy").astype(np.int64) for root in (single, sharded))
        cm_diff += int(np.abs(ca - cb).sum())
        pixels += int(ca.sum())
        same_done &= done(single / pair) == done(sharded / pair)
        images += done(sharded / pair)["n_images"]
        ta, tb = (pd.read_parquet(root / pair / "metrics.parquet") for root in (single, sharded))
        if not ta.drop(columns="value").equals(tb.drop(columns="value")):
            same_rows = False
            continue
        va, vb = ta["value"].to_numpy(), tb["value"].to_numpy()
        nan = np.isnan(va)
        if not np.array_equal(nan, np.isnan(vb)):
            metric_diff = float("inf")
            continue
        metric_diff = max(metric_diff, float(np.abs(va[~nan] - vb[~nan]).max(initial=0.0)))
        identical += bool(np.array_equal(ca, cb)) and bool(np.array_equal(va[~nan], vb[~nan]))
    return dict(pairs=len(a), same_pairs=a == b, images=images, manifest_lines=len(jobs_b), bad_manifest_lines=bad,
                same_manifest_jobs=sorted(jobs_a) == sorted(jobs_b), same_done_records=same_done,
                same_metric_rows=same_rows, identical_pairs=identical, confusion_abs_diff=cm_diff,
                changed_pixel_fraction=float(f"{cm_diff / 2 / pixels:.4g}") if pixels else None,
                max_metric_diff=float(f"{metric_diff:.4g}"))


def bench_evaluate(args, workdir: Path, run_dir: Path) -> dict:
    """The zoo sweep as shard 0/1 on one device and as shards 0/2 + 1/2 on two, and the union check."""
    import shutil

    cpu = args.cpu
    start = time.perf_counter()
    world = prepare_world(workdir, args)
    report = {"phases_s": {"prepare_evaluate": round(time.perf_counter() - start, 1)}}
    pairs = len(args.eval_models) * len(EVAL_DATASETS)
    images = pairs * args.eval_images
    settings = dict(precision=args.eval_precision, batch_size=args.eval_batch, window_batch=args.window_batch,
                    num_workers=args.num_workers, compile=False)
    base = dict(kind="evaluate", world=world["world"], roots=world["roots"], zoo=world["zoo"],
                datasets=list(EVAL_DATASETS), settings=settings, device="cpu" if cpu else "cuda", tiny=args.tiny,
                threads=1 if cpu else None)
    report["settings"] = dict(models=list(args.eval_models), datasets=list(EVAL_DATASETS), pairs=pairs,
                              images_per_dataset=args.eval_images, image_size=list(args.eval_size),
                              seeds=dict(weights=0, data=0), shard_devices="cpu" if cpu else args.shard_devices)
    results = {}
    for name, shards in (("one_device", ["0/1"]), ("two_devices", ["0/2", "1/2"])):
        artifacts = run_dir / f"eval_{name}"
        for stale in (artifacts, run_dir / f"eval_barrier_{name}"):
            shutil.rmtree(stale, ignore_errors=True)
        specs = [dict(base, shard=s, artifacts=str(artifacts), result=str(run_dir / f"eval_{name}_{k}.json"),
                      barrier=str(run_dir / f"eval_barrier_{name}"), parties=len(shards)) for k, s in enumerate(shards)]
        devices = ["0"] if len(shards) == 1 else args.shard_devices.split(",")
        print(f"[evaluate {name}] starting", flush=True)
        launched, start = time.time(), time.perf_counter()
        procs = [launch(spec, device_env(cpu, device, 1)) for spec, device in zip(specs, devices, strict=True)]
        wait(procs, args.timeout_s, f"evaluate {name}")
        wall = time.perf_counter() - start
        shard_results = [json.loads(Path(s["result"]).read_text()) for s in specs]
        results[name] = Path(shard_results[0]["results_dir"])
        stage_s = max(r["stage_end"] for r in shard_results) - min(r["stage_start"] for r in shard_results)
        report[name] = dict(
            images=images, pairs=pairs, stage_s=round(stage_s, 2), images_per_s=round(images / stage_s, 3),
            pairs_per_s=round(pairs / stage_s, 4), process_wall_s=round(wall, 1),
            images_per_s_with_start=round(images / wall, 3),
            shards=[dict(shard=r["shard"], card=r["card"], pairs=r["pairs"], evaluated=r["evaluated"],
                         model_builds=r["model_builds"], model_build_s=r["model_build_s"],
                         evaluate_dataset_s=r["evaluate_dataset_s"], write_job_s=r["write_job_s"],
                         stage_s=round(r["stage_end"] - r["stage_start"], 2),
                         start_to_stage_s=round(r["stage_start"] - launched, 1), peak_gib=r["peak_gib"])
                    for r in shard_results])
        report["settings"]["stage"] = shard_results[0]["stage_settings"]  # as composed: the same for every run
        report["phases_s"][f"evaluate_{name}"] = round(wall, 1)
        print(f"[evaluate {name}] {json.dumps(report[name])}", flush=True)
    one, two = report["one_device"], report["two_devices"]
    report["ratio"] = round(two["images_per_s"] / one["images_per_s"], 3)
    report["ratio_with_start"] = round(one["process_wall_s"] / two["process_wall_s"], 3)
    union = compare_results(results["one_device"], results["two_devices"])
    union.update(max_flip_fraction=args.max_flip_fraction, max_metric_diff_allowed=args.max_metric_diff,
                 tolerance=f"changed pixels <= {args.max_flip_fraction:g} of the evaluated ones and every metric "
                           f"value within {args.max_metric_diff:g} (0: identical)")
    union["ok"] = (union["same_pairs"] and union["pairs"] == pairs and union["images"] == images
                   and union["manifest_lines"] == pairs and union["bad_manifest_lines"] == 0
                   and union["same_manifest_jobs"] and union["same_done_records"] and union["same_metric_rows"]
                   and union["changed_pixel_fraction"] is not None
                   and union["changed_pixel_fraction"] <= args.max_flip_fraction
                   and union["max_metric_diff"] <= args.max_metric_diff)
    report["union"] = union
    print(f"[evaluate] ratio {report['ratio']}; union {json.dumps(union)}", flush=True)
    return report


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.multigpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("which", choices=("train", "generate", "evaluate", "all"), help="all: train + generate")
    parser.add_argument("--tiny", action="store_true", help="tiny architectures and sizes")
    parser.add_argument("--cpu", action="store_true", help="CPU processes (gloo) instead of GPUs (NCCL)")
    parser.add_argument("--workdir", default=os.environ.get("SYNTHREL_BENCH_DIR", "/tmp/synthrel_multigpu"),
                        help="models and data (reused between runs) and run outputs")
    parser.add_argument("--json", default=None, help="output JSON (default $OUT/multigpu.json when OUT is set)")
    parser.add_argument("--resolution", type=int)
    parser.add_argument("--steps", type=int, help="optimizer steps of the throughput runs")
    parser.add_argument("--warmup", type=int, help="steps left out of the throughput")
    parser.add_argument("--batch", type=int, help="per-device batch of the 2-device run (1 device: same global batch)")
    parser.add_argument("--single-accumulate", type=int, choices=(1, 2), default=2,
                        help="1-device run: batch x 2 accumulated (2) or a batch twice as large (1)")
    parser.add_argument("--precision", choices=("bf16-mixed", "16-mixed", "32"),
                        help="throughput runs; 32 compares their weights directly instead of separate parity runs")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--num-workers", type=int, help="DataLoader workers per rank (evaluate: per shard)")
    parser.add_argument("--train-budget-s", type=float, help="stop a throughput run after this long (Lightning max_time)")
    parser.add_argument("--parity-steps", type=int)
    parser.add_argument("--parity-batch", type=int, help="per-device batch of the fp32 parity runs")
    parser.add_argument("--parity-atol", type=float, help="default 0.1 x lr x parity steps")
    parser.add_argument("--parity-rtol", type=float, default=1e-2, help="bound on ||difference|| / ||update||")
    parser.add_argument("--images", type=int, help="images of the generated domain")
    parser.add_argument("--gen-batch", type=int)
    parser.add_argument("--gen-steps", type=int, help="DDIM steps")
    parser.add_argument("--shard-devices", default="0,1", help="CUDA devices of shards 0/2 and 1/2 (0,0: one GPU)")
    parser.add_argument("--max-pixel-diff", type=int, default=2, help="allowed uint8 difference sharded vs not")
    parser.add_argument("--eval-models", nargs="+", help="zoo keys of the evaluate sweep (paper40, or tiny.yaml)")
    parser.add_argument("--eval-images", type=int, help="images of each evaluated dataset")
    parser.add_argument("--eval-size", type=int, nargs=2, metavar=("H", "W"), help="size of the evaluated images")
    parser.add_argument("--eval-precision", choices=("fp32", "bf16", "fp16"), help="stages.evaluate.precision")
    parser.add_argument("--eval-batch", type=int, help="stages.evaluate.batch_size")
    parser.add_argument("--window-batch", type=int, help="stages.evaluate.window_batch")
    parser.add_argument("--max-flip-fraction", type=float,
                        help="evaluate union: allowed share of pixels whose class differs, sharded vs not")
    parser.add_argument("--max-metric-diff", type=float, help="evaluate union: allowed |difference| of a metric value")
    parser.add_argument("--timeout-s", type=float, help="per measured configuration")
    args = parser.parse_args(argv)
    if len(args.shard_devices.split(",")) != 2:
        parser.error(f"--shard-devices takes two CUDA device numbers, e.g. 0,1; got {args.shard_devices!r}")
    defaults = MODES["tiny" if args.tiny else "real"]
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.which == "evaluate":
        known = mmseg_zoo_keys(args.tiny)
        unknown = [key for key in args.eval_models if key not in known]
        if unknown:
            parser.error(f"--eval-models {' '.join(unknown)}: not a model of the {'tiny' if args.tiny else 'paper40'}"
                         f" zoo that builds from an mmseg config; choose from {', '.join(known)}")
    return args


def mmseg_zoo_keys(tiny: bool) -> list[str]:
    """The zoo keys the evaluate sweep can build with random weights: paper40's mmseg entries, or the tiny
    architectures written from an mmseg config (synthrel.tiny.segmentation.MMSEG_SPECS)."""
    from omegaconf import OmegaConf

    from synthrel.tiny.segmentation import MMSEG_SPECS

    if tiny:
        return list(MMSEG_SPECS)
    models = OmegaConf.load(REPO / "synthrel" / "conf" / "zoo" / "paper40.yaml").models
    return [key for key, entry in models.items() if entry.framework == "mmseg"]


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        worker_main(argv[1])
        return {}
    args = parse_args(argv)
    if not args.cpu:
        sharded = 1 + max(int(d) for d in args.shard_devices.split(","))
        needed = 2 if args.which in ("train", "all") else sharded
        if torch.cuda.device_count() < needed:
            raise SystemExit(f"benchmarks.multigpu {args.which} needs {needed} GPUs (found "
                             f"{torch.cuda.device_count()}); use --cpu for CPU processes")
    started = time.perf_counter()
    workdir = Path(args.workdir)
    run_dir = workdir / "runs" / ("tiny" if args.tiny else "real")
    run_dir.mkdir(parents=True, exist_ok=True)
    result = dict(args=vars(args), phases_s={})
    result.update(environment())
    if args.which != "evaluate":
        prep_start = time.perf_counter()
        paths = prepare(workdir, vars(args), args.tiny)
        result["phases_s"]["prepare"] = round(time.perf_counter() - prep_start, 1)
    if args.which in ("train", "all"):
        result["train"] = bench_train(args, paths, run_dir)
        result["phases_s"].update(result["train"].pop("phases_s"))
    if args.which in ("generate", "all"):
        result["generate"] = bench_generate(args, paths, run_dir)
        result["phases_s"].update(result["generate"].pop("phases_s"))
    if args.which == "evaluate":
        result["evaluate"] = bench_evaluate(args, workdir, run_dir)
        result["phases_s"].update(result["evaluate"].pop("phases_s"))
    result["total_s"] = round(time.perf_counter() - started, 1)
    print(summary_table(result), flush=True)
    path = write_result(result, "multigpu.json", args.json)
    if path:
        print(f"wrote {path}")
    return result


def environment() -> dict:

    out = {"torch": torch.__version__, "nccl_nvls_enable": os.environ.get("NCCL_NVLS_ENABLE")}
    if torch.cuda.is_available():
        out["devices"] = [torch.cuda.get_device_name(k) for k in range(torch.cuda.device_count())]
    return out


def summary_table(result: dict) -> str:
    from tabulate import tabulate

    rows = []
    train = result.get("train")
    if train:
        for name in ("one_device", "two_devices"):
            r = train[name]
            rows.append([f"train {name}", r["global_batch"], r.get("steps_per_s"), r.get("images_per_s"),
                         train.get("scaling") if name == "two_devices" else None])
        p = train["parity"]
        rows.append(["train parity (fp32)", None, None, None,
                     f"max|dW| {p['max_abs_diff']:.3g}, rel {p.get('relative_l2_diff') or 0:.3g}, ok={p['ok']}"])
    gen = result.get("generate")
    if gen:
        for name in ("one_device", "two_devices"):
            rows.append([f"generate {name}", None, None, gen[name]["images_per_s"],
                         gen["ratio"] if name == "two_devices" else None])
        u = gen["union"]
        rows.append(["generate union", None, None, None,
                     f"ids {u['ids']} same={u['same_ids']}, max px diff {u['max_pixel_diff']}, ok={u['ok']}"])
    ev = result.get("evaluate")
    if ev:
        for name in ("one_device", "two_devices"):
            rows.append([f"evaluate {name} ({ev[name]['pairs']} pairs)", None, ev[name]["pairs_per_s"],
                         ev[name]["images_per_s"], ev["ratio"] if name == "two_devices" else None])
        u = ev["union"]
        rows.append(["evaluate union", None, None, None,
                     f"pairs {u['pairs']} same={u['same_pairs']}, changed px {u['changed_pixel_fraction']}, "
                     f"max metric diff {u['max_metric_diff']}, ok={u['ok']}"])
    phases = ", ".join(f"{k} {v} s" for k, v in result["phases_s"].items())
    return (tabulate(rows, headers=["run", "global batch", "steps/s (evaluate: pairs/s)", "images/s",
                                    "ratio / check"])
            + f"\nphases: {phases}; total {result['total_s']} s")


if __name__ == "__main__":
    main()
