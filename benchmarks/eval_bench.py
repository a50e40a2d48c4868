"""Evaluation throughput: mmseg 1.2.2's own `inference_model` loop against synthrel's one-pass engine.

Both run in one process on the same random images and the same random weights (mmseg's `init_model` +
`revert_sync_batchnorm`, copied into synthrel's MMSegSegmenter). Per model it reports images/s of mmseg's loop
(fp32, one image at a time, argmax to the host and a CPU confusion matrix, as the Runner's test loop does) and
of synthrel's engine per precision (batched sliding windows, every metric on: confusion, ECE bins, the
calibration pixel sample and the exact OOD metrics), the ratio, GPU utilisation, peak memory, confusion-matrix
equality at fp32 (and differing pixels), the mIoU difference at reduced precision, the share of the pass spent
accumulating metrics, host syncs per accumulator update, FLOPs per image and the ceiling at 798 TFLOP/s.

    python -m benchmarks.run eval                          # SegFormer-B5, DeepLabV3+-R101, PSPNet-R18 (GPU)
    python -m benchmarks.run eval --models pspnet_r18 --quick
    python -m benchmarks.run eval --compile                # adds a torch.compile run of the last precision
    python -m benchmarks.run eval --zoo-run --zoo-images 512   # the paper40 zoo on 512 synthetic 512x512 images
    python -m benchmarks.run eval --tiny                   # tiny architectures on CPU (smoke test)

JSON goes to $OUT/eval_bench.json when OUT is set (or to --json).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks import write_result

#: Large bf16 matrix products on the H100 run at about this rate (shared/bench/README.md).
H100_TFLOPS = 798.0
#: name -> (mmseg config, family); the anchors of shared/bench/eval_bench.py
MODELS = {
    "segformer_b5": ("segformer/segformer_mit-b5_8xb1-160k_cityscapes-1024x1024.py", "SegFormer"),
    "dlv3p_r101": ("deeplabv3plus/deeplabv3plus_r101-d8_4xb2-80k_cityscapes-769x769.py", "DeepLabV3+"),
    "pspnet_r18": ("pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-769x769.py", "PSPNet"),
}
#: --tiny: name -> synthrel.tiny.segmentation spec (same families, shrunk; run on CPU)
TINY_MODELS = {"segformer_b5": "segformer_b0", "dlv3p_r101": "dlv3p_r18", "pspnet_r18": "pspnet_r18"}
BASELINE_IMG_S = {"segformer_b5": 4.5, "dlv3p_r101": 6.4, "pspnet_r18": 22.4}  # H100, shared/bench
#: The paper's evaluation grid for the --zoo-run estimate: (name, images, (height, width)).
PAPER_GRID = (
    ("cityscapes_val", 500, (1024, 2048)),
    ("acdc_4_conditions", 4 * 450, (1080, 1920)),
    ("idd_val", 1000, (1080, 1920)),
    ("synthetic_5_domains_x_2_generators", 5 * 2 * 512, (512, 512)),
    ("ood_sets", 3 * 100, (1024, 2048)),
)
N_CLASSES = 19


class RandomSegmentationSet(torch.utils.data.Dataset):
    """`n` items rotating among `distinct` seeded random images with random trainId labels (about 10% ignore)
    and OOD masks (0 ID / 1 OOD / 255 void); `distinct=None` draws every item fresh from its own seed."""

    def __init__(self, n: int, height: int, width: int, distinct: int | None = 4, seed: int = 0, ood: bool = True):
        self.n, self.size, self.seed, self.ood = n, (height, width), seed, ood
        self.cache = [self._draw(i) for i in range(distinct)] if distinct else None

    def _draw(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, i])
        h, w = self.size
        label = rng.integers(0, N_CLASSES, (h, w), dtype=np.uint8)
        label[rng.random((h, w)) < 0.1] = 255
        ood = None
        if self.ood:
            ood = (rng.random((h, w)) < 0.2).astype(np.uint8)
            ood[: h // 16] = 255
        return {"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "label": label, "ood": ood}

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        item = self.cache[i % len(self.cache)] if self.cache else self._draw(i)
        return {"id": f"img{i:05d}", **item}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Utilisation:
    """Samples torch.cuda.utilization() in a thread (needs pynvml; None where unavailable)."""

    def __init__(self, device, period: float = 0.05):
        self.device, self.period, self.samples, self._stop = device, period, [], threading.Event()

    def __enter__(self):
        if self.device.type == "cuda":
            try:
                torch.cuda.utilization(self.device)
                self._thread = threading.Thread(target=self._run, daemon=True)
                self._thread.start()
            except Exception:  # noqa: BLE001 - no NVML: utilisation is optional
                self._thread = None
        else:
            self._thread = None
        return self

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(torch.cuda.utilization(self.device))
            time.sleep(self.period)

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self):
        return round(float(np.mean(self.samples)), 1) if self.samples else None


def _peak_reset(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device):
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def _confusion_np(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    valid = label < N_CLASSES
    return np.bincount(label[valid].astype(np.int64) * N_CLASSES + pred[valid], minlength=N_CLASSES ** 2
                       ).reshape(N_CLASSES, N_CLASSES)


from synthrel.zoo.registry import load_mmseg_config  # noqa: E402  (resolves mmseg's shipped configs)


def build_baseline(config, device):
    """mmseg's own model from `config` (a path or Config) with random weights, as shared/bench does."""
    from mmengine.model.utils import revert_sync_batchnorm
    from mmseg.apis import init_model

    return revert_sync_batchnorm(init_model(config, None, device=str(device))).eval()


