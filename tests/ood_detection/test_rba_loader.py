"""The RbA fine-tune's loader (#33 item 2): `num_workers: auto` (the default, resolved as the evaluate stage's),
its schema, and collate_outliers' uint8 batch normalised where the step runs, identical to the float batch the
loader workers built before."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from synthrel.conventions import OOD_LABEL_ID
from synthrel.errors import ConfigError
from synthrel.ood_detection.job import OODDetectionJob
from synthrel.ood_detection.outliers import OutlierMixDataset, collate_outliers, outlier_mask_of
from synthrel.ood_detection.rba import model_batch

KEY = "stages.ood_detection.rba.finetune.num_workers"


def _job(tmp_path, **finetune) -> OODDetectionJob:
    return OODDetectionJob(results_root=str(tmp_path), output_dir=str(tmp_path / "out"),
                           rba={"finetune": finetune})


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 1), (4, 3), (9, 8), (16, 8), (128, 8)])
def test_auto_is_the_usable_cores_but_one_at_most_8(monkeypatch, tmp_path, cores, workers):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert _job(tmp_path).finetune["num_workers"] == workers  # the default
    assert _job(tmp_path, num_workers="auto").finetune["num_workers"] == workers
    assert _job(tmp_path, num_workers=3).finetune["num_workers"] == 3  # a number stays
    assert _job(tmp_path, num_workers=0).finetune["num_workers"] == 0


def test_the_stage_default_is_auto_and_profiles_still_override_it(compose_cfg):
    ft = compose_cfg("+stage=[ood_detection]").stages.ood_detection.rba.finetune
    assert ft.num_workers == "auto"
    tiny = compose_cfg("+stage=[ood_detection]", "profile=tiny").stages.ood_detection.rba.finetune
    assert tiny.num_workers == 0  # CI: no worker processes
    given = compose_cfg("+stage=[ood_detection]", "+profile.rba_finetune.num_workers=5")
    assert given.stages.ood_detection.rba.finetune.num_workers == 5


def test_the_schema_accepts_auto_and_numbers_and_refuses_junk_by_key(compose_cfg):
    """As a run checks it (synthrel/schemas.py, at composition): the key and what it takes."""
    from synthrel.schemas import check_stage_settings

    for good in ("auto", 0, 4):
        check_stage_settings(compose_cfg("+stage=[ood_detection]", f"{KEY}={good}"))
    for bad in ("many", 2.5, True):
        with pytest.raises(ConfigError, match=rf"`{KEY}` is {bad!r} .*expected .*auto"):
            check_stage_settings(compose_cfg("+stage=[ood_detection]", f"{KEY}={bad}"))


def test_a_negative_count_is_refused_by_key(tmp_path):
    with pytest.raises(ConfigError, match=rf"`{KEY}` must be an integer >= 0 or auto, got -1"):
        _job(tmp_path, num_workers=-1)


class _Scenes:
    """Inliers with confident structure: random RGB and labels over every trainId, void and the OOD id."""

    def __init__(self, n=3, h=96, w=160):
        self.n, self.h, self.w = n, h, w

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        rng = np.random.default_rng(i)
        label = rng.choice(np.array([*range(19), 255], np.uint8), (self.h, self.w))
        label[:10, :10] = OOD_LABEL_ID
        return {"image": rng.integers(0, 256, (self.h, self.w, 3), dtype=np.uint8), "label": label}


def test_the_uint8_batch_becomes_the_float_batch_the_loader_built_before():
    """Same seed -> same samples; their batch after model_batch equals the previous collate's bit for bit
    (to_pixel_values on the stacked images, int64 maps) and a float64 reference of Mask2Former's normalisation."""
    from synthrel.ood_detection.rba import IMAGENET_MEAN, IMAGENET_STD, to_pixel_values

    kwargs = dict(seed=3, num_samples=4, crop_size=(64, 128), min_sizes=(96, 128), max_size=512, mix_prob=0.0)
    a, b = OutlierMixDataset(_Scenes(), **kwargs), OutlierMixDataset(_Scenes(), **kwargs)
    samples = [a[i] for i in range(4)]
    for i, s in enumerate(samples):
        again = b[i]
        for key in ("image", "label", "outlier_mask"):
            np.testing.assert_array_equal(s[key], again[key])
    batch = collate_outliers(samples)
    assert {v.dtype for v in batch.values()} == {torch.uint8}  # a quarter of the float bytes over PCIe
    out = model_batch(batch)
    images = np.stack([s["image"] for s in samples])
    assert torch.equal(out["pixel_values"], to_pixel_values(images))
    reference = (images.astype(np.float64) - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    np.testing.assert_allclose(out["pixel_values"].numpy(), reference.transpose(0, 3, 1, 2), rtol=1e-6, atol=1e-5)
    labels = np.stack([s["label"] for s in samples])
    assert out["label"].dtype == torch.int64 and np.array_equal(out["label"].numpy(), labels)
    assert out["outlier_mask"].dtype == torch.int64
    np.testing.assert_array_equal(out["outlier_mask"].numpy(), outlier_mask_of(labels))
    assert model_batch(out) is out  # a model-ready batch (the throughput benchmark's) passes as it is
