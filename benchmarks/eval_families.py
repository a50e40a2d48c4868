"""Evaluate's compiled rates per zoo family at the paper's input sizes; where PSPNet-R18's pass spends its time.

Issue #36 item 3.

One process, one GPU. Per family of paper40 (one model each, in FAMILIES' order: the families that weigh most in
the budget first), the model is built as the stage builds it (`MMSegSegmenter`, bf16, window batch 16,
`compile=True`; random weights) and run through the stage's `evaluate_dataset` (every metric on, compiled
statistics, batch 4) at each input size of `--sizes`, in one build, as a stage run meets its datasets. Per
(model, size) it records:
- `first_batch_s`: the first batch of that size (torch.compile of the model and the metric paths for the new
  shapes, cuDNN autotuning), and `compile_s` = first_batch_s - one steady batch, the one-off cost a run pays once
  per (model, input size);
- `steady_img_s`: images/s from the second batch to the end of `evaluate_dataset` (the first batch's host sync
  is the start; loader start-up is left out: real sets have hundreds of images).
Images are random uint8 in memory (`eval_bench.RandomSegmentationSet`), so the rates are the GPU's, not PNG
decoding's; sizes: `HxW`, with `:ood` for sets with OOD masks (the exact OOD metrics run too). The 1024x2048:ood
size stands for the inpainted OOD set, 64 % of the images each model sees in the budget.

`--profile` (default on for pspnet_r18) then splits PSPNet-R18's pass over PNG files in the Cityscapes and
OOD-object layouts (stage_bench.write_world), and over the same number of images in memory, into phases: the loader workers' time per image (PNG decode and
label conversion), collation, the main process's wait for the loader, host-to-device copies, the forward pass,
the batch statistics (scores, confusion, ECE bins, calibration sample: one compiled function) and the OOD metrics
(CUDA events on the stream), and the GPU's busy share of the wall time (torch.profiler: kernel and copy time over
wall time), for each `--profile-workers` count; and times its eager forward pass with ATen's adaptive pooling and
with synthrel.zoo.pooling's (the default with channels-last).

    python -m benchmarks.run evalfam                              # default families and sizes, <= --budget-s
    python -m benchmarks.run evalfam --families PSPNet SETR --sizes 1024x2048:ood 512x512
    python -m benchmarks.run evalfam --tiny                       # tiny architectures on CPU, eager (smoke test)

The JSON ($OUT/eval_families.json, or --json) is rewritten after every (model, size), so a run stopped at the
device's limit keeps what it measured; benchmarks/budget.py reads it (`eval_families_*.json`) for its evaluate row.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import device_kernels, write_result
from benchmarks.eval_bench import RandomSegmentationSet, _peak_gib, _peak_reset, _sync

ROOT = Path(__file__).resolve().parents[1]
#: family -> the paper40 model that stands for it. PSPNet first (the profile reuses its build), then the
#: families of the issue's measurements, the budget's heaviest (SETR and Segmenter: ~60 % of the zoo's
#: evaluation time, docs/benchmarks.md; their compile takes longest), then the cheap ones
FAMILIES = {
    "PSPNet": "pspnet_r18", "SegFormer": "segformer_b2", "DeepLabV3+": "dlv3p_r50", "UPerNet": "upernet_r50",
    "SETR": "setr_mla", "Segmenter": "segmenter", "ICNet": "icnet_r50", "BiSeNetV2": "bisenetv2_fcn",
    "SemanticFPN": "semfpn_r50", "MobileNetV3-LRASPP": "mobilenetv3", "CCNet": "ccnet_r50", "ANN": "ann_r50",
    "APCNet": "apcnet_r50", "GCNet": "gcnet_r50", "BiSeNetV1": "bisenetv1_r50", "ConvNeXt": "convnext_b_in1k",
}
#: --tiny: the tiny zoo's models (synthrel/conf/zoo/tiny.yaml), on CPU
TINY_FAMILIES = {"PSPNet": "pspnet_r18", "DeepLabV3+": "dlv3p_r18", "SegFormer": "segformer_b0"}
#: the budget's input sizes (benchmarks/budget.py evaluation_grid), most images first
#: (the budget takes 1024x2048 sets without OOD masks at the :ood rate when 1024x2048 alone is not measured)
SIZES = ("1024x2048:ood", "512x512", "1080x1920", "1024x1024")
TINY_SIZES = ("64x128:ood", "32x64")
SETTINGS = dict(precision="bf16", batch_size=4, window_batch=16, calib_pixels_per_image=20000)


def parse_size(text: str) -> tuple[int, int, bool]:
    """"HxW" or "HxW:ood" -> (H, W, with OOD masks)."""
    size, _, flag = text.partition(":")
    try:
        height, width = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected HxW or HxW:ood, e.g. 1024x2048:ood") from None
    if flag not in ("", "ood") or height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected HxW or HxW:ood, e.g. 1024x2048:ood")
    return height, width, flag == "ood"


def size_key(height: int, width: int, ood: bool) -> str:
    return f"{height}x{width}" + (":ood" if ood else "")


# ---------------------------------------------------------------------------------------------------- models
def zoo_entry(key: str, tiny: bool, folder: Path):
    """The ZooEntry of paper40's `key` (or tiny.yaml's, with its mmseg config written to `folder`)."""
    from benchmarks.stage_bench import _entry, entry_config
    from synthrel.zoo.registry import zoo_entries

    spec = {k: v for k, v in _entry(key, tiny).items() if k != "tiny"}
    spec.update(config=entry_config(key, tiny, folder), checkpoint=None)
    return zoo_entries({"name": "eval_families", "models": {key: spec}})[key]


def build(entry, device, compile: bool):
    """The stage's segmenter of `entry` (build_segmenter's MMSegSegmenter) with random weights."""
    from synthrel.zoo.predictor import MMSegSegmenter

    torch.manual_seed(0)
    return MMSegSegmenter(entry, device, SETTINGS["precision"] if device.type == "cuda" else "fp32",
                          load_weights=False, window_batch=SETTINGS["window_batch"], compile=compile)


class _SecondCall:
    """Wraps `seg.logits_and_features`: at the entry of its second call, waits for the device and notes the
    time (the start of the steady window; one host sync per pass)."""

    def __init__(self, seg):
        self.seg, self.calls, self.start = seg, 0, None
        self.original = seg.logits_and_features

    def __enter__(self):
        def timed(*args, **kwargs):
            self.calls += 1
            if self.calls == 2:
                _sync(self.seg.device)
                self.start = time.perf_counter()
            return self.original(*args, **kwargs)

        self.seg.logits_and_features = timed
        return self

    def __exit__(self, *exc):
        del self.seg.logits_and_features  # the instance attribute: the class's method again


def measure_size(seg, height: int, width: int, ood: bool, n_images: int, workers: int, compiled: bool) -> dict:
    """first batch (compile) and steady images/s of `evaluate_dataset` at one input size."""
    from synthrel.evaluation.engine import evaluate_dataset

    batch = SETTINGS["batch_size"]
    kwargs = dict(batch_size=batch, calib_pixels_per_image=SETTINGS["calib_pixels_per_image"], features=None,
                  compile_metrics=compiled)
    first_set = RandomSegmentationSet(batch, height, width, distinct=1, seed=1, ood=ood)
    _peak_reset(seg.device)
    _sync(seg.device)
    start = time.perf_counter()
    evaluate_dataset(seg, first_set, desc=f"{seg.key} {height}x{width} first batch", **kwargs)
    _sync(seg.device)
    first = time.perf_counter() - start
    dataset = RandomSegmentationSet(n_images, height, width, distinct=2, seed=2, ood=ood)
    with _SecondCall(seg) as clock:
        evaluate_dataset(seg, dataset, num_workers=workers, desc=f"{seg.key} {height}x{width}", **kwargs)
        _sync(seg.device)
        end = time.perf_counter()
    timed = n_images - batch  # the first loader batch is before the window
    steady = end - clock.start
    per_batch = steady / (timed / batch)
    return {"height": height, "width": width, "ood": ood, "images": n_images, "timed_images": timed,
            "first_batch_s": round(first, 3), "compile_s": round(max(first - per_batch, 0.0), 3),
            "steady_s": round(steady, 3), "steady_img_s": round(timed / steady, 3), "peak_gib": _peak_gib(seg.device)}


def _release(device) -> None:
    """Forget the last model's compiled code (dynamo caches per code object: mmseg classes shared by the next
    model's modules would count against its recompile limit) and its memory."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------- PSPNet phase profile