def build_synthrel(config_file: str, family: str, baseline, device, precision: str, **speed):
    """synthrel's MMSegSegmenter of the same config, holding the baseline's weights."""
    from synthrel.zoo.predictor import MMSegSegmenter
    from synthrel.zoo.registry import ZooEntry

    entry = ZooEntry(key=Path(config_file).stem, family=family, config=config_file, checkpoint=None)
    seg = MMSegSegmenter(entry, device, precision, load_weights=False, **speed)
    seg.model.load_state_dict(baseline.state_dict())
    return seg


def mmseg_loop(model, dataset) -> tuple[float, np.ndarray, list[np.ndarray]]:
    """images/s of mmseg's inference_model per image (fp32), argmax to the host, CPU confusion matrix."""
    from mmseg.apis import inference_model

    from synthrel.conventions import rgb_to_bgr

    device = next(model.parameters()).device
    inference_model(model, rgb_to_bgr(dataset[0]["image"]))  # warm-up
    _sync(device)
    confusion = np.zeros((N_CLASSES, N_CLASSES), np.int64)
    preds = []
    start = time.perf_counter()
    for i in range(len(dataset)):
        sample = dataset[i]
        pred = inference_model(model, rgb_to_bgr(sample["image"])).pred_sem_seg.data[0].cpu().numpy()
        confusion += _confusion_np(pred.astype(np.int64), sample["label"])
        if i < len(dataset.cache or ()):
            preds.append(pred.astype(np.uint8))
    _sync(device)
    return len(dataset) / (time.perf_counter() - start), confusion, preds


def logits_only_pass(seg, dataset, batch_size: int, num_workers: int) -> float:
    """Seconds of the same loader + forward passes as the engine, with no metric accumulation."""
    from synthrel.evaluation.engine import _Collate, _Indexed

    loader = torch.utils.data.DataLoader(_Indexed(dataset), batch_size=batch_size, num_workers=num_workers,
                                         collate_fn=_Collate(0, 0), pin_memory=seg.device.type == "cuda")
    _sync(seg.device)
    start = time.perf_counter()
    for groups in loader:
        for group in groups:
            seg.logits_and_features(group["image"], features=None)
    _sync(seg.device)
    return time.perf_counter() - start


