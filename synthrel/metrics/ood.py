"""Exact OOD (anomaly) detection metrics in the paper's two conventions (spec section 3.4), on torch tensors.

Every score is oriented higher = more OOD, float32 as the models give it; the metrics compute in the scores'
dtype (`score_dtype`: float64 stays float64, half precision widens exactly to float32). sklearn evaluates its ROC
and PR curves at each distinct score value (the end of each run of tied scores); the functions here do the same
from exact counts, so that they equal sklearn on the same scores up to float64 summation order (~1e-15):

- ``"genval"``, per image (valeoai/GenVal ``ood_detection/metrics.py``, spec 3.4 A): AUROC = auc(roc_curve)
  with ``drop_intermediate=True``, FPR95 = fpr[argmax(tpr >= 0.95)] on that curve, "aupr_in" = trapezoid
  auc(recall, precision) with OOD as the positive class, "aupr_out" the same with ID positive and the score
  negated. Every pixel counts: label 1 is OOD, any other label (void included) ID. `image_ood_metrics` sorts
  each image's scores on their device (one batched sort, no bins, no host copy, no sync).
- ``"rba"``, pooled over a dataset (NazirNayal8/RbA ``support.py``, spec 3.4 B): AUROC, AP =
  average_precision_score, FPR95 = FPR at the first point of the ``drop_intermediate`` ROC curve with
  TPR > 0.95 (strict); only labels 0 (ID) and 1 (OOD) count.

Pooled exactness in bounded memory (`PooledOODCounts`): each float32 (float64) score maps to an order-preserving
int32 (int64) key (its bit pattern, negative values with the magnitude bits flipped, -0.0 as +0.0), so equal keys
are equal floats and key order is score order. Batches arrive as (key, OOD count, ID count) entries: in the engine
each image's runs of tied scores from the per-image sort (`OODAccumulator`), otherwise one `torch.unique` per
batch (`PooledOODCounts.update`). The entries are merged into one sorted table on their device once they reach
a quarter of it: sorted among themselves, added in place where the table has their key, inserted at their
sorted positions otherwise (amortised O(n log n) over the dataset). The table takes 20 bytes per *distinct*
float32 score value, never per pixel: at most min(pixels, float32 values in the score's range); e.g. max softmax
lies in [1/19, 1], which holds fewer than 5 * 2^23 float32 values, so its table stays under 0.9 GB whatever the
dataset size. A merge briefly holds the old and the new table and an int64 position per entry; `metrics()` walks
the curve in windows of `CURVE_CHUNK` thresholds, so the peak stays below sklearn's on the same scores
(measurements: docs/benchmarks.md). Metrics from exact per-value counts are sklearn's, which evaluates its curves
at the same distinct values.

Images or datasets without OOD pixels or without ID pixels have no ROC curve (sklearn warns and returns NaN or
degenerate values); their metrics here are NaN.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

#: per-image metrics (GenVal), in the order of `image_ood_metrics`' last axis
IMAGE_METRICS = ("auroc", "fpr95", "aupr_in", "aupr_out")
#: pooled metrics (RbA)
POOLED_METRICS = ("auroc", "ap", "fpr95")
ID_LABEL, OOD_LABEL = 0, 1


def score_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the metrics compute scores in: float64 stays float64; float32, float16 and bfloat16 are float32
    (half precision widens exactly); integer and boolean scores become float64 (exact up to 2^53)."""
    if dtype in (torch.float32, torch.float16, torch.bfloat16):
        return torch.float32
    return torch.float64