class _TimedReader(torch.utils.data.Dataset):
    """A dataset reader that notes, in each sample, the seconds its worker spent reading it."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        start = time.perf_counter()
        sample = self.dataset[index]
        return {**sample, "read_s": time.perf_counter() - start}


def _timed_collate(seed: int, calib_pixels: int):
    from synthrel.evaluation.engine import _Collate

    collate = _Collate(seed, calib_pixels)

    def timed(batch):
        start = time.perf_counter()
        groups = collate(batch)
        groups[0]["collate_s"] = time.perf_counter() - start
        groups[0]["read_s"] = sum(sample["read_s"] for _, sample in batch)
        return groups
    return timed


def phase_pass(seg, dataset, workers: int, compiled: bool) -> dict:
    """The engine's loop (evaluate_dataset's, with its DataLoader settings) over `dataset`, split into phases:
    per image ms of worker reads and collation (summed over the workers), of the main process's wait for the
    loader, and on the device (CUDA events): host-to-device copies, forward, batch statistics, OOD metrics."""
    from torch.utils.data import DataLoader

    from synthrel.evaluation.engine import OnePassAccumulator, _Indexed, _to_device

    cuda = seg.device.type == "cuda"
    loader = DataLoader(_Indexed(_TimedReader(dataset)), batch_size=SETTINGS["batch_size"], num_workers=workers,
                        shuffle=False, collate_fn=_timed_collate(0, SETTINGS["calib_pixels_per_image"]),
                        pin_memory=cuda, prefetch_factor=4 if workers else None)
    acc = OnePassAccumulator(seg.device, SETTINGS["calib_pixels_per_image"], 0, compile=compiled)
    marks, host = [], {"wait_s": 0.0, "read_s": 0.0, "collate_s": 0.0}

    def event():
        if not cuda:
            return None
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    statistics, ood_update = acc.statistics, acc.ood.update
    current = {}

    def timed_statistics(*args, **kwargs):
        current["stats_start"] = event()
        out = statistics(*args, **kwargs)
        current["stats_end"] = event()
        return out

    def timed_ood(*args, **kwargs):
        current["ood_start"] = event()
        ood_update(*args, **kwargs)
        current["ood_end"] = event()

    acc.statistics, acc.ood.update = timed_statistics, timed_ood
    _sync(seg.device)
    start = time.perf_counter()
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            groups = next(it)
        except StopIteration:
            break
        host["wait_s"] += time.perf_counter() - t0
        host["read_s"] += groups[0]["read_s"]
        host["collate_s"] += groups[0]["collate_s"]
        for group in groups:
            current = {"h2d_start": event()}
            images = _to_device(group["image"], seg.device)
            labels, oods = _to_device(group["label"], seg.device), _to_device(group["ood"], seg.device)
            current["h2d_end"] = event()
            logits, features = seg.logits_and_features(images, features=None)
            current["forward_end"] = event()
            acc.update(logits, labels, oods, features, group["indices"], group["ids"], picks=group["picks"])
            marks.append(current)
    acc.result()
    wall = time.perf_counter() - start
    n = len(dataset)
    res = {"workers": workers, "images": n, "img_s": round(n / wall, 2), "wall_ms_per_img": round(1000 * wall / n, 2),
           "loader_wait_ms_per_img": round(1000 * host["wait_s"] / n, 2),
           "worker_read_ms_per_img": round(1000 * host["read_s"] / n, 2),
           "worker_collate_ms_per_img": round(1000 * host["collate_s"] / n, 2)}
    if workers:  # what the workers can deliver at most, working in parallel
        res["loader_capacity_img_s"] = round(workers * n / (host["read_s"] + host["collate_s"]), 1)
    if cuda:
        def ms(a, b):
            return sum(m[a].elapsed_time(m[b]) for m in marks if m.get(a) is not None and m.get(b) is not None) / n
        res.update(device_h2d_ms_per_img=round(ms("h2d_start", "h2d_end"), 3),
                   device_forward_ms_per_img=round(ms("h2d_end", "forward_end"), 3),
                   device_statistics_ms_per_img=round(ms("stats_start", "stats_end"), 3),
                   device_ood_ms_per_img=round(ms("ood_start", "ood_end"), 3))
    return res


def per_sample_pass(seg, dataset, workers: int, compiled: bool) -> dict:
    """A probe of a loader that reads one image per worker task (batches grouped and stacked into pinned memory
    in the main process) instead of one batch per task: a batch then waits for one image's decoding, not for
    batch_size of them in one worker. Images/s over the whole pass, loader start included, as phase_pass's."""
    from torch.utils.data import DataLoader

    from synthrel.evaluation.engine import OnePassAccumulator, _Collate, _Indexed, _to_device

    cuda = seg.device.type == "cuda"
    collate = _Collate(0, SETTINGS["calib_pixels_per_image"])
    # batch_size None: each item alone, its arrays made tensors (in shared memory from the workers)
    loader = DataLoader(_Indexed(dataset), batch_size=None, num_workers=workers, shuffle=False,
                        prefetch_factor=4 * SETTINGS["batch_size"] if workers else None)
    acc = OnePassAccumulator(seg.device, SETTINGS["calib_pixels_per_image"], 0, compile=compiled)
    pending, stack_s = [], 0.0

    def run(batch):
        nonlocal stack_s
        start = time.perf_counter()
        groups = collate(batch)
        if cuda:
            groups = [{k: v.pin_memory() if torch.is_tensor(v) else v for k, v in g.items()} for g in groups]
        stack_s += time.perf_counter() - start
        for group in groups:
            logits, features = seg.logits_and_features(group["image"], features=None)
            acc.update(logits, _to_device(group["label"], seg.device), _to_device(group["ood"], seg.device),
                       features, group["indices"], group["ids"], picks=group["picks"])

    _sync(seg.device)
    start = time.perf_counter()
    for item in loader:
        pending.append(item)
        if len(pending) == SETTINGS["batch_size"]:
            run(pending)
            pending = []
    if pending:
        run(pending)
    acc.result()
    wall = time.perf_counter() - start
    n = len(dataset)
    return {"workers": workers, "img_s": round(n / wall, 2), "main_stack_ms_per_img": round(1000 * stack_s / n, 2)}