def accumulation_probe(seg, dataset, batch_size: int, repeats: int = 5, compile: bool = False) -> dict:
    """Milliseconds per image of one OnePassAccumulator.update (every metric on) on real logits, and the host
    syncs it causes (torch.cuda sync debug mode)."""
    from synthrel.evaluation.engine import OnePassAccumulator, calibration_picks

    n = min(batch_size, len(dataset))
    samples = [dataset[i] for i in range(n)]
    images = torch.from_numpy(np.stack([s["image"] for s in samples]))
    labels = torch.from_numpy(np.stack([s["label"] for s in samples])).to(seg.device)
    oods = None
    if samples[0]["ood"] is not None:
        oods = torch.from_numpy(np.stack([s["ood"] for s in samples])).to(seg.device)
    logits, _ = seg.logits_and_features(images, features=None)
    picks = torch.from_numpy(calibration_picks(0, list(range(n)), *logits.shape[2:], 20000))
    if seg.device.type == "cuda":
        picks = picks.pin_memory()
    acc = OnePassAccumulator(seg.device, 20000, 0, compile=compile)
    args = (logits, labels, oods, None, list(range(n)), [s["id"] for s in samples])
    acc.update(*args, picks=picks)
    _sync(seg.device)
    syncs = None
    if seg.device.type == "cuda":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                acc.update(*args, picks=picks)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = sum("synchroniz" in str(w.message).lower() for w in caught)
    _sync(seg.device)
    start = time.perf_counter()
    for _ in range(repeats):
        acc.update(*args, picks=picks)
    _sync(seg.device)
    return {"accumulate_ms_per_img": round(1000 * (time.perf_counter() - start) / (repeats * n), 3),
            "host_syncs_per_update": syncs}


def flops_per_image(seg, image: np.ndarray, features: str | None) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        seg.logits_and_features(image[None], features=features)
    return float(counter.get_total_flops())


def slide_check(seg, baseline, image: np.ndarray) -> dict:
    """synthrel's batched windows against mmseg's `inference` (its per-window slide loop) on the same
    preprocessed input, fp32 (set by the caller's segmenter): relative L2 error and differing argmax pixels."""
    with torch.no_grad():
        inputs, _ = seg._preprocess(torch.from_numpy(np.stack([image, image])))
        metas = [dict(ori_shape=inputs.shape[2:], img_shape=tuple(inputs.shape[2:]),
                      pad_shape=tuple(inputs.shape[2:]), padding_size=[0, 0, 0, 0])] * 2
        ref = baseline.inference(inputs.contiguous(), metas).float()
        ours = (seg._slide_inference(inputs)[0] if seg.model.test_cfg.get("mode", "whole") == "slide"
                else seg.model.inference(inputs, metas)).float()
    return {"rel_l2": float((ours - ref).norm() / ref.norm()),
            "argmax_diff_pixels": int((ours.argmax(1) != ref.argmax(1)).sum())}


def engine_runs(name, seg, baseline, dataset, args, ref_confusion, ref_preds, device, compiled: bool) -> dict:
    from synthrel.evaluation.engine import evaluate_dataset
    from synthrel.metrics.segmentation import mean_iou

    run = dict(precision=seg.precision, channels_last=seg.channels_last, cudnn_benchmark=seg.cudnn_benchmark,
               reroute_depthwise=seg.reroute_depthwise, window_batch=seg.window_batch)
    warm = torch.utils.data.Subset(dataset, range(min(len(dataset), args.batch_size)))
    start = time.perf_counter()
    evaluate_dataset(seg, warm, batch_size=args.batch_size, calib_pixels_per_image=20000, features=None,
                     desc=f"{name} warm-up", compile_metrics=compiled)
    _sync(device)
    run["first_call_s"] = round(time.perf_counter() - start, 2)
    _peak_reset(device)
    with _Utilisation(device) as util:
        _sync(device)
        start = time.perf_counter()
        out = evaluate_dataset(seg, dataset, batch_size=args.batch_size, num_workers=args.num_workers,
                               calib_pixels_per_image=20000, seed=0, features=None, desc=f"{name} engine",
                               compile_metrics=compiled)
        full = time.perf_counter() - start
    run.update(img_s=round(len(dataset) / full, 2), gpu_util_pct=util.mean, peak_gib=_peak_gib(device))
    logits_s = logits_only_pass(seg, dataset, args.batch_size, args.num_workers)
    run["logits_only_img_s"] = round(len(dataset) / logits_s, 2)
    run["accumulation_share_of_pass"] = round(max(full - logits_s, 0.0) / full, 3)
    run.update(accumulation_probe(seg, dataset, args.batch_size, compile=compiled))
    run["accumulation_probe_share"] = round(run["accumulate_ms_per_img"] * run["img_s"] / 1000, 3)
    # features for cluster TS: pooled from the windows (no new shape, so compiled too) and relis' whole image
    for mode in ("windows",) if compiled else ("windows", "whole"):  # compiled: "whole" compiles a new shape
        _sync(device)
        start = time.perf_counter()
        evaluate_dataset(seg, dataset, batch_size=args.batch_size, num_workers=args.num_workers,
                         calib_pixels_per_image=20000, features=mode, desc=f"{name} engine+{mode} features",
                         compile_metrics=compiled)
        _sync(device)
        run[f"{mode}_features_img_s"] = round(len(dataset) / (time.perf_counter() - start), 2)
        run[f"{mode}_features_cost"] = round(run["img_s"] / run[f"{mode}_features_img_s"] - 1, 3)
    run["confusion_equal_to_mmseg"] = bool(np.array_equal(out.confusion, ref_confusion))
    run["confusion_abs_diff_sum"] = int(np.abs(out.confusion - ref_confusion).sum())
    run["miou_diff_points"] = round(100 * (mean_iou(out.confusion) - mean_iou(ref_confusion)), 4)
    if compiled:  # batch-1 calls would compile again; the confusion matrix above compares all pixels
        return run
    diff = 0
    for i, ref in enumerate(ref_preds):
        pred = seg.logits(dataset[i]["image"][None])[0].argmax(0).cpu().numpy()
        diff += int((pred != ref).sum())
    run["argmax_diff_pixels_vs_mmseg"] = diff
    run["argmax_checked_pixels"] = int(sum(p.size for p in ref_preds))
    return run