def rba_score(class_scores: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """RbA "rejected by all": -sum_c tanh(l_c) over the per-pixel mask-classification class scores l_c, in
    `score_dtype` (float32 for the models' float32 or bf16 scores, float64 for float64)."""
    return -torch.tanh(class_scores.to(score_dtype(class_scores.dtype))).sum(dim=dim)


# ------------------------------------------------------------------------------------- curve arithmetic
def _before(x: torch.Tensor, fill: float = 0) -> torch.Tensor:
    """Each column's left neighbour along dim 1, `fill` for the first (e.g. the counts above a threshold)."""
    return torch.cat([torch.full_like(x[:, :1], fill), x[:, :-1]], 1)


def _after(x: torch.Tensor, fill: float = 0) -> torch.Tensor:
    """Each column's right neighbour along dim 1, `fill` for the last."""
    return torch.cat([x[:, 1:], torch.full_like(x[:, :1], fill)], 1)


def _row_cumsum(x: torch.Tensor) -> torch.Tensor:
    """Inclusive int32 cumsum along dim 1 as one scan of the flattened rows minus each row's offset: torch scans a
    long inner dim of a few rows with a handful of GPU blocks, the flattened tensor with a device-wide scan."""
    dtype = torch.int32 if x.numel() < 2**31 else torch.int64
    flat = x.reshape(-1).cumsum(0, dtype=dtype).view(x.shape)
    offsets = torch.cat([flat.new_zeros(1), flat[:-1, -1]])  # what the rows above add up to
    return flat - offsets[:, None]


def _curve_metrics(tps: torch.Tensor, fps: torch.Tensor, strict_fpr95: bool, totals=None, lead: int = 0,
                   trail: int = 0) -> dict[str, torch.Tensor]:
    """AUROC, AP, FPR95, trapezoid AUPR with OOD positive (aupr_in) and with ID positive (aupr_out), per row.

    tps / fps (R, K) integers: OOD / ID pixels scoring >= each of sklearn's thresholds (the distinct scores, in
    descending order); a row with fewer thresholds is padded by repeating its last column (its totals), which
    adds only zero-width terms. sklearn's `drop_intermediate` keeps the first and last thresholds and those where
    the second difference of fps or tps is non-zero (equal steps before and after); it changes the ROC area by
    rounding only, but decides which point is FPR95's. With ID positive and the score negated, the thresholds are
    the same runs of ties in reverse order, each counting the totals minus the pixels above it; sklearn's final
    point (recall 0, precision 1) follows the last run.

    A window of a longer curve (the pooled table, in chunks): `totals` (R, 2) the rows' OOD and ID totals (default:
    the last column), `lead` / `trail` (0 or 1) context columns before / after the window, which give its first
    and last columns their neighbours; sums then cover the window's columns only, and FPR95 is NaN where no kept
    point of the window reaches 95 % TPR.
    """
    corner = torch.zeros_like(tps, dtype=torch.bool)
    for c in (tps, fps):
        step = c - _before(c)
        corner |= _after(step) != step  # the last column holds the totals: its step after is 0
    corner[:, 0] = True
    n_pos, n_neg = (tps[:, -1:], fps[:, -1:]) if totals is None else (totals[:, :1], totals[:, 1:])
    n_pos, n_neg = n_pos.double(), n_neg.double()
    tps, fps = tps.double(), fps.double()
    tpr, fpr = tps / n_pos, fps / n_neg  # as sklearn divides
    tpr_above = _before(tpr)
    d_tpr = tpr - tpr_above
    window = slice(lead, tps.shape[1] - trail)
    auroc = ((fpr - _before(fpr)) * (tpr + tpr_above))[:, window].sum(1) / 2
    reached = (corner & ((tpr > 0.95) if strict_fpr95 else (tpr >= 0.95)))[:, window]
    fpr95 = fpr[:, window].gather(1, reached.int().argmax(dim=1, keepdim=True))[:, 0]  # first kept point reached
    fpr95 = torch.where(reached.any(1), fpr95, torch.nan)
    precision = tps / (tps + fps)  # every column counts at least one pixel
    ap = (d_tpr * precision)[:, window].sum(1)
    aupr_in = (d_tpr * (precision + _before(precision, 1.0)))[:, window].sum(1) / 2
    id_tp = n_neg - _before(fps)  # ID positive: this run and every run below it
    id_all = id_tp + n_pos - _before(tps)
    recall_id, precision_id = id_tp / n_neg, torch.where(id_all > 0, id_tp / id_all, 1.0)
    aupr_out = ((recall_id - _after(recall_id)) * (precision_id + _after(precision_id, 1.0)))[:, window].sum(1) / 2
    undefined = (n_pos[:, 0] == 0) | (n_neg[:, 0] == 0)
    return {name: torch.where(undefined, torch.nan, value) for name, value in
            (("auroc", auroc), ("ap", ap), ("fpr95", fpr95), ("aupr_in", aupr_in), ("aupr_out", aupr_out))}


# ------------------------------------------------------------------------------------------- per image
def image_ood_metrics(scores: torch.Tensor, is_ood: torch.Tensor) -> torch.Tensor:
    """GenVal per-image metrics: (R, 4) float64 [auroc, fpr95, aupr_in, aupr_out] of R rows of pixel scores.

    scores (R, N), higher = more OOD, compared in `score_dtype` (float64 stays float64); is_ood (R, N) bool (every
    other pixel is ID). One sort per row on the tensors' device, no host sync. Rows without OOD or without ID
    pixels, or with a NaN score, give NaN.
    """
    return _image_curves(scores, is_ood)[0]


def _image_curves(scores: torch.Tensor, is_ood: torch.Tensor, counted: torch.Tensor | None = None):
    """`image_ood_metrics`, and with `counted` (R, N) bool (RbA's pixels: labels 0 and 1) each row's runs of tied
    scores, (score, OOD pixels, counted ID pixels, keep) per run position, `keep` marking the runs that hold
    counted pixels, for the pooled counts: the rows' sort serves both conventions. No host sync.

    The cumulative counts at the end of each run of ties are scattered to the run's position in the row, the rest
    of the row padded with the row's totals.
    """
    rows, n = scores.shape
    scores = torch.where(scores == 0, 0.0, scores.to(score_dtype(scores.dtype)))  # -0.0 ties with +0.0 (sklearn)
    ordered, order = torch.sort(scores, dim=1, descending=True, stable=True)
    tps = _row_cumsum(is_ood.gather(1, order))
    index = torch.arange(n, dtype=torch.int32, device=scores.device)
    fps = index + 1 - tps
    ends = torch.ones_like(ordered, dtype=torch.bool)
    ends[:, :-1] = ordered[:, 1:] != ordered[:, :-1]  # the last element of each run of ties
    # runs to their position; every other element to its own slot past the row (no two writes to one address)
    target = torch.where(ends, _row_cumsum(ends) - 1, n + index).long()

    def at_runs(c: torch.Tensor) -> torch.Tensor:
        return c[:, -1:].expand(rows, 2 * n).contiguous().scatter_(1, target, c)[:, :n]

    run_tps, run_fps = at_runs(tps), at_runs(fps)
    got = _curve_metrics(run_tps, run_fps, strict_fpr95=False)
    metrics = torch.stack([got[m] for m in IMAGE_METRICS], dim=1)
    metrics = torch.where(scores.isnan().any(dim=1, keepdim=True), torch.nan, metrics)
    if counted is None:
        return metrics, None
    run_ids = at_runs(fps - _row_cumsum((~counted).gather(1, order)))  # counted ID so far
    pos, neg = run_tps - _before(run_tps), run_ids - _before(run_ids)
    keep = (index < ends.sum(1, keepdim=True)) & ((pos > 0) | (neg > 0))
    return metrics, (at_runs(ordered), pos, neg, keep)


def per_image_ood_metrics(scores, labels) -> dict[str, float]:
    """GenVal metrics of one image (any array-like scores, higher = more OOD, compared in their dtype as
    `score_dtype` says: float64 stays float64; label 1 OOD, everything else ID)."""
    scores = torch.as_tensor(np.asarray(scores)).reshape(1, -1)
    labels = torch.as_tensor(np.asarray(labels)).reshape(1, -1)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} must have the same pixels")
    values = image_ood_metrics(scores, labels == OOD_LABEL)[0].tolist()
    return dict(zip(IMAGE_METRICS, values, strict=True))