def busy_share(seg, dataset, workers: int, compiled: bool) -> dict | None:
    """The GPU's busy share of one pass's wall time: kernel and copy time (torch.profiler) / wall time."""
    if seg.device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        phase_pass(seg, dataset, workers, compiled)
        wall = time.perf_counter() - start
    kernels = device_kernels(prof.key_averages())
    device_us = sum(e.self_device_time_total for e in kernels)
    top = sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)[:8]
    return {"wall_s": round(wall, 3), "device_busy_s": round(device_us / 1e6, 3),
            "gpu_busy_share": round(device_us / 1e6 / wall, 3),
            "top_device_ops": [{"op": e.key[:100], "ms": round(e.self_device_time_total / 1000, 2)} for e in top]}


def pooling_ab(entry, device, height: int, width: int, repeats: int = 5) -> dict:
    """ms per image of eager forward passes (4 images) with synthrel.zoo.pooling's rerouted adaptive pooling
    off and on, and the largest logit difference between the two."""
    from synthrel.zoo.predictor import MMSegSegmenter

    images = torch.from_numpy(RandomSegmentationSet(4, height, width, distinct=1, ood=False)[0]["image"][None]
                              .repeat(4, 0))
    res, logits = {}, {}
    for reroute in (False, True):
        torch.manual_seed(0)
        seg = MMSegSegmenter(entry, device, SETTINGS["precision"] if device.type == "cuda" else "fp32",
                             load_weights=False, window_batch=SETTINGS["window_batch"], reroute_pooling=reroute)
        logits[reroute] = seg.logits(images)  # warm-up (cuDNN autotuning)
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            seg.logits(images)
        _sync(device)
        res[f"forward_ms_per_img_pooling_{'rerouted' if reroute else 'aten'}"] = round(
            1000 * (time.perf_counter() - start) / (repeats * len(images)), 3)
        del seg
    res["max_abs_logit_diff"] = float((logits[True] - logits[False]).abs().max())
    return res