def model_config(name: str, tiny: bool) -> tuple[str, str]:
    """(config file, family) of benchmark model `name`, or of its tiny stand-in (written to a temporary file)."""
    if not tiny:
        return MODELS[name]
    from synthrel.tiny.segmentation import tiny_mmseg_config

    config_file = str(Path(tempfile.mkdtemp(prefix="eval_bench_")) / f"{TINY_MODELS[name]}.py")
    tiny_mmseg_config(TINY_MODELS[name]).dump(config_file)
    return config_file, name


def bench_model(name: str, args, device) -> dict:
    from synthrel.zoo.mmcv_shim import install

    install()
    config_file, family = model_config(name, args.tiny)
    torch.manual_seed(0)
    baseline = build_baseline(load_mmseg_config(config_file), device)
    dataset = RandomSegmentationSet(args.n_images, *args.size, distinct=min(4, args.n_images), seed=0, ood=args.ood)
    res = {"test_cfg": str(dict(baseline.test_cfg)), "n_images": args.n_images, "batch_size": args.batch_size,
           "ood_masks": args.ood,
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    _peak_reset(device)
    mm_img_s, ref_confusion, ref_preds = mmseg_loop(baseline, dataset)
    res["mmseg_loop"] = {"img_s": round(mm_img_s, 2), "peak_gib": _peak_gib(device)}
    print(f"{name}: mmseg inference_model loop {mm_img_s:.2f} img/s", flush=True)
    res["runs"] = []
    for precision in args.precisions:
        for compiled in ([False, True] if args.compile and precision == args.precisions[-1] else [False]):
            seg = build_synthrel(config_file, family, baseline, device, precision, window_batch=args.window_batch,
                                 channels_last=args.channels_last, reroute_depthwise=args.reroute_depthwise,
                                 compile=compiled)
            run = engine_runs(name, seg, baseline, dataset, args, ref_confusion, ref_preds, device, compiled)
            run["compile"] = compiled
            run["ratio_vs_mmseg_loop"] = round(run["img_s"] / mm_img_s, 2)
            if precision == "fp32" and not compiled:
                run["slide_vs_mmseg_same_input"] = slide_check(seg, baseline, dataset[0]["image"])
                fl = flops_per_image(seg, dataset[0]["image"], features=None)
                res["tflop_per_img"] = float(f"{fl / 1e12:.4g}")
                features_fl = flops_per_image(seg, dataset[0]["image"], "whole") - fl
                res["tflop_per_img_whole_features"] = float(f"{features_fl / 1e12:.4g}")
                res["ceiling_img_s_at_798TF"] = round(H100_TFLOPS * 1e12 / fl, 1)
            print(f"{name} {precision}{' compiled' if compiled else ''}: "
                  + ", ".join(f"{k}={v}" for k, v in run.items()), flush=True)
            res["runs"].append(run)
            del seg
            if device.type == "cuda":
                torch.cuda.empty_cache()
    del baseline
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


@functools.cache
def _inference(entry):
    """The entry's test settings (parsed from its mmseg config once per entry: the budget asks for each set size)."""
    from synthrel.zoo.registry import inference

    return inference(entry)


def _processed_cost(entry, height: int, width: int) -> float:
    """Relative cost of one image: pixels after the test resize, or windows x crop area in slide mode."""
    from synthrel.zoo.predictor import keep_ratio_size, slide_windows

    test = _inference(entry)
    h, w = keep_ratio_size(height, width, test.scale)
    if test.mode == "slide":
        crop = (min(test.crop_size[0], h), min(test.crop_size[1], w))
        return len(slide_windows(h, w, test.crop_size, test.stride)) * crop[0] * crop[1]
    return float(h * w)


def zoo_run(args, device) -> dict:
    """Seconds per paper40 model (random weights) on `--zoo-images` synthetic 512x512 images, and the
    estimate for the paper's full grid, scaled per model by the processed pixels (windows) per image."""
    from omegaconf import OmegaConf

    from synthrel.evaluation.engine import evaluate_dataset
    from synthrel.zoo.predictor import MMSegSegmenter
    from synthrel.zoo.registry import zoo_entries

    zoo = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[1] / "synthrel/conf/zoo/paper40.yaml"))
    entries = zoo_entries(zoo)
    keys = args.zoo_models or list(entries)
    dataset = RandomSegmentationSet(args.zoo_images, 512, 512, distinct=None, seed=1, ood=False)
    precision = args.precisions[-1]
    res = {"precision": precision, "zoo_images": args.zoo_images, "batch_size": args.zoo_batch_size,
           "models": {}, "skipped": {}}
    total, grid_total = 0.0, 0.0
    for key in keys:
        entry = entries[key]
        if entry.family == "ConvNeXt" and importlib.util.find_spec("mmpretrain") is None:
            res["skipped"][key] = "needs mmpretrain"
            print(f"zoo {key}: skipped (needs mmpretrain)", flush=True)
            continue
        start = time.perf_counter()
        try:
            seg = MMSegSegmenter(entry, device, precision, load_weights=False, window_batch=args.window_batch,
                                 channels_last=args.channels_last)
        except Exception as e:  # noqa: BLE001 - report and go on with the other models
            res["skipped"][key] = f"{type(e).__name__}: {e}"[:300]
            print(f"zoo {key}: build failed: {res['skipped'][key]}", flush=True)
            continue
        build_s = time.perf_counter() - start
        evaluate_dataset(seg, RandomSegmentationSet(args.zoo_batch_size, 512, 512, distinct=1, seed=2, ood=False),
                         batch_size=args.zoo_batch_size, desc=f"{key} warm-up")
        _sync(device)
        start = time.perf_counter()
        evaluate_dataset(seg, dataset, batch_size=args.zoo_batch_size, num_workers=args.num_workers,
                         calib_pixels_per_image=20000, desc=key)
        seconds = time.perf_counter() - start
        per_img = seconds / len(dataset)
        unit = _processed_cost(entry, 512, 512)
        grid = sum(n * per_img * _processed_cost(entry, *size) / unit for _, n, size in PAPER_GRID)
        total += seconds
        grid_total += grid
        res["models"][key] = {"seconds": round(seconds, 2), "img_s": round(len(dataset) / seconds, 2),
                              "build_s": round(build_s, 1), "paper_grid_estimate_s": round(grid, 1)}
        print(f"zoo {key}: {seconds:.1f} s ({len(dataset) / seconds:.1f} img/s, build {build_s:.0f} s), "
              f"paper grid estimate {grid / 60:.1f} min", flush=True)
        del seg
        if device.type == "cuda":
            torch.cuda.empty_cache()
        _write(res, args)
    res["total_seconds"] = round(total, 1)
    res["paper_grid_estimate_hours"] = round(grid_total / 3600, 2)
    res["paper_grid"] = [dict(name=n, images=k, size=s) for n, k, s in PAPER_GRID]
    print(f"zoo total {total:.0f} s for {len(res['models'])} models; paper grid estimate "
          f"{grid_total / 3600:.2f} h (excluding model builds)", flush=True)
    return res