# --------------------------------------------------------------------------------------------- pooled
_KEY_DTYPES = {torch.float32: torch.int32, torch.float64: torch.int64}


def float_keys(scores: torch.Tensor) -> torch.Tensor:
    """Order-preserving integer keys of scores in `score_dtype`, int32 for float32 and int64 for float64: a < b
    exactly when key(a) < key(b); -0.0 and +0.0 share 0. Negative values get their magnitude bits flipped in place
    (one temporary of the keys' size)."""
    dtype = score_dtype(scores.dtype)
    keys = torch.where(scores == 0, 0.0, scores.to(dtype)).view(_KEY_DTYPES[dtype])
    sign = keys >> (8 * keys.element_size() - 1)  # -1 for negative values, 0 otherwise
    return keys.bitwise_xor_(sign.bitwise_and_(torch.iinfo(keys.dtype).max))


@functools.cache
def _infinite_keys(dtype: torch.dtype) -> tuple[int, int]:
    """The keys of -inf and +inf in `dtype`: NaN scores have keys outside them."""
    return tuple(float_keys(torch.tensor([-np.inf, np.inf], dtype=dtype)).tolist())


class PooledOODCounts:
    """Exact OOD / ID pixel counts per distinct score value of `dtype` (float32 or float64), merged batch by batch
    on `device`.

    `update(scores, labels)`: labels 1 (OOD) and 0 (ID) count, every other label (void) is left out. Scores of
    another dtype are taken if `dtype` holds them exactly (float16 or bfloat16 into float32, float32 into
    float64); float64 scores into a float32 table raise rather than round.
    `metrics()`: the RbA dataset-level AUROC, AP and FPR95 (TPR > 0.95), equal to sklearn on the
    concatenated scores. Memory: see the module docstring.
    """

    #: pending entries are merged into the table once they reach this many or a quarter of the table
    MIN_MERGE = 1 << 22
    #: thresholds per window of the curve in `metrics()` (about 100 bytes each while it runs)
    CURVE_CHUNK = 1 << 18

    def __init__(self, device="cpu", dtype: torch.dtype = torch.float32):
        if dtype not in _KEY_DTYPES:
            raise ValueError(f"PooledOODCounts counts float32 or float64 scores, not {dtype}")
        self.device, self.dtype = torch.device(device), dtype
        self.keys = torch.zeros(0, dtype=_KEY_DTYPES[dtype], device=self.device)
        self.pos = torch.zeros(0, dtype=torch.int64, device=self.device)
        self.neg = torch.zeros_like(self.pos)
        self.pending: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]] = []
        self.pending_size = 0

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Count the pixels of `scores` by their `labels` (1 OOD, 0 ID, anything else left out): one `unique` of
        the OOD pixels' keys and one of the ID pixels'."""
        keys, labels = self._keys(scores.reshape(-1)), labels.reshape(-1)
        for label in (OOD_LABEL, ID_LABEL):
            values, counts = torch.unique(keys[labels == label], sorted=True, return_counts=True)
            self._add(values, *((counts, None) if label == OOD_LABEL else (None, counts)))

    def add_counts(self, scores: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> None:
        """Add `pos` OOD and `neg` ID pixels at each score of `scores` (values may repeat)."""
        self._add(self._keys(scores), pos.long(), neg.long())

    def _keys(self, scores: torch.Tensor) -> torch.Tensor:
        if not scores.is_floating_point() or torch.promote_types(scores.dtype, self.dtype) != self.dtype:
            raise ValueError(f"a PooledOODCounts of {self.dtype} scores takes only scores it holds exactly, not "
                             f"{scores.dtype}: create it with dtype={score_dtype(scores.dtype)}")
        return float_keys(scores.to(self.dtype))

    def _add(self, keys: torch.Tensor, pos: torch.Tensor | None, neg: torch.Tensor | None) -> None:
        """Queue counts at `keys` (None: no pixels of that kind)."""
        self.pending.append((keys, pos, neg))
        self.pending_size += len(keys)
        if self.pending_size >= max(self.MIN_MERGE, len(self.keys) // 4):
            self._merge()

    def _merge(self) -> None:
        """Reduce the pending entries to sorted unique keys (each entry's counts added at its keys' positions,
        one entry at a time), add the counts of keys the table has in place and insert the others at their sorted
        positions: a merge needs the old and the new table and one int64 position per old entry (about 48 bytes
        per distinct value) besides the pending entries (a quarter of the table at most, or MIN_MERGE)."""
        if not self.pending:
            return
        keys = torch.unique(torch.cat([p[0] for p in self.pending]), sorted=True)
        pos = torch.zeros(len(keys), dtype=torch.int64, device=self.device)
        neg = torch.zeros_like(pos)
        while self.pending:
            entry_keys, *counts = self.pending.pop()
            at = torch.searchsorted(keys, entry_keys)
            for total, add in zip((pos, neg), counts, strict=True):
                if add is not None:
                    total.index_add_(0, at, add.long())
            del entry_keys, counts, at
        self.pending_size = 0
        if not len(self.keys):
            self.keys, self.pos, self.neg = keys, pos, neg
            return
        at = torch.searchsorted(self.keys, keys)  # where each key is or would be in the table
        known = self.keys[at.clamp(max=len(self.keys) - 1)] == keys
        if known.any():  # only then copy the new keys out
            self.pos.index_add_(0, at[known], pos[known])
            self.neg.index_add_(0, at[known], neg[known])
            new = ~known
            keys, pos, neg, at = keys[new], pos[new], neg[new], at[new]
        del known
        if not len(keys):
            return
        # final positions: each old entry moves up by the new keys below it, each new key by the old ones below
        old_to = torch.arange(len(self.keys), device=self.device) + torch.searchsorted(keys, self.keys)
        new_to = torch.arange(len(keys), device=self.device) + at
        merged = []
        for old, added in ((self.keys, keys), (self.pos, pos), (self.neg, neg)):
            out = torch.empty(len(old) + len(added), dtype=old.dtype, device=self.device)
            out[old_to], out[new_to] = old, added
            merged.append(out)
        self.keys, self.pos, self.neg = merged

    @property
    def n_distinct(self) -> int:
        self._merge()
        return len(self.keys)

    def metrics(self) -> dict[str, float]:
        """RbA's pooled metrics from the table, its curve computed in windows of CURVE_CHUNK thresholds (from the
        highest score down), so that the curve takes O(CURVE_CHUNK) memory besides the table."""
        self._merge()
        low, high = _infinite_keys(self.dtype)
        if len(self.keys) and (self.keys[0] < low or self.keys[-1] > high):
            raise ValueError("OOD scores contain NaN: the model's logits are not finite")
        if not len(self.keys):
            return {m: float("nan") for m in POOLED_METRICS}
        n = len(self.keys)
        totals = torch.stack([self.pos.sum(), self.neg.sum()]).view(1, 2)
        above = torch.zeros(2, dtype=torch.int64, device=self.device)  # OOD / ID pixels above the window
        sums = {"auroc": 0.0, "ap": 0.0}
        fpr95 = torch.tensor(torch.nan, dtype=torch.float64, device=self.device)
        for start in range(0, n, self.CURVE_CHUNK):
            stop = min(start + self.CURVE_CHUNK, n)
            trail = int(stop < n)
            # descending positions start..stop (+ the next threshold) are table rows n-1-start down to n-stop(-1)
            rows = slice(n - stop - trail, n - start)
            counts = torch.stack([self.pos[rows], self.neg[rows]]).flip(1).cumsum(1) + above[:, None]
            lead = int(start > 0)
            if lead:
                counts = torch.cat([above[:, None], counts], 1)
            got = _curve_metrics(counts[:1], counts[1:], strict_fpr95=True, totals=totals, lead=lead, trail=trail)
            for m in sums:
                sums[m] = sums[m] + got[m][0]
            fpr95 = torch.where(fpr95.isnan(), got["fpr95"][0], fpr95)
            above = counts[:, -1 - trail]
            del counts, got
        return {"auroc": float(sums["auroc"]), "ap": float(sums["ap"]), "fpr95": float(fpr95)}


def pooled_ood_metrics(scores, labels, ignore: int = 255) -> dict[str, float]:
    """RbA dataset-level metrics of concatenated scores, counted in their `score_dtype` (float64 stays float64):
    labels 1 OOD, 0 ID, `ignore` left out."""
    scores = torch.as_tensor(np.asarray(scores)).reshape(-1)
    labels = torch.as_tensor(np.asarray(labels)).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} must have the same pixels")
    unexpected = (labels != ID_LABEL) & (labels != OOD_LABEL) & (labels != ignore)
    if unexpected.any():
        raise ValueError(f"labels must be 0 (ID), 1 (OOD) or {ignore} (ignore); got {labels[unexpected].unique().tolist()}")
    counts = PooledOODCounts(dtype=score_dtype(scores.dtype))
    counts.update(scores.to(counts.dtype), labels)
    return counts.metrics()


# --------------------------------------------------------------------------------- dataset accumulator
class OODAccumulator:
    """Both conventions for named scores over a dataset: per-image GenVal metrics and pooled RbA counts.

    `update(scores, oods)`: scores (S, B, H, W) of `dtype` (float32 from the engine; higher = more OOD) in the
    order of `score_names`,
    oods (B, H, W) with 0 ID, 1 OOD, anything else void. Per-image rows stay on the device until `result()`;
    each image's sort gives both its GenVal metrics and its runs of tied scores for the pooled counts (selecting
    those runs waits for the device once per score and batch). The curves run eager even under
    `stages.evaluate.compile`: compiled they took 14.8 ms per 4 images of 1024x2048 on an H100, eager 4.7 ms
    (docs/benchmarks.md, "OOD curves under torch.compile").
    """

    def __init__(self, score_names, device="cpu", dtype: torch.dtype = torch.float32):
        self.score_names = tuple(score_names)
        self.pooled = {name: PooledOODCounts(device, dtype) for name in self.score_names}
        self.per_image: list[torch.Tensor] = []
        self.image_counts: list[torch.Tensor] = []

    def update(self, scores: torch.Tensor, oods: torch.Tensor) -> None:
        n_scores, batch = scores.shape[:2]
        if n_scores != len(self.score_names):
            raise ValueError(f"expected {len(self.score_names)} scores {self.score_names}, got {n_scores}")
        oods = oods.reshape(batch, -1)
        is_ood = oods == OOD_LABEL
        counted = is_ood | (oods == ID_LABEL)
        rows = []
        for name, score in zip(self.score_names, scores, strict=True):  # one score at a time: less memory
            metrics, (values, pos, neg, keep) = _image_curves(score.reshape(batch, -1), is_ood, counted)
            rows.append(metrics)
            self.pooled[name].add_counts(values[keep], pos[keep], neg[keep])
        self.per_image.append(torch.stack(rows, dim=1))
        self.image_counts.append(torch.stack([is_ood.sum(1), (~is_ood).sum(1)], dim=1))

    def result(self) -> dict:
        """per_image (n, S, 4) float64 [IMAGE_METRICS], image_pixels (n, 2) [OOD, ID] (every pixel, GenVal),
        pooled {score: {auroc, ap, fpr95}} (void left out); images in update order."""
        return {"scores": self.score_names, "metrics": IMAGE_METRICS,
                "per_image": torch.cat(self.per_image).cpu().numpy(),
                "image_pixels": torch.cat(self.image_counts).cpu().numpy(),
                "pooled": {name: counts.metrics() for name, counts in self.pooled.items()}}


def dataset_rows(ood: dict) -> list[tuple[str, float, int]]:
    """(metric, value, n_images) rows of an `OODAccumulator.result()`: per score s, `auroc_s`, `ap_s`, `fpr95_s`
    (pooled, RbA) and `img_<metric>_s` (GenVal, mean over the images with both OOD and ID pixels, n_images =
    their number), plus `n_images_without_ood` and `n_images_only_ood`, the images left out of those means."""
    n = len(ood["per_image"])
    n_ood, n_id = ood["image_pixels"][:, 0], ood["image_pixels"][:, 1]
    rows = [(COUNT_ROWS[0], int((n_ood == 0).sum()), n), (COUNT_ROWS[1], int((n_id == 0).sum()), n)]
    both = (n_ood > 0) & (n_id > 0)
    for s, score in enumerate(ood["scores"]):
        rows += [(f"{m}_{score}", ood["pooled"][score][m], n) for m in POOLED_METRICS]
        values = ood["per_image"][both, s]
        for k, m in enumerate(IMAGE_METRICS):
            rows.append((f"img_{m}_{score}", float(values[:, k].mean()) if len(values) else float("nan"),
                         int(both.sum())))
    return rows


#: conventions of the rows of `dataset_rows`
CONVENTION_OF_ROWS = {"pooled": "rba_pooled", "per_image": "genval_per_image"}
COUNT_ROWS = ("n_images_without_ood", "n_images_only_ood")


def describe_row(metric: str) -> tuple[str, str | None] | None:
    """(convention, score) of a row name of `dataset_rows` (score None for the image counts); None for any other
    metric name (e.g. mIoU)."""
    if metric in COUNT_ROWS:
        return CONVENTION_OF_ROWS["per_image"], None
    per_image = metric.startswith("img_")
    names = IMAGE_METRICS if per_image else POOLED_METRICS
    rest = metric.removeprefix("img_")
    for name in sorted(names, key=len, reverse=True):
        if rest.startswith(f"{name}_") and len(rest) > len(name) + 1:
            return CONVENTION_OF_ROWS["per_image" if per_image else "pooled"], rest[len(name) + 1:]
    return None