def profile_model(seg, args, compiled: bool, world: Path) -> dict:
    """Phases of `seg`'s pass over PNG files at 1024x2048 (tiny: 64x128), Cityscapes and OOD-object layouts."""
    from benchmarks.stage_bench import write_world
    from synthrel.data.cityscapes import CityscapesDataset
    from synthrel.data.synthetic import OODObjectsDataset

    h, w = (64, 128) if args.tiny else (1024, 2048)
    start = time.perf_counter()
    roots = write_world(world, args.profile_images, args.profile_images, 0, (h, w))
    res = {"size": [h, w], "write_world_s": round(time.perf_counter() - start, 1), "sets": {}}
    try:
        res["pooling_ab_eager"] = pooling_ab(seg.entry, seg.device, h, w)
        print(f"profile {seg.key}: eager forward, adaptive pooling ATen vs rerouted: {res['pooling_ab_eager']}",
              flush=True)
    except Exception as e:  # noqa: BLE001 - the phases below still run
        res["pooling_ab_eager"] = {"error": f"{type(e).__name__}: {e}"[:300]}
    # the same images in memory: what moving decoded batches from the workers costs without the decoding
    readers = {"cityscapes": CityscapesDataset(roots["cityscapes"], split="val"),
               "ood_objects": OODObjectsDataset(roots["ood_objects"]),
               "in_memory": RandomSegmentationSet(args.profile_images, h, w, distinct=2, seed=3, ood=False)}
    for name, reader in readers.items():
        runs = []
        for workers in args.profile_workers:
            phase_pass(seg, torch.utils.data.Subset(reader, range(SETTINGS["batch_size"])), 0, compiled)  # warm
            run = phase_pass(seg, reader, workers, compiled)
            runs.append(run)
            print(f"profile {seg.key} {name}: " + ", ".join(f"{k}={v}" for k, v in run.items()), flush=True)
        best = max(args.profile_workers)
        try:
            busy = busy_share(seg, reader, best, compiled)
        except Exception as e:  # noqa: BLE001 - the profiler is optional; the phases above are kept
            busy = {"error": f"{type(e).__name__}: {e}"[:300]}
        res["sets"][name] = {"runs": runs, "busy": busy}
        try:
            res["sets"][name]["per_sample_loader"] = per_sample_pass(seg, reader, best, compiled)
            print(f"profile {seg.key} {name}: one image per worker task: {res['sets'][name]['per_sample_loader']}",
                  flush=True)
        except Exception as e:  # noqa: BLE001 - a probe; the phases above are kept
            res["sets"][name]["per_sample_loader"] = {"error": f"{type(e).__name__}: {e}"[:300]}
        if busy and "gpu_busy_share" in busy:
            print(f"profile {seg.key} {name}: GPU busy share {busy['gpu_busy_share']} "
                  f"with {best} workers", flush=True)
    return res