def _write(res: dict, args) -> None:
    write_result(res, "eval_bench.json", args.json)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run eval", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--n-images", type=int, default=None, help="images per timed pass (default 64: worker start-up amortised as on real sets; quick 4)")
    p.add_argument("--batch-size", type=int, default=4, help="images per engine batch")
    p.add_argument("--window-batch", type=int, default=16, help="most sliding-window crops per forward call")
    p.add_argument("--precisions", nargs="+", choices=["fp32", "bf16", "fp16"], default=["fp32", "bf16"])
    p.add_argument("--channels-last", type=lambda s: {"on": True, "off": False, "auto": None}[s], default=None,
                   help="on|off|auto (auto: on at reduced precision on CUDA)")
    p.add_argument("--reroute-depthwise", type=lambda s: {"on": True, "off": False, "auto": None}[s],
                   default=None, help="on|off|auto: dilated depthwise convolutions off cuDNN's channels-last kernel "
                   "(auto: on at reduced precision on CUDA)")
    p.add_argument("--compile", action="store_true", help="also run the last precision with torch.compile")
    p.add_argument("--num-workers", type=int, default=4, help="DataLoader workers of the engine")
    p.add_argument("--quick", action="store_true", help="4 images, no with-features pass")
    p.add_argument("--ood", action=argparse.BooleanOptionalAction, default=True,
                   help="images carry OOD masks (exact OOD metrics accumulated); --no-ood as Cityscapes/ACDC")
    p.add_argument("--tiny", action="store_true", help="tiny architectures on CPU, 64x128 images")
    p.add_argument("--zoo-run", action="store_true", help="time the paper40 zoo instead (see --zoo-*)")
    p.add_argument("--zoo-images", type=int, default=512)
    p.add_argument("--zoo-batch-size", type=int, default=8)
    p.add_argument("--zoo-models", nargs="+", default=None, help="paper40 keys (default: all)")
    p.add_argument("--device", default=None, help="default: cuda if available (cpu with --tiny)")
    p.add_argument("--json", default=None, help="write the JSON here (default $OUT/eval_bench.json)")
    args = p.parse_args(argv)
    args.n_images = args.n_images or (4 if args.quick or args.tiny else 64)
    args.size = (64, 128) if args.tiny else (1024, 2048)
    if args.tiny:
        args.num_workers = min(args.num_workers, 1)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu"))
    if args.zoo_run:
        res = {"zoo_run": zoo_run(args, device)}
    else:
        res = {}
        for name in args.models:
            res[name] = bench_model(name, args, device)
            _write(res, args)
        print(_table(res, args.tiny), flush=True)
    _write(res, args)
    return res


