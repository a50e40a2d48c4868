"""Cost of the temperature-scaling grid search's ECE sweep: `ece_over_temperatures` over the official
950-temperature grid, against the implementation it replaced (one temperature per chunk, float64 `index_add_`
into 15 bins), side by side in one process on random 19-class float32 logits.

Logits are 3 * N(0, 1) with 10 % void labels (255), dropped before the sweep as the calibration data are. Each
implementation runs once on a small slice (warm-up), then is timed once on `--pixels` pixels (`--baseline-pixels`
times the baseline on fewer pixels and scales its seconds linearly; the JSON says so). Reports both times, their
ratio and the largest ECE difference (on the baseline's pixels).

    python -m benchmarks.run calib                           # GPU: 512 * 20000 pixels
    python -m benchmarks.run calib --baseline-pixels 1000000 # baseline timed on 1 M pixels, scaled
    python -m benchmarks.run calib --tiny                    # CPU smoke test: 20,000 pixels

JSON goes to $OUT/calib_bench.json when OUT is set (or to --json).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks import write_result
from synthrel.calibration.temperature import OFFICIAL_GRID
from synthrel.metrics.calibration import (
    N_BINS,
    _as_logits_labels,
    confidence_bin_index,
    ece_over_temperatures,
)


def baseline_ece_over_temperatures(
    logits, labels, temperatures, n_bins: int = N_BINS, chunk_elements: int = 2**24, device=None
) -> np.ndarray:
    """The previous `ece_over_temperatures`, verbatim (one temperature per chunk at real size, index_add_)."""
    source_dtype = logits.dtype if torch.is_tensor(logits) else torch.from_numpy(np.asarray(logits)[:0]).dtype
    dtype = torch.float64 if source_dtype == torch.float64 else torch.float32
    z, y = _as_logits_labels(logits, labels, dtype)
    z, y = z.to(device), y.to(device)
    temps = torch.as_tensor(np.asarray(temperatures, dtype=np.float64).ravel(), device=z.device)
    n, c = z.shape
    bins = torch.zeros(len(temps), 3, n_bins, dtype=torch.float64, device=z.device)
    if n == 0:
        return np.full(len(temps), np.nan)
    correct = (z.argmax(dim=1) == y).double()
    rows = max(1, min(n, chunk_elements // c))
    temps_per_chunk = max(1, chunk_elements // (rows * c))
    for start in range(0, n, rows):
        zc = z[start : start + rows].double()
        g, a = zc - zc.max(dim=1, keepdim=True).values, correct[start : start + rows]
        for t0 in range(0, len(temps), temps_per_chunk):
            t = temps[t0 : t0 + temps_per_chunk]
            conf = torch.exp(-torch.logsumexp(g[None] / t[:, None, None], dim=2))  # (Tc, rows)
            flat = confidence_bin_index(conf, n_bins) + n_bins * torch.arange(len(t), device=z.device)[:, None]
            flat = flat.flatten()
            chunk_bins = torch.zeros(3, len(t) * n_bins, dtype=torch.float64, device=z.device)
            chunk_bins[0].index_add_(0, flat, torch.ones_like(flat, dtype=torch.float64))
            chunk_bins[1].index_add_(0, flat, conf.flatten())
            chunk_bins[2].index_add_(0, flat, a.repeat(len(t)))
            bins[t0 : t0 + len(t)] += chunk_bins.view(3, len(t), n_bins).permute(1, 0, 2)
    count, conf_sum, correct_sum = bins[:, 0], bins[:, 1], bins[:, 2]
    return ((correct_sum - conf_sum).abs().sum(1) / count.sum(1)).cpu().numpy()


def random_pixels(pixels: int, classes: int = 19, seed: int = 0, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """float32 logits 3 * N(0, 1) and labels of the non-void pixels (10 % of `pixels` drawn void and dropped)."""
    gen = torch.Generator().manual_seed(seed)
    z = 3 * torch.randn(pixels, classes, generator=gen)
    y = torch.randint(0, classes, (pixels,), generator=gen)
    y[torch.rand(pixels, generator=gen) < 0.1] = 255
    keep = y != 255
    return z[keep].to(device), y[keep].to(device)


def _timed(fn, z, y, device) -> tuple[float, np.ndarray]:
    fn(z[:2000], y[:2000], OFFICIAL_GRID[:8], device=device)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    eces = fn(z, y, OFFICIAL_GRID, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, eces


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run calib", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pixels", type=int, default=512 * 20000)
    parser.add_argument("--baseline-pixels", type=int, default=None,
                        help="time the baseline on this many pixels and scale linearly (default: --pixels)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test: 20,000 pixels")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.tiny:
        args.pixels, args.device = 20_000, "cpu"
    base_pixels = min(args.baseline_pixels or args.pixels, args.pixels)
    device = torch.device(args.device)
    z, y = random_pixels(args.pixels, device=device)
    base_rows = round(len(y) * base_pixels / args.pixels)
    new_s, new_eces = _timed(ece_over_temperatures, z, y, device)
    base_s, base_eces = _timed(baseline_ece_over_temperatures, z[:base_rows], y[:base_rows], device)
    if base_rows < len(y):
        new_eces = ece_over_temperatures(z[:base_rows], y[:base_rows], OFFICIAL_GRID, device=device)
    scale = args.pixels / base_pixels
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "pixels": args.pixels, "valid_pixels": len(y), "temperatures": len(OFFICIAL_GRID),
        "seconds": {"new": new_s, "baseline": base_s * scale},
        "baseline_pixels": base_pixels, "baseline_scaled_linearly": base_pixels < args.pixels,
        "baseline_measured_seconds": base_s,
        "ratio_baseline_over_new": base_s * scale / new_s,
        "max_abs_diff": float(np.abs(np.asarray(new_eces) - np.asarray(base_eces)).max()),
    }
    scaled = f" (timed on {base_pixels} pixels, scaled x{scale:.3g})" if base_pixels < args.pixels else ""
    print(f"{result['device']}: {args.pixels} pixels x {len(OFFICIAL_GRID)} temperatures: new {new_s:.3f} s, "
          f"baseline {base_s * scale:.3f} s{scaled}, ratio {result['ratio_baseline_over_new']:.2f}x, "
          f"max |ECE diff| {result['max_abs_diff']:.3g}")
    write_result(result, "calib_bench.json", args.json)
    return result