# ------------------------------------------------------------------------------------------------------ main
def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run evalfam", description=__doc__.split("\n")[0])
    p.add_argument("--families", nargs="+", default=None, help="families to run (default: all of FAMILIES, in "
                   "its order, as long as --budget-s allows)")
    p.add_argument("--models", nargs="+", default=None, help="paper40 keys instead of the families' models")
    p.add_argument("--sizes", nargs="+", type=parse_size, default=None,
                   help=f"HxW[:ood] input sizes, in order (default {' '.join(SIZES)})")
    p.add_argument("--n-images", type=int, default=None, help="images per size (default 16: 3 timed batches)")
    p.add_argument("--num-workers", type=int, default=4, help="DataLoader workers of the timed passes")
    p.add_argument("--budget-s", type=float, default=400.0, help="start no new (model, size) past this many "
                   "seconds, nor one that the model's first size says would end past it")
    p.add_argument("--no-compile", action="store_true", help="eager (the default with --tiny)")
    p.add_argument("--profile", nargs="*", default=None, help="models whose pass over PNG files is split into "
                   "phases (default: pspnet_r18; give none to skip)")
    p.add_argument("--profile-images", type=int, default=None, help="PNG images per set (default 24; tiny 4)")
    p.add_argument("--profile-workers", type=int, nargs="+", default=None, help="loader workers (default 0 4 8)")
    p.add_argument("--tiny", action="store_true", help="tiny architectures on CPU, small sizes, eager")
    p.add_argument("--device", default=None, help="default: cuda if available (cpu with --tiny)")
    p.add_argument("--json", default=None, help="write the JSON here (default $OUT/eval_families.json)")
    args = p.parse_args(argv)
    families = TINY_FAMILIES if args.tiny else FAMILIES
    if args.families:
        unknown = [f for f in args.families if f not in families]
        if unknown:
            p.error(f"unknown families {unknown}; valid: {', '.join(families)}")
    args.models = args.models or [families[f] for f in (args.families or families)]
    args.sizes = args.sizes or [parse_size(s) for s in (TINY_SIZES if args.tiny else SIZES)]
    args.n_images = args.n_images or (8 if args.tiny else 16)
    if args.n_images < 2 * SETTINGS["batch_size"] or args.n_images % SETTINGS["batch_size"]:
        p.error(f"--n-images must be a multiple of the batch size {SETTINGS['batch_size']}, at least two batches")
    args.profile = ["pspnet_r18"] if args.profile is None else args.profile
    args.profile_images = args.profile_images or (4 if args.tiny else 24)
    args.profile_workers = args.profile_workers or ([0] if args.tiny else [0, 4, 8])
    args.compile = not (args.no_compile or args.tiny)
    args.device = args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if args.tiny:
        args.num_workers = min(args.num_workers, 1)
    return args


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    device = torch.device(args.device)
    begin = time.perf_counter()
    res = {"command": " ".join(["python -m benchmarks.run evalfam", *argv]),
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "tiny": args.tiny,
           "settings": {**SETTINGS, "precision": SETTINGS["precision"] if device.type == "cuda" else "fp32",
                        "compile": args.compile, "num_workers": args.num_workers, "n_images": args.n_images},
           "models": {}, "skipped": {}}
    folder = Path(tempfile.mkdtemp(prefix="eval_families_"))

    def save():
        res["elapsed_s"] = round(time.perf_counter() - begin, 1)
        write_result(res, "eval_families.json", args.json)

    try:
        for key in args.models:
            elapsed = time.perf_counter() - begin
            if elapsed > args.budget_s:
                res["skipped"][key] = f"time budget ({args.budget_s:g} s) spent"
                continue
            if key.startswith("convnext"):
                if importlib.util.find_spec("mmpretrain") is None:
                    res["skipped"][key] = "needs mmpretrain"
                    continue
            try:
                entry = zoo_entry(key, args.tiny, folder)
                start = time.perf_counter()
                seg = build(entry, device, args.compile)
            except Exception as e:  # noqa: BLE001 - report and go on with the other families
                res["skipped"][key] = f"build failed: {type(e).__name__}: {e}"[:400]
                print(f"{key}: {res['skipped'][key]}", flush=True)
                continue
            from synthrel.zoo.registry import inference

            model = res["models"][key] = {"family": entry.family, "test_mode": inference(entry).mode,
                                          "build_s": round(time.perf_counter() - start, 2), "sizes": {}}
            first_cost = None
            for height, width, ood in args.sizes:
                name = size_key(height, width, ood)
                elapsed = time.perf_counter() - begin
                if elapsed > args.budget_s or (first_cost and elapsed + first_cost > args.budget_s):
                    model.setdefault("not_measured", {})[name] = "time budget"
                    continue
                start = time.perf_counter()
                try:
                    run = measure_size(seg, height, width, ood, args.n_images, args.num_workers, args.compile)
                except Exception as e:  # noqa: BLE001 - e.g. out of memory at one size: the others still run
                    model.setdefault("not_measured", {})[name] = f"{type(e).__name__}: {e}"[:400]
                    print(f"{key} {name}: failed: {model['not_measured'][name]}", flush=True)
                    continue
                first_cost = first_cost or time.perf_counter() - start
                model["sizes"][name] = run
                print(f"{key} ({entry.family}) {name}: first batch {run['first_batch_s']} s (compile "
                      f"{run['compile_s']} s), steady {run['steady_img_s']} img/s, peak {run['peak_gib']} GiB "
                      f"[{time.perf_counter() - begin:.0f} s]", flush=True)
                save()
            if key in args.profile and time.perf_counter() - begin < args.budget_s:
                try:
                    res.setdefault("profile", {})[key] = profile_model(seg, args, args.compile, folder / "world")
                except Exception as e:  # noqa: BLE001 - the rates above are kept; the next families still run
                    res.setdefault("profile", {})[key] = {"error": f"{type(e).__name__}: {e}"[:400]}
                    print(f"profile {key}: failed: {res['profile'][key]['error']}", flush=True)
            del seg
            _release(device)
            save()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    save()
    print(table(res), flush=True)
    return res


def table(res: dict) -> str:
    lines = [f"{'model':16} {'family':20} {'size':14} {'first batch s':>13} {'compile s':>9} {'img/s':>8}"]
    for key, model in res["models"].items():
        for name, run in model["sizes"].items():
            lines.append(f"{key:16} {model['family']:20} {name:14} {run['first_batch_s']:>13} {run['compile_s']:>9} "
                         f"{run['steady_img_s']:>8}")
    for key, why in res["skipped"].items():
        lines.append(f"{key:16} skipped: {why}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