def _table(res: dict, tiny: bool) -> str:
    lines = [f"{'model':14} {'run':16} {'img/s':>8} {'x mmseg':>8} {'anchor x':>8} {'acc share':>9} "
             f"{'cm equal':>8} {'dmIoU':>8} {'px diff':>9}"]
    for name, r in res.items():
        lines.append(f"{name:14} {'mmseg loop fp32':16} {r['mmseg_loop']['img_s']:>8}")
        for run in r["runs"]:
            tag = run["precision"] + (" compiled" if run["compile"] else "")
            anchor = "" if tiny else round(run["img_s"] / BASELINE_IMG_S[name], 2)
            lines.append(f"{'':14} {tag:16} {run['img_s']:>8} {run['ratio_vs_mmseg_loop']:>8} {anchor:>8} "
                         f"{run['accumulation_probe_share']:>9} {run['confusion_equal_to_mmseg']!s:>8} "
                         f"{run['miou_diff_points']:>8} {run.get('argmax_diff_pixels_vs_mmseg', '-'):>9}")
            costs = [f"{mode} +{100 * run[f'{mode}_features_cost']:.0f} %" for mode in ("windows", "whole")
                     if f"{mode}_features_cost" in run]
            lines.append(f"{'':14} {'':16} features for cluster TS: {', '.join(costs)}")
        if "tflop_per_img" in r:  # counted on the fp32 run only
            lines.append(f"{'':14} TFLOP/img {r['tflop_per_img']} (+{r['tflop_per_img_whole_features']} whole-image "
                         f"features), ceiling {r['ceiling_img_s_at_798TF']} img/s at {H100_TFLOPS:.0f} TFLOP/s")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
